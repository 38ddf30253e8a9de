"""Naga Games "Cancel Bet" (seed 002): verify, parse and normalize, render.

Body: `{"data": {"betId": str, "playerToken"?: str}, "dataHash": str}`.
Authentication, both required:
- `dataHash` is the lower-case hex SHA-256 of `data` written as compact JSON with its
  keys in the order received (what Naga's `JSON.stringify(data)` produced): we rewrite
  the parsed `data` that way and compare in constant time;
- header `X-Signature` is base64 RSASSA-PKCS1-v1_5 / SHA-256 over the `dataHash` text,
  verified with Naga's PEM public key (`NAGA_PUBLIC_KEY_FILE`), loaded once at start.
A `dataHash` that is not the hash of `data` is answered like a bad signature (401): the
body was altered after signing, or signed over other bytes; either way it is not Naga's.

A cancel names only the bet: `betId` is both the cancel id and the bet to refund, and the
worker takes player, amount and currency from the recorded bet. `playerToken` is checked
for shape only and never used for money: the bet already names its player.

Tolerant reader: fields the seed does not list, in the body or in `data`, are accepted
and ignored (counted for the ingress's metric); those in `data` stay covered by
`dataHash`, which hashes `data` as received. `betId` and `playerToken` follow the one
text rule (no control characters). Naga's public key must be RSA of at least
`RSA_KEY_BITS_MIN` bits, or the ingress refuses to start.

Answers: HTTP 200 `{"data": {"betId", "status": "CANCELED"}, "error": null}`, or HTTP
4xx/5xx `{"data": null, "error": {"statusCode": <the HTTP status>, "message"}}`.
"""

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any, Self

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
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
)
from adapters.credentials import ProviderSecrets, Secret
from schemas import TEXT_CHARS_MAX, CancelItem, CancelOutcome, Outcome, Provider

PATH = "/naga/cancelBet"
SIGNATURE_HEADER = "x-signature"
SIGNATURE_CHARS_MAX = 2048  # base64 of an 8192-bit RSA signature is 1368 characters
PLAYER_TOKEN_CHARS_MAX = 255  # seed: "String (length: 255)"
RSA_KEY_BITS_MIN = 2048  # NIST SP 800-131A: shorter RSA keys are not acceptable

FIELDS = frozenset({"data", "dataHash"})
DATA_FIELDS = frozenset({"betId", "playerToken"})

STATUS_CANCELED = "CANCELED"  # seed: status "Must be \"CANCELED\""

# Messages: the seed's own where it has one (404, settled); plain HTTP reasons otherwise.
MESSAGE_NOT_FOUND = "Transaction Not Found"
MESSAGE_ALREADY_RESOLVED = "Transaction Seamless Already Resolved"
MESSAGE_BAD_REQUEST = "Bad Request"
MESSAGE_PLAYER_MISMATCH = "Player Mismatch"
MESSAGE_TRANSACTION_MISMATCH = "Transaction Mismatch"
MESSAGE_INVALID_SIGNATURE = "Invalid Signature"
MESSAGE_UNAVAILABLE = "Service Unavailable"

# Refusals by outcome; REFUNDED and ALREADY_CANCELLED answer success (the bet is cancelled).
ERROR_OF_OUTCOME: Mapping[Outcome, tuple[int, str]] = MappingProxyType(
    {
        Outcome.BET_UNKNOWN: (404, MESSAGE_NOT_FOUND),
        Outcome.BET_SETTLED: (400, MESSAGE_ALREADY_RESOLVED),
        Outcome.PLAYER_MISMATCH: (400, MESSAGE_PLAYER_MISMATCH),
        Outcome.AMOUNT_MISMATCH: (400, MESSAGE_TRANSACTION_MISMATCH),
        Outcome.INVALID: (400, MESSAGE_BAD_REQUEST),
    }
)
SUCCESS_OUTCOMES = frozenset({Outcome.REFUNDED, Outcome.ALREADY_CANCELLED})

_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class NagaConfig:
    """Naga's public key, parsed once at start so that no request parses PEM."""

    public_key: rsa.RSAPublicKey

    @classmethod
    def from_pem(cls, pem: bytes) -> Self:
        """Raises ValueError unless `pem` is an RSA public key of at least
        RSA_KEY_BITS_MIN bits: refuse to start."""
        key = serialization.load_pem_public_key(pem)
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("NAGA_PUBLIC_KEY_FILE must hold an RSA public key")
        if key.key_size < RSA_KEY_BITS_MIN:
            raise ValueError(
                f"NAGA_PUBLIC_KEY_FILE holds a {key.key_size}-bit RSA key;"
                f" at least {RSA_KEY_BITS_MIN} bits are required"
            )
        return cls(public_key=key)


def load_public_key(pem: bytes) -> NagaConfig:
    """`NagaConfig.from_pem`, every refusal a ValueError (a key that cannot work: the
    process refuses to start)."""
    try:
        return NagaConfig.from_pem(pem)
    except (TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError(str(exc)) from exc


# Naga's PEM public key, from a file (the dev stack makes a key pair of its own).
PUBLIC_KEY_FILE = Secret("NAGA_PUBLIC_KEY_FILE", file=True, check=load_public_key)


@dataclass(frozen=True)
class NagaCancel:
    """A validated Naga cancel: the bet to cancel, which is also the cancel's id."""

    bet_id: str
    player_token: str | None  # shape-checked only: never used for money
    unknown_fields: int = 0  # fields the seed does not list (body and data), ignored


# Signing: `data` as JSON.stringify writes it.


def _quote(text: str) -> str:
    """A JSON string as JSON.stringify writes it: UTF-8 as is, lone surrogates escaped.

    json.dumps(ensure_ascii=False) escapes exactly what JSON.stringify escapes (quote,
    backslash, control characters, lower-case hex), except lone surrogates, which
    JSON.stringify writes as `\\udxxx` (a parsed surrogate pair is one character here).
    """
    return _SURROGATE.sub(
        lambda match: f"\\u{ord(match.group()):04x}", json.dumps(text, ensure_ascii=False)
    )


def _stringify(value: Any, out: list[str]) -> None:
    if isinstance(value, Mapping):
        out.append("{")
        for index, (key, item) in enumerate(value.items()):
            if index:
                out.append(",")
            out.append(_quote(str(key)))
            out.append(":")
            _stringify(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _stringify(item, out)
        out.append("]")
    elif isinstance(value, str):
        out.append(_quote(value))
    elif isinstance(value, jsonbody.Number):
        out.append(value.literal)  # as written, never re-formatted
    elif isinstance(value, bool) or value is None:
        out.append(json.dumps(value))
    else:
        raise TypeError(f"cannot write {type(value).__name__} as JSON")


def stringify(value: Any) -> bytes:
    """Compact JSON in the order given, as Naga's JSON.stringify wrote it before hashing."""
    out: list[str] = []
    _stringify(value, out)
    return "".join(out).encode()


def data_hash(data: bytes | Mapping[str, Any]) -> str:
    """Lower-case hex SHA-256 of `data`: bytes as they are, or a parsed object stringified."""
    raw = data if isinstance(data, bytes) else stringify(data)
    return hashlib.sha256(raw).hexdigest()


def sign(data_hash: str, private_key: rsa.RSAPrivateKey) -> str:
    """`X-Signature` for `data_hash`, as Naga makes it; for tests and tools."""
    signature = private_key.sign(data_hash.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def verify_signature(given_hash: str, signature: str | None, public_key: rsa.RSAPublicKey) -> bool:
    """The RSA check of `X-Signature` over the `dataHash` text; False for anything malformed."""
    if not signature or len(signature) > SIGNATURE_CHARS_MAX:
        return False
    try:
        raw = base64.b64decode(signature, validate=True)
        message = given_hash.encode("ascii")
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text
        return False
    if len(raw) != (public_key.key_size + 7) // 8:
        return False
    try:
        public_key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def verify(
    data: Mapping[str, Any],
    given_hash: str,
    signature: str | None,
    public_key: rsa.RSAPublicKey,
) -> bool:
    """`dataHash` is the hash of `data` (constant time) and Naga signed that `dataHash`."""
    expected = data_hash(data).encode()
    if not hmac.compare_digest(expected, given_hash.encode("utf-8", "replace")):
        return False  # altered after signing: refused before the costlier RSA check
    return verify_signature(given_hash, signature, public_key)


# Parsing.


def _utf8_string(obj: Mapping[str, Any], key: str, chars_min: int, chars_max: int) -> str:
    """A string under the one text rule (length, no control characters, no lone
    surrogate: it travels on in an event)."""
    value = obj.get(key)
    if not isinstance(value, str):
        raise jsonbody.BodyError(f"field {key!r} must be a string")
    return jsonbody.text(value, key, chars_min=chars_min, chars_max=chars_max)


def signed_parts(body: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The `data` object and the `dataHash` text: what authentication needs."""
    data = jsonbody.require_object(body.get("data"), "field 'data'")
    given_hash = body.get("dataHash")
    if not isinstance(given_hash, str):
        raise jsonbody.BodyError("field 'dataHash' must be a string")
    return data, given_hash


def parse(body: Mapping[str, Any]) -> NagaCancel:
    """Validate an authenticated body's listed fields (others are ignored); raises
    BodyError."""
    data = jsonbody.require_object(body.get("data"), "field 'data'")
    if "betId" not in data:
        raise jsonbody.BodyError("missing field 'betId'")
    bet_id = _utf8_string(data, "betId", 1, TEXT_CHARS_MAX)  # the seed says 36: longer passes
    player_token = None
    if data.get("playerToken") is not None:  # absent or null: the token is not enabled
        player_token = _utf8_string(data, "playerToken", 0, PLAYER_TOKEN_CHARS_MAX)
    unknown = jsonbody.unknown_fields(body, FIELDS) + jsonbody.unknown_fields(data, DATA_FIELDS)
    return NagaCancel(bet_id=bet_id, player_token=player_token, unknown_fields=unknown)


def to_fields(cancel: NagaCancel) -> CancelFields:
    """The bet is the cancel: player, amount and currency come from the recorded bet."""
    items = (CancelItem(bet_tx=cancel.bet_id, amount=None),)
    return CancelFields(Provider.NAGA, cancel.bet_id, None, None, items)


# Answers.


def reply(status: int, message: str) -> Response:
    """A refusal in the seed's failure shape; `statusCode` repeats the HTTP status."""
    assert 400 <= status <= 599
    body = {"data": None, "error": {"statusCode": status, "message": message}}
    return Response(status=status, body=jsonbody.dumps(body))


def canceled(bet_id: str) -> Response:
    """Success in the seed's shape: the bet is cancelled (now, or by an earlier call)."""
    body = {"data": {"betId": bet_id, "status": STATUS_CANCELED}, "error": None}
    return Response(status=200, body=jsonbody.dumps(body))


def bad_request() -> Response:
    """The answer to an invalid request."""
    return reply(400, MESSAGE_BAD_REQUEST)


def refused(received_at_ms: int) -> Response:
    """The answer to a body the ingress refuses unread: a bad request."""
    return bad_request()


def accept(request: Request, config: NagaConfig) -> Accepted | Response:
    try:
        body = jsonbody.require_object(jsonbody.loads(request.body))
        data, given_hash = signed_parts(body)
    except jsonbody.BodyError:
        return bad_request()
    signature = request.headers.get(SIGNATURE_HEADER)
    if not verify(data, given_hash, signature, config.public_key):
        return reply(401, MESSAGE_INVALID_SIGNATURE)
    try:
        cancel = parse(body)
        fields = to_fields(cancel)
    except (jsonbody.BodyError, ValidationError):
        return bad_request()
    return Accepted(
        cancels=(fields,), answer=partial(render, cancel), unknown_fields=cancel.unknown_fields
    )


def render(cancel: NagaCancel, outcomes: Outcomes) -> Response:
    """The answer to the one outcome: the bet cancelled (now or before), or why not."""
    assert len(outcomes) == 1
    outcome: CancelOutcome | None = outcomes[0]
    if outcome is None:  # no outcome in time: Naga may retry; the worker still applies it
        return reply(503, MESSAGE_UNAVAILABLE)
    if outcome.outcome in SUCCESS_OUTCOMES:
        return canceled(cancel.bet_id)
    status, message = ERROR_OF_OUTCOME[outcome.outcome]
    return reply(status, message)


def routes(secrets: ProviderSecrets) -> list[Route]:
    config = NagaConfig.from_pem(secrets.file(PUBLIC_KEY_FILE.variable))
    return [
        Route(
            path=PATH,
            provider=Provider.NAGA,
            accept=partial(accept, config=config),
            invalid=refused,
        ),
    ]


ADAPTER = ProviderAdapter(Provider.NAGA, secrets=(PUBLIC_KEY_FILE,), routes=routes)
