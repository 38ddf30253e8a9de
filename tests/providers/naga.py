"""Naga Games (seed 002) as the tests write and read it."""

import base64
import hashlib
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from tests.providers.contract import Anatomy, Api, Cancel
from tests.providers.credentials import Keys
from tests.providers.wire import (
    BAD_SIGNATURES,
    JSON_TYPE,
    SIGN,
    Answer,
    integer,
    parse_json,
    path,
    paths,
    to_json,
)


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
    body = parse_json(raw)
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
    assert integer(error["statusCode"]) == status, body
    assert isinstance(error["message"], str), body
    assert error["message"], body
    return (Answer(status, error["message"], None, body),)


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
        bad_auth_headers=(*BAD_SIGNATURES, base64.b64encode(bytes(256)).decode()),
    ),
    reports_balance=False,
    unknown_balance=None,
)
