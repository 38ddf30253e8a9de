"""AMB Super API cancel tips (seed 003) as the tests write and read it."""

import base64
from collections.abc import Sequence
from typing import Any

from refundctl import config
from tests.providers.contract import Anatomy, Api, Cancel
from tests.providers.credentials import Keys
from tests.providers.wire import (
    JSON_TYPE,
    NON_ASCII_HEADER,
    Answer,
    Lit,
    integer,
    number,
    parse_json,
    path,
    paths,
)

AMB_SUCCESS_FIELDS = (
    "id",
    "statusCode",
    "timestampMillis",
    "productId",
    "currency",
    "balanceBefore",
    "balanceAfter",
    "username",
)
AMB_FAIL_FIELDS = ("id", "statusCode", "productId", "timestampMillis")
AMB_CODES = frozenset({0, 10001, 20001, 20004, 30001, 40003, 50001})


def amb_tips(
    request_id: str,
    tips: Sequence[tuple[str, str]],
    now_ms: int,
    *,
    player: str = "p1",
    currency: str = "EUR",
) -> dict[str, Any]:
    """A cancel-tips body for several tips: (tip id, amount literal) each."""
    return {
        "id": request_id,
        "productId": "prod-1",
        "username": player,
        "currency": currency,
        "timestampMillis": Lit(str(now_ms)),
        "txns": [
            {"id": tip, "status": "REFUND", "roundId": f"round-of-{tip}", "betAmount": Lit(amount)}
            for tip, amount in tips
        ],
    }


def amb_fields(cancel: Cancel, now_ms: int) -> dict[str, Any]:
    return amb_tips(
        cancel.cancel_id,
        [(cancel.bet_tx, cancel.amount)],
        now_ms,
        player=cancel.player,
        currency=cancel.currency,
    )


def amb_authorization(username: str, api_key: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{api_key}".encode()).decode()


def amb_seal(body: Any, keys: Keys) -> tuple[Any, dict[str, str]]:
    """Basic credentials in the header; nothing in the body is signed."""
    return body, {
        **JSON_TYPE,
        "authorization": amb_authorization(keys.amb_username, keys.amb_api_key),
    }


def amb_answers(status: int, raw: bytes) -> tuple[Answer, ...]:
    body = parse_json(raw)
    assert isinstance(body, dict), body
    code = integer(body.get("statusCode"))
    assert code in AMB_CODES, body
    assert status == (401 if code == 30001 else 200), (status, body)
    if code == 0:
        assert list(body) == list(AMB_SUCCESS_FIELDS), body
    else:
        assert list(body)[:4] == list(AMB_FAIL_FIELDS), body
        assert set(body) - set(AMB_FAIL_FIELDS) in (set(), {"balanceBefore", "balanceAfter"})
    for name in ("id", "productId"):
        assert isinstance(body[name], str), body
    integer(body["timestampMillis"])
    balance = body.get("balanceAfter")
    if balance is not None:
        number(body["balanceBefore"])
    return (Answer(status, str(code), None if balance is None else number(balance), body),)


_AMB_AGENT = config.DEV_SECRETS["AMB_AGENT_USERNAME"]
_AMB_KEY = config.DEV_SECRETS["AMB_API_KEY"]


AMB = Api(
    name="amb",
    path="/amb/cancelTips",
    provider="amb",
    fields=amb_fields,
    seal=amb_seal,
    answers=amb_answers,
    refusals={"invalid": (200, "40003"), "auth": (401, "30001")},
    anatomy=Anatomy(
        strings=paths("id productId username currency txns.0.id txns.0.status txns.0.roundId"),
        numbers=paths("timestampMillis txns.0.betAmount"),
        containers=paths("txns"),
        objects=((), path("txns.0")),
        ids=paths("id productId username txns.0.id txns.0.roundId"),
        amount=path("txns.0.betAmount"),
        currency=path("currency"),
        timestamp=path("timestampMillis"),
        text=path("username"),
        signed=None,  # Basic credentials do not cover the body
        auth_header="authorization",
        bad_auth_headers=(
            "Bearer " + _AMB_KEY,
            "Basic !!!",
            "Basic " + base64.b64encode(_AMB_AGENT.encode()).decode(),  # no ':'
            amb_authorization(_AMB_AGENT, ""),
            amb_authorization("other-agent", _AMB_KEY),
            "Basic " + "A" * 10_000,
            "Basic " + NON_ASCII_HEADER,
        ),
    ),
    unknown_balance=None,
)
