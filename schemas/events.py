"""Versioned events on the topics: `CancelRequested` in, `CancelOutcome` back.

JSON on the wire. Amounts are `Decimal` and serialize as strings, and on the wire an
amount is read from a JSON string only (a JSON number would go through a float on its
way in: refused), so exact decimals survive the round trip. Ids follow the one text rule
(`schemas.text`): no control characters, at most 256 characters. Models are frozen and
refuse unknown fields: an event that does not match its schema version is a dead
letter, not a guess.
"""

import re
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from schemas.money import validate_amount, validate_currency
from schemas.text import TEXT_CHARS_MAX, validate_text

SCHEMA_VERSION: Literal[1] = 1

# Bounds on what one event may carry (TIGER_STYLE: a limit on everything).
ID_LENGTH_MAX = TEXT_CHARS_MAX
ITEMS_MAX = 100
DECIMAL_CHARS_MAX = 64  # an amount or balance as text; far above any valid one

# A decimal as the events write it (`str(Decimal)`): digits, optional fraction and
# exponent; no NaN, no infinity, no spaces.
_DECIMAL_TEXT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def _exact_decimal(value: Any) -> Decimal:
    """An amount read exactly: a `Decimal` (built in code) or decimal text (the wire).

    A JSON number is refused: pydantic reads it through a float, which is not exact."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("a decimal must be finite")
        return value
    if not isinstance(value, str):
        raise ValueError("a decimal is written as a JSON string")
    if len(value) > DECIMAL_CHARS_MAX or not _DECIMAL_TEXT.fullmatch(value):
        raise ValueError("not a decimal")
    try:
        return Decimal(value)  # exact: the constructor never rounds
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only decimals
        raise ValueError("not a decimal") from exc


Id = Annotated[str, AfterValidator(validate_text)]
ExactDecimal = Annotated[Decimal, BeforeValidator(_exact_decimal)]
EpochMs = Annotated[int, Field(ge=0, lt=2**53)]


class Provider(StrEnum):
    SCORPIO = "scorpio"
    HPGAMES = "hpgames"
    NAGA = "naga"
    AMB = "amb"


class Outcome(StrEnum):
    """The worker's decision for one cancel (and for each of its items)."""

    REFUNDED = "refunded"
    BET_UNKNOWN = "bet_unknown"  # tombstoned: a later debit of that bet is refused
    ALREADY_CANCELLED = "already_cancelled"  # another cancel refunded this bet before
    BET_SETTLED = "bet_settled"
    PLAYER_MISMATCH = "player_mismatch"  # player unknown, or not the bet's player
    AMOUNT_MISMATCH = "amount_mismatch"  # amount or currency differs from the debit
    INVALID = "invalid"  # e.g. a cancel id reused for a different request

    @property
    def moves_money(self) -> bool:
        return self is Outcome.REFUNDED


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReplyTo(_Event):
    """Where the ingress instance that published the request awaits its outcome."""

    topic: Id
    partition: Annotated[int, Field(ge=0, lt=100_000)]


class CancelItem(_Event):
    """One bet (or tip) to cancel. `amount` is None when the provider does not say."""

    bet_tx: Id
    amount: ExactDecimal | None = None
    round_id: Id | None = None

    @model_validator(mode="after")
    def _amount_is_valid(self) -> Self:
        # Sign, finiteness, size and digits here; the currency's decimals in the event
        # (when it names one) or in the worker's decision (against the debit's).
        if self.amount is not None:
            validate_amount(self.amount, None)
        return self


class CancelRequested(_Event):
    """A provider asked to cancel one or more bets of one player, as one unit."""

    schema_version: Literal[1] = SCHEMA_VERSION
    correlation_id: Id
    provider: Provider
    cancel_id: Id
    # None when the provider does not name them (Naga; HPGames may omit the currency):
    # the worker takes them from the bet.
    player: Id | None = None
    currency: str | None = None
    items: Annotated[list[CancelItem], Field(min_length=1, max_length=ITEMS_MAX)]
    # Digest of the request's content: a cancel id reused for other content is refused.
    request_digest: Annotated[str, Field(min_length=1, max_length=128)]
    reply_to: ReplyTo
    deadline_ms: EpochMs
    requested_at_ms: EpochMs

    @model_validator(mode="after")
    def _money_is_valid(self) -> Self:
        if self.currency is not None:
            validate_currency(self.currency)
        amounts = [item.amount for item in self.items]
        if any(amount is not None for amount in amounts):
            for amount in amounts:
                if amount is None:
                    raise ValueError("either every item has an amount or none has")
                validate_amount(amount, self.currency)
        bet_txs = [item.bet_tx for item in self.items]
        if len(set(bet_txs)) != len(bet_txs):
            raise ValueError("an event names each bet at most once")
        return self


class ItemResult(_Event):
    bet_tx: Id
    outcome: Outcome
    amount: ExactDecimal | None = None  # the bet's amount where known


class CancelOutcome(_Event):
    """The worker's answer to one `CancelRequested`; stored, then published.

    A retry of the same (provider, cancel_id) receives the stored outcome again with
    `replayed` set, so the provider hears the same answer as the first time.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    correlation_id: Id
    provider: Provider
    cancel_id: Id
    outcome: Outcome
    items: Annotated[list[ItemResult], Field(min_length=1, max_length=ITEMS_MAX)]
    player: Id | None = None
    currency: str | None = None
    balance_before: ExactDecimal | None = None
    balance_after: ExactDecimal | None = None
    # The operator's transaction id for this cancel (HPGames `accountTransactionId`).
    ledger_tx: Id
    decided_at_ms: EpochMs
    replayed: bool = False
