"""Naga Games "Cancel Bet" adapter: dataHash, RSA signature, validation, answers.

Pure: no broker, no database. RSA keys are generated per test module, never stored.
Request bodies are written here with `json` and hashed/signed with hashlib and
cryptography directly, independently of the adapter's own code. Outcomes are built
directly to exercise `render`.
"""

import base64
import hashlib
import json
from decimal import Decimal
from functools import partial
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from adapters import jsonbody, naga
from adapters.contract import Accepted, Envelope, Request, Response, request_digest
from schemas import CancelItem, CancelOutcome, ItemResult, Outcome, Provider, ReplyTo
from tests.providers import provider_secrets, stamped

SEED_BET_ID = "41984486-2234-4aa8-be82-df58eab8b121"  # the seed example's betId
SEED_DATA_HASH = "7884a27f65954d52346fd51e43fbba9cdfeca81f08d67782e2addb99069434e9"
NOW = 1_767_225_600_000  # the server clock when the request arrived (2026-01-01)
REPLY_TO = ReplyTo(topic="refund.replies", partition=3)
ENVELOPE = Envelope(
    request_id="req-1", reply_to=REPLY_TO, deadline_ms=NOW + 3500, requested_at_ms=NOW
)
MISSING = object()

# sha256(JSON.stringify(data)) computed by Node.js v20 (crypto.createHash), for data
# objects built in this key order. Node is not needed to run these tests.
NODE_VECTORS: list[tuple[dict[str, str], str]] = [
    (
        {"betId": SEED_BET_ID},
        "dcbefecfe5936aaf9547130bd2680b589a9e9d7af753052dd7a7c04310523394",
    ),
    (
        {"betId": SEED_BET_ID, "playerToken": "tok-1"},
        "d03ca6a3c9a5d136282a8bd700206359d1ec682c5dda2c11d64bb1df32ec29cc",
    ),
    (
        {"playerToken": "tok-1", "betId": SEED_BET_ID},
        "456e17e6d7182a34ae4c1ab20cf09d6e5eaf23016084dbc5754d62f7e212fa57",
    ),
    (
        {"betId": "ставка-é-€-😀-\u2028-\u007f"},
        "8b276b620a74a86b122ec4d57acef0517ff38ab8de92f495ecbe7266aeec1c3e",
    ),
    (
        {"betId": 'q"b\\s/\b\f\n\r\t\u0000\u001f'},
        "199e7751a69f2b10093b5f783468c4f4c4c0b263c87ddeb08566e67f9da93a9f",
    ),
    (
        {"betId": "\ud800x"},  # a lone surrogate: JSON.stringify writes "\ud800"
        "e41594fc68d4ff508fa745225402930ac55e7ae2f6802f52d1ebc541ed7d4572",
    ),
]


# Keys, generated once per module.


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(private_key: rsa.RSAPrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def config(key: rsa.RSAPrivateKey) -> naga.NagaConfig:
    return naga.NagaConfig.from_pem(public_pem(key))


@pytest.fixture(scope="module")
def signer(key: rsa.RSAPrivateKey) -> "Signer":
    return Signer(key)


# Requests, written and signed as Naga does, without the adapter's code.


def stringify(data: Any) -> bytes:
    """JSON.stringify for surrogate-free data: compact, keys in order, UTF-8 as is."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def sha256_hex(data: Any) -> str:
    return hashlib.sha256(stringify(data)).hexdigest()


def rsa_sign(text: str, private_key: rsa.RSAPrivateKey) -> str:
    signature = private_key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode()


class Signer:
    """Builds Naga requests signed with one private key."""

    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        self.private_key = private_key

    def body(self, data: Any, data_hash: Any = None, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if data is not MISSING:
            body["data"] = data
        if data_hash is not MISSING:
            body["dataHash"] = sha256_hex(data) if data_hash is None else data_hash
        body.update(extra)
        return body

    def request(
        self,
        body: dict[str, Any] | bytes,
        signature: str | object | None = None,
        received_at_ms: int = NOW,
    ) -> Request:
        """`signature` None: sign the body's dataHash; MISSING: send no header."""
        raw = body if isinstance(body, bytes) else json.dumps(body, indent=4).encode()
        headers = {"content-type": "application/json"}
        if signature is None:
            assert isinstance(body, dict)
            signature = rsa_sign(body["dataHash"], self.private_key)
        if isinstance(signature, str):
            headers["x-signature"] = signature
        return Request(headers=headers, body=raw, received_at_ms=received_at_ms)


def accept(config: naga.NagaConfig, request: Request) -> Accepted | Response:
    return naga.accept(request, config)


def accepted(config: naga.NagaConfig, request: Request) -> Accepted:
    result = accept(config, request)
    assert isinstance(result, Accepted), result
    return result


def refused(config: naga.NagaConfig, request: Request, status: int) -> Response:
    result = accept(config, request)
    assert isinstance(result, Response), result
    assert result.status == status, result
    return result


def error_body(status: int, message: str) -> bytes:
    return json.dumps(
        {"data": None, "error": {"statusCode": status, "message": message}},
        separators=(",", ":"),
    ).encode()


UNAUTHORIZED = error_body(401, "Invalid Signature")
BAD_REQUEST = error_body(400, "Bad Request")


# dataHash: JSON.stringify of `data` in the order received.


@pytest.mark.parametrize(("data", "expected"), NODE_VECTORS)
def test_data_hash_is_sha256_of_json_stringify(data: dict[str, str], expected: str) -> None:
    assert naga.data_hash(data) == expected


@pytest.mark.parametrize(("data", "expected"), NODE_VECTORS[:3])
def test_bodies_hashed_like_json_stringify_pass_the_hash_check(
    config: naga.NagaConfig, signer: Signer, data: dict[str, str], expected: str
) -> None:
    """The wire may \\u-escape or pretty-print: the hash is over `data` as stringified."""
    body = signer.body(data, expected)
    signature = rsa_sign(expected, signer.private_key)
    for raw in (json.dumps(body).encode(), json.dumps(body, ensure_ascii=False).encode()):
        (cancel,) = accepted(config, signer.request(raw, signature)).cancels
        assert cancel.cancel_id == data["betId"]


@pytest.mark.parametrize(("data", "expected"), NODE_VECTORS[3:5])
def test_ids_with_control_characters_pass_the_hash_check_and_are_refused_as_invalid(
    config: naga.NagaConfig, signer: Signer, data: dict[str, str], expected: str
) -> None:
    """U+007F, U+0000…: hashed as JSON.stringify does (authentic), but the ledger cannot
    hold such an id (PostgreSQL refuses NUL): 400 at the door, never published."""
    body = signer.body(data, expected)
    signature = rsa_sign(expected, signer.private_key)
    for raw in (json.dumps(body).encode(), json.dumps(body, ensure_ascii=False).encode()):
        assert refused(config, signer.request(raw, signature), 400).body == BAD_REQUEST


def test_non_ascii_bet_id_is_accepted_and_echoed(config: naga.NagaConfig, signer: Signer) -> None:
    bet_id = "ставка-é-€-😀"
    result = accepted(config, signer.request(signer.body({"betId": bet_id})))
    assert stamped(result, ENVELOPE)[0].cancel_id == bet_id
    response = result.answer([outcome(Outcome.REFUNDED, bet_id)])
    assert json.loads(response.body)["data"]["betId"] == bet_id


def test_data_hash_of_bytes_is_their_sha256() -> None:
    raw = b'{"betId":"x"}'
    assert naga.data_hash(raw) == hashlib.sha256(raw).hexdigest()
    assert naga.data_hash({"betId": "x"}) == naga.data_hash(raw)


def test_stringify_writes_numbers_as_written() -> None:
    data = {"a": jsonbody.Number("1.10"), "b": jsonbody.Number("-0"), "c": [True, None]}
    assert naga.stringify(data) == b'{"a":1.10,"b":-0,"c":[true,null]}'


@pytest.mark.parametrize("value", [Decimal("0.5"), b"x", object()])
def test_stringify_refuses_what_the_parser_never_gives(value: object) -> None:
    with pytest.raises(TypeError):
        naga.stringify({"a": value})


def test_reordered_keys_give_another_hash(config: naga.NagaConfig, signer: Signer) -> None:
    data = {"betId": SEED_BET_ID, "playerToken": "tok-1"}
    reordered = {"playerToken": "tok-1", "betId": SEED_BET_ID}
    assert naga.data_hash(data) != naga.data_hash(reordered)
    # Naga signed the hash of one order; the same fields in another order do not match it.
    signed_hash = sha256_hex(data)
    request = signer.request(signer.body(reordered, signed_hash))
    assert refused(config, request, 401).body == UNAUTHORIZED
    # The reordered data with its own hash and signature is fine.
    accepted(config, signer.request(signer.body(reordered)))


def test_numbers_in_data_are_hashed_as_written(config: naga.NagaConfig, signer: Signer) -> None:
    """`1.50` is hashed as `1.50`, not re-formatted: auth passes; the field the seed does
    not list is ignored (tolerant reader) and counted."""
    raw_data = '{"betId":"b-1","extra":1.50}'
    data_hash = hashlib.sha256(raw_data.encode()).hexdigest()
    raw = f'{{"data":{raw_data},"dataHash":"{data_hash}"}}'.encode()
    request = signer.request(raw, rsa_sign(data_hash, signer.private_key))
    result = accepted(config, request)
    assert result.unknown_fields == 1
    # Changing the unlisted field after signing breaks the hash: it stays covered.
    tampered = raw.replace(b"1.50", b"1.5")
    assert refused(config, signer.request(tampered, rsa_sign(data_hash, signer.private_key)), 401)


# X-Signature: RSASSA-PKCS1-v1_5 / SHA-256 over the dataHash text.


def test_valid_signature_is_accepted(config: naga.NagaConfig, signer: Signer) -> None:
    result = accepted(config, signer.request(signer.body({"betId": SEED_BET_ID})))
    assert len(result.cancels) == 1


def test_sign_helper_matches_an_independent_signature(signer: Signer) -> None:
    """PKCS#1 v1.5 is deterministic: the helper's signature equals ours byte for byte."""
    data_hash = sha256_hex({"betId": SEED_BET_ID})
    assert naga.sign(data_hash, signer.private_key) == rsa_sign(data_hash, signer.private_key)


def test_tampered_body_is_refused(config: naga.NagaConfig, signer: Signer) -> None:
    """Signature valid over the original dataHash, but `data` changed afterwards."""
    original = signer.body({"betId": SEED_BET_ID})
    signature = rsa_sign(original["dataHash"], signer.private_key)
    tampered = dict(original, data={"betId": "41984486-2234-4aa8-be82-df58eab8b122"})
    assert refused(config, signer.request(tampered, signature), 401).body == UNAUTHORIZED


def test_signature_by_another_key_is_refused(
    config: naga.NagaConfig, signer: Signer, other_key: rsa.RSAPrivateKey
) -> None:
    body = signer.body({"betId": SEED_BET_ID})  # dataHash is right
    signature = rsa_sign(body["dataHash"], other_key)
    assert refused(config, signer.request(body, signature), 401).body == UNAUTHORIZED


def test_signature_over_another_hash_is_refused(config: naga.NagaConfig, signer: Signer) -> None:
    body = signer.body({"betId": SEED_BET_ID})
    signature = rsa_sign(sha256_hex({"betId": "another"}), signer.private_key)
    assert refused(config, signer.request(body, signature), 401).body == UNAUTHORIZED


def test_signature_over_the_data_instead_of_its_hash_is_refused(
    config: naga.NagaConfig, signer: Signer
) -> None:
    data = {"betId": SEED_BET_ID}
    signature = rsa_sign(stringify(data).decode(), signer.private_key)
    assert refused(config, signer.request(signer.body(data), signature), 401).body == UNAUTHORIZED


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(MISSING, id="missing"),
        pytest.param("", id="empty"),
        pytest.param("garbage!", id="not-base64"),
        pytest.param("QUJD", id="base64-of-three-bytes"),
        pytest.param("A" * 343 + "=", id="base64-wrong-length"),
        pytest.param("A" * (naga.SIGNATURE_CHARS_MAX + 1), id="overlong"),
        pytest.param("A" * 100_000, id="very-long"),
        pytest.param("é" * 344, id="non-ascii"),
        pytest.param("A" * 342 + "==", id="right-length-wrong-signature"),
    ],
)
def test_bad_signature_header_is_refused(
    config: naga.NagaConfig, signer: Signer, signature: object
) -> None:
    request = signer.request(signer.body({"betId": SEED_BET_ID}), signature)
    assert refused(config, request, 401).body == UNAUTHORIZED


def test_signature_with_whitespace_is_refused(config: naga.NagaConfig, signer: Signer) -> None:
    body = signer.body({"betId": SEED_BET_ID})
    signature = rsa_sign(body["dataHash"], signer.private_key)
    spaced = signature[:100] + "\n" + signature[100:]
    assert refused(config, signer.request(body, spaced), 401).body == UNAUTHORIZED


@pytest.mark.parametrize(
    "data_hash",
    [
        pytest.param(lambda h: h.upper(), id="upper-case"),
        pytest.param(lambda h: h[:-1], id="truncated"),
        pytest.param(lambda h: h + "0", id="extended"),
        pytest.param(lambda h: "", id="empty"),
        pytest.param(lambda h: "é" * 64, id="non-ascii"),
    ],
)
def test_data_hash_not_equal_to_the_recomputed_one_is_refused(
    config: naga.NagaConfig, signer: Signer, data_hash: Any
) -> None:
    """Even when Naga's key signed that very text: the hash must be the data's."""
    data = {"betId": SEED_BET_ID}
    given = data_hash(sha256_hex(data))
    signature = rsa_sign(given.encode("utf-8", "replace").decode(), signer.private_key)
    request = signer.request(signer.body(data, given), signature)
    assert refused(config, request, 401).body == UNAUTHORIZED


def test_authentication_comes_before_field_validation(
    config: naga.NagaConfig, signer: Signer
) -> None:
    """An unsigned request learns nothing about which fields are wrong."""
    body = signer.body({"betId": 1}, extra="x")
    assert refused(config, signer.request(body, "garbage"), 401).body == UNAUTHORIZED


# The seed's example.


def test_golden_seed_request_and_response(config: naga.NagaConfig, signer: Signer) -> None:
    data_hash = "dcbefecfe5936aaf9547130bd2680b589a9e9d7af753052dd7a7c04310523394"
    raw = (
        "{\n"
        '    "data" : {\n'
        f'        "betId" : "{SEED_BET_ID}"\n'
        "    },\n"
        f'    "dataHash" : "{data_hash}"\n'
        "}"
    ).encode()
    result = accepted(config, signer.request(raw, rsa_sign(data_hash, signer.private_key)))
    assert result.cancels == (naga.to_fields(naga.NagaCancel(SEED_BET_ID, player_token=None)),)
    response = result.answer([outcome(Outcome.REFUNDED)])
    assert response.status == 200
    assert response.body == (
        b'{"data":{"betId":"41984486-2234-4aa8-be82-df58eab8b121","status":"CANCELED"},'
        b'"error":null}'
    )
    assert response.headers == {"content-type": "application/json"}


def test_seed_example_data_hash_is_not_the_hash_of_its_shown_data(
    config: naga.NagaConfig, signer: Signer
) -> None:
    """The seed's dataHash belongs to data not shown in full: with the shown data alone
    it fails the hash check, as any altered body would."""
    assert sha256_hex({"betId": SEED_BET_ID}) != SEED_DATA_HASH
    body = signer.body({"betId": SEED_BET_ID}, SEED_DATA_HASH)
    assert refused(config, signer.request(body), 401).body == UNAUTHORIZED


# Normalization into one CancelRequested.


def test_event_names_the_bet_and_leaves_player_amount_currency_to_the_worker(
    config: naga.NagaConfig, signer: Signer
) -> None:
    result = accepted(config, signer.request(signer.body({"betId": SEED_BET_ID})))
    (event,) = stamped(result, ENVELOPE)
    items = [CancelItem(bet_tx=SEED_BET_ID, amount=None)]
    assert event.correlation_id == "req-1.0"
    assert event.provider is Provider.NAGA
    assert event.cancel_id == SEED_BET_ID
    assert event.player is None
    assert event.currency is None
    assert event.items == items
    assert event.request_digest == request_digest(Provider.NAGA, SEED_BET_ID, None, None, items)
    assert event.reply_to == REPLY_TO
    assert event.deadline_ms == NOW + 3500
    assert event.requested_at_ms == NOW


def test_player_token_is_kept_but_does_not_change_the_event(
    config: naga.NagaConfig, signer: Signer
) -> None:
    """A retry with or without the token is the same cancel, with the same digest."""
    plain = accepted(config, signer.request(signer.body({"betId": SEED_BET_ID})))
    data = {"betId": SEED_BET_ID, "playerToken": "t" * 255}
    request = signer.request(signer.body(data), received_at_ms=NOW + 9)
    with_token = accepted(config, request)
    assert naga.parse(jsonbody.loads(request.body)).player_token == "t" * 255
    assert (
        stamped(with_token, ENVELOPE)[0].model_copy(update={"requested_at_ms": NOW})
        == stamped(plain, ENVELOPE)[0]
    )


def test_retry_carries_the_same_cancel_id_and_digest(
    config: naga.NagaConfig, signer: Signer
) -> None:
    body = signer.body({"betId": SEED_BET_ID})
    first = stamped(accepted(config, signer.request(body)), ENVELOPE)[0]
    second = stamped(accepted(config, signer.request(body, received_at_ms=NOW + 4_000)), ENVELOPE)[
        0
    ]
    assert (first.cancel_id, first.request_digest) == (second.cancel_id, second.request_digest)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"betId": "b" * 256}, id="bet-id-256-chars"),
        pytest.param({"betId": "b"}, id="bet-id-1-char"),
        pytest.param({"betId": "b-1", "playerToken": ""}, id="empty-player-token"),
        pytest.param({"betId": "b-1", "playerToken": None}, id="null-player-token"),
        pytest.param({"betId": "b-1", "playerToken": "p" * 255}, id="player-token-255"),
    ],
)
def test_valid_bodies_are_accepted(
    config: naga.NagaConfig, signer: Signer, data: dict[str, Any]
) -> None:
    result = accepted(config, signer.request(signer.body(data)))
    assert stamped(result, ENVELOPE)[0].cancel_id == data["betId"]


# Invalid requests: HTTP 400, never published.


def signed_bytes(signer: Signer, data: dict[str, Any], **extra: Any) -> tuple[bytes, str]:
    body = signer.body(data, **extra)
    return json.dumps(body).encode(), rsa_sign(body["dataHash"], signer.private_key)


INVALID_BODIES: list[Any] = [
    pytest.param(b"", id="empty-body"),
    pytest.param(b"  \n", id="blank-body"),
    pytest.param(b"{", id="invalid-json"),
    pytest.param(b'{"data":{"betId":"b-1"},"dataHash":"x",}', id="trailing-comma"),
    pytest.param(b"[]", id="top-level-array"),
    pytest.param(b'"text"', id="top-level-string"),
    pytest.param(b"null", id="top-level-null"),
    pytest.param(b'{"data":{"betId":"\xff"},"dataHash":"x"}', id="non-utf8"),
    pytest.param(b'{"data":{"betId":"b-1","betId":"b-2"},"dataHash":"x"}', id="duplicate-key"),
    pytest.param(b'{"data":{"betId":NaN},"dataHash":"x"}', id="nan-literal"),
    pytest.param(b"[" * 100 + b"]" * 100, id="deeply-nested"),
    pytest.param({"dataHash": "x"}, id="missing-data"),
    pytest.param({"data": {"betId": "b-1"}}, id="missing-data-hash"),
    pytest.param({"data": None, "dataHash": "x"}, id="null-data"),
    pytest.param({"data": "betId", "dataHash": "x"}, id="string-data"),
    pytest.param({"data": [{"betId": "b-1"}], "dataHash": "x"}, id="array-data"),
    pytest.param({"data": {"betId": "b-1"}, "dataHash": 1}, id="number-data-hash"),
    pytest.param({"data": {"betId": "b-1"}, "dataHash": None}, id="null-data-hash"),
    pytest.param({"data": {"betId": "b-1"}, "dataHash": ["x"]}, id="array-data-hash"),
]


@pytest.mark.parametrize("body", INVALID_BODIES)
def test_malformed_request_is_refused_before_authentication(
    config: naga.NagaConfig, signer: Signer, body: dict[str, Any] | bytes
) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    assert refused(config, signer.request(raw, "c2ln"), 400).body == BAD_REQUEST


SIGNED_INVALID_DATA: list[Any] = [
    pytest.param({}, {}, id="missing-bet-id"),
    pytest.param({"playerToken": "t"}, {}, id="only-player-token"),
    pytest.param({"betId": None}, {}, id="null-bet-id"),
    pytest.param({"betId": ""}, {}, id="empty-bet-id"),
    pytest.param({"betId": 123}, {}, id="number-bet-id"),
    pytest.param({"betId": True}, {}, id="bool-bet-id"),
    pytest.param({"betId": ["b-1"]}, {}, id="array-bet-id"),
    pytest.param({"betId": {"id": "b-1"}}, {}, id="object-bet-id"),
    pytest.param({"betId": "b" * 257}, {}, id="bet-id-257-chars"),
    pytest.param({"betId": "b" * 10_000}, {}, id="bet-id-10000-chars"),
    pytest.param({"betId": "b-1", "playerToken": 7}, {}, id="number-player-token"),
    pytest.param({"betId": "b-1", "playerToken": "p" * 256}, {}, id="player-token-256"),
    pytest.param({"betId": "b-1\u0000"}, {}, id="nul-in-bet-id"),
    pytest.param({"betId": "b-1\n"}, {}, id="newline-in-bet-id"),
    pytest.param({"betId": "b-1", "playerToken": "t\u001f"}, {}, id="control-in-player-token"),
]

# Fields the seed does not list: accepted and ignored (tolerant reader), and counted.
SIGNED_WITH_UNKNOWN_FIELDS = [
    pytest.param({"betId": "b-1", "amount": "10.00"}, {}, id="extra-data-field"),
    pytest.param({"betId": "b-1"}, {"extra": 1}, id="extra-top-level-field"),
    pytest.param({"betId": "b-1"}, {"signature": "x"}, id="extra-top-level-signature"),
    pytest.param({"betId": "b-1", "meta": {"a": [1]}}, {"x": None}, id="extra-both"),
]


@pytest.mark.parametrize(("data", "extra"), SIGNED_WITH_UNKNOWN_FIELDS)
def test_fields_the_seed_does_not_list_are_accepted_and_counted(
    config: naga.NagaConfig, signer: Signer, data: dict[str, Any], extra: dict[str, Any]
) -> None:
    raw, signature = signed_bytes(signer, data, **extra)
    result = accepted(config, signer.request(raw, signature))
    assert [cancel.cancel_id for cancel in result.cancels] == ["b-1"]
    assert result.unknown_fields == len(data) - 1 + len(extra)
    (event,) = stamped(result, ENVELOPE)
    assert event.cancel_id == "b-1"


@pytest.mark.parametrize(("data", "extra"), SIGNED_INVALID_DATA)
def test_signed_but_invalid_request_is_refused(
    config: naga.NagaConfig, signer: Signer, data: dict[str, Any], extra: dict[str, Any]
) -> None:
    raw, signature = signed_bytes(signer, data, **extra)
    assert refused(config, signer.request(raw, signature), 400).body == BAD_REQUEST


def test_lone_surrogate_is_refused_as_invalid(config: naga.NagaConfig, signer: Signer) -> None:
    """Even with the hash JSON.stringify gives (`\\ud800`): not a usable id, so 400."""
    data_hash = NODE_VECTORS[-1][1]
    raw = f'{{"data":{{"betId":"\\ud800x"}},"dataHash":"{data_hash}"}}'.encode()
    request = signer.request(raw, rsa_sign(data_hash, signer.private_key))
    assert refused(config, request, 400).body == BAD_REQUEST
    raw = f'{{"data":{{"betId":"b-1"}},"dataHash":"\\ud800{data_hash}"}}'.encode()
    assert refused(config, signer.request(raw, "c2ln"), 400).body == BAD_REQUEST


def test_bad_request_is_the_refused_unread_answer() -> None:
    response = naga.bad_request()
    assert (response.status, response.body) == (400, BAD_REQUEST)
    assert response.headers == {"content-type": "application/json"}


# Outcomes to answers.


def outcome(kind: Outcome, bet_id: str = SEED_BET_ID, replayed: bool = False) -> CancelOutcome:
    return CancelOutcome(
        correlation_id="req-1.0",
        provider=Provider.NAGA,
        cancel_id=bet_id,
        outcome=kind,
        items=[ItemResult(bet_tx=bet_id, outcome=kind, amount=Decimal("10.00"))],
        player="player-1",
        currency="THB",
        balance_before=Decimal("90.00"),
        balance_after=Decimal("100.00"),
        ledger_tx="ledger-1",
        decided_at_ms=NOW + 42,
        replayed=replayed,
    )


def accepted_seed() -> Accepted:
    cancel = naga.NagaCancel(bet_id=SEED_BET_ID, player_token=None)
    return Accepted(cancels=(naga.to_fields(cancel),), answer=partial(naga.render, cancel))


CANCELED = (
    b'{"data":{"betId":"41984486-2234-4aa8-be82-df58eab8b121","status":"CANCELED"},"error":null}'
)
ANSWERS: list[Any] = [
    pytest.param(Outcome.REFUNDED, 200, CANCELED, id="refunded"),
    pytest.param(Outcome.ALREADY_CANCELLED, 200, CANCELED, id="already-cancelled"),
    pytest.param(
        Outcome.BET_UNKNOWN,
        404,
        b'{"data":null,"error":{"statusCode":404,"message":"Transaction Not Found"}}',
        id="bet-unknown",
    ),
    pytest.param(
        Outcome.BET_SETTLED,
        400,
        b'{"data":null,"error":{"statusCode":400,'
        b'"message":"Transaction Seamless Already Resolved"}}',
        id="bet-settled",
    ),
    pytest.param(
        Outcome.PLAYER_MISMATCH,
        400,
        b'{"data":null,"error":{"statusCode":400,"message":"Player Mismatch"}}',
        id="player-mismatch",
    ),
    pytest.param(
        Outcome.AMOUNT_MISMATCH,
        400,
        b'{"data":null,"error":{"statusCode":400,"message":"Transaction Mismatch"}}',
        id="amount-mismatch",
    ),
    pytest.param(
        Outcome.INVALID,
        400,
        b'{"data":null,"error":{"statusCode":400,"message":"Bad Request"}}',
        id="invalid",
    ),
]


def test_every_outcome_has_an_answer() -> None:
    assert set(naga.ERROR_OF_OUTCOME) | naga.SUCCESS_OUTCOMES == set(Outcome)
    assert not set(naga.ERROR_OF_OUTCOME) & naga.SUCCESS_OUTCOMES
    assert len(ANSWERS) == len(Outcome)


@pytest.mark.parametrize(("kind", "status", "body"), ANSWERS)
def test_outcome_answer(kind: Outcome, status: int, body: bytes) -> None:
    response = accepted_seed().answer([outcome(kind)])
    assert (response.status, response.body) == (status, body)
    assert response.headers == {"content-type": "application/json"}


@pytest.mark.parametrize(("kind", "status", "body"), ANSWERS)
def test_a_retry_hears_the_same_answer(kind: Outcome, status: int, body: bytes) -> None:
    first = accepted_seed().answer([outcome(kind)])
    retry = accepted_seed().answer([outcome(kind, replayed=True)])
    assert (retry.status, retry.body) == (first.status, first.body) == (status, body)


def test_no_outcome_in_time_answers_503() -> None:
    response = accepted_seed().answer([None])
    assert response.status == 503
    assert response.body == error_body(503, "Service Unavailable")


def test_error_status_code_always_equals_the_http_status() -> None:
    responses = [accepted_seed().answer([outcome(kind)]) for kind in Outcome]
    responses += [accepted_seed().answer([None]), naga.bad_request()]
    for response in responses:
        decoded = json.loads(response.body)
        assert list(decoded) == ["data", "error"]
        if response.status != 200:
            assert decoded["data"] is None
            assert decoded["error"]["statusCode"] == response.status


# Configuration and routing.


def test_from_pem_loads_the_key_once(key: rsa.RSAPrivateKey) -> None:
    config = naga.NagaConfig.from_pem(public_pem(key))
    assert config.public_key.public_numbers() == key.public_key().public_numbers()


@pytest.mark.parametrize(
    "pem",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not a pem", id="garbage"),
        pytest.param(
            ec.generate_private_key(ec.SECP256R1())
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            id="ec-key",
        ),
    ],
)
def test_from_pem_refuses_anything_but_an_rsa_public_key(pem: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - cryptography's messages are not ours
        naga.NagaConfig.from_pem(pem)


def test_routes_bind_the_configured_key(signer: Signer, other_key: rsa.RSAPrivateKey) -> None:
    secrets = provider_secrets(public_pem(signer.private_key))
    (route,) = naga.routes(secrets)
    assert route.path == "/naga/cancelBet"
    assert route.provider is Provider.NAGA
    body = signer.body({"betId": SEED_BET_ID})
    result = route.accept(signer.request(body))
    assert isinstance(result, Accepted)
    forged = signer.request(body, rsa_sign(body["dataHash"], other_key))
    refusal = route.accept(forged)
    assert isinstance(refusal, Response)
    assert refusal.status == 401
    invalid = route.invalid(NOW)
    assert (invalid.status, invalid.body) == (400, BAD_REQUEST)


@pytest.mark.parametrize("bits", [1024, 1536])
def test_rsa_keys_under_2048_bits_are_refused_at_start(bits: int) -> None:
    """A 512-bit key was accepted (issue 11): factorable, so anyone could sign cancels.
    (`cryptography` generates nothing under 1024 bits; the check is on the key's size.)"""
    short = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    with pytest.raises(ValueError, match="2048"):
        naga.NagaConfig.from_pem(public_pem(short))
