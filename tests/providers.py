"""Every provider's requests and answers, for table-driven tests (no I/O here).

- `Keys`: the dev secrets (`refundctl.config.DEV_SECRETS`) and the session's Naga
  private key; `Keys.wrong()` gives a set where every secret is wrong.
- `Api`: one provider route. `api.request(cancel, keys, now_ms)` is a valid signed
  request (`Wire`: path, body bytes, lower-case headers) for a `Cancel`;
  `api.answers(status, body)` checks that an answer is in the provider's format and
  reads it as `Answer`s (HTTP status, the provider's code as text, reported balance).
- `bad_inputs(api)`: the bad-input matrix of a route, each case with the refusal it
  must get (`api.refusals[case.refusal]`).

Requests are written and signed here with hmac/hashlib/cryptography, not with the
adapters' own code, so a test compares the adapter against an independent reading of
the protocol. Number literals (`Lit`) are written exactly as given.
"""

import base64
import functools
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import strategies as st

from adapters.contract import Accepted, Envelope
from adapters.secrets import ProviderSecrets
from refundctl import config
from schemas import CancelRequested

Refusal = Literal["invalid", "auth"]
FieldPath = tuple[str | int, ...]

SIGN = "<signed-by-the-sealer>"  # placeholder of a body-carried signature (hash, dataHash)
NON_UTF8 = "NON-UTF8-SENTINEL"  # replaced by invalid UTF-8 bytes after encoding
LONE_SURROGATE = "LONE-SURROGATE-SENTINEL"  # replaced by a `\ud800` escape after encoding
JSON_TYPE = {"content-type": "application/json"}
SKEW_MS = 301_000  # just over the 300 s the spec allows
NON_ASCII_HEADER = "\xe9t\xe9\xff"  # bytes E9 74 E9 FF as Latin-1 (how HTTP reads them)


class Lit(str):
    """A JSON number (or any JSON text) written exactly as given."""


def to_json(value: Any) -> str:
    """Compact JSON, keys in order, UTF-8 as is (what JSON.stringify writes); `Lit` as is."""
    if isinstance(value, Lit):
        return str(value)
    if isinstance(value, Mapping):
        items = (f"{json.dumps(k, ensure_ascii=False)}:{to_json(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(to_json(item) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _literal(value: Any) -> str:
    """A value as a signature covers it: strings as is, anything else as JSON text."""
    return value if isinstance(value, str) and not isinstance(value, Lit) else to_json(value)


# Secrets.


def naga_private_key(naga_key_dir: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(
        (naga_key_dir / "naga-dev-private.pem").read_bytes(), password=None
    )
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def secrets_env(naga_key_dir: Path) -> dict[str, str]:
    """The provider secrets as the ingress reads them from its environment."""
    return {
        **config.DEV_SECRETS,
        "NAGA_PUBLIC_KEY_FILE": str(naga_key_dir / "naga-dev-public.pem"),
    }


def provider_secrets(naga_public_key_pem: bytes = b"", **values: str) -> ProviderSecrets:
    """Secrets to build routes with in a test: the dev values, with `values` (by variable
    name) instead, and Naga's public key."""
    return ProviderSecrets(
        values={**config.DEV_SECRETS, **values},
        files={"NAGA_PUBLIC_KEY_FILE": naga_public_key_pem},
    )


@functools.cache
def _other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass(frozen=True)
class Keys:
    scorpio_token: str
    hpgames_merchant_id: str
    hpgames_secret: str
    naga_key: rsa.RSAPrivateKey = field(repr=False)
    amb_username: str
    amb_api_key: str

    @classmethod
    def dev(cls, naga_key_dir: Path) -> "Keys":
        dev = config.DEV_SECRETS
        return cls(
            scorpio_token=dev["SCORPIO_API_TOKEN"],
            hpgames_merchant_id=dev["HPGAMES_MERCHANT_ID"],
            hpgames_secret=dev["HPGAMES_SECRET_KEY"],
            naga_key=naga_private_key(naga_key_dir),
            amb_username=dev["AMB_AGENT_USERNAME"],
            amb_api_key=dev["AMB_API_KEY"],
        )

    def wrong(self) -> "Keys":
        """Every secret wrong (ids such as the merchant id and the agent kept)."""
        return replace(
            self,
            scorpio_token="wrong-scorpio-token",
            hpgames_secret="wrong-hpgames-secret",
            naga_key=_other_rsa_key(),
            amb_api_key="wrong-amb-api-key",
        )


def stamped(accepted: Accepted, envelope: Envelope) -> tuple[CancelRequested, ...]:
    """The events the ingress publishes for `accepted`: its cancels, `envelope` stamped on."""
    return envelope.stamp(accepted.cancels)


# Requests.


@dataclass(frozen=True)
class Cancel:
    """A cancel of one bet. Naga's cancel names only the bet: `cancel_id`, `player`,
    `currency` and `amount` are not sent (its cancel id is the bet id)."""

    cancel_id: str
    bet_tx: str
    player: str = "p1"
    currency: str = "EUR"
    amount: str = "10.00"  # a JSON number literal


@dataclass(frozen=True)
class Wire:
    path: str
    body: bytes
    headers: dict[str, str]

    def raw_headers(self) -> dict[bytes, bytes]:
        """The headers as bytes on the wire (Latin-1, as HTTP servers decode them)."""
        return {name.encode(): value.encode("latin-1") for name, value in self.headers.items()}


@dataclass(frozen=True)
class Answer:
    """An answer read in the provider's format. `code` is the provider's own code as
    text (Scorpio `statusCode`, HPGames `errorCode`, AMB `statusCode`, Naga `status` or
    error `message`); `balance` the balance it reports (AMB `balanceAfter`), None when
    its format carries none."""

    status: int
    code: str
    balance: Decimal | None
    body: Any


@dataclass(frozen=True)
class Anatomy:
    """Where a route's body keeps what the bad-input matrix changes (paths into it)."""

    strings: tuple[FieldPath, ...]  # required strings
    numbers: tuple[FieldPath, ...]  # required numbers
    containers: tuple[FieldPath, ...] = ()  # required objects and arrays
    optional: tuple[tuple[FieldPath, type], ...] = ()  # optional fields and their type
    objects: tuple[FieldPath, ...] = ((),)  # objects where an unknown field can go
    ids: tuple[FieldPath, ...] = ()
    amount: FieldPath | None = None
    currency: FieldPath | None = None
    timestamp: FieldPath | None = None
    timestamp_in_seconds: bool = False
    text: FieldPath = ()  # a string field to spoil with bad bytes
    signed: FieldPath | None = None  # a field the signature covers
    auth_header: str | None = None
    bad_auth_headers: tuple[str, ...] = ()
    auth_edits: tuple[tuple[FieldPath, Any], ...] = ()  # body edits refused as forged


Seal = Callable[[Any, Keys], tuple[Any, dict[str, str]]]


@dataclass(frozen=True)
class Api:
    """One provider route: how to build its requests and read its answers."""

    name: str
    path: str
    provider: str  # the ledger's provider name
    fields: Callable[[Cancel, int], Any]  # the unsigned JSON body of a cancel at now_ms
    seal: Seal  # sign a body: (the body with its signature fields, headers)
    answers: Callable[[int, bytes], tuple[Answer, ...]]  # asserts the format
    refusals: Mapping[Refusal, tuple[int, str]]  # (HTTP status, code) of a refusal
    anatomy: Anatomy
    reports_balance: bool = True
    unknown_balance: Decimal | None = Decimal(0)  # reported when no balance is known

    def wire(self, body: Any, keys: Keys) -> Wire:
        sealed, headers = self.seal(body, keys)
        return Wire(self.path, to_json(sealed).encode(), headers)

    def request(self, cancel: Cancel, keys: Keys, now_ms: int) -> Wire:
        return self.wire(self.fields(cancel, now_ms), keys)

    def answer(self, status: int, body: bytes) -> Answer:
        (answer,) = self.answers(status, body)
        return answer


def _parse(body: bytes) -> Any:
    return json.loads(body, parse_float=Decimal, parse_int=Decimal)


def _number(value: Any) -> Decimal:
    assert isinstance(value, Decimal), f"not a JSON number: {value!r}"
    return value


def _integer(value: Any) -> int:
    number = _number(value)
    assert number == number.to_integral_value(), f"not an integer: {value!r}"
    return int(number)


# Scorpio Play.

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
    values = [_literal(body[key]) for key in sorted(body)] if isinstance(body, dict) else []
    digest = hmac.new(keys.scorpio_token.encode(), ",".join(values).encode(), hashlib.sha512)
    signature = base64.b64encode(digest.digest()).decode()
    return body, {**JSON_TYPE, "x-request-signature": signature}


def scorpio_answers(status: int, raw: bytes) -> tuple[Answer, ...]:
    assert status == 200, status
    body = _parse(raw)
    assert isinstance(body, dict), body
    assert set(body) == {"balance", "statusCode"}, body
    assert body["statusCode"] in SCORPIO_CODES, body
    return (Answer(status, body["statusCode"], _number(body["balance"]), body),)


# HPGames.

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
    message = "".join(_literal(part) for part in parts if part is not None).encode()
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
    return Answer(status, str(_integer(answer["errorCode"])), _number(answer["balance"]), answer)


def hpgames_answers(status: int, raw: bytes) -> tuple[Answer, ...]:
    assert status == 200, status
    return (_hpgames_answer(status, _parse(raw)),)


def hpgames_bulk_answers(status: int, raw: bytes) -> tuple[Answer, ...]:
    """The items' answers in request order, or the one answer of a bulk refused whole."""
    assert status == 200, status
    body = _parse(raw)
    if isinstance(body, dict) and list(body) == ["cancelDebitResponses"]:
        items = body["cancelDebitResponses"]
        assert isinstance(items, list), body
        assert items, body
        return tuple(_hpgames_answer(status, item) for item in items)
    return (_hpgames_answer(status, body),)


# Naga Games.


def naga_fields(cancel: Cancel, now_ms: int) -> dict[str, Any]:
    """A Naga cancel names the bet only (the cancel id is the bet id)."""
    return {"data": {"betId": cancel.bet_tx, "playerToken": "token-1"}, "dataHash": SIGN}


def naga_seal(body: Any, keys: Keys) -> tuple[Any, dict[str, str]]:
    """`dataHash` = hex SHA-256 of `data` as compact JSON in order; `X-Signature` =
    base64 RSA PKCS#1 v1.5 SHA-256 over the `dataHash` text."""
    headers = dict(JSON_TYPE)
    if not isinstance(body, dict):
        return body, headers
    if body.get("dataHash") == SIGN and "data" in body:
        body = {**body, "dataHash": hashlib.sha256(to_json(body["data"]).encode()).hexdigest()}
    given = body.get("dataHash")
    if isinstance(given, str) and given != SIGN:
        signature = keys.naga_key.sign(given.encode(), padding.PKCS1v15(), hashes.SHA256())
        headers["x-signature"] = base64.b64encode(signature).decode()
    return body, headers


def naga_answers(status: int, raw: bytes) -> tuple[Answer, ...]:
    body = _parse(raw)
    assert isinstance(body, dict), body
    assert list(body) == ["data", "error"], body
    if status == 200:
        data = body["data"]
        assert body["error"] is None, body
        assert isinstance(data, dict), body
        assert list(data) == ["betId", "status"], body
        assert isinstance(data["betId"], str), body
        assert data["status"] == "CANCELED", body
        return (Answer(status, data["status"], None, body),)
    assert 400 <= status <= 599, status
    error = body["error"]
    assert body["data"] is None, body
    assert isinstance(error, dict), body
    assert list(error) == ["statusCode", "message"], body
    assert _integer(error["statusCode"]) == status, body
    assert isinstance(error["message"], str), body
    assert error["message"], body
    return (Answer(status, error["message"], None, body),)


# AMB Super API.

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
    body = _parse(raw)
    assert isinstance(body, dict), body
    code = _integer(body.get("statusCode"))
    assert code in AMB_CODES, body
    assert status == (401 if code == 30001 else 200), (status, body)
    if code == 0:
        assert list(body) == list(AMB_SUCCESS_FIELDS), body
    else:
        assert list(body)[:4] == list(AMB_FAIL_FIELDS), body
        assert set(body) - set(AMB_FAIL_FIELDS) in (set(), {"balanceBefore", "balanceAfter"})
    for name in ("id", "productId"):
        assert isinstance(body[name], str), body
    _integer(body["timestampMillis"])
    balance = body.get("balanceAfter")
    if balance is not None:
        _number(body["balanceBefore"])
    return (Answer(status, str(code), None if balance is None else _number(balance), body),)


# The routes.


def paths(spec: str, prefix: str = "") -> tuple[FieldPath, ...]:
    """Field paths written "a b.0.c" (list indexes as numbers), each under `prefix`."""
    return tuple(
        tuple(int(part) if part.isdigit() else part for part in (prefix + name).split("."))
        for name in spec.split()
    )


def path(spec: str, prefix: str = "") -> FieldPath:
    (one,) = paths(spec, prefix)
    return one


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


_BAD_SIGNATURES = ("not base64!", "x" * 10_000, NON_ASCII_HEADER)
_AMB_AGENT = config.DEV_SECRETS["AMB_AGENT_USERNAME"]
_AMB_KEY = config.DEV_SECRETS["AMB_API_KEY"]

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
        bad_auth_headers=(*_BAD_SIGNATURES, base64.b64encode(bytes(64)).decode()),
    ),
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
NAGA = Api(
    name="naga",
    path="/naga/cancelBet",
    provider="naga",
    fields=naga_fields,
    seal=naga_seal,
    answers=naga_answers,
    refusals={"invalid": (400, "Bad Request"), "auth": (401, "Invalid Signature")},
    anatomy=Anatomy(
        strings=paths("data.betId dataHash"),
        numbers=(),
        containers=paths("data"),
        optional=((path("data.playerToken"), str),),
        objects=((), path("data")),
        ids=paths("data.betId"),
        text=path("data.betId"),
        signed=path("data.betId"),
        auth_header="x-signature",
        bad_auth_headers=(*_BAD_SIGNATURES, base64.b64encode(bytes(256)).decode()),
    ),
    reports_balance=False,
    unknown_balance=None,
)
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
APIS = (SCORPIO, HPGAMES, HPGAMES_BULK, NAGA, AMB)
PROVIDER_APIS = (SCORPIO, HPGAMES, NAGA, AMB)  # one route each (HPGames' single cancel)


# The bad-input matrix.

_DROP = object()


def edit(value: Any, path: FieldPath, new: Any) -> Any:
    """A copy of `value` with the field at `path` set to `new` (removed: `_DROP`)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        copy: Any = dict(value)
    else:
        assert isinstance(value, list)
        assert isinstance(head, int)
        copy = list(value)
    if rest:
        copy[head] = edit(copy[head], rest, new)
    elif new is _DROP:
        del copy[head]
    else:
        copy[head] = new
    return copy


def get(value: Any, path: FieldPath) -> Any:
    for part in path:
        value = value[part]
    return value


@dataclass(frozen=True)
class BadInput:
    name: str
    refusal: Refusal
    build: Callable[[Api, Keys, int], Wire]  # (route, keys, now_ms) -> the request


def _cancel() -> Cancel:
    return Cancel(cancel_id="cancel-1", bet_tx="bet-1")


def _edited(path: FieldPath, new: Any) -> Callable[[Api, Keys, int], Wire]:
    """The valid body with one field changed, then signed: validation must refuse it."""

    def build(api: Api, keys: Keys, now_ms: int) -> Wire:
        return api.wire(edit(api.fields(_cancel(), now_ms), path, new), keys)

    return build


def _raw(make: Callable[[bytes], bytes]) -> Callable[[Api, Keys, int], Wire]:
    """A body made from the valid one's bytes, with the valid one's headers."""

    def build(api: Api, keys: Keys, now_ms: int) -> Wire:
        valid = api.request(_cancel(), keys, now_ms)
        return Wire(api.path, make(valid.body), valid.headers)

    return build


def _wrapped(wrap: Callable[[Any], Any]) -> Callable[[Api, Keys, int], Wire]:
    """The valid signed body, wrapped (a wrong JSON type at the top)."""

    def build(api: Api, keys: Keys, now_ms: int) -> Wire:
        sealed, headers = api.seal(api.fields(_cancel(), now_ms), keys)
        return Wire(api.path, to_json(wrap(sealed)).encode(), headers)

    return build


def _spoiled(path: FieldPath, sentinel: str, raw: bytes) -> Callable[[Api, Keys, int], Wire]:
    def build(api: Api, keys: Keys, now_ms: int) -> Wire:
        wire = api.wire(edit(api.fields(_cancel(), now_ms), path, sentinel), keys)
        return replace(wire, body=wire.body.replace(sentinel.encode(), raw))

    return build


def _duplicate_first_key(body: bytes) -> bytes:
    parsed = json.loads(body)
    first = next(iter(parsed))
    pair = f"{json.dumps(first)}:{json.dumps(parsed[first])}"
    return body[:-1] + b"," + pair.encode() + b"}"


def _replayed(path: FieldPath) -> Callable[[Api, Keys, int], Wire]:
    """A valid signature kept while a signed field of the body changes."""

    def build(api: Api, keys: Keys, now_ms: int) -> Wire:
        sealed, headers = api.seal(api.fields(_cancel(), now_ms), keys)
        old = get(sealed, path)
        new = Lit("1000.00") if isinstance(old, Lit) else f"{old}-changed"
        return Wire(api.path, to_json(edit(sealed, path, new)).encode(), headers)

    return build


def _wrong_keys(api: Api, keys: Keys, now_ms: int) -> Wire:
    return api.request(_cancel(), keys.wrong(), now_ms)


def _header(name: str, value: str | None) -> Callable[[Api, Keys, int], Wire]:
    def build(api: Api, keys: Keys, now_ms: int) -> Wire:
        wire = api.request(_cancel(), keys, now_ms)
        headers = {k: v for k, v in wire.headers.items() if k != name}
        if value is not None:
            headers[name] = value
        return replace(wire, headers=headers)

    return build


def _stamp(path: FieldPath, offset_ms: int, seconds: bool) -> Callable[[Api, Keys, int], Wire]:
    def build(api: Api, keys: Keys, now_ms: int) -> Wire:
        at = now_ms + offset_ms
        value = Lit(str(at // 1000 if seconds else at))
        return api.wire(edit(api.fields(_cancel(), now_ms), path, value), keys)

    return build


def _name(path: FieldPath) -> str:
    return ".".join(str(part) for part in path) or "body"


def _wrong_type(kind: type) -> Any:
    return "1" if kind is Decimal else Lit("1") if kind is str else "not-a-container"


CONTROL_CHARACTERS = {
    "nul": "evil\u0000-1",
    "newline": "id\n1",
    "unit-separator": "id\u001f",
    "delete": "id\u007f",
}

AMOUNTS = {
    "negative": "-10.00",
    "zero": "0",
    "zero-decimals": "0.00",
    "NaN": "NaN",
    "Infinity": "Infinity",
    "too-many-decimals": "10.001",
    "huge-exponent": "1e400",
    "over-max": "1000000000000.01",
    "sixty-digits": "1" * 60,
    "past-28-digits": "10.000000000000000000000000000001",  # normalize() rounded it to 10
}


def bad_inputs(api: Api) -> list[BadInput]:
    """Every bad input that applies to the route (the protocol decides which do)."""
    anatomy = api.anatomy
    cases = [
        BadInput("empty-body", "invalid", _raw(lambda _: b"")),
        BadInput("blank-body", "invalid", _raw(lambda _: b" \r\n\t ")),
        BadInput("invalid-json", "invalid", _raw(lambda body: body[:-1])),
        BadInput("duplicate-key", "invalid", _raw(_duplicate_first_key)),
        BadInput("deep-nesting", "invalid", _raw(lambda _: b"[" * 100_000)),
        BadInput("top-level-array", "invalid", _wrapped(lambda body: [body])),
        BadInput("top-level-string", "invalid", _wrapped(lambda body: "cancel")),
        BadInput("top-level-number", "invalid", _wrapped(lambda body: Lit("42"))),
        BadInput("top-level-null", "invalid", _wrapped(lambda body: None)),
        BadInput("non-utf8", "invalid", _spoiled(anatomy.text, NON_UTF8, b"p\xff\xfe1")),
        BadInput("lone-surrogate", "invalid", _spoiled(anatomy.text, LONE_SURROGATE, b"p\\ud8001")),
    ]
    required = anatomy.strings + anatomy.numbers + anatomy.containers
    cases += [BadInput(f"missing.{_name(p)}", "invalid", _edited(p, _DROP)) for p in required]
    typed = (
        [(path, str) for path in anatomy.strings]
        + [(path, Decimal) for path in anatomy.numbers]
        + [(path, dict) for path in anatomy.containers]
        + list(anatomy.optional)
    )
    cases += [
        BadInput(f"wrong-type.{_name(path)}", "invalid", _edited(path, _wrong_type(kind)))
        for path, kind in typed
    ]
    cases += [
        BadInput(f"null.{_name(path)}", "invalid", _edited(path, None))
        for path in anatomy.strings + anatomy.numbers
    ]
    cases += [
        BadInput(f"long-id.{_name(path)}", "invalid", _edited(path, "i" * 10_000))
        for path in anatomy.ids
    ]
    cases += [  # the ledger cannot hold them (PostgreSQL refuses NUL): refused at the door
        BadInput(f"{kind}.{_name(path)}", "invalid", _edited(path, value))
        for path in anatomy.ids
        for kind, value in CONTROL_CHARACTERS.items()
    ]
    if anatomy.amount is not None:
        cases += [
            BadInput(f"amount.{name}", "invalid", _edited(anatomy.amount, Lit(value)))
            for name, value in AMOUNTS.items()
        ]
    if anatomy.currency is not None:
        cases += [
            BadInput(f"currency.{code or 'empty'}", "invalid", _edited(anatomy.currency, code))
            for code in ("ZZZ", "eur", "EURO", "")
        ]
    if anatomy.timestamp is not None:
        path, seconds = anatomy.timestamp, anatomy.timestamp_in_seconds
        cases += [
            BadInput("timestamp.stale", "invalid", _stamp(path, -SKEW_MS, seconds)),
            BadInput("timestamp.future", "invalid", _stamp(path, SKEW_MS, seconds)),
        ]
    if anatomy.signed is not None:
        cases.append(
            BadInput("signature-replayed-on-changed-body", "auth", _replayed(anatomy.signed))
        )
    cases.append(BadInput("wrong-key", "auth", _wrong_keys))
    if anatomy.auth_header is not None:
        cases.append(BadInput("auth-header.missing", "auth", _header(anatomy.auth_header, None)))
        cases += [
            BadInput(f"auth-header.bad-{index}", "auth", _header(anatomy.auth_header, value))
            for index, value in enumerate(anatomy.bad_auth_headers)
        ]
    cases += [
        BadInput(f"forged.{_name(path)}", "auth", _edited(path, value))
        for path, value in anatomy.auth_edits
    ]
    if api is HPGAMES_BULK:
        cases += [
            BadInput("bulk.empty", "invalid", _edited((HPGAMES_BULK_KEY,), [])),
            BadInput("bulk.item-not-object", "invalid", _edited((HPGAMES_BULK_KEY, 0), Lit("1"))),
            BadInput("bulk.1001-items", "invalid", _edited((HPGAMES_BULK_KEY,), [{}] * 1001)),
        ]
    names = [case.name for case in cases]
    assert len(set(names)) == len(names), "case names are unique"
    return cases


@dataclass(frozen=True)
class Tolerated:
    """A request that carries what its seed does not list: accepted, the fields ignored."""

    name: str
    unknown_fields: int  # how many the adapter reports
    build: Callable[[Api, Keys, int], Wire]


def tolerated_inputs(api: Api) -> list[Tolerated]:
    """Fields the seed does not list, in every object of the body (tolerant reader):
    a string, a number, an object; and what a provider might add (issue 11)."""
    cases = [
        Tolerated(f"extra-{kind}.{_name(path)}", 1, _edited((*path, "unexpected"), value))
        for path in api.anatomy.objects
        for kind, value in (("string", "x"), ("number", Lit("1.50")), ("null", None))
    ]
    if api is not SCORPIO:  # Scorpio signs top-level values as text: no objects there
        cases += [
            Tolerated(f"extra-object.{_name(path)}", 1, _edited((*path, "meta"), {"a": [1]}))
            for path in api.anatomy.objects
        ]
    return cases


def assert_refused(api: Api, status: int, body: bytes, refusal: Refusal | None = None) -> None:
    """An immediate refusal in the route's format: `refusal`, or either kind if None."""
    allowed = set(api.refusals.values()) if refusal is None else {api.refusals[refusal]}
    for answer in api.answers(status, body):
        assert (answer.status, answer.code) in allowed, (answer, refusal)
        assert answer.balance == api.unknown_balance, answer


# Arbitrary input (hypothesis).


def field_names(api: Api) -> tuple[str, ...]:
    """Every key of the route's valid body, at every level (and an unknown one)."""
    body = api.fields(Cancel(cancel_id="c", bet_tx="b"), 0)
    return tuple(sorted({p[-1] for p in _paths(body) if isinstance(p[-1], str)}))


def json_values(api: Api) -> st.SearchStrategy[Any]:
    """Arbitrary JSON, its object keys often the route's own field names."""
    names = field_names(api)
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=16)
        | st.sampled_from(["cancel", "EUR", "REFUND", "p1", "bet-1", ""])
    )
    keys = st.sampled_from(names) | st.text(max_size=8)
    trees = st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(keys, children, max_size=len(names) + 2)
        ),
        max_leaves=24,
    )
    return trees | st.dictionaries(keys, trees, max_size=len(names) + 2)  # objects, often


def fuzz_wire(api: Api, value: Any, keys: Keys, *, sign_body: bool) -> Wire:
    """Arbitrary JSON sent as well as it can be: Scorpio's signature over its top-level
    values, AMB's valid credentials; with `sign_body`, also a correct HPGames `hash` /
    Naga `dataHash` (and signature) wherever the value has such a field."""
    if sign_body:
        value = _placeholders(value)
    sealed, headers = api.seal(value, keys)
    return Wire(api.path, to_json(sealed).encode(), headers)


def _placeholders(value: Any) -> Any:
    if isinstance(value, list):
        return [_placeholders(item) for item in value]
    if not isinstance(value, dict):
        return value
    return {
        key: SIGN if key in ("hash", "dataHash") else _placeholders(item)
        for key, item in value.items()
    }


def _paths(value: Any, prefix: FieldPath = ()) -> list[FieldPath]:
    """Every field's path in `value`, and a new field's path in every object."""
    paths: list[FieldPath] = []
    if isinstance(value, dict):
        paths.append((*prefix, "unexpected"))
        items: Sequence[tuple[str | int, Any]] = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return paths
    for key, item in items:
        paths.append((*prefix, key))
        paths += _paths(item, (*prefix, key))
    return paths


Edits = list[tuple[FieldPath, Any]]


def edits(api: Api) -> st.SearchStrategy[Edits]:
    """Up to four changes to the route's valid body: a field removed, added, or set to
    arbitrary JSON (often a number literal or a string, the types the fields have)."""
    paths = _paths(api.fields(Cancel(cancel_id="c", bet_tx="b"), 0))
    numbers = st.decimals(allow_nan=False, allow_infinity=False).map(lambda d: Lit(str(d)))
    values = st.just(_DROP) | numbers | st.text(max_size=300) | json_values(api)
    return st.lists(st.tuples(st.sampled_from(paths), values), max_size=4)


def edited_wire(api: Api, changes: Edits, keys: Keys, now_ms: int) -> Wire:
    """The valid request with `changes` made (those that still apply), then signed."""
    body = api.fields(Cancel(cancel_id="cancel-1", bet_tx="bet-1"), now_ms)
    for path, value in changes:
        try:
            body = edit(body, path, value)
        except (KeyError, IndexError, TypeError, AssertionError):
            continue  # an earlier change removed or replaced what holds this field
    return api.wire(body, keys)
