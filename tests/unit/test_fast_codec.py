"""The worker's fast decoder and encoder agree with the schema, which stays the contract
(issue 15, item 3): on every record of the poison matrix and on generated events, valid
and invalid, `decode_cancel_requested` returns the same event (fields set included) or
raises the same refusal as `CancelRequested.model_validate_json`, and `encode_outcome`
writes the same bytes as `schemas.transport.encode`. Pure: no broker, no database."""

import json
import types
from decimal import Decimal
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import CancelOutcome, CancelRequested, ItemResult, Outcome, Provider, ReplyTo
from schemas.fast_codec import _decode_plain, decode_cancel_requested, encode_outcome
from schemas.transport import encode
from tests.integration.test_poison import POISONS

REPLY_TO = ReplyTo(topic="cancel-outcomes", partition=1)
EXAMPLES = 400

Json = dict[str, Any]


def _refusal(exc: pydantic.ValidationError) -> list[Any]:
    """What a refusal says: every error (its context as text) and the message."""
    return [exc.errors(include_url=False, include_context=False), str(exc)]


def _schema(value: bytes) -> CancelRequested | list[Any]:
    try:
        return CancelRequested.model_validate_json(value)
    except pydantic.ValidationError as exc:
        return _refusal(exc)


def _fast(value: bytes) -> CancelRequested | list[Any]:
    try:
        return decode_cancel_requested(value)
    except pydantic.ValidationError as exc:
        return _refusal(exc)


def assert_agree(value: bytes) -> CancelRequested | None:
    """Both paths give the same event (or the same errors); the event, if any."""
    expected, got = _schema(value), _fast(value)
    if isinstance(expected, list):
        assert got == expected
        return None
    assert isinstance(got, CancelRequested)
    assert got == expected
    assert encode(got) == encode(expected), "same fields in the same order"
    for mine, theirs in [
        (got, expected),
        (got.reply_to, expected.reply_to),
        *zip(got.items, expected.items, strict=True),
    ]:
        assert type(mine) is type(theirs)
        assert mine.__pydantic_fields_set__ == theirs.__pydantic_fields_set__
        assert mine.__pydantic_extra__ == theirs.__pydantic_extra__
        assert mine.__pydantic_private__ == theirs.__pydantic_private__
    assert [type(i.amount) for i in got.items] == [type(i.amount) for i in expected.items]
    return got


@pytest.mark.parametrize("poison", POISONS, ids=[p.name for p in POISONS])
def test_the_poison_matrix_agrees(poison: Any) -> None:
    value = poison.value(types.SimpleNamespace(reply_to=REPLY_TO))
    if value is None:  # an empty record: the worker refuses it before decoding
        return
    assert_agree(value)


def _valid(provider: Provider = Provider.SCORPIO, items: int = 1) -> Json:
    return {
        "schema_version": 1,
        "correlation_id": "0123456789abcdef0123456789abcdef",
        "provider": provider.value,
        "cancel_id": "c-1",
        "player": "p1",
        "currency": "EUR",
        "items": [
            {"bet_tx": f"bet-{i}", "amount": "10.00", "round_id": f"r-{i}"} for i in range(items)
        ],
        "request_digest": "d" * 64,
        "reply_to": {"topic": "cancel-outcomes", "partition": 1},
        "deadline_ms": 1_700_000_010_000,
        "requested_at_ms": 1_700_000_000_000,
    }


def test_what_the_ingress_writes_takes_the_fast_path() -> None:
    for provider in Provider:
        for count in (1, 3, 100):
            event = CancelRequested.model_validate(_valid(provider, count))
            value = encode(event)
            assert _decode_plain(value) == event
            assert assert_agree(value) == event


# Generated events: plausible values of every field, and a few mutations of them.
_texts = st.one_of(
    st.text(min_size=0, max_size=8),
    st.sampled_from(["a", "p1", "x" * 256, "x" * 257, "é", "\x00", "a\x7f", "\u2028", " "]),
    st.sampled_from(["é" * 256, "é" * 257, "\U0001f600" * 256, "\U0001f600" * 257, "\x80", "\x9f"]),
)
_decimals = st.one_of(
    st.sampled_from(
        ["10.00", "10", "0.5", "1e2", "1E+2", "-1", "0", ".5", "5.", "1.23456", "NaN", "1_0"]
    ),
    st.sampled_from(["0" * 62 + "10", "0" * 63 + "10", " 1", "1 ", "+1", "1e999999", "٣"]),
    st.decimals(allow_nan=False, allow_infinity=False, places=2).map(str),
    st.from_regex(r"-?[0-9]{0,14}(\.[0-9]{0,5})?([eE][-+]?[0-9]{1,2})?", fullmatch=True),
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    _texts,
)
_ints = st.one_of(
    st.integers(min_value=-1, max_value=2**53 + 1),
    st.sampled_from([0, 1, 99_999, 100_000, 2**53 - 1, 2**53]),
    _scalars,
)


@st.composite
def _events(draw: st.DrawFn) -> Json:
    body = _valid(draw(st.sampled_from(list(Provider))), draw(st.integers(1, 3)))
    for item in body["items"]:
        if draw(st.booleans()):
            item["amount"] = draw(st.one_of(_decimals, st.none()))
        if draw(st.integers(0, 4)) == 0:
            del item["round_id"]
    for key in ("player", "currency", "schema_version"):
        choice = draw(st.integers(0, 5))
        if choice == 0:
            del body[key]
        elif choice == 1:
            body[key] = None
    if draw(st.integers(0, 3)) == 0:
        body["currency"] = draw(st.sampled_from(["JPY", "BHD", "CLF", "eur", "ZZZ", "EUR "]))
    mutations = draw(st.integers(0, 2))
    for _ in range(mutations):
        _mutate(draw, body)
    return body


def _mutate(draw: st.DrawFn, body: Json) -> None:
    """One change that may make the event invalid, or leave it valid another way."""
    target = body
    keys = list(body)
    items = body.get("items")
    if draw(st.booleans()) and isinstance(items, list) and items and isinstance(items[0], dict):
        target = items[0]
        keys = list(target)
    elif draw(st.integers(0, 3)) == 0 and isinstance(body.get("reply_to"), dict):
        target = body["reply_to"]
        keys = list(target)
    if not keys:
        return
    key = draw(st.sampled_from(keys))
    action = draw(st.integers(0, 5))
    if action == 0:
        del target[key]
    elif action == 1:
        target[draw(st.sampled_from(["extra", "Player", "amount", "round_id"]))] = "x"
    elif action == 2:
        target[key] = draw(_ints)
    elif action == 3:
        target[key] = draw(_texts)
    elif action == 4:
        target[key] = draw(st.one_of(st.lists(_scalars, max_size=2), st.just({})))
    else:
        target[key] = draw(_scalars)


@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
@given(_events())
def test_generated_events_agree(body: Json) -> None:
    assert_agree(json.dumps(body).encode())


_raw_tails = st.sampled_from(
    [b"", b" ", b"\n", b"x", b"}", b",", b"\xff", b"\x00", b" NaN", b'"a"', b"[]"]
)


@settings(max_examples=EXAMPLES // 2, suppress_health_check=[HealthCheck.too_slow])
@given(_events(), st.integers(min_value=0, max_value=600), _raw_tails, st.booleans())
def test_damaged_bytes_agree(body: Json, cut: int, tail: bytes, duplicate: bool) -> None:
    value = json.dumps(body).encode()
    if duplicate:  # the same key twice: both parsers keep the last
        value = value.replace(b'"deadline_ms": ', b'"deadline_ms": 1, "deadline_ms": ', 1)
    else:
        value = value[:cut] + tail + value[cut:]
    assert_agree(value)


def test_unicode_escapes_agree() -> None:
    body = _valid()
    for text in ("\\ud800", "\\udfff", "\\ud83d\\ude00", "\\u0000", "\\u001f", "\\u007f", "é"):
        for key in ("cancel_id", "request_digest", "player", "currency"):
            value = json.dumps(body).replace(f'"{key}": "', f'"{key}": "{text}', 1)
            assert_agree(value.encode())


_outcome_texts = st.text(min_size=1, max_size=6)
_amounts = st.one_of(
    st.none(),
    st.decimals(allow_nan=False, allow_infinity=False, places=4),
    st.sampled_from([Decimal("1E+2"), Decimal("-0.00"), Decimal("10.50"), Decimal("1E-7")]),
)


@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(list(Provider)),
    st.sampled_from(list(Outcome)),
    st.lists(st.tuples(_outcome_texts, st.sampled_from(list(Outcome)), _amounts), min_size=1),
    st.one_of(st.none(), _outcome_texts),
    _amounts,
    st.integers(min_value=0, max_value=2**53 - 1),
    st.booleans(),
)
def test_the_outcome_encoder_writes_the_schemas_bytes(
    provider: Provider,
    outcome: Outcome,
    items: list[tuple[str, Outcome, Decimal | None]],
    player: str | None,
    balance: Decimal | None,
    decided_at_ms: int,
    replayed: bool,
) -> None:
    try:
        value = CancelOutcome(
            correlation_id="c\u00e9\u2028",
            provider=provider,
            cancel_id="x\"\\'/",
            outcome=outcome,
            items=[ItemResult(bet_tx=b, outcome=o, amount=a) for b, o, a in items],
            player=player,
            currency="EUR",
            balance_before=balance,
            balance_after=balance,
            ledger_tx="lt-1",
            decided_at_ms=decided_at_ms,
            replayed=replayed,
        )
    except pydantic.ValidationError:
        return  # a text the schema refuses: no outcome to encode
    assert encode_outcome(value) == encode(value)
    assert CancelOutcome.model_validate_json(encode_outcome(value)) == value


def test_the_outcome_encoder_writes_what_the_worker_may_hold() -> None:
    """A text the decision copied without the schema (a NUL: the database refuses it
    later) is written as the schema writes it."""
    outcome = CancelOutcome(
        correlation_id="c",
        provider=Provider.NAGA,
        cancel_id="x",
        outcome=Outcome.REFUNDED,
        items=[ItemResult(bet_tx="b", outcome=Outcome.REFUNDED, amount=Decimal("1.5"))],
        ledger_tx="l",
        decided_at_ms=1,
    ).model_copy(update={"ledger_tx": "nul\x00\n\x7f"})
    assert encode_outcome(outcome) == encode(outcome)
