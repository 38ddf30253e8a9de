"""The worker's hot path through the schemas: decode a `CancelRequested` and encode a
`CancelOutcome` without pydantic's per-field Python validators.

Why: `CancelRequested.model_validate_json` spends most of its time in the Python
validators of the schema (the text rule per id, exact decimals, the money rules); the
worker decodes every record. The schema stays the contract: `decode_cancel_requested`
accepts by itself only an event it can prove valid by the same rules (parsed by the same
JSON parser, pydantic-core's, with the plain JSON types the ingress writes) and builds
the very instance the schema would; anything else, however slightly unusual (a lax
coercion such as `"5"` for an int, an unknown field, a control character, a money rule),
goes to the schema itself, so its refusal is the schema's refusal, word for word.
"""

import re
from decimal import Decimal
from types import MappingProxyType
from typing import Any, TypeVar

from pydantic_core import from_json

from schemas.events import (
    _DECIMAL_TEXT,  # the schema's own pattern of an amount's text: one rule
    DECIMAL_CHARS_MAX,
    ID_LENGTH_MAX,
    ITEMS_MAX,
    SCHEMA_VERSION,
    CancelItem,
    CancelOutcome,
    CancelRequested,
    Provider,
    ReplyTo,
)
from schemas.money import CURRENCY_MINOR_UNITS, MoneyError, validate_amount

# The schema's field bounds that are not importable constants (kept equal by the test
# that compares this path with the schema on generated events).
DIGEST_CHARS_MAX = 128
PARTITION_MAX = 100_000  # exclusive, as `ReplyTo.partition`
EPOCH_MS_MAX = 2**53  # exclusive, as `EpochMs`

_PROVIDERS = MappingProxyType({p.value: p for p in Provider})
# Each model's fields in its order (the order its serializer writes them).
_REQUEST_FIELDS = tuple(CancelRequested.model_fields)
_ITEM_FIELDS = tuple(CancelItem.model_fields)
_REPLY_TO_FIELDS = tuple(ReplyTo.model_fields)
_REQUEST_KEYS = frozenset(_REQUEST_FIELDS)
_REQUEST_REQUIRED = frozenset(
    name for name, field in CancelRequested.model_fields.items() if field.is_required()
)
_ITEM_KEYS = frozenset(_ITEM_FIELDS)
_REPLY_TO_KEYS = frozenset(_REPLY_TO_FIELDS)
# The text rule (`schemas.text`): no control character, no lone surrogate. Searched once
# over all of an event's texts joined.
_NOT_TEXT = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def decode_cancel_requested(value: bytes) -> CancelRequested:
    """The event `value` carries, equal to `CancelRequested.model_validate_json(value)`
    (fields set included); raises the same `pydantic.ValidationError` when the schema
    refuses it. A drop-in for `schemas.transport.decode_request`."""
    event = _decode_plain(value)
    if event is None:
        return CancelRequested.model_validate_json(value)  # the schema decides, and says why
    return event


def encode_outcome(outcome: CancelOutcome) -> bytes:
    """The outcome's JSON, byte for byte `schemas.transport.encode(outcome)`, once: the
    compiled serializer straight to bytes (faster than any Python encoder measured,
    `tests/bench/codec_cost.py`). Store and publish these same bytes."""
    return CancelOutcome.__pydantic_serializer__.to_json(outcome)


def _decode_plain(value: bytes) -> CancelRequested | None:
    """The event, when it is plainly valid; None when the schema must look at it."""
    try:
        body = from_json(value, allow_inf_nan=False)
    except ValueError:
        return None
    if type(body) is not dict or not _REQUEST_REQUIRED <= body.keys() <= _REQUEST_KEYS:
        return None
    get = body.get
    version = get("schema_version", SCHEMA_VERSION)
    player, currency = get("player"), get("currency")
    correlation_id, cancel_id = body["correlation_id"], body["cancel_id"]
    digest, reply_to = body["request_digest"], body["reply_to"]
    deadline_ms, requested_at_ms = body["deadline_ms"], body["requested_at_ms"]
    if type(version) is not int or version != SCHEMA_VERSION:
        return None
    if type(reply_to) is not dict or reply_to.keys() != _REPLY_TO_KEYS:
        return None
    topic, partition = reply_to["topic"], reply_to["partition"]
    if type(partition) is not int or not 0 <= partition < PARTITION_MAX:
        return None
    if type(deadline_ms) is not int or not 0 <= deadline_ms < EPOCH_MS_MAX:
        return None
    if type(requested_at_ms) is not int or not 0 <= requested_at_ms < EPOCH_MS_MAX:
        return None
    texts = [correlation_id, cancel_id, digest, topic]
    if player is not None:
        texts.append(player)
    if currency is not None:
        texts.append(currency)
    try:  # every text is a str (join refuses anything else) with no character refused
        if _NOT_TEXT.search("".join(texts)) is not None:
            return None
        provider = _PROVIDERS.get(body["provider"])
    except TypeError:
        return None
    if provider is None or (currency is not None and currency not in CURRENCY_MINOR_UNITS):
        return None
    if not (0 < len(correlation_id) <= ID_LENGTH_MAX and 0 < len(cancel_id) <= ID_LENGTH_MAX):
        return None
    if not (0 < len(topic) <= ID_LENGTH_MAX and 0 < len(digest) <= DIGEST_CHARS_MAX):
        return None
    if player is not None and not 0 < len(player) <= ID_LENGTH_MAX:
        return None
    items = _items(body["items"], currency)
    if items is None:
        return None
    fields = {
        "schema_version": SCHEMA_VERSION,
        "correlation_id": correlation_id,
        "provider": provider,
        "cancel_id": cancel_id,
        "player": player,
        "currency": currency,
        "items": items,
        "request_digest": digest,
        "reply_to": _built(
            ReplyTo, _REPLY_TO_FIELDS, {"topic": topic, "partition": partition}, set(reply_to)
        ),
        "deadline_ms": deadline_ms,
        "requested_at_ms": requested_at_ms,
    }
    return _built(CancelRequested, _REQUEST_FIELDS, fields, set(body))


def _items(raw: Any, currency: str | None) -> list[CancelItem] | None:
    """The event's items when they are plainly valid (the items' rules and the event's)."""
    if type(raw) is not list or not 0 < len(raw) <= ITEMS_MAX:
        return None
    items: list[CancelItem] = []
    bets: set[str] = set()
    amounts = 0
    for entry in raw:
        if type(entry) is not dict or not entry.keys() <= _ITEM_KEYS:
            return None
        bet_tx: Any = entry.get("bet_tx")
        amount, round_id = entry.get("amount"), entry.get("round_id")
        try:
            text = bet_tx if round_id is None else bet_tx + round_id
            if _NOT_TEXT.search(text) is not None or bet_tx in bets:
                return None
        except TypeError:  # not text
            return None
        if not 0 < len(bet_tx) <= ID_LENGTH_MAX:
            return None
        if round_id is not None and not 0 < len(round_id) <= ID_LENGTH_MAX:
            return None
        bets.add(bet_tx)
        if amount is not None:
            if type(amount) is not str or len(amount) > DECIMAL_CHARS_MAX:
                return None
            if _DECIMAL_TEXT.fullmatch(amount) is None:
                return None
            amount = Decimal(amount)  # exact: the constructor never rounds
            try:  # the item's rule and the event's in one: a currency has <= 4 decimals
                validate_amount(amount, currency)
            except MoneyError:
                return None
            amounts += 1
        fields = {"bet_tx": bet_tx, "amount": amount, "round_id": round_id}
        items.append(_built(CancelItem, _ITEM_FIELDS, fields, set(entry)))
    if amounts not in (0, len(items)):  # every item has an amount, or none has
        return None
    return items


_Model = TypeVar("_Model", CancelRequested, CancelItem, ReplyTo)
_set_slot = object.__setattr__  # a frozen model's own way in (pydantic's too)


def _built(
    model: type[_Model], order: tuple[str, ...], fields: dict[str, Any], fields_set: set[str]
) -> _Model:
    """`model.model_construct(**fields)` without its per-field loop: `fields` holds every
    field, in the model's `order` (the serializer writes them in this order)."""
    assert len(fields) == len(order), "every field, in the model's order (the test: each)"
    assert fields_set <= fields.keys(), "only fields are set"
    instance = model.__new__(model)
    _set_slot(instance, "__dict__", fields)
    _set_slot(instance, "__pydantic_fields_set__", fields_set)
    _set_slot(instance, "__pydantic_extra__", None)
    _set_slot(instance, "__pydantic_private__", None)
    return instance
