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
    AMOUNT_MAX,
    CURRENCY_MINOR_UNITS,
    MoneyError,
    format_amount,
    validate_amount,
    validate_currency,
)

__all__ = [
    "AMOUNT_MAX",
    "CURRENCY_MINOR_UNITS",
    "SCHEMA_VERSION",
    "CancelItem",
    "CancelOutcome",
    "CancelRequested",
    "ItemResult",
    "MoneyError",
    "Outcome",
    "Provider",
    "ReplyTo",
    "format_amount",
    "validate_amount",
    "validate_currency",
]
