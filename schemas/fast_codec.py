"""The worker's hot path through the schemas: decode a `CancelRequested` and encode a
`CancelOutcome` without the schema's per-field Python validators.

Why: `CancelRequested.model_validate_json` spends two thirds of its time in the Python
validators of the schema (the text rule per id, exact decimals, the money rules); the
worker decodes every record. The schema stays the contract. `decode_cancel_requested`
first runs a compiled twin of it (pydantic-core alone, no Python call): the same
fields, types, bounds and lax JSON coercions, with the text rule and the decimal text as
patterns, building the schema's own classes; then the money rules, in Python, on the
event built. An event either refuses goes to the schema itself, so a refusal is the
schema's refusal, word for word, and an event accepted is the one the schema builds
(`tests/unit/test_fast_codec.py` holds them equal on the poison matrix and on generated
events).
"""

from pydantic_core import SchemaValidator
from pydantic_core import core_schema as cs

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

# The schema's field bounds that are not importable constants (held equal by the test).
DIGEST_CHARS_MAX = 128
PARTITION_MAX = 100_000  # exclusive, as `ReplyTo.partition`
EPOCH_MS_MAX = 2**53  # exclusive, as `EpochMs`

# The text rule (`schemas.text`) as a pattern: 1 to 256 characters, none a control
# character (a lone surrogate cannot reach it: the JSON parser refuses one).
_TEXT = f"^[^\\x00-\\x1f\\x7f]{{1,{ID_LENGTH_MAX}}}$"


def _twin() -> SchemaValidator:
    """The compiled twin of `CancelRequested` (see the module's doc)."""

    def text() -> cs.CoreSchema:
        return cs.str_schema(pattern=_TEXT)

    def optional(schema: cs.CoreSchema) -> cs.CoreSchema:
        return cs.with_default_schema(cs.nullable_schema(schema), default=None)

    def model(cls: type, fields: dict[str, cs.CoreSchema]) -> cs.CoreSchema:
        assert list(fields) == list(cls.model_fields), "every field, in the model's order"  # type: ignore[attr-defined]
        named = {name: cs.model_field(schema) for name, schema in fields.items()}
        inner = cs.model_fields_schema(named, extra_behavior="forbid")
        return cs.model_schema(cls, inner, frozen=True)

    amount = cs.chain_schema(
        [
            cs.str_schema(pattern=f"^(?:{_DECIMAL_TEXT.pattern})$", max_length=DECIMAL_CHARS_MAX),
            cs.decimal_schema(),  # Decimal(text): exact, the constructor never rounds
        ]
    )
    item = model(
        CancelItem, {"bet_tx": text(), "amount": optional(amount), "round_id": optional(text())}
    )
    reply_to = model(ReplyTo, {"topic": text(), "partition": cs.int_schema(ge=0, lt=PARTITION_MAX)})
    request = model(
        CancelRequested,
        {
            "schema_version": cs.with_default_schema(
                cs.literal_schema([SCHEMA_VERSION]), default=SCHEMA_VERSION
            ),
            "correlation_id": text(),
            "provider": cs.enum_schema(Provider, list(Provider), sub_type="str"),
            "cancel_id": text(),
            "player": optional(text()),
            "currency": optional(cs.literal_schema(list(CURRENCY_MINOR_UNITS))),
            "items": cs.list_schema(item, min_length=1, max_length=ITEMS_MAX),
            "request_digest": cs.str_schema(min_length=1, max_length=DIGEST_CHARS_MAX),
            "reply_to": reply_to,
            "deadline_ms": cs.int_schema(ge=0, lt=EPOCH_MS_MAX),
            "requested_at_ms": cs.int_schema(ge=0, lt=EPOCH_MS_MAX),
        },
    )
    return SchemaValidator(request)


_TWIN = _twin()  # compiled once; immutable


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
    """The event, when the twin and the money rules accept it; None when the schema
    must look at it."""
    try:
        event: CancelRequested = _TWIN.validate_json(value)
    except ValueError:  # pydantic_core.ValidationError: the schema says it in its words
        return None
    assert type(event) is CancelRequested, "the twin builds the schema's class"
    currency = event.currency
    items = event.items
    with_amount = 0
    bets = set()
    for item in items:
        bets.add(item.bet_tx)
        if item.amount is not None:
            with_amount += 1
            try:  # the item's rule and the event's in one: a currency has <= 4 decimals
                validate_amount(item.amount, currency)
            except MoneyError:
                return None
    if with_amount not in (0, len(items)) or len(bets) != len(items):
        return None
    return event
