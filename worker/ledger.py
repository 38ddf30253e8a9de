"""The Postgres ledger: every SQL statement of the product lives here.

The batch path locks what a batch touches (advisory locks on cancel and bet keys, then
bet and account rows, each class in one global order so two workers cannot deadlock),
loads it into a `LedgerSnapshot`, and after the pure decisions writes all effects
set-based. The unique key on (provider, cancel id) is what makes a cancel apply once.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from schemas import CancelOutcome, CancelRequested, format_amount, validate_amount
from schemas.money import MoneyError, validate_currency
from schemas.text import TextError, validate_text
from worker.decision import Account, Bet, BetState, Decision, LedgerSnapshot, StoredOutcome

# A plain connection (CLI) or one borrowed from a pool (worker).
Connection = asyncpg.Connection | PoolConnectionProxy


class LedgerRefusal(Exception):
    """An operator command the ledger's rules refuse; `str()` is the one-line reason."""


class Fenced(Exception):
    """Stored offsets moved under us: another worker owns (or owned) the partition."""


@dataclass(frozen=True)
class EventSource:
    """Where an event sits in the request topic (stored with its outcome)."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class OffsetAdvance:
    """A batch consumed [first_offset, next_offset) of one partition."""

    topic: str
    partition: int
    first_offset: int
    next_offset: int


async def keep_session(conn: asyncpg.Connection) -> None:
    """A pool's reset for the batch path: it leaves no session state (transaction-scoped
    locks, no LISTEN, no SET), so the default reset query is a round trip per batch
    spent on nothing. An open transaction is still rolled back by asyncpg itself."""


def lock_key(namespace: str, *parts: str) -> int:
    """A signed 64-bit advisory-lock key; collisions only serialize, never corrupt."""
    hasher = hashlib.blake2b(digest_size=8)
    for part in (namespace, *parts):
        encoded = part.encode()
        hasher.update(len(encoded).to_bytes(4, "big") + encoded)
    return int.from_bytes(hasher.digest(), "big", signed=True)


async def lock_keys(conn: Connection, keys: set[int]) -> None:
    """Take advisory transaction locks in ascending key order (no lock-order cycles)."""
    if keys:
        await conn.execute(
            "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) WITH ORDINALITY AS"
            " t(k, n) ORDER BY n",
            sorted(keys),
        )


# --- the worker's batch path -------------------------------------------------------


async def advance_offsets(conn: Connection, group: str, advances: Sequence[OffsetAdvance]) -> None:
    """Compare-and-set the stored offsets; raises Fenced if any moved."""
    if not advances:
        return
    rows = await conn.fetch(
        """
        UPDATE consumer_offsets o SET next_offset = t.next_offset, updated_at = now()
        FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[])
            AS t(topic, partition, first_offset, next_offset)
        WHERE o.consumer_group = $1 AND o.topic = t.topic AND o.partition = t.partition
          AND o.next_offset = t.first_offset
        RETURNING o.partition
        """,
        group,
        [a.topic for a in advances],
        [a.partition for a in advances],
        [a.first_offset for a in advances],
        [a.next_offset for a in advances],
    )
    if len(rows) != len(advances):
        raise Fenced(f"stored offsets moved for group {group}")


async def stored_offsets(
    conn: Connection, group: str, topic: str, partitions: Sequence[int]
) -> dict[int, int]:
    """The next offset to consume per partition; creates missing rows at 0."""
    await conn.execute(
        """
        INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset)
        SELECT $1, $2, p, 0 FROM unnest($3::int[]) AS p
        ON CONFLICT DO NOTHING
        """,
        group,
        topic,
        list(partitions),
    )
    rows = await conn.fetch(
        "SELECT partition, next_offset FROM consumer_offsets"
        " WHERE consumer_group = $1 AND topic = $2 AND partition = ANY($3::int[])",
        group,
        topic,
        list(partitions),
    )
    return {row["partition"]: row["next_offset"] for row in rows}


async def reset_offsets(conn: Connection, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Set stored offsets that lie outside the log (retention, a recreated topic) to
    where the worker restarts: re-applying is harmless, skipping would lose refunds."""
    await conn.execute(
        "UPDATE consumer_offsets SET next_offset = t.o FROM unnest($3::int[],"
        " $4::bigint[]) AS t(p, o) WHERE consumer_group = $1 AND topic = $2"
        " AND partition = t.p",
        group,
        topic,
        list(offsets),
        list(offsets.values()),
    )


async def load_snapshot(conn: Connection, events: Sequence[CancelRequested]) -> LedgerSnapshot:
    """Lock and load every ledger row the events touch (inside a transaction)."""
    cancel_keys = {(e.provider.value, e.cancel_id) for e in events}
    bet_keys = {(e.provider.value, item.bet_tx) for e in events for item in e.items}
    account_keys = {
        (e.player, e.currency) for e in events if e.player is not None and e.currency is not None
    }
    # A cancel naming its player but no currency (HPGames may omit it): that player's
    # accounts, so an answer about an unknown bet still reports the player's balance.
    lone_players = sorted({e.player for e in events if e.player is not None and e.currency is None})
    await lock_keys(
        conn,
        {lock_key("cancel", *key) for key in cancel_keys}
        | {lock_key("bet", *key) for key in bet_keys},
    )
    snapshot = LedgerSnapshot()
    await _load_outcomes(conn, snapshot, cancel_keys, bet_keys)
    await _lock_bets(conn, snapshot, bet_keys)
    await _lock_accounts(conn, snapshot, account_keys, lone_players)
    return snapshot


async def _load_outcomes(
    conn: Connection,
    snapshot: LedgerSnapshot,
    cancel_keys: set[tuple[str, str]],
    bet_keys: set[tuple[str, str]],
) -> None:
    """The stored outcomes of the cancels and the tombstones of the bets, into
    `snapshot`."""
    cancel_providers, cancel_ids = _columns(cancel_keys)
    bet_providers, bet_txs = _columns(bet_keys)
    # Stored outcomes and tombstones in one round trip (a tombstone's outcome is NULL).
    for row in await conn.fetch(
        """
        SELECT o.provider, o.cancel_id AS key, o.request_digest, o.outcome::text AS outcome
        FROM cancel_outcomes o
        JOIN unnest($1::text[], $2::text[]) AS k(provider, cancel_id) USING (provider, cancel_id)
        UNION ALL
        SELECT t.provider, t.tx, NULL, NULL FROM tombstones t
        JOIN unnest($3::text[], $4::text[]) AS k(provider, tx) USING (provider, tx)
        """,
        cancel_providers,
        cancel_ids,
        bet_providers,
        bet_txs,
    ):
        if row["outcome"] is None:
            snapshot.tombstones.add((row["provider"], row["key"]))
        else:
            snapshot.outcomes[(row["provider"], row["key"])] = StoredOutcome(
                row["request_digest"], CancelOutcome.model_validate_json(row["outcome"])
            )


async def _lock_bets(
    conn: Connection, snapshot: LedgerSnapshot, bet_keys: set[tuple[str, str]]
) -> None:
    """Row-lock and load the recorded bets, in key order, into `snapshot`."""
    bet_providers, bet_txs = _columns(bet_keys)
    for row in await conn.fetch(
        """
        SELECT b.provider, b.tx, b.account_id, a.player, a.currency, b.amount, b.state,
               b.cancel_id
        FROM bets b
        JOIN unnest($1::text[], $2::text[]) AS k(provider, tx) USING (provider, tx)
        JOIN accounts a ON a.id = b.account_id
        ORDER BY b.provider, b.tx
        FOR UPDATE OF b
        """,
        bet_providers,
        bet_txs,
    ):
        snapshot.bets[(row["provider"], row["tx"])] = Bet(
            provider=row["provider"],
            tx=row["tx"],
            account_id=row["account_id"],
            player=row["player"],
            currency=row["currency"],
            amount=row["amount"],
            state=BetState(row["state"]),
            cancel_id=row["cancel_id"],
        )


async def _lock_accounts(
    conn: Connection,
    snapshot: LedgerSnapshot,
    account_keys: set[tuple[str, str]],
    lone_players: Sequence[str],
) -> None:
    """Row-lock and load, in id order, the accounts of the bets in `snapshot`, those
    named by (player, currency), and every account of the `lone_players`."""
    players, currencies = _columns(account_keys)
    for row in await conn.fetch(
        """
        SELECT id, player, currency, balance FROM accounts
        WHERE id = ANY($1::bigint[])
           OR (player, currency) IN (SELECT * FROM unnest($2::text[], $3::text[]))
           OR player = ANY($4::text[])
        ORDER BY id
        FOR UPDATE
        """,
        sorted({bet.account_id for bet in snapshot.bets.values()}),
        players,
        currencies,
        lone_players,
    ):
        snapshot.add_account(Account(row["id"], row["player"], row["currency"], row["balance"]))


async def write_decisions(
    conn: Connection,
    decided: Sequence[tuple[CancelRequested, Decision]],
    sources: Sequence[EventSource | None] | None = None,
) -> None:
    """Write the effects of a batch's decisions, set-based, in one statement (inside a
    transaction): outcomes (with their event's `sources`, in `decided`'s order, where
    known), tombstones, cancelled bets, refund entries, balances. One round trip, not
    five: under load each one waits for a CPU (data-modifying CTEs all run, whatever the
    final SELECT reads)."""
    places = [None] * len(decided) if sources is None else list(sources)
    assert len(places) == len(decided), "one source (or None) per decided event"
    stored = [
        (event, decision, place)
        for (event, decision), place in zip(decided, places, strict=True)
        if decision.store
    ]
    tombstones = [
        (provider, tx, event.cancel_id)
        for event, decision in decided
        for provider, tx in decision.tombstones
    ]
    refunds = [refund for _, decision in decided for refund in decision.refunds]
    if not stored:
        assert not tombstones, "tombstones come with a stored outcome"
        assert not refunds, "refunds come with a stored outcome"
        return
    cancelled = await conn.fetchval(
        """
        WITH outcomes AS (
            INSERT INTO cancel_outcomes (provider, cancel_id, request_digest, outcome,
                                         source_topic, source_partition, source_offset)
            SELECT p, c, d, o::jsonb, st, sp, so
            FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $13::text[],
                        $14::int[], $15::bigint[]) AS t(p, c, d, o, st, sp, so)
        ), tombstoned AS (
            INSERT INTO tombstones (provider, tx, cancel_id)
            SELECT * FROM unnest($5::text[], $6::text[], $7::text[])
        ), cancelled AS (
            UPDATE bets b SET state = 'cancelled', cancel_id = t.cancel_id, updated_at = now()
            FROM unnest($8::text[], $9::text[], $10::text[]) AS t(provider, tx, cancel_id)
            WHERE b.provider = t.provider AND b.tx = t.tx AND b.state = 'open'
            RETURNING b.tx
        ), entries AS (
            INSERT INTO ledger_entries (account_id, kind, amount, provider, tx, cancel_id)
            SELECT a, 'refund', m, p, t, c
            FROM unnest($11::bigint[], $12::numeric[], $8::text[], $9::text[], $10::text[])
                AS u(a, m, p, t, c)
        ), balances AS (
            UPDATE accounts a SET balance = a.balance + t.delta
            FROM (SELECT id, sum(m) AS delta
                  FROM unnest($11::bigint[], $12::numeric[]) AS u(id, m) GROUP BY id) AS t
            WHERE a.id = t.id
        )
        SELECT count(*) FROM cancelled
        """,
        [event.provider.value for event, _, _ in stored],
        [event.cancel_id for event, _, _ in stored],
        [event.request_digest for event, _, _ in stored],
        [decision.outcome.model_dump_json() for _, decision, _ in stored],
        [provider for provider, _, _ in tombstones],
        [tx for _, tx, _ in tombstones],
        [cancel_id for _, _, cancel_id in tombstones],
        [r.provider for r in refunds],
        [r.bet_tx for r in refunds],
        [r.cancel_id for r in refunds],
        [r.account_id for r in refunds],
        [r.amount for r in refunds],
        [None if place is None else place.topic for _, _, place in stored],
        [None if place is None else place.partition for _, _, place in stored],
        [None if place is None else place.offset for _, _, place in stored],
    )
    assert cancelled == len(refunds), "every refunded bet was open and locked"


def _columns(keys: set[tuple[str, str]]) -> tuple[list[str], list[str]]:
    ordered = sorted(keys)
    return [key[0] for key in ordered], [key[1] for key in ordered]


# --- operator commands (`refundctl ledger …`) ----------------------------------------


async def open_account(conn: Connection, player: str, currency: str, balance: Decimal) -> None:
    _valid_ids(player=player)
    try:
        validate_currency(currency)
    except MoneyError as exc:
        raise LedgerRefusal(str(exc)) from exc
    if not balance.is_finite() or balance < 0:
        raise LedgerRefusal("opening balance must be zero or positive")
    if balance > 0:
        _validated(balance, currency)
    else:
        balance = Decimal(0)  # 0E-99999 is zero too: stored as plain 0
    async with conn.transaction():
        account_id = await conn.fetchval(
            "INSERT INTO accounts (player, currency, balance) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING RETURNING id",
            player,
            currency,
            balance,
        )
        if account_id is None:
            raise LedgerRefusal(f"account {player}/{currency} already exists")
        await conn.execute(
            "INSERT INTO ledger_entries (account_id, kind, amount) VALUES ($1, 'opening', $2)",
            account_id,
            balance,
        )


async def debit(
    conn: Connection,
    *,
    provider: str,
    player: str,
    currency: str,
    amount: Decimal,
    tx: str,
    bet_id: str | None = None,
    round_id: str | None = None,
) -> Decimal:
    """Record an accepted bet or tip; returns the new balance. All-or-nothing.

    Refuses, before writing anything, what the ledger could not show back or a cancel
    could never name: ids under the one text rule, amounts under the money rules."""
    _valid_ids(provider=provider, player=player, tx=tx, bet_id=bet_id, round=round_id)
    _validated(amount, currency)
    async with conn.transaction():
        await lock_keys(conn, {lock_key("bet", provider, tx)})
        if await conn.fetchval(
            "SELECT 1 FROM tombstones WHERE provider = $1 AND tx = $2", provider, tx
        ):
            raise LedgerRefusal(f"{provider} tx {tx} was cancelled before its debit (tombstone)")
        account = await conn.fetchrow(
            "SELECT id, balance FROM accounts WHERE player = $1 AND currency = $2 FOR UPDATE",
            player,
            currency,
        )
        if account is None:
            raise LedgerRefusal(f"no account {player}/{currency}")
        inserted = await conn.fetchval(
            """
            INSERT INTO bets (provider, tx, account_id, amount, bet_id, round_id, state)
            VALUES ($1, $2, $3, $4, $5, $6, 'open') ON CONFLICT DO NOTHING RETURNING 1
            """,
            provider,
            tx,
            account["id"],
            amount,
            bet_id,
            round_id,
        )
        if inserted is None:
            raise LedgerRefusal(f"{provider} tx {tx} is already recorded")
        if account["balance"] < amount:
            raise LedgerRefusal(
                f"insufficient funds: balance {account['balance']} < amount {amount}"
            )
        balance: Decimal = await conn.fetchval(
            "UPDATE accounts SET balance = balance - $2 WHERE id = $1 RETURNING balance",
            account["id"],
            amount,
        )
        await conn.execute(
            "INSERT INTO ledger_entries (account_id, kind, amount, provider, tx)"
            " VALUES ($1, 'debit', $2, $3, $4)",
            account["id"],
            -amount,
            provider,
            tx,
        )
    return balance


async def settle(conn: Connection, *, provider: str, tx: str) -> None:
    async with conn.transaction():
        await lock_keys(conn, {lock_key("bet", provider, tx)})
        state = await conn.fetchval(
            "SELECT state FROM bets WHERE provider = $1 AND tx = $2 FOR UPDATE", provider, tx
        )
        if state is None:
            raise LedgerRefusal(f"no bet {provider} tx {tx}")
        if state != BetState.OPEN.value:
            raise LedgerRefusal(f"bet {provider} tx {tx} is {state}, not open")
        await conn.execute(
            "UPDATE bets SET state = 'settled', updated_at = now() WHERE provider = $1 AND tx = $2",
            provider,
            tx,
        )


async def show(conn: Connection, player: str, currency: str) -> dict[str, object]:
    """The account as `refundctl ledger show --json` prints it."""
    account = await conn.fetchrow(
        "SELECT id, balance FROM accounts WHERE player = $1 AND currency = $2", player, currency
    )
    if account is None:
        raise LedgerRefusal(f"no account {player}/{currency}")
    rows = await conn.fetch(
        "SELECT kind, amount, provider, tx, cancel_id, created_at FROM ledger_entries"
        " WHERE account_id = $1 ORDER BY id",
        account["id"],
    )
    entries = [
        {
            "kind": row["kind"],
            "amount": format_amount(row["amount"], currency),
            "provider": row["provider"],
            "tx": row["tx"],
            "cancel_id": row["cancel_id"],
            "at": row["created_at"].isoformat(),
        }
        for row in rows
    ]
    total = sum((row["amount"] for row in rows), Decimal(0))
    assert total == account["balance"], "balance equals the sum of its entries"
    return {
        "player": player,
        "currency": currency,
        "balance": format_amount(account["balance"], currency),
        "entries": entries,
    }


def _validated(amount: Decimal, currency: str) -> Decimal:
    try:
        return validate_amount(amount, currency)
    except MoneyError as exc:
        raise LedgerRefusal(str(exc)) from exc


def _valid_ids(**ids: str | None) -> None:
    """Every given id (None: not given) under the one text rule, or LedgerRefusal."""
    for name, value in ids.items():
        if value is None:
            continue
        try:
            validate_text(value, name)
        except TextError as exc:
            raise LedgerRefusal(str(exc)) from exc


# --- operations (`refundctl replay`, `refundctl dlq`, `refundctl status`) ------------


async def read_stored_offsets(conn: Connection, group: str, topic: str) -> dict[int, int]:
    """The worker group's stored next offsets per partition (read only: creates nothing)."""
    rows = await conn.fetch(
        "SELECT partition, next_offset FROM consumer_offsets"
        " WHERE consumer_group = $1 AND topic = $2",
        group,
        topic,
    )
    return {row["partition"]: row["next_offset"] for row in rows}


@dataclass(frozen=True)
class LedgerActivity:
    tombstones: int  # cancels whose bet the ledger never saw: every row is outstanding
    oldest_tombstone_at: datetime | None
    last_applied_at: datetime | None  # the newest stored outcome


async def ledger_activity(conn: Connection) -> LedgerActivity:
    row = await conn.fetchrow(
        """
        SELECT (SELECT count(*) FROM tombstones) AS tombstones,
               (SELECT min(created_at) FROM tombstones) AS oldest_tombstone_at,
               (SELECT max(created_at) FROM cancel_outcomes) AS last_applied_at
        """
    )
    assert row is not None
    return LedgerActivity(row["tombstones"], row["oldest_tombstone_at"], row["last_applied_at"])


@dataclass(frozen=True)
class RedriveClaim:
    """A dead letter about to be re-published: its place in the dead-letter topic."""

    dlq_partition: int
    dlq_offset: int
    source: str | None


@dataclass(frozen=True)
class RedrivePosition:
    """Where the re-published copy of a dead letter landed in the request topic."""

    dlq_partition: int
    dlq_offset: int
    request_partition: int
    request_offset: int


async def claim_redrives(
    conn: Connection, dlq_topic: str, request_topic: str, claims: Sequence[RedriveClaim]
) -> set[tuple[int, int]]:
    """Claim dead letters for a redrive (inside a transaction); returns the (partition,
    offset) pairs claimed now. The primary key refuses a dead letter redriven before, and
    a concurrent redrive of the same one waits for this transaction, then finds it taken."""
    if not claims:
        return set()
    rows = await conn.fetch(
        """
        INSERT INTO dead_letter_redrives (dlq_topic, dlq_partition, dlq_offset, source,
                                          request_topic)
        SELECT $1, p, o, s, $2 FROM unnest($3::int[], $4::bigint[], $5::text[]) AS t(p, o, s)
        ON CONFLICT DO NOTHING
        RETURNING dlq_partition, dlq_offset
        """,
        dlq_topic,
        request_topic,
        [c.dlq_partition for c in claims],
        [c.dlq_offset for c in claims],
        [c.source for c in claims],
    )
    return {(row["dlq_partition"], row["dlq_offset"]) for row in rows}


async def record_redrive_positions(
    conn: Connection, dlq_topic: str, positions: Sequence[RedrivePosition]
) -> None:
    """Fill in where the claimed dead letters landed (same transaction as the claim)."""
    if not positions:
        return
    await conn.execute(
        """
        UPDATE dead_letter_redrives r
        SET request_partition = t.rp, request_offset = t.ro
        FROM unnest($2::int[], $3::bigint[], $4::int[], $5::bigint[]) AS t(p, o, rp, ro)
        WHERE r.dlq_topic = $1 AND r.dlq_partition = t.p AND r.dlq_offset = t.o
        """,
        dlq_topic,
        [p.dlq_partition for p in positions],
        [p.dlq_offset for p in positions],
        [p.request_partition for p in positions],
        [p.request_offset for p in positions],
    )


async def redriven_at(
    conn: Connection, dlq_topic: str, ids: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], datetime]:
    """When each of these dead letters (partition, offset) was redriven, if it was."""
    if not ids:
        return {}
    rows = await conn.fetch(
        """
        SELECT r.dlq_partition, r.dlq_offset, r.redriven_at FROM dead_letter_redrives r
        JOIN unnest($2::int[], $3::bigint[]) AS t(p, o)
          ON r.dlq_partition = t.p AND r.dlq_offset = t.o
        WHERE r.dlq_topic = $1
        """,
        dlq_topic,
        [partition for partition, _ in ids],
        [offset for _, offset in ids],
    )
    return {(row["dlq_partition"], row["dlq_offset"]): row["redriven_at"] for row in rows}
