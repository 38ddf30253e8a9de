"""Strict JSON in, exact JSON out, and typed field access for provider bodies.

Numbers are kept as written (`Number`): signatures are computed over the literal text,
and amounts become exact `Decimal`s (the literal's text, never a float). NaN/Infinity
literals, duplicate keys and non-UTF-8 bytes are refused. Output writes `Decimal` as a
JSON number, never via float.

Parsing runs before authentication, so its cost is bounded before it starts: a body with
more arrays and objects, or more commas (values), than its route allows is refused by a
count over the bytes (C speed, no parse); only then is it parsed, and the nesting depth
is checked on the parsed value, which the counts bound (`loads`). A 1 MiB hostile body
(`[0,0,…]`, deep nesting) costs about 1 ms; see `tests/unit/preauth_cost.py`.

Tolerant reader: a field a provider's seed does not list is ignored (`unknown_fields`
counts them for the metric); a listed field that is missing or ill-typed is refused.
Listed strings follow the one text rule (`schemas.validate_text`).
"""

import json
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from schemas import TEXT_CHARS_MAX, TextError, validate_text

NESTING_MAX = 32
# Bounds on a body's structure, checked by counting bytes before parsing (brackets and
# commas inside strings count too: they only make the bound stricter). A provider's
# cancel has a few dozen values; a bulk route passes its own, larger bounds.
CONTAINERS_MAX = 256  # `[` plus `{`
COMMAS_MAX = 2048
# A \uD800-\uDFFF escape may leave a lone surrogate: text that cannot be encoded again.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class BodyError(ValueError):
    """The body is not what the provider's protocol allows; `str()` is safe to log."""


class Number:
    """A JSON number literal, as written."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal

    def decimal(self) -> Decimal:
        try:
            return Decimal(self.literal)
        except InvalidOperation as exc:
            raise BodyError("not a number") from exc

    def __repr__(self) -> str:
        return f"Number({self.literal})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Number) and other.literal == self.literal

    def __hash__(self) -> int:
        return hash(self.literal)


def _refuse_constant(name: str) -> Any:
    raise BodyError(f"{name} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BodyError(f"duplicate key {key[:32]!r}")
        result[key] = value
    return result


def _depth_ok(value: Any) -> bool:
    """The parsed value nests at most NESTING_MAX arrays/objects (iterative: no
    recursion on hostile input; its cost is bounded by the counts checked before)."""
    level: list[Any] = [value]
    depth = 0
    while level:
        depth += 1
        if depth > NESTING_MAX + 1:
            return False
        below: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                below.extend(child for child in item.values() if isinstance(child, dict | list))
            elif isinstance(item, list):
                below.extend(child for child in item if isinstance(child, dict | list))
        level = below
    return True


def loads(
    body: bytes, *, containers_max: int = CONTAINERS_MAX, commas_max: int = COMMAS_MAX
) -> Any:
    """Parse a request body strictly; raises BodyError.

    Refuses, before parsing, a body with more than `containers_max` `[`/`{` or
    `commas_max` commas (counted over the bytes, strings included)."""
    if not body.strip():
        raise BodyError("empty body")
    containers = body.count(b"[") + body.count(b"{")
    if containers > containers_max:
        raise BodyError("too many arrays and objects")
    if body.count(b",") > commas_max:
        raise BodyError("too many values")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError("body is not UTF-8") from exc
    try:
        parsed = json.loads(
            text,
            parse_float=Number,
            parse_int=Number,
            parse_constant=_refuse_constant,
            object_pairs_hook=_unique_keys,
        )
    except json.JSONDecodeError as exc:
        raise BodyError(f"invalid JSON at position {exc.pos}") from exc
    except RecursionError as exc:
        raise BodyError("JSON nested too deeply") from exc
    if containers > NESTING_MAX and not _depth_ok(parsed):
        raise BodyError("JSON nested too deeply")
    if _SURROGATE_ESCAPE.search(text):
        _refuse_lone_surrogates(parsed)
    return parsed


def _refuse_lone_surrogates(value: Any) -> None:
    strings: list[str] = []
    if isinstance(value, dict):
        strings.extend(value)
        for item in value.values():
            _refuse_lone_surrogates(item)
    elif isinstance(value, list):
        for item in value:
            _refuse_lone_surrogates(item)
    elif isinstance(value, str):
        strings.append(value)
    for string_value in strings:
        try:
            string_value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BodyError("string with a lone surrogate") from exc


def _dump(value: Any, out: list[str]) -> None:
    if isinstance(value, Mapping):
        out.append("{")
        for index, (key, item) in enumerate(value.items()):
            if index:
                out.append(",")
            out.append(json.dumps(str(key)))
            out.append(":")
            _dump(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _dump(item, out)
        out.append("]")
    elif isinstance(value, Decimal):
        assert value.is_finite(), "money is always finite"
        out.append(format(value, "f"))
    elif isinstance(value, bool) or value is None or isinstance(value, int | str):
        out.append(json.dumps(value))
    else:
        raise TypeError(f"cannot write {type(value).__name__} as JSON")


def dumps(value: Any) -> bytes:
    """Compact JSON with `Decimal` written as a number literal (no float on the way)."""
    out: list[str] = []
    _dump(value, out)
    return "".join(out).encode()


# Typed access to fields of a parsed JSON object.


def require_object(value: Any, what: str = "body") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BodyError(f"{what} must be a JSON object")
    return value


def unknown_fields(obj: Mapping[str, Any], listed: frozenset[str]) -> int:
    """How many fields of `obj` its seed does not list: accepted and ignored (tolerant
    reader), counted for the ingress's metric."""
    return sum(1 for key in obj if key not in listed)


def text(value: str, key: str, *, chars_min: int = 1, chars_max: int = TEXT_CHARS_MAX) -> str:
    """A listed string under the one text rule: its length, no control characters, no
    lone surrogate (`schemas.validate_text`); raises BodyError."""
    try:
        return validate_text(value, f"field {key[:32]!r}", chars_min=chars_min, chars_max=chars_max)
    except TextError as exc:
        raise BodyError(str(exc)) from exc


def string(
    obj: Mapping[str, Any],
    key: str,
    *,
    optional: bool = False,
    chars_min: int = 1,
    chars_max: int = TEXT_CHARS_MAX,
) -> str | None:
    value = obj.get(key)
    if value is None:
        if optional:
            return None
        raise BodyError(f"missing field {key!r}")
    if not isinstance(value, str):
        raise BodyError(f"field {key!r} must be a string")
    return text(value, key, chars_min=chars_min, chars_max=chars_max)


def required_string(obj: Mapping[str, Any], key: str) -> str:
    value = string(obj, key)
    assert value is not None
    return value


def number(obj: Mapping[str, Any], key: str) -> Number:
    value = obj.get(key)
    if value is None:
        raise BodyError(f"missing field {key!r}")
    if not isinstance(value, Number):
        raise BodyError(f"field {key!r} must be a number")
    return value


def integer(obj: Mapping[str, Any], key: str) -> int:
    literal = number(obj, key).literal
    if not literal.lstrip("-").isdigit() or len(literal) > 19:
        raise BodyError(f"field {key!r} must be an integer")
    return int(literal)


def decimal(obj: Mapping[str, Any], key: str) -> Decimal:
    value = number(obj, key)
    if len(value.literal) > 40:
        raise BodyError(f"field {key!r} has too many digits")
    return value.decimal()


def literal_text(value: Any) -> str:
    """A top-level scalar as it was written: strings as is, numbers as written."""
    if isinstance(value, str):
        return value
    if isinstance(value, Number):
        return value.literal
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    raise BodyError("expected a string or a number")
