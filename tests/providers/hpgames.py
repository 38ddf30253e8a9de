"""HPGames, single and bulk cancel (seed 001), as the tests write and read it."""

import hashlib
import hmac
from decimal import Decimal
from typing import Any

from refundctl import config
from tests.providers.contract import Anatomy, Api, Cancel
from tests.providers.credentials import Keys
from tests.providers.wire import (
    JSON_TYPE,
    SIGN,
    Answer,
    Lit,
    integer,
    literal,
    number,
    parse_json,
    path,
    paths,
)

HPGAMES_FIELDS = (
    "errorCode",
    "errorText",
    "balance",
    "currency",
    "accountTransactionId",
    "transactionId",
)
HPGAMES_BULK_KEY = "cancelDebitRequests"


def hpgames_fields(cancel: Cancel, now_ms: int) -> dict[str, Any]:
    """One CancelDebitRequest (also a bulk item), in the seed's order."""
    return {
        "merchantId": config.DEV_SECRETS["HPGAMES_MERCHANT_ID"],
        "timestamp": Lit(str(now_ms)),
        "betIdToCancel": f"round-of-{cancel.bet_tx}",
        "transactionIdToCancel": cancel.bet_tx,
        "transactionId": cancel.cancel_id,
        "hash": SIGN,
        "playerId": cancel.player,
        "gameId": Lit("200100"),
        "currency": cancel.currency,
        "authToken": "session-1",
        "amount": Lit(cancel.amount),
        "created": "2026-01-01T00:00:00Z",
    }


def hpgames_bulk_fields(cancel: Cancel, now_ms: int) -> dict[str, Any]:
    return {HPGAMES_BULK_KEY: [hpgames_fields(cancel, now_ms)]}


def _hpgames_sign(item: Any, keys: Keys) -> Any:
    """Fill a `hash` placeholder: hex HMAC-SHA256 over merchantId + tx to cancel +
    timestamp as written (whatever of them is there)."""
    if not isinstance(item, dict) or item.get("hash") != SIGN:
        return item
    parts = (item.get(name) for name in ("merchantId", "transactionIdToCancel", "timestamp"))
    message = "".join(literal(part) for part in parts if part is not None).encode()
    signature = hmac.new(keys.hpgames_secret.encode(), message, hashlib.sha256).hexdigest()
    return {**item, "hash": signature}


def hpgames_seal(body: Any, keys: Keys) -> tuple[Any, dict[str, str]]:
    if isinstance(body, dict) and isinstance(body.get(HPGAMES_BULK_KEY), list):
        body = {**body, HPGAMES_BULK_KEY: [_hpgames_sign(i, keys) for i in body[HPGAMES_BULK_KEY]]}
    return _hpgames_sign(body, keys), dict(JSON_TYPE)


def _hpgames_answer(status: int, answer: Any) -> Answer:
    assert isinstance(answer, dict), answer
    assert list(answer) == list(HPGAMES_FIELDS), answer
    for name in ("errorText", "currency", "accountTransactionId", "transactionId"):
        assert isinstance(answer[name], str), answer
    return Answer(status, str(integer(answer["errorCode"])), number(answer["balance"]), answer)


def hpgames_answers(status: int, raw: bytes) -> tuple[Answer, ...]:
    assert status == 200, status
    return (_hpgames_answer(status, parse_json(raw)),)


def hpgames_bulk_answers(status: int, raw: bytes) -> tuple[Answer, ...]:
    """The items' answers in request order, or the one answer of a bulk refused whole."""
    assert status == 200, status
    body = parse_json(raw)
    if isinstance(body, dict) and list(body) == ["cancelDebitResponses"]:
        items = body["cancelDebitResponses"]
        assert isinstance(items, list), body
        assert items, body
        return tuple(_hpgames_answer(status, item) for item in items)
    return (_hpgames_answer(status, body),)


def _hpgames_anatomy(at: str = "") -> Anatomy:
    """A cancel debit request's anatomy, at the top or `at` a bulk's item ("….0.")."""
    outer = paths(at.rstrip(".").rsplit(".", 1)[0]) if at else ()
    return Anatomy(
        strings=paths(
            "merchantId betIdToCancel transactionIdToCancel transactionId hash playerId authToken",
            at,
        ),
        numbers=paths("timestamp amount", at),
        containers=outer,
        optional=(
            (path("gameId", at), Decimal),
            (path("created", at), str),
            (path("currency", at), str),  # optional (seed 4.8.1): the debit's currency
        ),
        objects=((), *paths(at.rstrip("."))) if at else ((),),
        ids=paths("transactionId transactionIdToCancel betIdToCancel playerId", at),
        amount=path("amount", at),
        currency=path("currency", at),
        timestamp=path("timestamp", at),
        text=path("playerId", at),
        signed=path("transactionIdToCancel", at),
        auth_edits=((path("merchantId", at), "00000000-0000-0000-0000-000000000000"),),
    )


HPGAMES = Api(
    name="hpgames",
    path="/hpgames/cancelDebit",
    provider="hpgames",
    fields=hpgames_fields,
    seal=hpgames_seal,
    answers=hpgames_answers,
    refusals={"invalid": (200, "2"), "auth": (200, "3")},
    anatomy=_hpgames_anatomy(),
)
HPGAMES_BULK = Api(
    name="hpgames-bulk",
    path="/hpgames/bulkCancelDebit",
    provider="hpgames",
    fields=hpgames_bulk_fields,
    seal=hpgames_seal,
    answers=hpgames_bulk_answers,
    refusals=HPGAMES.refusals,
    anatomy=_hpgames_anatomy(f"{HPGAMES_BULK_KEY}.0."),
)
