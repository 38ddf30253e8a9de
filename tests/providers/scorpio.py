"""Scorpio Play (seed 000) as the tests write and read it."""

import base64
import hashlib
import hmac
from typing import Any

from tests.providers.contract import Anatomy, Api, Cancel
from tests.providers.credentials import Keys
from tests.providers.wire import (
    BAD_SIGNATURES,
    JSON_TYPE,
    Answer,
    Lit,
    literal,
    number,
    parse_json,
    path,
    paths,
)

SCORPIO_CODES = frozenset(
    {
        "OK",
        "ERR_NOT_AUTHENTICATED",
        "ERR_TRANSACTION_DOES_NOT_EXIST",
        "ERR_TRANSACTION_ROLLED_BACK",
        "ERR_INTEGRITY_CHECK_FAILED",
        "ERR_UNKNOWN",
    }
)


def scorpio_fields(cancel: Cancel, now_ms: int) -> dict[str, Any]:
    return {
        "command": "cancel",
        "transactionId": cancel.cancel_id,
        "referenceId": cancel.bet_tx,
        "playerId": cancel.player,
        "roundId": "round-1",
        "providerId": Lit("7"),
        "providerName": "Scorpio Play",
        "gameCode": "sp-1",
        "gameName": "Scorpio Slots",
        "currency": cancel.currency,
        "amount": Lit(cancel.amount),
        "timestamp": Lit(str(now_ms // 1000)),
    }


def scorpio_seal(body: Any, keys: Keys) -> tuple[Any, dict[str, str]]:
    """`X-Request-Signature`: base64 HMAC-SHA512 over the top-level values by key."""
    values = [literal(body[key]) for key in sorted(body)] if isinstance(body, dict) else []
    digest = hmac.new(keys.scorpio_token.encode(), ",".join(values).encode(), hashlib.sha512)
    signature = base64.b64encode(digest.digest()).decode()
    return body, {**JSON_TYPE, "x-request-signature": signature}


def scorpio_answers(status: int, raw: bytes) -> tuple[Answer, ...]:
    assert status == 200, status
    body = parse_json(raw)
    assert isinstance(body, dict), body
    assert set(body) == {"balance", "statusCode"}, body
    assert body["statusCode"] in SCORPIO_CODES, body
    return (Answer(status, body["statusCode"], number(body["balance"]), body),)


SCORPIO = Api(
    name="scorpio",
    path="/scorpio",
    provider="scorpio",
    fields=scorpio_fields,
    seal=scorpio_seal,
    answers=scorpio_answers,
    refusals={"invalid": (200, "ERR_UNKNOWN"), "auth": (200, "ERR_INTEGRITY_CHECK_FAILED")},
    anatomy=Anatomy(
        strings=paths(
            "command transactionId referenceId playerId roundId providerName gameCode gameName"
            " currency"
        ),
        numbers=paths("providerId amount timestamp"),
        ids=paths("transactionId referenceId playerId roundId"),
        amount=path("amount"),
        currency=path("currency"),
        timestamp=path("timestamp"),
        timestamp_in_seconds=True,
        text=path("playerId"),
        signed=path("amount"),
        auth_header="x-request-signature",
        bad_auth_headers=(*BAD_SIGNATURES, base64.b64encode(bytes(64)).decode()),
    ),
)
