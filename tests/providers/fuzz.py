"""Arbitrary input (hypothesis): JSON values and edits of a valid request."""

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from tests.providers.bad_input import DROP, edit
from tests.providers.contract import Api, Cancel
from tests.providers.credentials import Keys
from tests.providers.wire import SIGN, FieldPath, Lit, Wire, to_json


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
    values = st.just(DROP) | numbers | st.text(max_size=300) | json_values(api)
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
