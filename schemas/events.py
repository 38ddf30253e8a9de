"""Versioned events on the topics: `CancelRequested` in, `CancelOutcome` back.

JSON on the wire. Amounts are `Decimal` and serialize as strings, so exact decimals
survive the round trip. Models are frozen and refuse unknown fields: an event that does
not match its schema version is a dead letter, not a guess.
"""

from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.money import validate_amount, validate_currency

SCHEMA_VERSION: Literal[1] = 1

# Bounds on what one event may carry (TIGER_STYLE: a limit on everything).
ID_LENGTH_MAX = 256
ITEMS_MAX = 100

Id = Annotated[str, Field(min_length=1, max_length=ID_LENGTH_MAX)]
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
    amount: Decimal | None = None
    round_id: Id | None = None


class CancelRequested(_Event):
    """A provider asked to cancel one or more bets of one player, as one unit."""

    schema_version: Literal[1] = SCHEMA_VERSION
    correlation_id: Id
    provider: Provider
    cancel_id: Id
    # None when the provider does not name them (Naga): the worker takes them from the bet.
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
            if self.currency is None:
                raise ValueError("an amount needs a currency")
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
    amount: Decimal | None = None  # the bet's amount where known


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
    balance_before: Decimal | None = None
    balance_after: Decimal | None = None
    # The operator's transaction id for this cancel (HPGames `accountTransactionId`).
    ledger_tx: Id
    decided_at_ms: EpochMs
    replayed: bool = False
