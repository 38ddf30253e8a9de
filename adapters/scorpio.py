"""Scorpio Play "Cancel" (seed 000): verify, parse and normalize, render.

Signature: `X-Request-Signature` is base64(HMAC-SHA512(SCORPIO_API_TOKEN, values)),
where values are the body's top-level values sorted by key name and joined with ",",
numbers as written in the JSON and strings as is. Every answer is HTTP 200 with
`{"balance": number, "statusCode": string}`.

Tolerant reader: a top-level field the seed does not list is accepted and ignored; it
is still covered by the signature (every top-level value is signed), so it cannot be
added in transit. Listed strings follow the one text rule (no control characters, at
most 256 characters).
"""

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any

from adapters import jsonbody
from adapters.contract import (
    Accepted,
    CancelFields,
    Outcomes,
    ProviderAdapter,
    Request,
    Response,
    Route,
    epoch_ms,
    within_skew,
)
from adapters.credentials import ProviderSecrets, Secret
from schemas import (
    CancelItem,
    CancelOutcome,
    MoneyError,
    Outcome,
    Provider,
    validate_amount,
    validate_currency,
)

API_TOKEN = Secret("SCORPIO_API_TOKEN", dev_value="dev-scorpio-token", shared=True)

SIGNATURE_HEADER = "x-request-signature"
SIGNATURE_CHARS_MAX = 200

STATUS_OK = "OK"
STATUS_NOT_AUTHENTICATED = "ERR_NOT_AUTHENTICATED"
STATUS_DOES_NOT_EXIST = "ERR_TRANSACTION_DOES_NOT_EXIST"
STATUS_ROLLED_BACK = "ERR_TRANSACTION_ROLLED_BACK"
STATUS_INTEGRITY = "ERR_INTEGRITY_CHECK_FAILED"
STATUS_UNKNOWN = "ERR_UNKNOWN"

STATUS_OF_OUTCOME: Mapping[Outcome, str] = {
    Outcome.REFUNDED: STATUS_OK,
    Outcome.BET_UNKNOWN: STATUS_DOES_NOT_EXIST,
    Outcome.ALREADY_CANCELLED: STATUS_ROLLED_BACK,
    Outcome.BET_SETTLED: STATUS_UNKNOWN,
    Outcome.PLAYER_MISMATCH: STATUS_NOT_AUTHENTICATED,
    Outcome.AMOUNT_MISMATCH: STATUS_UNKNOWN,
    Outcome.INVALID: STATUS_UNKNOWN,
}

_STRING_FIELDS = (
    "command",
    "transactionId",
    "referenceId",
    "playerId",
    "roundId",
    "providerName",
    "gameCode",
    "gameName",
    "currency",
)
_NUMBER_FIELDS = ("providerId", "amount", "timestamp")
FIELDS = frozenset(_STRING_FIELDS + _NUMBER_FIELDS)


@dataclass(frozen=True)
class ScorpioConfig:
    api_token: bytes


@dataclass(frozen=True)
class ScorpioCancel:
    """A validated Scorpio cancel request."""

    transaction_id: str
    reference_id: str
    player_id: str
    round_id: str
    currency: str
    amount: Decimal
    timestamp_ms: int


def signing_string(body: Mapping[str, Any]) -> bytes:
    """Top-level values sorted by key, joined with ','; numbers as written."""
    return ",".join(jsonbody.literal_text(body[key]) for key in sorted(body)).encode()


def sign(body: Mapping[str, Any], api_token: bytes) -> str:
    digest = hmac.new(api_token, signing_string(body), hashlib.sha512).digest()
    return base64.b64encode(digest).decode()


def verify(body: Mapping[str, Any], signature: str | None, api_token: bytes) -> bool:
    """Constant-time check of `X-Request-Signature` against the parsed body."""
    if not signature or len(signature) > SIGNATURE_CHARS_MAX:
        return False
    try:
        expected = sign(body, api_token)
    except jsonbody.BodyError:
        return False
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))


def parse(body: Mapping[str, Any], now_ms: int) -> ScorpioCancel:
    """Validate a signed body's listed fields (others are ignored); raises BodyError or
    MoneyError."""
    fields = {name: jsonbody.required_string(body, name) for name in _STRING_FIELDS}
    if fields["command"] != "cancel":
        raise jsonbody.BodyError("command must be 'cancel'")
    jsonbody.integer(body, "providerId")
    timestamp_ms = epoch_ms(jsonbody.integer(body, "timestamp"))
    if not within_skew(timestamp_ms, now_ms):
        raise jsonbody.BodyError("timestamp too far from the server clock")
    currency = validate_currency(fields["currency"])
    amount = validate_amount(jsonbody.decimal(body, "amount"), currency)
    return ScorpioCancel(
        transaction_id=fields["transactionId"],
        reference_id=fields["referenceId"],
        player_id=fields["playerId"],
        round_id=fields["roundId"],
        currency=currency,
        amount=amount,
        timestamp_ms=timestamp_ms,
    )


def to_fields(cancel: ScorpioCancel) -> CancelFields:
    items = (
        CancelItem(bet_tx=cancel.reference_id, amount=cancel.amount, round_id=cancel.round_id),
    )
    return CancelFields(
        Provider.SCORPIO, cancel.transaction_id, cancel.player_id, cancel.currency, items
    )


def reply(status_code: str, balance: Decimal | None = None) -> Response:
    body = {"balance": balance if balance is not None else Decimal(0), "statusCode": status_code}
    return Response(status=200, body=jsonbody.dumps(body))


def refused(received_at_ms: int) -> Response:
    """The answer to a body the ingress refuses unread."""
    return reply(STATUS_UNKNOWN)


def accept(request: Request, config: ScorpioConfig) -> Accepted | Response:
    try:
        body = jsonbody.require_object(jsonbody.loads(request.body))
    except jsonbody.BodyError:
        return reply(STATUS_UNKNOWN)
    if not verify(body, request.headers.get(SIGNATURE_HEADER), config.api_token):
        return reply(STATUS_INTEGRITY)
    try:
        cancel = parse(body, request.received_at_ms)
    except (jsonbody.BodyError, MoneyError):
        return reply(STATUS_UNKNOWN)
    return Accepted(
        cancels=(to_fields(cancel),),
        answer=partial(render, cancel),
        unknown_fields=jsonbody.unknown_fields(body, FIELDS),
    )


def render(cancel: ScorpioCancel, outcomes: Outcomes) -> Response:
    """The answer to the one outcome (Scorpio's answer names nothing of the request)."""
    assert len(outcomes) == 1
    outcome: CancelOutcome | None = outcomes[0]
    if outcome is None:  # no outcome in time: the provider retries
        return reply(STATUS_UNKNOWN)
    balance = outcome.balance_after if outcome.balance_after is not None else None
    return reply(STATUS_OF_OUTCOME[outcome.outcome], balance)


def routes(secrets: ProviderSecrets) -> list[Route]:
    config = ScorpioConfig(api_token=secrets.value(API_TOKEN.variable).encode())
    return [
        Route(
            path="/scorpio",
            provider=Provider.SCORPIO,
            accept=partial(accept, config=config),
            invalid=refused,
        )
    ]


ADAPTER = ProviderAdapter(Provider.SCORPIO, secrets=(API_TOKEN,), routes=routes)
