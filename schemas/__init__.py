"""The contract between the ingress and the worker: events on the topics.

This package imports nothing of ours. Both `adapters` and `worker` depend on it,
never on each other.
"""

from schemas.events import (
    SCHEMA_VERSION,
    CancelItem,
    CancelOutcome,
    CancelRequested,
    ItemResult,
    Outcome,
    Provider,
    ReplyTo,
)
from schemas.money import (
    AMOUNT_DIGITS_MAX,
    AMOUNT_MAX,
    CURRENCY_MINOR_UNITS,
    MoneyError,
    canonical_amount,
    format_amount,
    validate_amount,
    validate_currency,
)
from schemas.text import TEXT_CHARS_MAX, TextError, validate_text

__all__ = [
    "AMOUNT_DIGITS_MAX",
    "AMOUNT_MAX",
    "CURRENCY_MINOR_UNITS",
    "SCHEMA_VERSION",
    "TEXT_CHARS_MAX",
    "CancelItem",
    "CancelOutcome",
    "CancelRequested",
    "ItemResult",
    "MoneyError",
    "Outcome",
    "Provider",
    "ReplyTo",
    "TextError",
    "canonical_amount",
    "format_amount",
    "validate_amount",
    "validate_currency",
    "validate_text",
]
