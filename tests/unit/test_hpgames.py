"""HPGames adapter: hash, parsing, validation, outcome mapping, bulk. Pure: no I/O.

Request bodies are written as JSON text here (numbers as literals), independently of the
adapter's own JSON code, so a number is exactly what the test wrote.
"""

import hashlib
import hmac
import json
from decimal import Decimal
from typing import Any

import pytest

from adapters import hpgames
from adapters.contract import Accepted, Envelope, Request, Response
from schemas import CancelOutcome, ItemResult, Outcome, Provider, ReplyTo
from tests.providers import provider_secrets, stamped

SECRET = "hpgames-test-secret"
MERCHANT = "21385394-6dda-4171-a003-02fa4a975643"  # the seed example's merchant id
CONFIG = hpgames.HPGamesConfig(merchant_id=MERCHANT, secret_key=SECRET.encode())
NOW_MS = 1_767_225_600_000  # the server clock of every request here (2026-01-01)
ENVELOPE = Envelope(
    request_id="req-1",
    reply_to=ReplyTo(topic="t.replies", partition=0),
    deadline_ms=NOW_MS + 3500,
    requested_at_ms=NOW_MS,
)
RESPONSE_FIELDS = [
    "errorCode",
    "errorText",
    "balance",
    "currency",
    "accountTransactionId",
    "transactionId",
]
MISSING = object()


class Lit(str):
    """A JSON number (or any JSON text) written exactly as given."""


def to_json(value: Any) -> str:
    if isinstance(value, Lit):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return json.dumps(value)


def sign(item: dict[str, Any], key: str = SECRET) -> dict[str, Any]:
    """Sign as HPGames does, computed here with hmac/hashlib, not with the adapter."""
    message = f"{item['merchantId']}{item['transactionIdToCancel']}{item['timestamp']}"
    signed = dict(item)
    signed["hash"] = hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()
    return signed


def cancel_item(*, signed: bool = True, **changes: Any) -> dict[str, Any]:
    """A valid cancel request; `changes` replace fields (MISSING removes one), and a
    `hash` given in `changes` replaces the computed one."""
    n = changes.pop("n", 1)
    item: dict[str, Any] = {
        "merchantId": MERCHANT,
        "timestamp": Lit(str(NOW_MS)),
        "betIdToCancel": f"bet-{n}",
        "transactionIdToCancel": f"debit-{n}",
        "transactionId": f"cancel-{n}",
        "playerId": "player-1",
        "gameId": Lit("200100"),
        "currency": "EUR",
        "authToken": "session-1",
        "amount": Lit("10"),
    }
    forced_hash = changes.pop("hash", MISSING)
    item.update(changes)
    if signed:
        item = sign(item)
    if forced_hash is not MISSING:
        item["hash"] = forced_hash
    return {key: value for key, value in item.items() if value is not MISSING}


def request(body: Any, received_at_ms: int = NOW_MS) -> Request:
    raw = body if isinstance(body, bytes) else to_json(body).encode()
    return Request(
        headers={"content-type": "application/json"}, body=raw, received_at_ms=received_at_ms
    )


def accept(body: Any, seen: hpgames.SeenHashes | None = None) -> Accepted | Response:
    """One request to a fresh ingress (no hash seen before), or to one that saw `seen`."""
    seen = hpgames.SeenHashes() if seen is None else seen
    return hpgames.accept(request(body), CONFIG, seen)


def accept_bulk(body: Any, seen: hpgames.SeenHashes | None = None) -> Accepted | Response:
    seen = hpgames.SeenHashes() if seen is None else seen
    return hpgames.accept_bulk(request(body), CONFIG, seen)


def decode(response: Response) -> Any:
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    return json.loads(response.body, parse_float=Decimal, parse_int=Decimal)


def assert_answer_shape(answer: dict[str, Any]) -> None:
    """Every mandatory field, the seed's names and JSON types (numbers as numbers)."""
    assert list(answer) == RESPONSE_FIELDS
    assert isinstance(answer["errorCode"], Decimal)
    assert answer["errorCode"] == int(answer["errorCode"])
    assert isinstance(answer["balance"], Decimal)
    for name in ("errorText", "currency", "accountTransactionId", "transactionId"):
        assert isinstance(answer[name], str)


def rejected(result: Accepted | Response) -> dict[str, Any]:
    """The immediate single-shape answer of a refused request (nothing to publish)."""
    assert isinstance(result, Response), "expected an immediate answer and no events"
    answer: dict[str, Any] = decode(result)
    assert_answer_shape(answer)
    assert answer["balance"] == 0
    assert answer["accountTransactionId"] == ""
    return answer


def accepted(result: Accepted | Response) -> Accepted:
    assert isinstance(result, Accepted), decode(result) if isinstance(result, Response) else None
    return result


def outcome(
    kind: Outcome,
    *,
    cancel_id: str = "cancel-1",
    bet_tx: str = "debit-1",
    before: str | None = "100.00",
    after: str | None = None,
    currency: str | None = "EUR",
    correlation_id: str = "req-1.0",
    ledger_tx: str = "ledger-1",
    replayed: bool = False,
) -> CancelOutcome:
    balance_before = None if before is None else Decimal(before)
    balance_after = Decimal(after) if after is not None else balance_before
    return CancelOutcome(
        correlation_id=correlation_id,
        provider=Provider.HPGAMES,
        cancel_id=cancel_id,
        outcome=kind,
        items=[ItemResult(bet_tx=bet_tx, outcome=kind, amount=Decimal("10"))],
        player="player-1",
        currency=currency,
        balance_before=balance_before,
        balance_after=balance_after,
        ledger_tx=ledger_tx,
        decided_at_ms=NOW_MS + 5,
        replayed=replayed,
    )


# Hash.


def test_hash_for_known_answer_vector() -> None:
    merchant, debit, timestamp = MERCHANT, "1185a9a1-1497-41bd-937d-cbce3fae8961", "1643727556"
    expected = hmac.new(
        SECRET.encode(), (merchant + debit + timestamp).encode(), hashlib.sha256
    ).hexdigest()
    # Also pinned, from `openssl dgst -sha256 -hmac`, for tools in other languages.
    assert expected == "655e868238ff80c7668897e9226e60e0db57579f16223c07464d1a354d83c3ca"
    assert hpgames.hash_for(merchant, debit, timestamp, SECRET.encode()) == expected
    assert hpgames.hash_for(merchant, debit, timestamp, SECRET) == expected


def test_hash_is_over_the_timestamp_as_written() -> None:
    as_int = hpgames.hash_for(MERCHANT, "debit-1", "1643727556", SECRET)
    as_float = hpgames.hash_for(MERCHANT, "debit-1", "1643727556.0", SECRET)
    assert as_int != as_float


@pytest.mark.parametrize(
    "args",
    [
        ("other-merchant", "debit-1", "1643727556", SECRET),
        (MERCHANT, "debit-2", "1643727556", SECRET),
        (MERCHANT, "debit-1", "1643727557", SECRET),
        (MERCHANT, "debit-1", "1643727556", "other-key"),
    ],
)
def test_hash_changes_with_every_input(args: tuple[str, str, str, str]) -> None:
    assert hpgames.hash_for(*args) != hpgames.hash_for(MERCHANT, "debit-1", "1643727556", SECRET)


def test_a_correctly_signed_request_is_accepted() -> None:
    result = accepted(accept(cancel_item()))
    assert len(result.cancels) == 1


def test_tampered_signed_field_fails_authentication() -> None:
    item = cancel_item()
    item["transactionIdToCancel"] = "debit-999"  # after signing
    answer = rejected(accept(item))
    assert answer["errorCode"] == hpgames.ERROR_AUTHENTICATION
    assert answer["transactionId"] == "cancel-1"


def test_tampered_timestamp_literal_fails_authentication() -> None:
    item = cancel_item(timestamp=Lit(str(NOW_MS)))
    item["timestamp"] = Lit(str(NOW_MS + 1))  # same moment, other literal
    assert rejected(accept(item))["errorCode"] == hpgames.ERROR_AUTHENTICATION


def test_hash_with_another_key_fails_authentication() -> None:
    item = sign(cancel_item(signed=False), key="another-key")
    assert rejected(accept(item))["errorCode"] == hpgames.ERROR_AUTHENTICATION


def test_other_merchant_id_fails_authentication_even_when_signed() -> None:
    item = cancel_item(merchantId="7d7f0d4e-0000-4000-8000-000000000000")
    assert rejected(accept(item))["errorCode"] == hpgames.ERROR_AUTHENTICATION


@pytest.mark.parametrize("bad_hash", ["UPPER", "", "0" * 64, "not-hex"])
def test_hash_must_match_exactly(bad_hash: str) -> None:
    item = cancel_item()
    item["hash"] = item["hash"].upper() if bad_hash == "UPPER" else bad_hash
    answer = rejected(accept(item))
    expected = hpgames.ERROR_INVALID_REQUEST if bad_hash == "" else hpgames.ERROR_AUTHENTICATION
    assert answer["errorCode"] == expected


def test_timestamp_written_as_float_is_refused_even_when_signed_over_that_literal() -> None:
    item = cancel_item(timestamp=Lit(f"{NOW_MS // 1000}.0"))
    assert rejected(accept(item))["errorCode"] == hpgames.ERROR_INVALID_REQUEST


def test_the_hash_does_not_cover_the_amount() -> None:
    """HPGames signs only merchantId, transactionIdToCancel and timestamp: an altered
    amount passes here and is refused by the worker against the recorded debit."""
    item = cancel_item()
    item["amount"] = Lit("9999")
    event = stamped(accepted(accept(item)), ENVELOPE)[0]
    assert event.items[0].amount == Decimal("9999")


def test_config_repr_hides_the_secret() -> None:
    assert SECRET not in repr(CONFIG)


# Golden request and response (seed 4.8).


SEED_REQUEST = """{
"merchantId": "21385394-6dda-4171-a003-02fa4a975643",
"timestamp": %s,
"betIdToCancel": "2185a9a1-1497-41bd-937d-cbce3fae8961",
"transactionIdToCancel": "1185a9a1-1497-41bd-937d-cbce3fae8961",
"transactionId": "5f95f6d2-3e61-4434-96b8-07905f0fd557",
"hash": "%s",
"playerId": "d02b5979-6d2a-4830-80e2-bf3fa608a2f2",
"gameId": 200100,
"currency": "EUR",
"authToken": "b5e10b6b-4d88-475c-9496-a461052a8448",
"amount": 10
}"""

SEED_RESPONSE = """{
"errorCode": 0,
"errorText": "",
"balance": 1000.5,
"currency": "EUR",
"accountTransactionId": "3c930b71-1f97-4b2a-aba0-f62c36e0cd09",
"transactionId": "5f95f6d2-3e61-4434-96b8-07905f0fd557"
}"""


def seed_request(timestamp: str) -> str:
    """The seed's example with a current timestamp (seconds, as the seed shows) and
    the hash recomputed for it."""
    digest = hmac.new(
        SECRET.encode(),
        f"{MERCHANT}1185a9a1-1497-41bd-937d-cbce3fae8961{timestamp}".encode(),
        hashlib.sha256,
    ).hexdigest()
    return SEED_REQUEST % (timestamp, digest)


def seed_outcome(correlation_id: str = "req-1.0") -> CancelOutcome:
    return outcome(
        Outcome.REFUNDED,
        cancel_id="5f95f6d2-3e61-4434-96b8-07905f0fd557",
        bet_tx="1185a9a1-1497-41bd-937d-cbce3fae8961",
        before="990.5",
        after="1000.5",
        ledger_tx="3c930b71-1f97-4b2a-aba0-f62c36e0cd09",
        correlation_id=correlation_id,
    )


def test_golden_cancel_debit() -> None:
    body = seed_request(str(NOW_MS // 1000)).encode()
    result = accepted(accept(body))
    (event,) = stamped(result, ENVELOPE)
    assert event.provider is Provider.HPGAMES
    assert event.cancel_id == "5f95f6d2-3e61-4434-96b8-07905f0fd557"
    assert event.player == "d02b5979-6d2a-4830-80e2-bf3fa608a2f2"
    assert event.currency == "EUR"
    assert [(i.bet_tx, i.amount) for i in event.items] == [
        ("1185a9a1-1497-41bd-937d-cbce3fae8961", Decimal("10"))
    ]
    assert event.correlation_id == "req-1.0"
    assert event.reply_to == ENVELOPE.reply_to
    assert event.deadline_ms == ENVELOPE.deadline_ms
    assert event.requested_at_ms == NOW_MS

    response = result.answer([seed_outcome()])
    assert response.status == 200
    expected = json.loads(SEED_RESPONSE, parse_float=Decimal)
    assert json.loads(response.body, parse_float=Decimal) == expected
    assert response.body == json.dumps(json.loads(SEED_RESPONSE), separators=(",", ":")).encode()


def test_golden_bulk_cancel_debit() -> None:
    body = '{"cancelDebitRequests": [' + seed_request(str(NOW_MS)) + "]}"
    result = accepted(accept_bulk(body.encode()))
    assert len(result.cancels) == 1
    response = result.answer([seed_outcome()])
    expected = {"cancelDebitResponses": [json.loads(SEED_RESPONSE, parse_float=Decimal)]}
    assert json.loads(response.body, parse_float=Decimal) == expected
    assert response.status == 200


def test_request_digest_ignores_timestamp_and_hash() -> None:
    """A retry (new timestamp, new hash) is the same cancel for the worker."""
    first = stamped(accepted(accept(cancel_item())), ENVELOPE)[0]
    retry = stamped(accepted(accept(cancel_item(timestamp=Lit(str(NOW_MS - 60_000))))), ENVELOPE)[0]
    other = stamped(accepted(accept(cancel_item(amount=Lit("11")))), ENVELOPE)[0]
    assert first.request_digest == retry.request_digest
    assert first.request_digest != other.request_digest


def test_optional_fields_may_be_absent_or_null() -> None:
    for changes in ({"gameId": MISSING}, {"gameId": None}, {"created": None}):
        assert accepted(accept(cancel_item(**changes)))


def test_created_timestamp_is_accepted_under_either_name() -> None:
    stamp = "2026-01-01T00:00:00.123456Z"
    assert accepted(accept(cancel_item(created=stamp)))
    assert accepted(accept(cancel_item(createdDatetime=stamp)))


def test_amounts_keep_their_exact_decimal_value() -> None:
    event = stamped(accepted(accept(cancel_item(amount=Lit("0.10")))), ENVELOPE)[0]
    assert event.items[0].amount == Decimal("0.10")
    event = stamped(accepted(accept(cancel_item(amount=Lit("1E+2")))), ENVELOPE)[0]
    assert event.items[0].amount == Decimal("100")


# Parsing and validation: every refusal is an immediate answer, never an event.


REQUIRED = [
    "merchantId",
    "timestamp",
    "betIdToCancel",
    "transactionIdToCancel",
    "transactionId",
    "hash",
    "playerId",
    "authToken",
    "amount",
]


@pytest.mark.parametrize("name", REQUIRED)
def test_missing_required_field_is_invalid(name: str) -> None:
    item = cancel_item()
    del item[name]
    answer = rejected(accept(item))
    assert answer["errorCode"] == hpgames.ERROR_INVALID_REQUEST
    assert answer["errorText"] == "Invalid request"


@pytest.mark.parametrize("name", [n for n in REQUIRED if n != "currency"])
def test_null_required_field_is_invalid(name: str) -> None:
    item = cancel_item()
    item[name] = None
    assert rejected(accept(item))["errorCode"] == hpgames.ERROR_INVALID_REQUEST


@pytest.mark.parametrize("currency", [None, MISSING])
def test_currency_is_optional_and_then_the_worker_takes_the_debits(currency: Any) -> None:
    """Seed 4.8.1: `currency` is Optional. Refused before (issue 11): never refunded."""
    result = accepted(accept(cancel_item(currency=currency, amount=Lit("10.50"))))
    (event,) = stamped(result, ENVELOPE)
    assert event.currency is None
    assert event.player == "player-1"
    assert [(item.bet_tx, item.amount) for item in event.items] == [("debit-1", Decimal("10.50"))]
    # The same cancel naming its currency is another request (the digest covers it).
    named = stamped(accepted(accept(cancel_item(amount=Lit("10.50")))), ENVELOPE)[0]
    assert named.request_digest != event.request_digest
    # The answer without an outcome still carries every field (currency "").
    late = decode(result.answer([None]))
    assert_answer_shape(late)
    assert (late["errorCode"], late["currency"]) == (hpgames.ERROR_INTERNAL, "")
    # With an outcome, the debit's currency is reported.
    answer = decode(result.answer([outcome(Outcome.REFUNDED, after="110.50")]))
    assert (answer["errorCode"], answer["currency"]) == (0, "EUR")


@pytest.mark.parametrize(
    "amount",
    ["0", "-10", "10.00001", "1000000000000.01", "1e400", "10.000000000000000000000000000001"],
)
def test_without_a_currency_the_amount_is_still_checked_at_the_door(amount: str) -> None:
    """Sign, size and at most 4 decimals (the most any currency has) at the door; the
    debit's currency's decimals in the worker (an amount mismatch there)."""
    answer = rejected(accept(cancel_item(currency=MISSING, amount=Lit(amount))))
    assert answer["errorCode"] == hpgames.ERROR_INVALID_REQUEST


def test_without_a_currency_an_amount_with_4_decimals_goes_to_the_worker() -> None:
    (event,) = stamped(
        accepted(accept(cancel_item(currency=MISSING, amount=Lit("10.0001")))), ENVELOPE
    )
    assert event.items[0].amount == Decimal("10.0001")


WRONG_TYPES = [
    ("merchantId", Lit("21385394")),
    ("timestamp", str(NOW_MS)),
    ("timestamp", Lit("true")),
    ("betIdToCancel", Lit("12")),
    ("transactionIdToCancel", Lit("[]")),
    ("transactionId", Lit("{}")),
    ("hash", Lit("5")),
    ("playerId", Lit("42")),
    ("gameId", "200100"),
    ("gameId", Lit("200100.5")),
    ("gameId", Lit("false")),
    ("currency", Lit("978")),
    ("authToken", Lit("true")),
    ("amount", "10"),
    ("amount", Lit("[10]")),
    ("created", Lit("1643727556")),
    ("createdDatetime", Lit("{}")),
]


@pytest.mark.parametrize(("name", "value"), WRONG_TYPES)
def test_wrong_type_is_invalid(name: str, value: Any) -> None:
    answer = rejected(accept(cancel_item(**{name: value})))
    assert answer["errorCode"] == hpgames.ERROR_INVALID_REQUEST


def test_fields_the_seed_does_not_list_are_accepted_and_counted() -> None:
    """Tolerant reader: HPGames + `roundId` was errorCode 2 (issue 11)."""
    result = accepted(accept(cancel_item(roundId="r-1", bonus=Lit('{"a":[1,2]}'))))
    assert result.unknown_fields == 2
    (event,) = stamped(result, ENVELOPE)
    plain = stamped(accepted(accept(cancel_item())), ENVELOPE)[0]
    assert event.request_digest == plain.request_digest  # ignored: the same cancel


def test_an_invalid_request_echoes_its_transaction_id() -> None:
    answer = rejected(accept(cancel_item(amount=Lit("0"))))
    assert answer["errorCode"] == hpgames.ERROR_INVALID_REQUEST
    assert answer["transactionId"] == "cancel-1"  # echoed to help the provider correlate
    assert answer["currency"] == "EUR"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("transactionId", "evil\u0000"),
        ("transactionId", "a\nb"),
        ("transactionIdToCancel", "debit\u001f"),
        ("betIdToCancel", "b\u007f"),
        ("playerId", "p\u0000"),
        ("authToken", "t\u0007"),
        ("transactionId", "i" * 257),
    ],
)
def test_ids_with_control_characters_or_too_long_are_invalid(name: str, value: str) -> None:
    """Issue 11: an unsigned `transactionId` "evil\\u0000…" was published and stopped a
    partition (PostgreSQL refuses NUL). Refused at the door, nothing published."""
    changes: dict[str, Any] = {name: value}
    item = cancel_item(**changes)
    answer = rejected(accept(item))
    assert answer["errorCode"] == hpgames.ERROR_INVALID_REQUEST
    if name == "transactionId":
        assert answer["transactionId"] == ""  # never echoed back


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        ("-10", "EUR"),
        ("0", "EUR"),
        ("0.00", "EUR"),
        ("-0", "EUR"),
        ("10.001", "EUR"),
        ("10.5", "JPY"),
        ("1.0001", "KWD"),
        ("1000000000001", "EUR"),
        ("1e400", "EUR"),
        ("1" + "0" * 40, "EUR"),
        ("10", "XXX"),
        ("10", "eur"),
        ("10", "EURO"),
    ],
)
def test_bad_money_is_invalid(amount: str, currency: str) -> None:
    answer = rejected(accept(cancel_item(amount=Lit(amount), currency=currency)))
    assert answer["errorCode"] == hpgames.ERROR_INVALID_REQUEST


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_amount_is_invalid_json(literal: str) -> None:
    answer = rejected(accept(cancel_item(amount=Lit(literal))))
    assert answer["errorCode"] == hpgames.ERROR_INVALID_REQUEST
    assert answer["transactionId"] == ""  # nothing of an unparsable body is echoed


def test_amount_with_the_currency_decimals_is_valid() -> None:
    assert accepted(accept(cancel_item(amount=Lit("10.5"), currency="BHD")))
    assert accepted(accept(cancel_item(amount=Lit("1000000000000"), currency="EUR")))


@pytest.mark.parametrize(
    "name",
    [
        "merchantId",
        "betIdToCancel",
        "transactionIdToCancel",
        "transactionId",
        "playerId",
        "authToken",
        "created",
    ],
)
def test_10000_char_ids_are_invalid(name: str) -> None:
    changes: dict[str, Any] = {name: "x" * 10_000}
    answer = rejected(accept(cancel_item(**changes)))
    assert answer["errorCode"] == hpgames.ERROR_INVALID_REQUEST
    if name == "transactionId":
        assert answer["transactionId"] == ""  # too long to echo


def test_256_char_ids_are_valid() -> None:
    assert accepted(accept(cancel_item(transactionId="x" * 256, playerId="p" * 256)))


def test_empty_string_id_is_invalid() -> None:
    assert rejected(accept(cancel_item(playerId="")))["errorCode"] == 2


def test_lone_surrogate_in_a_string_is_invalid() -> None:
    item = cancel_item()
    body = to_json(item).replace('"player-1"', '"\\ud800"').encode()
    assert rejected(accept(body))["errorCode"] == hpgames.ERROR_INVALID_REQUEST


@pytest.mark.parametrize(
    ("timestamp", "ok"),
    [
        (NOW_MS, True),
        (NOW_MS - 300_000, True),
        (NOW_MS + 300_000, True),
        (NOW_MS - 301_000, False),
        (NOW_MS + 301_000, False),
        (NOW_MS // 1000, True),  # seconds, as the seed's example shows
        (NOW_MS // 1000 - 301, False),
        (NOW_MS // 1000 + 301, False),
        (0, False),
        (-NOW_MS, False),
    ],
)
def test_timestamp_skew(timestamp: int, ok: bool) -> None:
    result = accept(cancel_item(timestamp=Lit(str(timestamp))))
    if ok:
        assert accepted(result)
    else:
        assert rejected(result)["errorCode"] == hpgames.ERROR_INVALID_REQUEST


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"\xff\xfe{}",
        to_json(cancel_item()).encode("utf-16"),
        b'{"merchantId": ',
        b"not json",
        b'{"a": 1, "a": 2}',
        b"[" + to_json(cancel_item()).encode() + b"]",
        b'"a string"',
        b"42",
        b"null",
        b"[" * 100 + b"]" * 100,
    ],
)
def test_unusable_body_is_invalid(body: bytes) -> None:
    answer = rejected(accept(body))
    assert answer == {
        "errorCode": 2,
        "errorText": "Invalid request",
        "balance": 0,
        "currency": "",
        "accountTransactionId": "",
        "transactionId": "",
    }


def test_invalid_reply_has_the_single_response_shape() -> None:
    answer = rejected(hpgames.invalid_reply())
    assert answer["errorCode"] == hpgames.ERROR_INVALID_REQUEST


# Outcome to answer.


@pytest.mark.parametrize(
    ("kind", "error_code", "balance"),
    [
        (Outcome.REFUNDED, 0, "110.00"),
        (Outcome.BET_UNKNOWN, 0, "100.00"),
        (Outcome.ALREADY_CANCELLED, 0, "100.00"),
        (Outcome.BET_SETTLED, hpgames.ERROR_BET_SETTLED, "100.00"),
        (Outcome.PLAYER_MISMATCH, hpgames.ERROR_PLAYER_MISMATCH, "100.00"),
        (Outcome.AMOUNT_MISMATCH, hpgames.ERROR_AMOUNT_MISMATCH, "100.00"),
        (Outcome.INVALID, hpgames.ERROR_INVALID_REQUEST, "100.00"),
    ],
)
def test_outcome_mapping(kind: Outcome, error_code: int, balance: str) -> None:
    result = accepted(accept(cancel_item()))
    after = "110.00" if kind is Outcome.REFUNDED else None
    answer = decode(result.answer([outcome(kind, after=after)]))
    assert_answer_shape(answer)
    assert answer["errorCode"] == error_code
    assert answer["errorText"] == hpgames.ERROR_TEXTS[error_code]
    assert answer["balance"] == Decimal(balance)
    assert answer["currency"] == "EUR"
    assert answer["accountTransactionId"] == "ledger-1"
    assert answer["transactionId"] == "cancel-1"


def test_every_outcome_has_an_error_code_and_a_text() -> None:
    assert set(hpgames.ERROR_OF_OUTCOME) == set(Outcome)
    assert set(hpgames.ERROR_OF_OUTCOME.values()) <= set(hpgames.ERROR_TEXTS)
    assert hpgames.ERROR_TEXTS[0] == ""
    assert all(text for code, text in hpgames.ERROR_TEXTS.items() if code)


def test_no_outcome_within_the_deadline_is_a_retryable_error() -> None:
    result = accepted(accept(cancel_item()))
    answer = decode(result.answer([None]))
    assert_answer_shape(answer)
    assert answer["errorCode"] == hpgames.ERROR_INTERNAL
    assert answer["balance"] == 0
    assert answer["currency"] == "EUR"
    assert answer["accountTransactionId"] == ""
    assert answer["transactionId"] == "cancel-1"


def test_bet_unknown_without_an_account_answers_success_with_balance_zero() -> None:
    result = accepted(accept(cancel_item()))
    answer = decode(result.answer([outcome(Outcome.BET_UNKNOWN, before=None)]))
    assert answer["errorCode"] == 0
    assert answer["balance"] == 0
    assert answer["currency"] == "EUR"


def test_a_replayed_outcome_gets_the_same_answer() -> None:
    result = accepted(accept(cancel_item()))
    first = result.answer([outcome(Outcome.REFUNDED, after="110.00")])
    again = result.answer([outcome(Outcome.REFUNDED, after="110.00", replayed=True)])
    assert first == again


def test_balance_is_written_as_an_exact_json_number() -> None:
    result = accepted(accept(cancel_item()))
    response = result.answer([outcome(Outcome.REFUNDED, after="12345678901.23")])
    assert b'"balance":12345678901.23,' in response.body


# Bulk.


def bulk(*items: Any) -> dict[str, Any]:
    return {"cancelDebitRequests": list(items)}


def answers(response: Response) -> list[dict[str, Any]]:
    body = decode(response)
    assert list(body) == ["cancelDebitResponses"]
    for answer in body["cancelDebitResponses"]:
        assert_answer_shape(answer)
    return list(body["cancelDebitResponses"])


def test_bulk_mixed_items_are_answered_in_request_order() -> None:
    good_a = cancel_item(n=1)
    bad_hash = sign(cancel_item(n=2, signed=False), key="another-key")
    good_c = cancel_item(n=3, playerId="player-2", currency="USD", amount=Lit("5.5"))
    bad_amount = cancel_item(n=4, amount=Lit("-1"))
    not_an_object = Lit("42")
    result = accepted(accept_bulk(bulk(good_a, bad_hash, good_c, bad_amount, not_an_object)))

    assert [e.cancel_id for e in stamped(result, ENVELOPE)] == ["cancel-1", "cancel-3"]
    assert [e.player for e in stamped(result, ENVELOPE)] == ["player-1", "player-2"]
    assert [e.correlation_id for e in stamped(result, ENVELOPE)] == ["req-1.0", "req-1.1"]
    assert stamped(result, ENVELOPE)[1].currency == "USD"
    assert stamped(result, ENVELOPE)[1].items[0].amount == Decimal("5.5")

    outcomes = [
        outcome(Outcome.REFUNDED, after="110.00"),
        outcome(
            Outcome.BET_SETTLED,
            cancel_id="cancel-3",
            bet_tx="debit-3",
            before="7.00",
            currency="USD",
            correlation_id="req-1.1",
            ledger_tx="ledger-3",
        ),
    ]
    got = answers(result.answer(outcomes))
    assert [(a["errorCode"], a["transactionId"]) for a in got] == [
        (0, "cancel-1"),
        (hpgames.ERROR_AUTHENTICATION, "cancel-2"),
        (hpgames.ERROR_BET_SETTLED, "cancel-3"),
        (hpgames.ERROR_INVALID_REQUEST, "cancel-4"),
        (hpgames.ERROR_INVALID_REQUEST, ""),
    ]
    assert [a["balance"] for a in got] == [Decimal("110.00"), 0, Decimal("7.00"), 0, 0]
    assert [a["currency"] for a in got] == ["EUR", "EUR", "USD", "EUR", ""]
    assert [a["accountTransactionId"] for a in got] == ["ledger-1", "", "ledger-3", "", ""]


def test_bulk_checks_each_items_hash_and_merchant() -> None:
    items = [
        cancel_item(n=1),
        cancel_item(n=2, merchantId="someone-else"),
        sign(cancel_item(n=3, signed=False), key="another-key"),
        cancel_item(n=4),
    ]
    items[3]["transactionIdToCancel"] = "debit-tampered"
    result = accepted(accept_bulk(bulk(*items)))
    assert [e.cancel_id for e in stamped(result, ENVELOPE)] == ["cancel-1"]
    got = answers(result.answer([None]))
    assert [a["errorCode"] for a in got] == [
        hpgames.ERROR_INTERNAL,
        hpgames.ERROR_AUTHENTICATION,
        hpgames.ERROR_AUTHENTICATION,
        hpgames.ERROR_AUTHENTICATION,
    ]


def test_bulk_items_are_checked_against_the_clock_one_by_one() -> None:
    stale = cancel_item(n=2, timestamp=Lit(str(NOW_MS - 301_000)))
    result = accepted(accept_bulk(bulk(cancel_item(n=1), stale)))
    assert len(result.cancels) == 1
    got = answers(result.answer([outcome(Outcome.ALREADY_CANCELLED)]))
    assert [a["errorCode"] for a in got] == [0, hpgames.ERROR_INVALID_REQUEST]


def test_bulk_repeating_a_cancel_with_the_same_content_shares_its_answer() -> None:
    first = cancel_item(n=1)
    again = cancel_item(n=1, timestamp=Lit(str(NOW_MS - 1000)))  # a resend: new hash
    result = accepted(accept_bulk(bulk(first, cancel_item(n=2), again)))
    assert [e.cancel_id for e in stamped(result, ENVELOPE)] == ["cancel-1", "cancel-2"]
    outcomes = [
        outcome(Outcome.REFUNDED, after="110.00"),
        outcome(Outcome.BET_UNKNOWN, cancel_id="cancel-2", bet_tx="debit-2", before="110.00"),
    ]
    got = answers(result.answer(outcomes))
    assert got[0] == got[2]
    assert got[0]["balance"] == Decimal("110.00")


def test_bulk_reusing_a_cancel_id_for_other_content_is_invalid() -> None:
    other = cancel_item(n=1, amount=Lit("20"))
    result = accepted(accept_bulk(bulk(cancel_item(n=1), other)))
    assert len(result.cancels) == 1
    got = answers(result.answer([outcome(Outcome.REFUNDED, after="110.00")]))
    assert [(a["errorCode"], a["transactionId"]) for a in got] == [
        (0, "cancel-1"),
        (hpgames.ERROR_INVALID_REQUEST, "cancel-1"),
    ]


def test_bulk_with_every_item_refused_is_answered_at_once() -> None:
    items = [cancel_item(n=1, amount=Lit("0")), Lit("null"), cancel_item(n=3, currency="ZZZ")]
    result = accept_bulk(bulk(*items))
    assert isinstance(result, Response)
    got = answers(result)
    assert [(a["errorCode"], a["transactionId"]) for a in got] == [
        (2, "cancel-1"),
        (2, ""),
        (2, "cancel-3"),
    ]


@pytest.mark.parametrize(
    ("items", "code"),
    [
        ([Lit("1")] * 1000, hpgames.ERROR_INVALID_REQUEST),
        ([Lit("{}")] * 1000, hpgames.ERROR_INVALID_REQUEST),
        ([cancel_item(n=n, hash="0" * 64) for n in range(300)], hpgames.ERROR_AUTHENTICATION),
    ],
)
def test_a_bulk_where_nothing_authenticates_gets_one_error_not_one_per_item(
    items: list[Any], code: int
) -> None:
    """Issue 11: a 10 KB unauthenticated bulk of junk got a 585 KB answer."""
    body = to_json(bulk(*items)).encode()
    result = accept_bulk(body)
    assert isinstance(result, Response)
    (answer,) = answers(result)
    assert answer["errorCode"] == code
    assert len(result.body) < 200


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff",
        b"{",
        b"[]",
        b'"cancelDebitRequests"',
        b"{}",
        b'{"cancelDebitRequests": null}',
        b'{"cancelDebitRequests": {}}',
        b'{"cancelDebitRequests": []}',
        to_json({"cancelDebitRequests": [cancel_item()] * 1001}).encode(),
        b'{"cancelDebitRequests": [' + b"[" * 40 + b"]" * 40 + b"]}",
        b'{"cancelDebitRequests": [' + b"0," * 40_000 + b"0]}",
        to_json(cancel_item()).encode(),  # a single request sent to the bulk route
    ],
)
def test_malformed_bulk_body_gets_one_error_in_the_bulk_shape(body: bytes) -> None:
    """Issue 11: a malformed bulk body got the single-item shape."""
    result = accept_bulk(body)
    assert isinstance(result, Response)
    (answer,) = answers(result)
    assert answer["errorCode"] == hpgames.ERROR_INVALID_REQUEST
    assert (answer["transactionId"], answer["balance"]) == ("", 0)


def test_bulk_over_the_item_limit_is_refused_whole() -> None:
    assert hpgames.BULK_ITEMS_MAX == 1000
    body = '{"cancelDebitRequests":[' + ",".join(["{}"] * (hpgames.BULK_ITEMS_MAX + 1)) + "]}"
    refused = accept_bulk(body.encode())
    assert isinstance(refused, Response)
    (answer,) = answers(refused)
    assert answer["errorCode"] == hpgames.ERROR_INVALID_REQUEST


def test_a_bulk_with_fields_the_seed_does_not_list_is_accepted_and_counted() -> None:
    body = {**bulk(cancel_item(n=1, roundId="r"), cancel_item(n=2)), "batchId": "b-1"}
    result = accepted(accept_bulk(body))
    assert len(result.cancels) == 2
    assert result.unknown_fields == 2


def test_bulk_of_1000_items_becomes_1000_events() -> None:
    items = [cancel_item(n=n, playerId=f"player-{n % 7}") for n in range(1000)]
    result = accepted(accept_bulk(bulk(*items)))
    assert len(result.cancels) == 1000
    assert [e.cancel_id for e in stamped(result, ENVELOPE)] == [f"cancel-{n}" for n in range(1000)]
    assert len({e.correlation_id for e in stamped(result, ENVELOPE)}) == 1000
    outcomes = [
        outcome(
            Outcome.REFUNDED,
            cancel_id=f"cancel-{n}",
            bet_tx=f"debit-{n}",
            after=f"{100 + n}.00",
            correlation_id=f"req-1.{n}",
        )
        for n in range(1000)
    ]
    got = answers(result.answer(outcomes))
    assert [a["transactionId"] for a in got] == [f"cancel-{n}" for n in range(1000)]
    assert [a["balance"] for a in got] == [Decimal(100 + n) for n in range(1000)]


def test_bulk_timeouts_are_per_event() -> None:
    result = accepted(accept_bulk(bulk(cancel_item(n=1), cancel_item(n=2))))
    got = answers(result.answer([outcome(Outcome.REFUNDED, after="1"), None]))
    assert [a["errorCode"] for a in got] == [0, hpgames.ERROR_INTERNAL]


# Routing rows.


def test_routes_bind_the_configuration() -> None:
    secrets = provider_secrets(HPGAMES_MERCHANT_ID=MERCHANT, HPGAMES_SECRET_KEY=SECRET)
    single, many = hpgames.routes(secrets)
    assert (single.path, many.path) == ("/hpgames/cancelDebit", "/hpgames/bulkCancelDebit")
    assert single.provider is many.provider is Provider.HPGAMES
    assert accepted(single.accept(request(cancel_item())))
    assert accepted(many.accept(request(bulk(cancel_item()))))
    assert single.invalid(NOW_MS) == hpgames.invalid_reply()
    assert many.invalid(NOW_MS) == hpgames.bulk_invalid_reply()
    assert rejected(single.invalid(NOW_MS))["errorCode"] == hpgames.ERROR_INVALID_REQUEST
