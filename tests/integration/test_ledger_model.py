"""The ledger, model-checked.

A hypothesis state machine drives the real ledger code (`worker.ledger` for the operator
commands, `worker.apply.apply_batch` for cancels) on a real PostgreSQL with random
sequences of open-account, debit, settle and cancel batches (duplicates, reused cancel
ids, cancels before their debit, mismatches, all-or-nothing multi-item cancels, cancels
that name no player, whole-history replays), and compares every answer and every
balance with `LedgerModel`, a small in-memory model of the rules.

The model is written from SPEC.md and the README's decisions, not from
`worker/decision.py`:

- a cancel is decided once per (provider, cancel id), forever: a retry with the same
  content gets the first answer again (`replayed`), other content is `invalid` and
  stored nowhere;
- identity and amount are checked before the bet's state (mismatch before cancelled or
  settled), an unknown bet is tombstoned and a later debit of it is refused;
- a multi-item cancel is all or nothing: the first refused item decides, items already
  cancelled by another cancel count as done, unknown items are tombstoned anyway;
- a cancel that does not name the player (Naga) takes player, currency and amount from
  the bet; one cancel is one player's, so bets of several accounts are a player mismatch;
- a debit below zero, of a known tx or of a tombstoned tx is refused and writes nothing.

After every step the database must equal the model row for row (balances and entry
counts, bets and their states, tombstones, decided cancel ids, refund entries on their
bet's own account) and `assert_conservation` must hold.

The cancels have the shapes the adapters send: player and currency both named (with or
without amounts) or neither (Naga), and one only the schema allows (player named,
currency not). `test_cancel_without_currency_...` at the end pins the product bug the
model found with that shape (every refund of a cancel booked on the first bet's account).
"""

import asyncio
import itertools
import os
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from adapters.contract import request_digest
from schemas import CancelItem, CancelOutcome, CancelRequested, Outcome, Provider, ReplyTo
from tests.support import assert_conservation
from worker import ledger
from worker.apply import apply_batch
from worker.ledger import LedgerRefusal

pytestmark = pytest.mark.integration

T = TypeVar("T")

PLAYERS = ("p1", "p2", "p3")
CURRENCIES = ("EUR", "USD")
PROVIDERS = (Provider.SCORPIO, Provider.NAGA)
# Bets get fresh tx ids (b1, b2, ...); these few collide: unknown, reused or tombstoned.
TXS = ("t1", "t2", "t3")
OPENING_BALANCES = tuple(Decimal(v) for v in ("100.00", "0", "5.00", "100.00", "250.00"))
AMOUNTS = tuple(Decimal(v) for v in ("10.00", "1.00", "2.50", "20.00", "75.00"))
REPLY_TO = ReplyTo(topic="model.replies", partition=0)
MOSTLY = st.sampled_from((True, True, True, False))

# Cancel shapes: who the cancel names (Scorpio/HPGames/AMB name player and currency,
# HPGames may leave out the amount, Naga names only the bet).
NAMED = "named"
NAMED_NO_AMOUNT = "named, no amount"
UNNAMED = "unnamed"
PLAYER_ONLY = "player, no currency"  # no adapter sends it; the schema allows it
SHAPES = (NAMED, NAMED, NAMED_NO_AMOUNT, UNNAMED, PLAYER_ONLY)

DONE = frozenset({Outcome.REFUNDED, Outcome.ALREADY_CANCELLED})

TRUNCATE = (
    "TRUNCATE accounts, ledger_entries, bets, tombstones, cancel_outcomes, consumer_offsets"
    " RESTART IDENTITY CASCADE"
)

AccountKey = tuple[str, str]  # (player, currency)
BetKey = tuple[str, str]  # (provider, tx)
CancelKey = tuple[str, str]  # (provider, cancel id)


# --- the reference model ---------------------------------------------------------------


@dataclass
class ModelAccount:
    balance: Decimal
    entries: int = 1  # the opening entry


@dataclass
class ModelBet:
    player: str
    currency: str
    amount: Decimal
    state: str = "open"
    cancel_id: str | None = None

    @property
    def account(self) -> AccountKey:
        return (self.player, self.currency)


@dataclass(frozen=True)
class Cancel:
    """What a provider asks for: the content of one `CancelRequested`."""

    provider: Provider
    cancel_id: str
    player: str | None
    currency: str | None
    items: tuple[tuple[str, Decimal | None], ...]  # (bet tx, amount)

    @property
    def key(self) -> CancelKey:
        return (self.provider.value, self.cancel_id)

    def event(self) -> CancelRequested:
        items = [CancelItem(bet_tx=tx, amount=amount) for tx, amount in self.items]
        return CancelRequested(
            correlation_id=uuid.uuid4().hex,
            provider=self.provider,
            cancel_id=self.cancel_id,
            player=self.player,
            currency=self.currency,
            items=items,
            request_digest=request_digest(
                self.provider, self.cancel_id, self.player, self.currency, items
            ),
            reply_to=REPLY_TO,
            deadline_ms=2_000_000_000_000,
            requested_at_ms=1_000_000_000_000,
        )


@dataclass(frozen=True)
class Answer:
    """The part of a `CancelOutcome` the rules determine."""

    outcome: Outcome
    items: tuple[tuple[str, Outcome, Decimal | None], ...]  # (bet tx, outcome, amount)
    player: str | None
    currency: str | None
    balance_before: Decimal | None
    balance_after: Decimal | None
    replayed: bool = False

    @classmethod
    def of(cls, outcome: CancelOutcome) -> "Answer":
        return cls(
            outcome=outcome.outcome,
            items=tuple((item.bet_tx, item.outcome, item.amount) for item in outcome.items),
            player=outcome.player,
            currency=outcome.currency,
            balance_before=outcome.balance_before,
            balance_after=outcome.balance_after,
            replayed=outcome.replayed,
        )


class LedgerModel:
    """The spec's money and identity rules over plain dicts."""

    def __init__(self) -> None:
        self.accounts: dict[AccountKey, ModelAccount] = {}
        self.bets: dict[BetKey, ModelBet] = {}
        self.tombstones: set[BetKey] = set()
        self.decided: dict[CancelKey, tuple[Cancel, Answer]] = {}
        # (provider, tx, cancel id, amount, player, currency): the refund entries
        self.refunds: set[tuple[str, str, str, Decimal, str, str]] = set()

    def open_account(self, player: str, currency: str, balance: Decimal) -> bool:
        if (player, currency) in self.accounts:
            return False
        self.accounts[(player, currency)] = ModelAccount(balance)
        return True

    def debit(
        self, provider: str, player: str, currency: str, amount: Decimal, tx: str
    ) -> Decimal | None:
        """The new balance, or None when refused (and then nothing changes)."""
        account = self.accounts.get((player, currency))
        if (
            (provider, tx) in self.tombstones
            or (provider, tx) in self.bets
            or account is None
            or account.balance < amount
        ):
            return None
        account.balance -= amount
        account.entries += 1
        self.bets[(provider, tx)] = ModelBet(player, currency, amount)
        return account.balance

    def settle(self, provider: str, tx: str) -> bool:
        bet = self.bets.get((provider, tx))
        if bet is None or bet.state != "open":
            return False
        bet.state = "settled"
        return True

    def cancel(self, cancel: Cancel) -> tuple[str, Answer]:
        """('new' | 'retry' | 'conflict', the answer); applies a new cancel's effects."""
        earlier = self.decided.get(cancel.key)
        if earlier is not None:
            first, answer = earlier
            if (first.player, first.currency, first.items) == (
                cancel.player,
                cancel.currency,
                cancel.items,
            ):
                return "retry", replace(answer, replayed=True)
            refused = tuple((tx, Outcome.INVALID, None) for tx, _ in cancel.items)
            return "conflict", Answer(
                Outcome.INVALID, refused, cancel.player, cancel.currency, None, None
            )

        provider = cancel.provider.value
        bets = [self.bets.get((provider, tx)) for tx, _ in cancel.items]
        verdicts = [
            self._verdict(cancel, bet, amount)
            for bet, (_, amount) in zip(bets, cancel.items, strict=True)
        ]
        owners = {bet.account for bet in bets if bet is not None}
        named = cancel.player is not None and cancel.currency is not None
        if not named and len(owners) > 1:  # one cancel is one account's
            # several players' bets, or one player's bets in several currencies
            refusal = Outcome.PLAYER_MISMATCH if cancel.player is None else Outcome.AMOUNT_MISMATCH
            verdicts = [refusal if verdict is Outcome.REFUNDED else verdict for verdict in verdicts]
        refusals = [verdict for verdict in verdicts if verdict not in DONE]
        if refusals:  # all or nothing: the first refused item decides
            outcome = refusals[0]
        elif Outcome.REFUNDED in verdicts:
            outcome = Outcome.REFUNDED
        else:
            outcome = Outcome.ALREADY_CANCELLED

        account_key: AccountKey | None
        if cancel.player is not None and cancel.currency is not None:
            key = (cancel.player, cancel.currency)
            account_key = key if key in self.accounts else None
        else:  # the first bet of the named player (or of anyone) names the account
            account_key = next(
                (
                    bet.account
                    for bet in bets
                    if bet is not None and cancel.player in (None, bet.player)
                ),
                None,
            )
            if account_key is None and cancel.player is not None:
                # no bet of the named player: that player's account, if there is one only
                own = [key for key in self.accounts if key[0] == cancel.player]
                account_key = own[0] if len(own) == 1 else None
        before = self.accounts[account_key].balance if account_key is not None else None

        refunded = Decimal(0)
        if outcome is Outcome.REFUNDED:
            assert account_key is not None
            account = self.accounts[account_key]
            for bet, verdict, (tx, _) in zip(bets, verdicts, cancel.items, strict=True):
                if verdict is Outcome.REFUNDED:
                    assert bet is not None
                    assert bet.account == account_key
                    bet.state = "cancelled"
                    bet.cancel_id = cancel.cancel_id
                    account.balance += bet.amount
                    account.entries += 1
                    refunded += bet.amount
                    self.refunds.add((provider, tx, cancel.cancel_id, bet.amount, *bet.account))
        for bet, (tx, _) in zip(bets, cancel.items, strict=True):
            if bet is None:  # tombstoned even when the cancel is refused
                self.tombstones.add((provider, tx))

        answer = Answer(
            outcome=outcome,
            items=tuple(
                (tx, verdict, bet.amount if bet is not None else amount)
                for bet, verdict, (tx, amount) in zip(bets, verdicts, cancel.items, strict=True)
            ),
            player=account_key[0] if account_key is not None else cancel.player,
            currency=account_key[1] if account_key is not None else cancel.currency,
            balance_before=before,
            balance_after=None if before is None else before + refunded,
        )
        self.decided[cancel.key] = (cancel, answer)
        return "new", answer

    @staticmethod
    def _verdict(cancel: Cancel, bet: ModelBet | None, amount: Decimal | None) -> Outcome:
        """One item on its own: identity and amount before the bet's state."""
        if bet is None:
            return Outcome.BET_UNKNOWN
        if cancel.player is not None and cancel.player != bet.player:
            return Outcome.PLAYER_MISMATCH
        if cancel.currency is not None and cancel.currency != bet.currency:
            return Outcome.AMOUNT_MISMATCH
        if amount is not None and amount != bet.amount:
            return Outcome.AMOUNT_MISMATCH
        if bet.state == "cancelled":
            return Outcome.ALREADY_CANCELLED
        if bet.state == "settled":
            return Outcome.BET_SETTLED
        return Outcome.REFUNDED

    def balances(self) -> dict[AccountKey, Decimal]:
        return {key: account.balance for key, account in self.accounts.items()}


# --- the state machine ----------------------------------------------------------------


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self, loop: asyncio.AbstractEventLoop, pool: asyncpg.Pool) -> None:
        super().__init__()
        self.loop = loop
        self.pool = pool
        self.model = LedgerModel()
        self.history: list[tuple[Cancel, CancelRequested]] = []  # every cancel applied
        self.first_answers: dict[CancelKey, CancelOutcome] = {}
        self.fresh_ids = itertools.count(1)
        self.fresh_txs = itertools.count(1)
        self.clock = itertools.count(1_700_000_000_000)
        self.run(self.pool.execute(TRUNCATE))

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    # --- drawing requests from the model's state ---

    @staticmethod
    def _choose(
        data: st.DataObject,
        options: Sequence[T],
        fallback: st.SearchStrategy[T],
        prefer: st.SearchStrategy[bool] = MOSTLY,
    ) -> T:
        """Mostly one of `options` (which depend on the state), else `fallback`.

        Draws the same things whatever the state, so that hypothesis can delete steps of
        a failing sequence without shifting what the later steps draw (good shrinking).
        """
        preferred = data.draw(prefer)
        index = data.draw(st.integers(0, 255))
        other = data.draw(fallback)
        return options[index % len(options)] if options and preferred else other

    def _draw_bet(self, data: st.DataObject) -> tuple[Provider, str]:
        """Mostly a bet the ledger knows (in any state), else one of the colliding txs."""
        known = [(Provider(provider), tx) for provider, tx in sorted(self.model.bets)]
        return self._choose(
            data, known, st.tuples(st.sampled_from(PROVIDERS), st.sampled_from(TXS))
        )

    def _draw_cancel(self, data: st.DataObject, *, shape: str | None = None) -> Cancel:
        provider, first = self._draw_bet(data)
        anchor = self.model.bets.get((provider.value, first))
        txs = [first]
        for _ in range(data.draw(st.integers(0, 2))):  # more items (AMB: several tips)
            kind = data.draw(st.sampled_from(("same account",) * 3 + ("any", "colliding")))
            index = data.draw(st.integers(0, 255))
            candidates = sorted(
                {
                    tx
                    for (p, tx), bet in self.model.bets.items()
                    if p == provider.value
                    and (kind == "any" or (anchor is not None and bet.account == anchor.account))
                }
                if kind != "colliding"
                else set(TXS)
            )
            candidates = [tx for tx in candidates if tx not in txs]
            if candidates:
                txs.append(candidates[index % len(candidates)])
        shape = shape or data.draw(st.sampled_from(SHAPES))
        # Mostly the bet's own player, currency and amount; sometimes another one.
        player: str | None = self._choose(
            data, [anchor.player] if anchor else [], st.sampled_from(PLAYERS)
        )
        currency: str | None = self._choose(
            data, [anchor.currency] if anchor else [], st.sampled_from(CURRENCIES)
        )
        if shape == UNNAMED:
            player = currency = None
        if shape == PLAYER_ONLY:
            currency = None
        items: list[tuple[str, Decimal | None]] = []
        for tx in txs:
            bet = self.model.bets.get((provider.value, tx))
            amount = self._choose(data, [bet.amount] if bet else [], st.sampled_from(AMOUNTS))
            items.append((tx, amount if shape == NAMED else None))
        used = sorted(cancel_id for p, cancel_id in self.model.decided if p == provider.value)
        fresh = f"c{next(self.fresh_ids)}"
        rarely = st.sampled_from((False,) * 7 + (True,))
        cancel_id = self._choose(data, used, st.just(fresh), prefer=rarely)  # reused: retry
        return Cancel(provider, cancel_id, player, currency, tuple(items))

    # --- applying cancels through the worker's transaction ---

    def _apply(self, batch: Sequence[tuple[Cancel, CancelRequested]]) -> list[str]:
        now_ms = next(self.clock)
        outcomes = self.run(
            apply_batch(
                self.pool,
                [event for _, event in batch],
                group="model",
                advances=[],
                now_ms=now_ms,
                attempts_max=3,
                backoff_ms_max=50,
            )
        )
        assert len(outcomes) == len(batch)
        kinds = []
        for (cancel, event), got in zip(batch, outcomes, strict=True):
            kind, want = self.model.cancel(cancel)
            assert Answer.of(got) == want, (
                f"{cancel}\n  product: {Answer.of(got)}\n  model:   {want}"
            )
            assert (got.provider, got.cancel_id) == (cancel.provider, cancel.cancel_id)
            assert got.correlation_id == event.correlation_id
            if kind == "new":
                assert got.decided_at_ms == now_ms
                self.first_answers[cancel.key] = got
            elif kind == "retry":  # the first answer again, whatever happened since
                same = {"correlation_id", "replayed"}
                first = self.first_answers[cancel.key]
                assert got.model_dump(exclude=same) == first.model_dump(exclude=same)
            kinds.append(kind)
        return kinds

    def _send(self, cancels: Sequence[Cancel]) -> list[str]:
        batch = [(cancel, cancel.event()) for cancel in cancels]
        kinds = self._apply(batch)
        self.history.extend(batch)
        return kinds

    # --- rules ---

    @initialize(
        accounts=st.lists(
            st.tuples(
                st.sampled_from(PLAYERS),
                st.sampled_from(CURRENCIES),
                st.sampled_from(OPENING_BALANCES),
            ),
            min_size=1,
            max_size=4,
            unique_by=lambda account: account[:2],
        ),
        bets=st.lists(
            st.tuples(
                st.integers(0, 3),
                st.sampled_from(PROVIDERS),
                st.sampled_from(AMOUNTS),
                st.sampled_from((False, False, True)),
            ),
            max_size=6,
        ),
    )
    def start(
        self,
        accounts: list[tuple[str, str, Decimal]],
        bets: list[tuple[int, Provider, Decimal, bool]],
    ) -> None:
        """A few accounts (some empty) and bets on them (some settled) to start from."""
        for player, currency, balance in accounts:
            self.open_account(player, currency, balance)
        opened = sorted(self.model.accounts)
        for index, provider, amount, settled in bets:
            player, currency = opened[index % len(opened)]
            tx = f"b{next(self.fresh_txs)}"
            self._debit(provider.value, player, currency, amount, tx)
            if settled:
                self._settle(provider, tx)

    @rule(
        player=st.sampled_from(PLAYERS),
        currency=st.sampled_from(CURRENCIES),
        balance=st.sampled_from(OPENING_BALANCES),
    )
    def open_account(self, player: str, currency: str, balance: Decimal) -> None:
        async def go() -> None:
            async with self.pool.acquire() as conn:
                await ledger.open_account(conn, player, currency, balance)

        if self.model.open_account(player, currency, balance):
            self.run(go())
        else:
            with pytest.raises(LedgerRefusal):
                self.run(go())

    @rule(data=st.data(), count=st.integers(1, 3))
    def debit(self, data: st.DataObject, count: int) -> None:
        """Bets: mostly new tx ids; some refused (no funds, no account, known tx, tombstone)."""
        for _ in range(count):
            provider = data.draw(st.sampled_from(PROVIDERS))
            player, currency = self._choose(
                data,
                sorted(self.model.accounts),
                st.tuples(st.sampled_from(PLAYERS), st.sampled_from(CURRENCIES)),
            )
            amount = data.draw(st.sampled_from(AMOUNTS))
            # Mostly a new tx; else a known bet, a tombstoned tx or a colliding one.
            p = provider.value
            taken = {tx for q, tx in self.model.bets if q == p}
            taken |= {tx for q, tx in self.model.tombstones if q == p}
            tx = self._choose(
                data,
                [f"b{next(self.fresh_txs)}"],
                st.sampled_from(sorted(taken | set(TXS))),
            )
            self._debit(provider.value, player, currency, amount, tx)

    def _debit(self, provider: str, player: str, currency: str, amount: Decimal, tx: str) -> None:
        async def go() -> Decimal:
            async with self.pool.acquire() as conn:
                return await ledger.debit(
                    conn, provider=provider, player=player, currency=currency, amount=amount, tx=tx
                )

        expected = self.model.debit(provider, player, currency, amount, tx)
        if expected is None:  # nothing written: the invariants compare every row
            with pytest.raises(LedgerRefusal):
                self.run(go())
        else:
            assert self.run(go()) == expected

    @rule(data=st.data(), count=st.integers(1, 2))
    def settle(self, data: st.DataObject, count: int) -> None:
        for _ in range(count):
            open_bets = [
                (Provider(p), tx)
                for (p, tx), bet in sorted(self.model.bets.items())
                if bet.state == "open"
            ]
            other = self._draw_bet(data)  # refused: unknown, settled or cancelled
            self._settle(*self._choose(data, open_bets, st.just(other)))

    def _settle(self, provider: Provider, tx: str) -> None:
        async def go() -> None:
            async with self.pool.acquire() as conn:
                await ledger.settle(conn, provider=provider.value, tx=tx)

        if self.model.settle(provider.value, tx):
            self.run(go())
        else:
            with pytest.raises(LedgerRefusal):
                self.run(go())

    @rule(data=st.data(), size=st.integers(1, 3))
    def cancel_batch(self, data: st.DataObject, size: int) -> None:
        self._send([self._draw_cancel(data) for _ in range(size)])

    @rule(data=st.data())
    def unnamed_cancel(self, data: st.DataObject) -> None:
        """Naga: only the bet id; player, currency and amount come from the bet."""
        self._send([self._draw_cancel(data, shape=UNNAMED)])

    @precondition(lambda self: self.history)
    @rule(data=st.data(), with_fresh=st.booleans(), rewrite=st.booleans())
    def retry(self, data: st.DataObject, with_fresh: bool, rewrite: bool) -> None:
        """The same cancel again (a provider's retry): the stored answer, nothing moves."""
        cancel = data.draw(st.sampled_from([cancel for cancel, _ in self.history]))
        if rewrite:  # the same amounts written otherwise (10.000 for 10.00): same content
            items = tuple(
                (tx, None if a is None else Decimal(f"{a:.3f}")) for tx, a in cancel.items
            )
            cancel = replace(cancel, items=items)
        balances = self.model.balances()
        batch = [cancel]
        if with_fresh:
            batch.insert(data.draw(st.integers(0, 1)), self._draw_cancel(data))
        kinds = self._send(batch)
        assert kinds[batch.index(cancel)] in ("retry", "conflict")
        if not with_fresh:
            assert self.model.balances() == balances

    @precondition(lambda self: self.model.decided)
    @rule(data=st.data())
    def reuse_cancel_id(self, data: st.DataObject) -> None:
        """A decided cancel id with other content: invalid, stored nowhere."""
        key = data.draw(st.sampled_from(sorted(self.model.decided)))
        first, _ = self.model.decided[key]
        amount = first.items[0][1]
        change = data.draw(st.sampled_from(("amount", "player", "currency", "items")))
        if change == "amount":
            currency = first.currency or "EUR"
            other = (amount or Decimal(0)) + Decimal("1.00")
            items = tuple((t, other) for t, _ in first.items)
            cancel = replace(first, currency=currency, items=items)
        elif change == "player":
            others = [p for p in PLAYERS if p != first.player]
            cancel = replace(first, player=data.draw(st.sampled_from(others)), currency="EUR")
        elif change == "currency":
            others = [c for c in CURRENCIES if c != first.currency]
            cancel = replace(
                first, player=first.player or "p1", currency=data.draw(st.sampled_from(others))
            )
        else:
            extra = f"b{next(self.fresh_txs)}"
            cancel = replace(first, items=(*first.items, (extra, first.items[0][1])))
        balances = self.model.balances()
        assert self._send([cancel]) == ["conflict"]
        assert self.model.balances() == balances

    @rule(data=st.data())
    def cancel_before_debit(self, data: st.DataObject) -> None:
        """A cancel of a bet the ledger does not know, then that bet's debit: refused."""
        provider = data.draw(st.sampled_from(PROVIDERS))
        tx = f"b{next(self.fresh_txs)}"
        player, currency = self._choose(
            data,
            sorted(self.model.accounts),
            st.tuples(st.sampled_from(PLAYERS), st.sampled_from(CURRENCIES)),
        )
        amount = data.draw(st.sampled_from(AMOUNTS))
        shape = data.draw(st.sampled_from(SHAPES))
        cancel = Cancel(
            provider,
            f"c{next(self.fresh_ids)}",
            None if shape == UNNAMED else player,
            None if shape in (UNNAMED, PLAYER_ONLY) else currency,
            ((tx, amount if shape == NAMED else None),),
        )
        self._send([cancel])
        assert self.model.decided[cancel.key][1].outcome is Outcome.BET_UNKNOWN
        assert (provider.value, tx) in self.model.tombstones
        self._debit(provider.value, player, currency, amount, tx)

    @precondition(lambda self: self.history)
    @rule(data=st.data())
    def replay_everything(self, data: st.DataObject) -> None:
        """A replay of the topic from offset 0: every answer replayed, nothing moves."""
        events = list(self.history)
        cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(events) - 1)), max_size=2)))
        balances = self.model.balances()
        for start, end in itertools.pairwise([0, *cuts, len(events)]):
            if start < end:
                kinds = self._apply(events[start:end])
                assert set(kinds) <= {"retry", "conflict"}
        assert self.model.balances() == balances

    # --- invariants, after every step ---

    @invariant()
    def ledger_matches_model(self) -> None:
        self.run(self._check_ledger())

    async def _check_ledger(self) -> None:
        model = self.model
        async with self.pool.acquire() as conn:
            await assert_conservation(conn)
            accounts = await conn.fetch(
                "SELECT a.player, a.currency, a.balance, count(e.id) AS entries"
                " FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id"
                " GROUP BY a.id"
            )
            bets = await conn.fetch(
                "SELECT b.provider, b.tx, a.player, a.currency, b.amount, b.state, b.cancel_id"
                " FROM bets b JOIN accounts a ON a.id = b.account_id"
            )
            tombstones = await conn.fetch("SELECT provider, tx FROM tombstones")
            decided = await conn.fetch("SELECT provider, cancel_id FROM cancel_outcomes")
            refunds = await conn.fetch(  # each on its bet's own account
                "SELECT e.provider, e.tx, e.cancel_id, e.amount, a.player, a.currency"
                " FROM ledger_entries e JOIN accounts a ON a.id = e.account_id"
                " WHERE e.kind = 'refund'"
            )
        assert {(r["player"], r["currency"]): (r["balance"], r["entries"]) for r in accounts} == {
            key: (account.balance, account.entries) for key, account in model.accounts.items()
        }
        assert {
            (r["provider"], r["tx"]): (
                r["player"],
                r["currency"],
                r["amount"],
                r["state"],
                r["cancel_id"],
            )
            for r in bets
        } == {
            key: (bet.player, bet.currency, bet.amount, bet.state, bet.cancel_id)
            for key, bet in model.bets.items()
        }
        assert {(r["provider"], r["tx"]) for r in tombstones} == model.tombstones
        assert {(r["provider"], r["cancel_id"]) for r in decided} == set(model.decided)
        assert len(refunds) == len(model.refunds)
        assert {tuple(r.values()) for r in refunds} == model.refunds


def test_ledger_against_model(database_url: str) -> None:
    async def connect() -> asyncpg.Pool:  # the pool binds to the loop it is created in
        return await asyncpg.create_pool(database_url, min_size=1, max_size=2)

    loop = asyncio.new_event_loop()
    pool = loop.run_until_complete(connect())
    try:
        run_state_machine_as_test(
            # hypothesis types the factory as the class; its docs accept any callable
            lambda: LedgerMachine(loop, pool),  # type: ignore[arg-type]
            settings=settings(
                max_examples=int(os.environ.get("LEDGER_MODEL_EXAMPLES", "60")),
                stateful_step_count=30,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        loop.run_until_complete(pool.close())
        loop.close()


async def test_cancel_without_currency_spanning_two_accounts_is_refused(
    database_url: str,
) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            for currency, tx in (("EUR", "b1"), ("USD", "b2")):
                await ledger.open_account(conn, "p1", currency, Decimal("100.00"))
                await ledger.debit(
                    conn,
                    provider="scorpio",
                    player="p1",
                    currency=currency,
                    amount=Decimal("10.00"),
                    tx=tx,
                )
        cancel = Cancel(Provider.SCORPIO, "c1", "p1", None, (("b1", None), ("b2", None)))
        [outcome] = await apply_batch(
            pool,
            [cancel.event()],
            group="model",
            advances=[],
            now_ms=1_700_000_000_000,
            attempts_max=1,
            backoff_ms_max=1,
        )
        async with pool.acquire() as conn:
            await assert_conservation(conn)
            misplaced = await conn.fetch(
                "SELECT e.tx FROM ledger_entries e JOIN bets b USING (provider, tx)"
                " WHERE e.kind = 'refund' AND e.account_id <> b.account_id"
            )
            balances = {
                (r["player"], r["currency"]): r["balance"]
                for r in await conn.fetch("SELECT player, currency, balance FROM accounts")
            }
        # Found by the model: all refunds were booked on the first bet's account. Now one
        # cancel is one account's, so a cancel spanning two currencies is refused.
        assert outcome.outcome is Outcome.AMOUNT_MISMATCH
        assert not misplaced, f"refunds booked on another account: {misplaced}"
        assert balances == {("p1", "EUR"): Decimal("90.00"), ("p1", "USD"): Decimal("90.00")}
    finally:
        await pool.close()
