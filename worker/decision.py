"""The refund decision: pure, no I/O.

`decide` maps one `CancelRequested` and a snapshot of the ledger rows it touches to a
`Decision`: the `CancelOutcome` to store and publish, and the ledger effects. The batch
applier feeds decisions back into the snapshot (`LedgerSnapshot.apply`) so that later
events of the same batch see earlier ones, then writes all effects in one transaction.
"""

import hashlib
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from schemas import CancelOutcome, CancelRequested, ItemResult, Outcome, Provider

# Namespace for the operator-side transaction id of a cancel: stable across retries.
_LEDGER_TX_NAMESPACE = uuid.UUID("0b0f6f59-3c2e-4b43-9a55-1f3f0e6a8f10")
_LEDGER_TX_NAMESPACE_BYTES = _LEDGER_TX_NAMESPACE.bytes

BetKey = tuple[str, str]  # (provider, provider tx id)
CancelKey = tuple[str, str]  # (provider, cancel id)
AccountKey = tuple[str, str]  # (player, currency)


class BetState(StrEnum):
    OPEN = "open"
    SETTLED = "settled"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Bet:
    provider: str
    tx: str
    account_id: int
    player: str
    currency: str
    amount: Decimal
    state: BetState
    cancel_id: str | None = None


@dataclass(frozen=True)
class Account:
    id: int
    player: str
    currency: str
    balance: Decimal


@dataclass(frozen=True)
class StoredOutcome:
    request_digest: str
    outcome: CancelOutcome


@dataclass(frozen=True)
class Refund:
    account_id: int
    amount: Decimal
    provider: str
    bet_tx: str
    cancel_id: str


@dataclass(frozen=True)
class Decision:
    """The outcome to publish, and what to write (nothing when `store` is False)."""

    outcome: CancelOutcome
    store: bool
    refunds: tuple[Refund, ...] = ()
    tombstones: tuple[BetKey, ...] = ()


@dataclass
class LedgerSnapshot:
    """The rows one batch touches, locked and loaded; updated as decisions are made."""

    outcomes: dict[CancelKey, StoredOutcome] = field(default_factory=dict)
    bets: dict[BetKey, Bet] = field(default_factory=dict)
    tombstones: set[BetKey] = field(default_factory=set)
    accounts: dict[int, Account] = field(default_factory=dict)
    account_ids: dict[AccountKey, int] = field(default_factory=dict)

    def add_account(self, account: Account) -> None:
        self.accounts[account.id] = account
        self.account_ids[(account.player, account.currency)] = account.id

    def account_of(self, player: str, currency: str) -> Account | None:
        account_id = self.account_ids.get((player, currency))
        return None if account_id is None else self.accounts[account_id]

    def only_account_of(self, player: str) -> Account | None:
        """The player's account when the player has exactly one (a cancel that names
        no currency reports its balance); None when none or several."""
        accounts = [account for account in self.accounts.values() if account.player == player]
        return accounts[0] if len(accounts) == 1 else None

    def apply(self, event: CancelRequested, decision: Decision) -> None:
        """Fold a decision into the snapshot, as the database will after commit."""
        if decision.store:
            key = (event.provider.value, event.cancel_id)
            assert key not in self.outcomes, "a cancel is decided once"
            self.outcomes[key] = StoredOutcome(event.request_digest, decision.outcome)
        for bet_key in decision.tombstones:
            assert bet_key not in self.bets
            self.tombstones.add(bet_key)
        for refund in decision.refunds:
            bet_key = (refund.provider, refund.bet_tx)
            bet = self.bets[bet_key]
            assert bet.state is BetState.OPEN
            assert bet.amount == refund.amount
            self.bets[bet_key] = Bet(
                bet.provider,
                bet.tx,
                bet.account_id,
                bet.player,
                bet.currency,
                bet.amount,
                BetState.CANCELLED,
                refund.cancel_id,
            )
            account = self.accounts[refund.account_id]
            self.accounts[refund.account_id] = Account(
                account.id, account.player, account.currency, account.balance + refund.amount
            )


def ledger_tx(provider: Provider, cancel_id: str) -> str:
    """`uuid5(namespace, "provider:cancel_id")`, the same string, without building a UUID
    object (this runs once per event on the worker's hot path)."""
    name = f"{provider.value}:{cancel_id}".encode()
    sha1 = hashlib.sha1(_LEDGER_TX_NAMESPACE_BYTES + name, usedforsecurity=False)
    digest = bytearray(sha1.digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _item_outcome(event: CancelRequested, bet: Bet | None, amount: Decimal | None) -> Outcome:
    """Identity and amount first: a cancel that is not the bet's own learns nothing of
    the bet's state."""
    if bet is None:
        return Outcome.BET_UNKNOWN
    if event.player is not None and event.player != bet.player:
        return Outcome.PLAYER_MISMATCH
    if event.currency is not None and event.currency != bet.currency:
        return Outcome.AMOUNT_MISMATCH
    # Exact comparison. A cancel that names no currency (HPGames may omit it) is read in
    # the debit's: an amount with more decimals than that currency has cannot equal the
    # debit's (validated with the currency's decimals when it was recorded), so it is an
    # amount mismatch here, as a different amount is. (Naming a currency, the same
    # amount is refused `invalid` at the ingress, before any bet is looked at.)
    if amount is not None and amount != bet.amount:
        return Outcome.AMOUNT_MISMATCH
    if bet.state is BetState.CANCELLED:
        return Outcome.ALREADY_CANCELLED
    if bet.state is BetState.SETTLED:
        return Outcome.BET_SETTLED
    return Outcome.REFUNDED


def _event_outcome(item_outcomes: list[Outcome]) -> Outcome:
    """All or nothing: the first refusal decides; otherwise refunded if anything is."""
    for outcome in item_outcomes:
        if outcome not in (Outcome.REFUNDED, Outcome.ALREADY_CANCELLED):
            return outcome
    if Outcome.REFUNDED in item_outcomes:
        return Outcome.REFUNDED
    return Outcome.ALREADY_CANCELLED


def decide(event: CancelRequested, snapshot: LedgerSnapshot, now_ms: int) -> Decision:
    """Decide one cancel against the ledger rows in `snapshot` (read, not changed)."""
    provider = event.provider.value
    stored = snapshot.outcomes.get((provider, event.cancel_id))
    if stored is not None:
        return _decided_before(event, stored, now_ms)

    bets = [snapshot.bets.get((provider, item.bet_tx)) for item in event.items]
    item_outcomes = _item_outcomes(event, bets)
    outcome = _event_outcome(item_outcomes)
    account = _account_of(event, bets, snapshot)

    refunds: tuple[Refund, ...] = ()
    if outcome is Outcome.REFUNDED:
        assert account is not None
        refunds = _refunds(event, bets, item_outcomes, account)
    tombstones = tuple(
        (provider, item.bet_tx)
        for bet, item in zip(bets, event.items, strict=True)
        if bet is None and (provider, item.bet_tx) not in snapshot.tombstones
    )
    result = _decided_outcome(event, bets, item_outcomes, outcome, account, refunds, now_ms)
    return Decision(outcome=result, store=True, refunds=refunds, tombstones=tombstones)


def _decided_before(event: CancelRequested, stored: StoredOutcome, now_ms: int) -> Decision:
    """A cancel id with a stored outcome: a retry gets it again, other content is refused;
    nothing is stored either way."""
    if stored.request_digest == event.request_digest:  # a retry: the same answer again
        replayed = stored.outcome.model_copy(
            update={"correlation_id": event.correlation_id, "replayed": True}
        )
        return Decision(outcome=replayed, store=False)
    return Decision(outcome=_conflict(event, now_ms), store=False)


def _item_outcomes(event: CancelRequested, bets: list[Bet | None]) -> list[Outcome]:
    """Each item's outcome; a cancel that does not name its account refunds nothing when
    its bets belong to more than one account (one cancel is one account's)."""
    item_outcomes = [
        _item_outcome(event, bet, item.amount) for bet, item in zip(bets, event.items, strict=True)
    ]
    named = event.player is not None and event.currency is not None
    known_accounts = {bet.account_id for bet in bets if bet is not None}
    if not named and len(known_accounts) > 1:  # one cancel is one account's
        refusal = Outcome.PLAYER_MISMATCH if event.player is None else Outcome.AMOUNT_MISMATCH
        item_outcomes = [
            refusal if outcome is Outcome.REFUNDED else outcome for outcome in item_outcomes
        ]
    return item_outcomes


def _account_of(
    event: CancelRequested, bets: list[Bet | None], snapshot: LedgerSnapshot
) -> Account | None:
    """The account the cancel is about: the one it names, else its (first matching)
    bet's, else the named player's only account."""
    account: Account | None
    if event.player is not None and event.currency is not None:
        account = snapshot.account_of(event.player, event.currency)
    else:  # the provider did not name the account: the (first matching) bet does
        account = next(
            (
                snapshot.accounts[bet.account_id]
                for bet in bets
                if bet is not None and event.player in (None, bet.player)
            ),
            None,
        )
        if account is None and event.player is not None:  # no bet of the named player
            account = snapshot.only_account_of(event.player)
    return account


def _refunds(
    event: CancelRequested,
    bets: list[Bet | None],
    item_outcomes: list[Outcome],
    account: Account,
) -> tuple[Refund, ...]:
    """The ledger entries of a refunded cancel: each refunded bet's amount, to `account`."""
    provider = event.provider.value
    refunds = tuple(
        Refund(account.id, bet.amount, provider, bet.tx, event.cancel_id)
        for bet, item_outcome in zip(bets, item_outcomes, strict=True)
        if bet is not None and item_outcome is Outcome.REFUNDED
    )
    assert all(refund.account_id == account.id for refund in refunds)
    return refunds


def _decided_outcome(
    event: CancelRequested,
    bets: list[Bet | None],
    item_outcomes: list[Outcome],
    outcome: Outcome,
    account: Account | None,
    refunds: tuple[Refund, ...],
    now_ms: int,
) -> CancelOutcome:
    """The outcome to store and answer: per item, and the balance before and after."""
    balance_before = account.balance if account is not None else None
    refunded_total = sum((refund.amount for refund in refunds), Decimal(0))
    return CancelOutcome(
        correlation_id=event.correlation_id,
        provider=event.provider,
        cancel_id=event.cancel_id,
        outcome=outcome,
        items=[
            ItemResult(
                bet_tx=item.bet_tx,
                outcome=item_outcome,
                amount=bet.amount if bet is not None else item.amount,
            )
            for bet, item, item_outcome in zip(bets, event.items, item_outcomes, strict=True)
        ],
        player=account.player if account is not None else event.player,
        currency=account.currency if account is not None else event.currency,
        balance_before=balance_before,
        balance_after=None if balance_before is None else balance_before + refunded_total,
        ledger_tx=ledger_tx(event.provider, event.cancel_id),
        decided_at_ms=now_ms,
    )


def _conflict(event: CancelRequested, now_ms: int) -> CancelOutcome:
    """A cancel id already decided for a different request: refused, nothing stored."""
    return CancelOutcome(
        correlation_id=event.correlation_id,
        provider=event.provider,
        cancel_id=event.cancel_id,
        outcome=Outcome.INVALID,
        items=[ItemResult(bet_tx=item.bet_tx, outcome=Outcome.INVALID) for item in event.items],
        player=event.player,
        currency=event.currency,
        ledger_tx=ledger_tx(event.provider, event.cancel_id),
        decided_at_ms=now_ms,
    )


def decide_batch(
    events: list[CancelRequested], snapshot: LedgerSnapshot, now_ms: int
) -> list[tuple[CancelRequested, Decision]]:
    """Decide a batch in order; each decision sees the ones before it."""
    decided = []
    for event in events:
        decision = decide(event, snapshot, now_ms)
        snapshot.apply(event, decision)
        decided.append((event, decision))
    return decided
