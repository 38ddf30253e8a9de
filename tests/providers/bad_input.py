"""The bad-input matrix: each case of a route with the refusal it must get
(`api.refusals[case.refusal]`), and the inputs a route tolerates."""

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from tests.providers.contract import Api, Cancel
from tests.providers.credentials import Keys
from tests.providers.hpgames import HPGAMES_BULK, HPGAMES_BULK_KEY
from tests.providers.scorpio import SCORPIO
from tests.providers.wire import (
    LONE_SURROGATE,
    NON_UTF8,
    SKEW_MS,
    FieldPath,
    Lit,
    Refusal,
    Wire,
    to_json,
)

DROP = object()


def edit(value: Any, path: FieldPath, new: Any) -> Any:
    """A copy of `value` with the field at `path` set to `new` (removed: `DROP`)."""
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
    elif new is DROP:
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
    cases += [BadInput(f"missing.{_name(p)}", "invalid", _edited(p, DROP)) for p in required]
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
