"""AMB Super API "Cancel Tips" (seed 003): authenticate, parse and normalize, render.

Authentication: `Authorization: Basic base64(AMB_AGENT_USERNAME:AMB_API_KEY)`, both parts
compared in constant time. One request cancels 1..100 tips (`txns`) of one player, all
or nothing, so it becomes ONE `CancelRequested` whose cancel id is the request `id`: a
retry with the same `id` gets the worker's stored outcome, hence the same answer.

Answers are HTTP 200 with AMB's numeric `statusCode`, except failed authentication (HTTP
401). Success carries every field of the seed's response; refusals carry the seed's fail
shape (`id`, `statusCode`, `productId`, `timestampMillis`) plus `balanceBefore` and
`balanceAfter` when the worker knows the player's balance.

Tolerant reader: fields the seed does not list, in the body or in a `txns[]` item, are
accepted and ignored (counted for the ingress's metric; Basic credentials cover no part
of the body either way). Listed strings follow the one text rule (no control
characters, at most 256 characters). Credentials are checked before anything else,
the body's size included: a body over 1 MiB without valid credentials is answered
30001 (HTTP 401), with them 40003 (`too_large`).
"""

import base64
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any

from pydantic import ValidationError

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
from schemas.events import ITEMS_MAX

AGENT_USERNAME = Secret("AMB_AGENT_USERNAME", dev_value="dev-amb-agent")
API_KEY = Secret("AMB_API_KEY", dev_value="dev-amb-api-key", shared=True)

PATH = "/amb/cancelTips"
AUTHORIZATION_HEADER = "authorization"
AUTHORIZATION_CHARS_MAX = 1024  # far above any real Basic credential; bounds the work
TXN_STATUS_REFUND = "REFUND"  # seed: "Should always be REFUND"

# AMB's own status codes: AMB Super API, "Product Callbacks", table "Common Status Code",
# https://doc.ambsuperapi.com/productCallback/introduction.html
# (0 Success, 10001 User not found, 10002 insufficient balance, 20001 Transaction not
# found, 20002 Transaction duplicate, 20003 Bet has already canceled, 20004 Bet has
# already settled, 30001 Invalid token, 30002 Invalid Signature, 40003 Forbidden
# request, 50001 Internal server error). AMB lists no code for a malformed request or
# for an amount mismatch: both get 40003, a plain refusal that a retry will not change.
# 20003 is not used: the spec answers a bet already cancelled by another cancel with 0.
STATUS_SUCCESS = 0
STATUS_USER_NOT_FOUND = 10001
STATUS_TRANSACTION_NOT_FOUND = 20001
STATUS_ALREADY_SETTLED = 20004
STATUS_INVALID_TOKEN = 30001  # bad Basic credentials (the API key is the agent's token)
STATUS_FORBIDDEN = 40003  # invalid request, amount/currency mismatch, cancel id reused
STATUS_INTERNAL_ERROR = 50001  # no outcome within the deadline: AMB may retry

STATUS_OF_OUTCOME: Mapping[Outcome, int] = {
    Outcome.REFUNDED: STATUS_SUCCESS,
    Outcome.ALREADY_CANCELLED: STATUS_SUCCESS,  # spec: 0, balance before = after
    Outcome.BET_UNKNOWN: STATUS_TRANSACTION_NOT_FOUND,
    Outcome.BET_SETTLED: STATUS_ALREADY_SETTLED,
    Outcome.PLAYER_MISMATCH: STATUS_USER_NOT_FOUND,
    Outcome.AMOUNT_MISMATCH: STATUS_FORBIDDEN,
    Outcome.INVALID: STATUS_FORBIDDEN,
}

FIELDS = frozenset({"id", "timestampMillis", "productId", "currency", "username", "txns"})
TXN_FIELDS = frozenset({"id", "status", "roundId", "betAmount"})


@dataclass(frozen=True)
class AmbConfig:
    agent_username: bytes
    api_key: bytes = field(repr=False)  # a secret: never in a repr, so never in a log

    def __post_init__(self) -> None:
        # An empty secret would let "user:" in; a ':' cannot be split off a Basic user-id.
        assert self.agent_username, "AMB_AGENT_USERNAME must be set"
        assert self.api_key, "AMB_API_KEY must be set"
        assert b":" not in self.agent_username, "a Basic user-id cannot contain ':'"


@dataclass(frozen=True)
class AmbTxn:
    """One tip to refund."""

    id: str
    round_id: str
    bet_amount: Decimal


@dataclass(frozen=True)
class AmbCancel:
    """A validated cancel-tips request; `received_at_ms` dates an answer with no outcome."""

    request_id: str
    product_id: str
    currency: str
    username: str
    timestamp_ms: int
    txns: tuple[AmbTxn, ...]
    received_at_ms: int
    unknown_fields: int = 0  # fields the seed does not list (body and txns), ignored


def basic_auth_header(username: str, api_key: str) -> str:
    """The `Authorization` value AMB sends; for tests and tools."""
    return "Basic " + base64.b64encode(f"{username}:{api_key}".encode()).decode("ascii")


def verify(authorization: str | None, config: AmbConfig) -> bool:
    """Constant-time check of the Basic credentials; False for anything malformed."""
    if not authorization or len(authorization) > AUTHORIZATION_CHARS_MAX:
        return False
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic":  # RFC 7617: the scheme name is case-insensitive
        return False
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        return False
    username, separator, api_key = decoded.partition(b":")
    if not separator:
        return False
    username_ok = hmac.compare_digest(username, config.agent_username)
    api_key_ok = hmac.compare_digest(api_key, config.api_key)
    return username_ok & api_key_ok  # both compared, whichever fails


def _txns(body: Mapping[str, Any], currency: str) -> tuple[tuple[AmbTxn, ...], int]:
    """The tips, and how many fields the seed does not list they carry (ignored)."""
    raw = body.get("txns")
    if raw is None:
        raise jsonbody.BodyError("missing field 'txns'")
    if not isinstance(raw, list):
        raise jsonbody.BodyError("field 'txns' must be an array")
    if not 1 <= len(raw) <= ITEMS_MAX:
        raise jsonbody.BodyError(f"field 'txns' must have 1 to {ITEMS_MAX} items")
    txns: list[AmbTxn] = []
    seen: set[str] = set()
    unknown = 0
    for item in raw:
        txn = jsonbody.require_object(item, "txn")
        unknown += jsonbody.unknown_fields(txn, TXN_FIELDS)
        txn_id = jsonbody.required_string(txn, "id")
        if jsonbody.required_string(txn, "status") != TXN_STATUS_REFUND:
            raise jsonbody.BodyError(f"txn status must be {TXN_STATUS_REFUND!r}")
        round_id = jsonbody.required_string(txn, "roundId")
        amount = validate_amount(jsonbody.decimal(txn, "betAmount"), currency)
        if txn_id in seen:  # one event names each bet at most once
            raise jsonbody.BodyError("duplicate txn id")
        seen.add(txn_id)
        txns.append(AmbTxn(id=txn_id, round_id=round_id, bet_amount=amount))
    return tuple(txns), unknown


def parse(body: Mapping[str, Any], now_ms: int) -> AmbCancel:
    """Validate an authenticated body's listed fields (others are ignored); raises
    BodyError or MoneyError."""
    request_id = jsonbody.required_string(body, "id")
    product_id = jsonbody.required_string(body, "productId")
    username = jsonbody.required_string(body, "username")
    currency = validate_currency(jsonbody.required_string(body, "currency"))
    timestamp_ms = epoch_ms(jsonbody.integer(body, "timestampMillis"))
    if not within_skew(timestamp_ms, now_ms):
        raise jsonbody.BodyError("timestampMillis too far from the server clock")
    txns, unknown_in_txns = _txns(body, currency)
    return AmbCancel(
        request_id=request_id,
        product_id=product_id,
        currency=currency,
        username=username,
        timestamp_ms=timestamp_ms,
        txns=txns,
        received_at_ms=now_ms,
        unknown_fields=jsonbody.unknown_fields(body, FIELDS) + unknown_in_txns,
    )


def to_fields(cancel: AmbCancel) -> CancelFields:
    """All txns in one event: the worker applies them all or none."""
    items = tuple(
        CancelItem(bet_tx=txn.id, amount=txn.bet_amount, round_id=txn.round_id)
        for txn in cancel.txns
    )
    return CancelFields(Provider.AMB, cancel.request_id, cancel.username, cancel.currency, items)


def reply(
    status_code: int,
    timestamp_ms: int,
    *,
    request_id: str = "",
    product_id: str = "",
    balances: tuple[Decimal, Decimal] | None = None,
    http_status: int = 200,
) -> Response:
    """A refusal in the seed's fail shape; "" where the request's value is unknown."""
    assert status_code != STATUS_SUCCESS
    body: dict[str, Any] = {
        "id": request_id,
        "statusCode": status_code,
        "productId": product_id,
        "timestampMillis": timestamp_ms,
    }
    if balances is not None:
        body["balanceBefore"], body["balanceAfter"] = balances
    return Response(status=http_status, body=jsonbody.dumps(body))


def _success(cancel: AmbCancel, timestamp_ms: int, before: Decimal, after: Decimal) -> Response:
    body = {
        "id": cancel.request_id,
        "statusCode": STATUS_SUCCESS,
        "timestampMillis": timestamp_ms,
        "productId": cancel.product_id,
        "currency": cancel.currency,
        "balanceBefore": before,
        "balanceAfter": after,
        "username": cancel.username,
    }
    return Response(status=200, body=jsonbody.dumps(body))


def _echo(body: Mapping[str, Any]) -> tuple[str, str]:
    """The request's `id` and `productId` if usable, so AMB can match our refusal."""
    values = []
    for key in ("id", "productId"):
        try:
            values.append(jsonbody.required_string(body, key))
        except jsonbody.BodyError:
            values.append("")
    return values[0], values[1]


def refused_unread(received_at_ms: int) -> Response:
    """The answer to a body the ingress refuses unread: invalid request, dated by the
    request's receive time (no request to echo)."""
    return reply(STATUS_FORBIDDEN, received_at_ms)


def too_large(headers: Mapping[str, str], received_at_ms: int, config: AmbConfig) -> Response:
    """The answer to a body over 1 MiB, read no further: credentials first (30001, HTTP
    401, without valid ones, as for any request), then the refusal (40003)."""
    if not verify(headers.get(AUTHORIZATION_HEADER), config):
        return reply(STATUS_INVALID_TOKEN, received_at_ms, http_status=401)
    return reply(STATUS_FORBIDDEN, received_at_ms)


def accept(request: Request, config: AmbConfig) -> Accepted | Response:
    now = request.received_at_ms
    # Credentials first, from the header alone: an unauthenticated body is never parsed.
    if not verify(request.headers.get(AUTHORIZATION_HEADER), config):
        return reply(STATUS_INVALID_TOKEN, now, http_status=401)
    try:
        body = jsonbody.require_object(jsonbody.loads(request.body))
    except jsonbody.BodyError:
        return reply(STATUS_FORBIDDEN, now)
    try:
        cancel = parse(body, now)
        fields = to_fields(cancel)
    except (jsonbody.BodyError, MoneyError, ValidationError):
        request_id, product_id = _echo(body)
        return reply(STATUS_FORBIDDEN, now, request_id=request_id, product_id=product_id)
    return Accepted(
        cancels=(fields,), answer=partial(render, cancel), unknown_fields=cancel.unknown_fields
    )


def render(cancel: AmbCancel, outcomes: Outcomes) -> Response:
    """Map the one outcome; dated by its decision so that a retry reads the same."""
    assert len(outcomes) == 1
    outcome: CancelOutcome | None = outcomes[0]
    if outcome is None:  # no outcome in time: retryable, the worker still applies it
        return reply(
            STATUS_INTERNAL_ERROR,
            cancel.received_at_ms,
            request_id=cancel.request_id,
            product_id=cancel.product_id,
        )
    before, after = outcome.balance_before, outcome.balance_after
    balances = None if before is None or after is None else (before, after)
    status_code = STATUS_OF_OUTCOME[outcome.outcome]
    if status_code == STATUS_SUCCESS:
        if balances is not None:
            return _success(cancel, outcome.decided_at_ms, *balances)
        status_code = STATUS_USER_NOT_FOUND  # no account of this player to report on
    return reply(
        status_code,
        outcome.decided_at_ms,
        request_id=cancel.request_id,
        product_id=cancel.product_id,
        balances=balances,
    )


def routes(secrets: ProviderSecrets) -> list[Route]:
    config = AmbConfig(
        agent_username=secrets.value(AGENT_USERNAME.variable).encode(),
        api_key=secrets.value(API_KEY.variable).encode(),
    )
    return [
        Route(
            path=PATH,
            provider=Provider.AMB,
            accept=partial(accept, config=config),
            invalid=refused_unread,
            refuse_too_large=partial(too_large, config=config),
        ),
    ]


ADAPTER = ProviderAdapter(Provider.AMB, secrets=(AGENT_USERNAME, API_KEY), routes=routes)
