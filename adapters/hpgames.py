"""HPGames "Cancel Debit" and "Bulk Cancel Debit" (seed 001): verify, parse, render.

Authentication: each request (each item of a bulk) carries `hash` = lower-case hex
HMAC-SHA256(HPGAMES_SECRET_KEY, merchantId + transactionIdToCancel + timestamp), with the
timestamp as written in the JSON; `merchantId` must equal HPGAMES_MERCHANT_ID. Both are
compared in constant time. The hash does not cover the amount, player or currency: the
worker checks those against the recorded debit, so a forged amount cannot refund more.

Decisions where the seed and the spec are silent (or disagree):

- Every answer is HTTP 200; errors are a non-zero `errorCode`. HPGames' own wallet
  overview says its wallet endpoints always answer 200 and signal errors in the body.
- Error codes (`ERROR_*`) are ours: HPGames refers to "predefined Error Codes" but we
  found no public list (its overview only shows 1005 "Insufficient balance"). Agree the
  numbers with HPGames at integration; they are defined here and nowhere else.
- `currency` is optional (seed 4.8.1, spec). Without it (absent or null) the event
  carries no currency and the worker takes the debit's: an amount that is not the
  debit's, in the debit's currency (more decimals than that currency has included), is
  an amount mismatch (errorCode 6). With it, it must be an ISO-4217 code, and an amount
  with more decimals than that currency has is invalid at once (errorCode 2).
- The seed's flattened table reads "createdDatetime"; HPGames' table has the field
  `created` of type Datetime, and the seed's own example carries neither. We do not use
  it, so either name is accepted, optional, and must be a string when present.
- `authToken` is required (seed) but not checked: a cancel must go through after the
  game session has ended.
- JSON null for an optional field (`gameId`, `created`, `currency`) counts as absent
  (Java clients often write nulls). Fields the seed does not list are accepted and
  ignored (tolerant reader; counted for the ingress's metric), in a request, a bulk
  body and a bulk's items alike. Listed strings follow the one text rule (no control
  characters, at most 256 characters).
- `timestamp` is milliseconds per the seed, seconds in its example: both are read
  (`contract.epoch_ms`) and must be within 300 s of the server clock.
- Missing or mistyped hash inputs are an invalid request (errorCode 2); a wrong hash or
  merchant id is an authentication failure (errorCode 3).
- Balance reported: after the refund for REFUNDED; otherwise the unchanged balance
  (`balance_before`), 0 when no account is known or no outcome arrived.
  `accountTransactionId` is the worker's `ledger_tx`, "" when there is none.
- An error answered before the worker (bad body, bad hash) still carries every mandatory
  field: balance 0, `currency` and `transactionId` echoed when the request had usable
  values, otherwise "".
- Replay defence: the hash covers neither `transactionId` (our cancel id) nor the
  amount, player or currency, so a captured request could be sent again within its
  300 s window under new `transactionId`s and store forged outcomes under cancel ids
  HPGames will use later. A `hash` already seen with one `transactionId` is refused as
  an authentication failure (errorCode 3) when it comes with another, while its
  timestamp can still pass; the same `transactionId` again is a retry and passes. The
  seen hashes live in a `SeenHashes` the I/O layer creates and passes in, bounded by
  `SEEN_HASHES_ENTRIES_MAX` (oldest dropped first). It is per ingress instance: a
  replay sent to another instance is not caught there.
- Bulk: at most `BULK_ITEMS_MAX` (1,000) items. Each item is authenticated and
  validated on its own and answered in request order. An item repeating an earlier
  item's `transactionId` with the same content is the same cancel and gets the same
  answer (one event); with other content it is refused as invalid. When every item is
  refused, the answer goes out at once, nothing is published; when no item even
  authenticates, the answer is one error object (errorCode 3, or 2 when no item could be
  checked at all) in the bulk shape, so junk does not buy an answer per item. A body
  that is not `{"cancelDebitRequests": [1..BULK_ITEMS_MAX items]}` is answered with one
  error object in the bulk shape (still HTTP 200).
"""

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import partial
from types import MappingProxyType
from typing import Any, TypeGuard

from adapters import jsonbody
from adapters.contract import (
    TIMESTAMP_SKEW_MAX_MS,
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
    CURRENCY_MINOR_UNITS,
    CancelItem,
    CancelOutcome,
    Outcome,
    Provider,
    validate_amount,
    validate_currency,
)

MERCHANT_ID = Secret("HPGAMES_MERCHANT_ID", dev_value="21385394-6dda-4171-a003-02fa4a975643")
SECRET_KEY = Secret("HPGAMES_SECRET_KEY", dev_value="dev-hpgames-secret", shared=True)

PATH_CANCEL = "/hpgames/cancelDebit"
PATH_BULK_CANCEL = "/hpgames/bulkCancelDebit"
BULK_ITEMS_MAX = 1000  # items of one bulk request; more are refused as invalid
# What a bulk body may hold before it is parsed (counted over its bytes): per item, a
# request object and a few nested values of fields the seed does not list.
BULK_CONTAINERS_MAX = 4 * BULK_ITEMS_MAX
BULK_COMMAS_MAX = 32 * BULK_ITEMS_MAX
# Hashes remembered by one ingress instance for the replay defence (about 250 bytes
# each): at this size, 100,000 HPGames cancels per 10 minutes.
SEEN_HASHES_ENTRIES_MAX = 100_000

# Our error codes (invented, see the module docstring), and their texts.
ERROR_NONE = 0
ERROR_INTERNAL = 1  # no outcome within the deadline: retryable
ERROR_INVALID_REQUEST = 2
ERROR_AUTHENTICATION = 3  # wrong hash or merchantId
ERROR_BET_SETTLED = 4
ERROR_PLAYER_MISMATCH = 5
ERROR_AMOUNT_MISMATCH = 6  # amount or currency differs from the debit

ERROR_TEXTS: Mapping[int, str] = MappingProxyType(
    {
        ERROR_NONE: "",
        ERROR_INTERNAL: "Internal error, retry later",
        ERROR_INVALID_REQUEST: "Invalid request",
        ERROR_AUTHENTICATION: "Authentication failed",
        ERROR_BET_SETTLED: "Debit already settled",
        ERROR_PLAYER_MISMATCH: "Player mismatch",
        ERROR_AMOUNT_MISMATCH: "Amount or currency mismatch",
    }
)

ERROR_OF_OUTCOME: Mapping[Outcome, int] = MappingProxyType(
    {
        Outcome.REFUNDED: ERROR_NONE,
        Outcome.BET_UNKNOWN: ERROR_NONE,  # seed: a cancel of an unaccepted debit is ignored
        Outcome.ALREADY_CANCELLED: ERROR_NONE,
        Outcome.BET_SETTLED: ERROR_BET_SETTLED,
        Outcome.PLAYER_MISMATCH: ERROR_PLAYER_MISMATCH,
        Outcome.AMOUNT_MISMATCH: ERROR_AMOUNT_MISMATCH,
        Outcome.INVALID: ERROR_INVALID_REQUEST,
    }
)

_REQUIRED_STRINGS = (
    "merchantId",
    "betIdToCancel",
    "transactionIdToCancel",
    "transactionId",
    "hash",
    "playerId",
    "authToken",
)
_OPTIONAL_STRINGS = ("created", "createdDatetime")  # currency: optional, read on its own
_NUMBER_FIELDS = ("timestamp", "amount", "gameId")
FIELDS = frozenset(_REQUIRED_STRINGS + _OPTIONAL_STRINGS + _NUMBER_FIELDS + ("currency",))
BULK_FIELDS = frozenset({"cancelDebitRequests"})


@dataclass(frozen=True)
class HPGamesConfig:
    merchant_id: str
    secret_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        assert self.merchant_id, "HPGAMES_MERCHANT_ID is required"
        assert self.secret_key, "HPGAMES_SECRET_KEY is required"


@dataclass(frozen=True)
class HPGamesCancel:
    """A validated HPGames cancel request (one item of a bulk, or the whole single)."""

    transaction_id: str  # HPGames' cancel transaction: our cancel id
    transaction_id_to_cancel: str  # the debit to cancel: our bet tx
    bet_id_to_cancel: str
    player_id: str
    currency: str | None  # None: not named; the worker takes the debit's
    amount: Decimal
    timestamp_ms: int
    game_id: int | None
    unknown_fields: int = 0  # fields the seed does not list, ignored


@dataclass(frozen=True)
class Rejected:
    """An item refused before the worker, with what its answer can echo."""

    error_code: int
    transaction_id: str = ""
    currency: str = ""
    authenticated: bool = False  # its hash was right (refused for its content)


@dataclass(frozen=True)
class BulkCancel:
    """Per request item, in request order: its rejection or the index of its event."""

    entries: tuple[Rejected | int, ...]
    cancels: tuple[HPGamesCancel, ...]  # one per event, in event order
    unknown_fields: int = 0  # fields the seed does not list, ignored (body and items)


class SeenHashes:
    """The replay defence's state: `hash` -> the `transactionId` it came with, for as
    long as its timestamp can pass the 300 s check. Bounded (`entries_max`, oldest
    dropped first); created by the I/O layer, one per ingress instance, and passed in.
    Keys and values are kept as digests (fixed size, whatever the id's length)."""

    def __init__(self, entries_max: int = SEEN_HASHES_ENTRIES_MAX) -> None:
        assert entries_max >= 1
        self.entries_max = entries_max
        self.dropped = 0  # entries dropped to stay within entries_max, still live
        self._seen: OrderedDict[bytes, tuple[bytes, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, hash_hex: str, transaction_id: str, expires_ms: int, now_ms: int) -> bool:
        """False if `hash_hex` was seen with another `transaction_id` (a replay); else
        remember it until `expires_ms` and return True."""
        while self._seen:  # arrival order: expire from the front while it is stale
            _, (_, oldest_expires_ms) = next(iter(self._seen.items()))
            if oldest_expires_ms > now_ms:
                break
            self._seen.popitem(last=False)
        key = hashlib.blake2b(hash_hex.encode(), digest_size=16).digest()
        value = hashlib.blake2b(transaction_id.encode("utf-8", "replace"), digest_size=16).digest()
        seen = self._seen.get(key)
        if seen is not None:
            return hmac.compare_digest(seen[0], value)
        if len(self._seen) >= self.entries_max:
            _, (_, dropped_expires_ms) = self._seen.popitem(last=False)
            self.dropped += dropped_expires_ms > now_ms
        self._seen[key] = (value, expires_ms)
        return True


# Authentication.


def hash_for(
    merchant_id: str, transaction_id_to_cancel: str, timestamp_literal: str, secret_key: bytes | str
) -> str:
    """The `hash` HPGames sends: hex HMAC-SHA256 over the three values, no separators."""
    key = secret_key.encode() if isinstance(secret_key, str) else secret_key
    message = (merchant_id + transaction_id_to_cancel + timestamp_literal).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def verify(body: Mapping[str, Any], config: HPGamesConfig) -> bool:
    """Constant-time check of `merchantId` and `hash`; raises BodyError when the hash's
    inputs are missing or mistyped (an invalid request, not a forged one)."""
    merchant_id = jsonbody.required_string(body, "merchantId")
    transaction_id_to_cancel = jsonbody.required_string(body, "transactionIdToCancel")
    timestamp_literal = jsonbody.number(body, "timestamp").literal
    provided = jsonbody.required_string(body, "hash")
    expected = hash_for(merchant_id, transaction_id_to_cancel, timestamp_literal, config.secret_key)
    merchant_ok = hmac.compare_digest(merchant_id.encode(), config.merchant_id.encode())
    hash_ok = hmac.compare_digest(expected.encode(), provided.encode("utf-8", "replace"))
    return merchant_ok & hash_ok  # both compared, whatever the first one says


# Validation.


def _text(body: Mapping[str, Any], key: str) -> str:
    """A required string that can also be written out (no lone surrogates)."""
    value = jsonbody.required_string(body, key)
    value.encode()  # UnicodeEncodeError is a ValueError: refused as invalid
    return value


def parse(body: Mapping[str, Any], now_ms: int) -> HPGamesCancel:
    """Validate one cancel request's listed fields (others are ignored); raises
    ValueError (BodyError, MoneyError)."""
    fields = {name: _text(body, name) for name in _REQUIRED_STRINGS}
    for name in _OPTIONAL_STRINGS:
        jsonbody.string(body, name, optional=True)
    game_id = None if body.get("gameId") is None else jsonbody.integer(body, "gameId")
    timestamp_ms = epoch_ms(jsonbody.integer(body, "timestamp"))
    if not within_skew(timestamp_ms, now_ms):
        raise jsonbody.BodyError("timestamp too far from the server clock")
    named = jsonbody.string(body, "currency", optional=True)
    currency = None if named is None else validate_currency(named)
    amount = validate_amount(jsonbody.decimal(body, "amount"), currency)
    return HPGamesCancel(
        transaction_id=fields["transactionId"],
        transaction_id_to_cancel=fields["transactionIdToCancel"],
        bet_id_to_cancel=fields["betIdToCancel"],
        player_id=fields["playerId"],
        currency=currency,
        amount=amount,
        timestamp_ms=timestamp_ms,
        game_id=game_id,
        unknown_fields=jsonbody.unknown_fields(body, FIELDS),
    )


def _well_formed(value: Any) -> TypeGuard[str]:
    """A string that can be echoed in an answer (the text rule)."""
    if not isinstance(value, str):
        return False
    try:
        return bool(jsonbody.text(value, "transactionId"))
    except jsonbody.BodyError:
        return False


def _echo(value: Any) -> Rejected:
    """What an error answer may echo of a refused item: well-formed values only."""
    if not isinstance(value, dict):
        return Rejected(ERROR_INVALID_REQUEST)
    transaction_id = value.get("transactionId")
    currency = value.get("currency")
    return Rejected(
        ERROR_INVALID_REQUEST,
        transaction_id=transaction_id
        if isinstance(transaction_id, str) and _well_formed(transaction_id)
        else "",
        currency=currency if isinstance(currency, str) and currency in CURRENCY_MINOR_UNITS else "",
    )


def _replayed(body: Mapping[str, Any], seen: SeenHashes, now_ms: int) -> bool:
    """An authenticated request's hash already seen with another `transactionId`.

    Checked before the other fields are validated (the unsigned ones can be changed by
    whoever replays it); a timestamp that cannot pass is refused by `parse` anyway."""
    timestamp_ms = epoch_ms(jsonbody.integer(body, "timestamp"))
    if not within_skew(timestamp_ms, now_ms):
        return False
    transaction_id = body.get("transactionId")
    return not seen.admit(
        jsonbody.required_string(body, "hash"),
        transaction_id if isinstance(transaction_id, str) else "",
        timestamp_ms + TIMESTAMP_SKEW_MAX_MS,
        now_ms,
    )


def check(
    value: Any, config: HPGamesConfig, seen: SeenHashes, now_ms: int
) -> HPGamesCancel | Rejected:
    """Authenticate and validate one cancel request (a parsed JSON value)."""
    rejected = _echo(value)
    authentication_failed = Rejected(
        ERROR_AUTHENTICATION, rejected.transaction_id, rejected.currency
    )
    try:
        body = jsonbody.require_object(value, "cancel debit request")
        if not verify(body, config) or _replayed(body, seen, now_ms):
            return authentication_failed
    except ValueError:  # BodyError: the hash's inputs are missing or ill-typed
        return rejected
    try:
        return parse(body, now_ms)
    except ValueError:  # BodyError, MoneyError, UnicodeEncodeError
        return replace(rejected, authenticated=True)


# Events.


def to_fields(cancel: HPGamesCancel) -> CancelFields:
    items = (CancelItem(bet_tx=cancel.transaction_id_to_cancel, amount=cancel.amount),)
    return CancelFields(
        Provider.HPGAMES, cancel.transaction_id, cancel.player_id, cancel.currency, items
    )


def plan(
    values: list[Any], config: HPGamesConfig, seen: SeenHashes, now_ms: int
) -> tuple[tuple[CancelFields, ...], BulkCancel]:
    """A bulk's items to one cancel per distinct valid one, and the per-item plan."""
    entries: list[Rejected | int] = []
    cancels: list[HPGamesCancel] = []
    fields: list[CancelFields] = []
    index_of: dict[str, int] = {}  # cancel id -> its cancel's index
    unknown = 0
    for value in values:
        result = check(value, config, seen, now_ms)
        if isinstance(result, Rejected):
            entries.append(result)
            continue
        unknown += result.unknown_fields
        earlier = index_of.get(result.transaction_id)
        if earlier is None:
            index_of[result.transaction_id] = len(fields)
            entries.append(len(fields))
            fields.append(to_fields(result))
            cancels.append(result)
        elif fields[earlier].digest() == to_fields(result).digest():  # the same cancel again
            entries.append(earlier)
        else:  # one cancel id for two different requests
            entries.append(
                Rejected(ERROR_INVALID_REQUEST, result.transaction_id, result.currency or "")
            )
    bulk = BulkCancel(entries=tuple(entries), cancels=tuple(cancels), unknown_fields=unknown)
    return tuple(fields), bulk


# Answers.


def _answer(
    error_code: int,
    *,
    balance: Decimal | None = None,
    currency: str = "",
    account_transaction_id: str = "",
    transaction_id: str = "",
) -> dict[str, Any]:
    """One CancelDebitResponse (seed 4.8.2), every field present, in the seed's order."""
    return {
        "errorCode": error_code,
        "errorText": ERROR_TEXTS[error_code],
        "balance": balance if balance is not None else Decimal(0),
        "currency": currency,
        "accountTransactionId": account_transaction_id,
        "transactionId": transaction_id,
    }


def reply(error_code: int, transaction_id: str = "", currency: str = "") -> Response:
    """An immediate single-shape answer (nothing published): balance 0."""
    body = _answer(error_code, currency=currency, transaction_id=transaction_id)
    return Response(status=200, body=jsonbody.dumps(body))


def invalid_reply() -> Response:
    """The answer to a body unusable as a whole."""
    return reply(ERROR_INVALID_REQUEST)


def refused(received_at_ms: int) -> Response:
    """The answer to a body the ingress refuses unread."""
    return invalid_reply()


def bulk_reply(error_code: int) -> Response:
    """A bulk refused as a whole, in the bulk shape: one error object (balance 0)."""
    return Response(
        status=200, body=jsonbody.dumps({"cancelDebitResponses": [_answer(error_code)]})
    )


def bulk_invalid_reply() -> Response:
    """The answer to a bulk body unusable as a whole."""
    return bulk_reply(ERROR_INVALID_REQUEST)


def bulk_refused(received_at_ms: int) -> Response:
    """The answer to a bulk body the ingress refuses unread."""
    return bulk_invalid_reply()


def _rejected_answer(rejected: Rejected) -> dict[str, Any]:
    return _answer(
        rejected.error_code, currency=rejected.currency, transaction_id=rejected.transaction_id
    )


def _outcome_answer(cancel: HPGamesCancel, outcome: CancelOutcome | None) -> dict[str, Any]:
    if outcome is None:  # no outcome in time: the provider retries, the worker still applies
        return _answer(
            ERROR_INTERNAL, currency=cancel.currency or "", transaction_id=cancel.transaction_id
        )
    refunded = outcome.outcome is Outcome.REFUNDED
    return _answer(
        ERROR_OF_OUTCOME[outcome.outcome],
        balance=outcome.balance_after if refunded else outcome.balance_before,
        currency=outcome.currency or cancel.currency or "",
        account_transaction_id=outcome.ledger_tx,
        transaction_id=cancel.transaction_id,
    )


def _bulk_response(bulk: BulkCancel, outcomes: Outcomes) -> Response:
    assert len(outcomes) == len(bulk.cancels)
    answers = [
        _rejected_answer(entry)
        if isinstance(entry, Rejected)
        else _outcome_answer(bulk.cancels[entry], outcomes[entry])
        for entry in bulk.entries
    ]
    return Response(status=200, body=jsonbody.dumps({"cancelDebitResponses": answers}))


# The two routes.


def accept(request: Request, config: HPGamesConfig, seen: SeenHashes) -> Accepted | Response:
    """`POST /hpgames/cancelDebit`: one event, or an immediate error answer."""
    try:
        value = jsonbody.loads(request.body)
    except jsonbody.BodyError:
        return invalid_reply()
    result = check(value, config, seen, request.received_at_ms)
    if isinstance(result, Rejected):
        return reply(result.error_code, result.transaction_id, result.currency)
    return Accepted(
        cancels=(to_fields(result),),
        answer=partial(render, result),
        unknown_fields=result.unknown_fields,
    )


def render(cancel: HPGamesCancel, outcomes: Outcomes) -> Response:
    """The single-shape answer to the one outcome."""
    assert len(outcomes) == 1
    return Response(status=200, body=jsonbody.dumps(_outcome_answer(cancel, outcomes[0])))


def accept_bulk(request: Request, config: HPGamesConfig, seen: SeenHashes) -> Accepted | Response:
    """`POST /hpgames/bulkCancelDebit`: an event per valid item, answered in item order."""
    try:
        body = jsonbody.require_object(
            jsonbody.loads(
                request.body, containers_max=BULK_CONTAINERS_MAX, commas_max=BULK_COMMAS_MAX
            )
        )
        values = body.get("cancelDebitRequests")
        if not isinstance(values, list) or not 1 <= len(values) <= BULK_ITEMS_MAX:
            raise jsonbody.BodyError(f"cancelDebitRequests must list 1 to {BULK_ITEMS_MAX} items")
    except jsonbody.BodyError:
        return bulk_invalid_reply()
    cancels, bulk = plan(values, config, seen, request.received_at_ms)
    if not cancels:  # every item refused: answer now, publish nothing
        rejected = [entry for entry in bulk.entries if isinstance(entry, Rejected)]
        if not any(entry.authenticated for entry in rejected):
            # Nothing authenticated: one error, not an answer per junk item.
            forged = any(entry.error_code == ERROR_AUTHENTICATION for entry in rejected)
            return bulk_reply(ERROR_AUTHENTICATION if forged else ERROR_INVALID_REQUEST)
        return _bulk_response(bulk, ())
    unknown = bulk.unknown_fields + jsonbody.unknown_fields(body, BULK_FIELDS)
    return Accepted(cancels=cancels, answer=partial(render_bulk, bulk), unknown_fields=unknown)


def render_bulk(bulk: BulkCancel, outcomes: Outcomes) -> Response:
    """Every item's answer in request order: its refusal, or its cancel's outcome."""
    return _bulk_response(bulk, outcomes)


def routes(secrets: ProviderSecrets, seen: SeenHashes | None = None) -> list[Route]:
    """The two HPGames rows of the ingress's routing table. `seen` is the replay
    defence's state, shared by both routes; one per ingress instance (a fresh one with
    the default bound when not given)."""
    config = HPGamesConfig(
        merchant_id=secrets.value(MERCHANT_ID.variable),
        secret_key=secrets.value(SECRET_KEY.variable).encode(),
    )
    seen = SeenHashes() if seen is None else seen
    return [
        Route(
            path=PATH_CANCEL,
            provider=Provider.HPGAMES,
            accept=partial(accept, config=config, seen=seen),
            invalid=refused,
        ),
        Route(
            path=PATH_BULK_CANCEL,
            provider=Provider.HPGAMES,
            accept=partial(accept_bulk, config=config, seen=seen),
            invalid=bulk_refused,
        ),
    ]


ADAPTER = ProviderAdapter(Provider.HPGAMES, secrets=(MERCHANT_ID, SECRET_KEY), routes=routes)
