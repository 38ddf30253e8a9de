"""Scorpio Play adapter: signature vectors, parsing, outcome-to-reply mapping (no I/O)."""

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from adapters import jsonbody, scorpio
from adapters.contract import Accepted, Envelope, Request, Response
from schemas import CancelOutcome, ItemResult, Outcome, Provider, ReplyTo
from tests.providers import stamped

TOKEN = b"test-scorpio-token"
NOW_MS = 1_700_000_000_000
ENVELOPE = Envelope(
    "req-1",
    ReplyTo(topic="replies", partition=3),
    deadline_ms=10**12 + 3500,
    requested_at_ms=NOW_MS,
)


def body_text(
    amount: str = "10.5", timestamp: float | None = NOW_MS // 1000, **changes: object
) -> str:
    fields: dict[str, object] = {
        "command": "cancel",
        "transactionId": "tx-2",
        "referenceId": "tx-1",
        "playerId": "player-9",
        "roundId": "round-1",
        "providerId": 12,
        "providerName": "Scorpio",
        "gameCode": "g1",
        "gameName": "Game One",
        "currency": "EUR",
        "timestamp": timestamp,
    }
    fields.update(changes)
    fields = {k: v for k, v in fields.items() if v is not None}
    text = json.dumps(fields)
    return text[:-1] + f', "amount": {amount}}}'


def signed(text: str, token: bytes = TOKEN) -> Request:
    signature = scorpio.sign(jsonbody.loads(text.encode()), token)
    return Request({"x-request-signature": signature}, text.encode(), NOW_MS)


def answer(response: Accepted | Response) -> dict[str, Any]:
    assert isinstance(response, Response), "an immediate answer"
    assert response.status == 200  # Scorpio answers everything with HTTP 200
    body = json.loads(response.body)
    assert isinstance(body, dict)
    return body


# --- signature vectors ---------------------------------------------------------------


def test_signature_known_answer_vector() -> None:
    text = '{"b": "x", "a": 10.50, "c": 1e2}'
    # Values sorted by key (a, b, c), numbers exactly as written, joined with ",".
    expected = base64.b64encode(hmac.new(TOKEN, b"10.50,x,1e2", hashlib.sha512).digest()).decode()
    assert scorpio.signing_string(jsonbody.loads(text.encode())) == b"10.50,x,1e2"
    assert scorpio.sign(jsonbody.loads(text.encode()), TOKEN) == expected


def test_valid_signature_is_accepted() -> None:
    result = scorpio.accept(signed(body_text()), scorpio.ScorpioConfig(TOKEN))
    assert isinstance(result, Accepted)


def test_number_literals_are_signed_as_written() -> None:
    a = jsonbody.loads(body_text(amount="10.5").encode())
    b = jsonbody.loads(body_text(amount="10.50").encode())
    assert scorpio.sign(a, TOKEN) != scorpio.sign(b, TOKEN)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t.replace('"tx-1"', '"tx-3"'),
        lambda t: t.replace('"amount": 10.5', '"amount": 100.5'),
        lambda t: t.replace('"EUR"', '"USD"'),
    ],
)
def test_tampered_body_fails_integrity(tamper: Callable[[str], str]) -> None:
    request = signed(body_text())
    changed = Request(request.headers, tamper(request.body.decode()).encode(), NOW_MS)
    result = scorpio.accept(changed, scorpio.ScorpioConfig(TOKEN))
    assert answer(result) == {"balance": 0, "statusCode": "ERR_INTEGRITY_CHECK_FAILED"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-request-signature": ""},
        {"x-request-signature": "a" * 500},
        {"x-request-signature": "é"},
    ],
)
def test_missing_or_garbage_signature_fails_integrity(headers: dict[str, str]) -> None:
    request = Request(headers, body_text().encode(), NOW_MS)
    result = scorpio.accept(request, scorpio.ScorpioConfig(TOKEN))
    assert answer(result)["statusCode"] == "ERR_INTEGRITY_CHECK_FAILED"


def test_signature_with_other_key_fails_integrity() -> None:
    result = scorpio.accept(signed(body_text(), b"other"), scorpio.ScorpioConfig(TOKEN))
    assert answer(result)["statusCode"] == "ERR_INTEGRITY_CHECK_FAILED"


def test_values_are_sorted_by_key_not_by_position() -> None:
    forward = jsonbody.loads(b'{"a": "1", "b": "2"}')
    backward = jsonbody.loads(b'{"b": "2", "a": "1"}')
    assert scorpio.signing_string(forward) == scorpio.signing_string(backward) == b"1,2"


# --- parsing and normalization -------------------------------------------------------


def test_accepted_request_becomes_one_exact_event() -> None:
    result = scorpio.accept(signed(body_text(amount="10.50")), scorpio.ScorpioConfig(TOKEN))
    assert isinstance(result, Accepted)
    [event] = stamped(result, ENVELOPE)
    assert event.provider is Provider.SCORPIO
    assert (event.cancel_id, event.player, event.currency) == ("tx-2", "player-9", "EUR")
    assert event.items[0].bet_tx == "tx-1"
    assert event.items[0].amount == Decimal("10.50")
    assert event.reply_to == ENVELOPE.reply_to
    assert event.deadline_ms == ENVELOPE.deadline_ms
    assert event.correlation_id == "req-1.0"


def test_retry_with_new_timestamp_has_the_same_digest() -> None:
    config = scorpio.ScorpioConfig(TOKEN)
    first = scorpio.accept(signed(body_text()), config)
    retry = scorpio.accept(signed(body_text(timestamp=NOW_MS // 1000 + 5)), config)
    assert isinstance(first, Accepted)
    assert isinstance(retry, Accepted)
    assert stamped(first, ENVELOPE)[0].request_digest == stamped(retry, ENVELOPE)[0].request_digest


INVALID_BODIES = {
    "wrong command": body_text(command="bet"),
    "missing transactionId": body_text(transactionId=None),
    "missing referenceId": body_text(referenceId=None),
    "missing playerId": body_text(playerId=None),
    "missing timestamp": body_text(timestamp=None),
    "missing providerId": body_text(providerId=None),
    "string amount": body_text(amount='"10.50"'),
    "number playerId": body_text(playerId=5),
    "bool providerId": body_text(providerId=True),
    "nul in transactionId": body_text(transactionId="c\u0000"),
    "newline in referenceId": body_text(referenceId="b\n"),
    "delete in playerId": body_text(playerId="p\u007f"),
    "control in gameName": body_text(gameName="G\u001b[31m"),
    "long roundId": body_text(roundId="r" * 257),
    "past 28 digits": body_text(amount="10.000000000000000000000000000001"),
    "negative amount": body_text(amount="-1"),
    "zero amount": body_text(amount="0"),
    "too many decimals": body_text(amount="1.001"),
    "huge amount": body_text(amount="1e30"),
    "unknown currency": body_text(currency="XXX"),
    "10k id": body_text(transactionId="x" * 10_000),
    "stale timestamp": body_text(timestamp=NOW_MS // 1000 - 301),
    "future timestamp": body_text(timestamp=NOW_MS // 1000 + 301),
    "stale ms timestamp": body_text(timestamp=NOW_MS - 301_000),
    "float timestamp": body_text(timestamp=NOW_MS / 1000),
}


@pytest.mark.parametrize("text", INVALID_BODIES.values(), ids=INVALID_BODIES.keys())
def test_invalid_signed_request_is_refused_with_err_unknown(text: str) -> None:
    result = scorpio.accept(signed(text), scorpio.ScorpioConfig(TOKEN))
    assert answer(result) == {"balance": 0, "statusCode": "ERR_UNKNOWN"}


@pytest.mark.parametrize(
    ("changes", "unknown"),
    [({"sessionId": "s-1"}, 1), ({"sessionId": "s-1", "bonus": 2, "gameVersion": "1.2"}, 3)],
)
def test_fields_the_seed_does_not_list_are_accepted_signed_and_counted(
    changes: dict[str, Any], unknown: int
) -> None:
    """Issue 11: Scorpio + "sessionId" was ERR_UNKNOWN. Accepted, ignored, counted, and
    still covered by the signature."""
    text = body_text(**changes)
    result = scorpio.accept(signed(text), scorpio.ScorpioConfig(TOKEN))
    assert isinstance(result, Accepted), result
    assert result.unknown_fields == unknown
    plain = scorpio.accept(signed(body_text()), scorpio.ScorpioConfig(TOKEN))
    assert isinstance(plain, Accepted)
    assert stamped(result, ENVELOPE)[0].request_digest == stamped(plain, ENVELOPE)[0].request_digest
    tampered = signed(text)
    tampered = Request(tampered.headers, tampered.body.replace(b'"s-1"', b'"s-2"'), NOW_MS)
    assert answer(scorpio.accept(tampered, scorpio.ScorpioConfig(TOKEN))) == {
        "balance": 0,
        "statusCode": "ERR_INTEGRITY_CHECK_FAILED",
    }


@pytest.mark.parametrize(
    "raw",
    [b"", b"   ", b"{", b"[]", b'"x"', b"\xff\xfe", b'{"a": NaN}', b'{"a": 1, "a": 2}', b"[" * 100],
)
def test_malformed_body_gets_an_answer(raw: bytes) -> None:
    request = Request({"x-request-signature": "x"}, raw, NOW_MS)
    result = scorpio.accept(request, scorpio.ScorpioConfig(TOKEN))
    assert answer(result) == {"balance": 0, "statusCode": "ERR_UNKNOWN"}


def test_timestamp_within_skew_in_seconds_and_milliseconds() -> None:
    config = scorpio.ScorpioConfig(TOKEN)
    for timestamp in (NOW_MS // 1000 - 299, NOW_MS + 299_000):
        assert isinstance(scorpio.accept(signed(body_text(timestamp=timestamp)), config), Accepted)


# --- outcomes to replies -------------------------------------------------------------


def outcome(kind: Outcome, after: str | None = "110.00") -> CancelOutcome:
    return CancelOutcome(
        correlation_id="req-1.0",
        provider=Provider.SCORPIO,
        cancel_id="tx-2",
        outcome=kind,
        items=[ItemResult(bet_tx="tx-1", outcome=kind, amount=Decimal("10.00"))],
        player="player-9",
        currency="EUR",
        balance_before=Decimal("100.00"),
        balance_after=None if after is None else Decimal(after),
        ledger_tx="lt-1",
        decided_at_ms=int(time.time() * 1000),
    )


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        (Outcome.REFUNDED, "OK"),
        (Outcome.BET_UNKNOWN, "ERR_TRANSACTION_DOES_NOT_EXIST"),
        (Outcome.ALREADY_CANCELLED, "ERR_TRANSACTION_ROLLED_BACK"),
        (Outcome.BET_SETTLED, "ERR_UNKNOWN"),
        (Outcome.PLAYER_MISMATCH, "ERR_NOT_AUTHENTICATED"),
        (Outcome.AMOUNT_MISMATCH, "ERR_UNKNOWN"),
        (Outcome.INVALID, "ERR_UNKNOWN"),
    ],
)
def test_every_outcome_maps_to_its_status_code(kind: Outcome, status: str) -> None:
    accepted = scorpio.accept(signed(body_text()), scorpio.ScorpioConfig(TOKEN))
    assert isinstance(accepted, Accepted)
    response = accepted.answer([outcome(kind)])
    assert response.body == f'{{"balance":110.00,"statusCode":"{status}"}}'.encode()


def test_every_outcome_has_a_mapping() -> None:
    assert set(scorpio.STATUS_OF_OUTCOME) == set(Outcome)


def test_no_outcome_in_time_is_err_unknown_so_the_provider_retries() -> None:
    accepted = scorpio.accept(signed(body_text()), scorpio.ScorpioConfig(TOKEN))
    assert isinstance(accepted, Accepted)
    assert answer(accepted.answer([None])) == {"balance": 0, "statusCode": "ERR_UNKNOWN"}


def test_balance_is_a_json_number_with_exact_decimals() -> None:
    accepted = scorpio.accept(signed(body_text()), scorpio.ScorpioConfig(TOKEN))
    assert isinstance(accepted, Accepted)
    body = accepted.answer([outcome(Outcome.REFUNDED, "0.30")]).body
    assert body == b'{"balance":0.30,"statusCode":"OK"}'
    assert json.loads(body, parse_float=Decimal)["balance"] == Decimal("0.30")
