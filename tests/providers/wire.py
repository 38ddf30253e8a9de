"""The wire as the tests write and read it: JSON numbers written exactly (`Lit`), a
request (`Wire`), an answer read back (`Answer`), field paths into a body."""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

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


def literal(value: Any) -> str:
    """A value as a signature covers it: strings as is, anything else as JSON text."""
    return value if isinstance(value, str) and not isinstance(value, Lit) else to_json(value)


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


def parse_json(body: bytes) -> Any:
    return json.loads(body, parse_float=Decimal, parse_int=Decimal)


def number(value: Any) -> Decimal:
    assert isinstance(value, Decimal), f"not a JSON number: {value!r}"
    return value


def integer(value: Any) -> int:
    exact = number(value)
    assert exact == exact.to_integral_value(), f"not an integer: {value!r}"
    return int(exact)


def paths(spec: str, prefix: str = "") -> tuple[FieldPath, ...]:
    """Field paths written "a b.0.c" (list indexes as numbers), each under `prefix`."""
    return tuple(
        tuple(int(part) if part.isdigit() else part for part in (prefix + name).split("."))
        for name in spec.split()
    )


def path(spec: str, prefix: str = "") -> FieldPath:
    (one,) = paths(spec, prefix)
    return one


BAD_SIGNATURES = ("not base64!", "x" * 10_000, NON_ASCII_HEADER)
