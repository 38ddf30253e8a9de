"""`refundctl replay`: re-run a range of the request topic through the worker's apply path.

A standalone consumer (no group, partitions assigned by hand) reads every partition of
the request topic from the range's start up to the end offsets taken when the replay
starts, so the replay is bounded even while providers keep sending. Events go through
`worker.apply.apply_batch`, the worker's own transaction, in batches, with no offset
advance: the worker's stored offsets are not touched. A cancel that was applied
before gets its stored outcome back (`already_applied`) and moves no money; so a replay
is idempotent, and a second one changes nothing. Replies are not published: nobody waits
for them. Records the worker dead-letters without applying (undecodable, or breaking
their provider's contract), a cancel id reused for other content (refused `invalid`,
stored nowhere), and an event the batch fails on for a reason that will not pass (the
database refuses it, or its decision raises: isolated as the worker isolates it, the
others applied, logged as `replay_event_failed` with its source) count as `failed`.
A replay publishes no dead letters: the worker did, when it consumed them.

A dry run takes the same locks, loads the same rows, makes the same decisions and
writes them in a transaction that is rolled back (so what the database would refuse
fails there too): nothing kept, nothing published. Decisions carry over from one
batch to the next in memory, so a retry later in the range is counted as the worker
would count it.

The time range. Per partition, a range starts at the first record stamped at or after
`since` and stops before the first record, from there, stamped at or after `until`:
exactly the offsets Kafka's `offsets_for_times` names. The start is looked up with
`offsets_for_times` and the answer is checked against the records around it; a broker
whose answer does not hold (Tansu, the dev and test broker, answers the log's first
offset and its own clock) is read from the beginning of each partition instead, and the
start is found by the records' timestamps while reading. Either way the same records
are selected. `until` is always found while reading (no lookup needed).
"""

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import UnsupportedVersionError
from aiokafka.structs import ConsumerRecord

from schemas import CancelOutcome, CancelRequested, Outcome
from schemas.failures import KAFKA, Unavailable
from worker import ledger
from worker.apply import (
    DecideBatch,
    DecisionFailed,
    Refusal,
    apply_batch,
    apply_isolating,
    backoff_s,
    decide_checked,
    is_transient,
)
from worker.decision import (
    Account,
    Bet,
    BetKey,
    CancelKey,
    Decision,
    LedgerSnapshot,
    StoredOutcome,
    decide_batch,
)
from worker.records import Undecodable, decode_record
from worker.settings import WorkerSettings
from worker.status import (
    DB_COMMAND_TIMEOUT_S,
    DB_CONNECT_TIMEOUT_S,
    KAFKA_TIMEOUT_S,
    Bounds,
    bounded,
    log_bounds,
    standalone_consumer,
    topic_partitions,
)

log = structlog.get_logger("worker.replay")

POLL_TIMEOUT_MS = 200
Record: TypeAlias = ConsumerRecord[bytes, bytes]


class Progress(Protocol):
    """Where a long read reports how far it got (a progress bar, or nothing)."""

    def start(self, total: int) -> None: ...

    def advance(self, count: int) -> None: ...


class _NoProgress:
    def start(self, total: int) -> None:
        pass

    def advance(self, count: int) -> None:
        pass


@dataclass(frozen=True)
class Window:
    """Which records of each partition: stamped in [since_ms, until_ms) as above."""

    since_ms: int | None = None  # None: from the beginning of the log
    until_ms: int | None = None  # None: up to the end offsets taken at start

    def __post_init__(self) -> None:
        if self.since_ms is not None and self.until_ms is not None:
            assert self.since_ms < self.until_ms, "since before until"


@dataclass
class ReplayCounts:
    events: int = 0  # records in the range
    applied: int = 0  # a new outcome stored now (in a dry run: would be)
    already_applied: int = 0  # the stored outcome was replayed: nothing moved
    failed: int = 0  # undecodable, or a cancel id reused for other content

    def as_json(self) -> dict[str, int]:
        return {
            "events": self.events,
            "applied": self.applied,
            "already_applied": self.already_applied,
            "failed": self.failed,
        }


@dataclass(frozen=True)
class ReplayReport:
    counts: ReplayCounts
    topic: str
    partitions: int
    start: str  # "beginning", "time index" (broker lookup) or "scan" (by timestamps)
    dry_run: bool

    def summary(self) -> str:
        c = self.counts
        verb = "would apply" if self.dry_run else "applied"
        mode = "replay --dry-run (rolled back, nothing written)" if self.dry_run else "replay"
        return (
            f"{mode}: {c.events} events, {c.applied} {verb}, {c.already_applied} already"
            f" applied, {c.failed} failed ({self.topic}, {self.partitions} partitions,"
            f" start by {self.start}; replies not published)"
        )


# --- reading a bounded range ------------------------------------------------------------


async def read_range(
    consumer: AIOKafkaConsumer,
    ranges: dict[TopicPartition, tuple[int, int]],
    *,
    window: Window = Window(),
    max_records: int = 500,
    progress: Progress | None = None,
    idle_timeout_s: float = KAFKA_TIMEOUT_S,
) -> AsyncIterator[list[Record]]:
    """Yield the records of each partition's [start, stop) offsets that fall in `window`,
    in chunks of at most `max_records`, each partition in order. The partitions must be
    assigned. Fails if no partition moves on for `idle_timeout_s`."""
    progress = progress or _NoProgress()
    active = {tp: span for tp, span in ranges.items() if span[0] < span[1]}
    progress.start(sum(stop - start for start, stop in active.values()))
    position: dict[TopicPartition, int] = {}
    started = {tp: window.since_ms is None for tp in active}
    for tp, (start, _) in active.items():
        consumer.resume(tp)  # an earlier read paused what it finished
        consumer.seek(tp, start)
        position[tp] = start
    idle_since = time.monotonic()
    while active:
        fetched = await bounded(
            consumer.getmany(*active, timeout_ms=POLL_TIMEOUT_MS, max_records=max_records),
            "reading records",
        )
        chunk: list[Record] = []
        moved = False
        for tp in list(active):
            stop = active[tp][1]
            done = False
            for record in fetched.get(tp, []):
                if record.offset >= stop:
                    done = True
                    break
                if not started[tp]:
                    assert window.since_ms is not None
                    if record.timestamp < window.since_ms:
                        continue
                    started[tp] = True
                if window.until_ms is not None and record.timestamp >= window.until_ms:
                    done = True
                    break
                chunk.append(record)
            now_at = stop if done else min(stop, await consumer.position(tp))
            if now_at > position[tp]:
                progress.advance(now_at - position[tp])
                position[tp] = now_at
                moved = True
            if now_at >= stop:
                del active[tp]
                consumer.pause(tp)
        if moved:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > idle_timeout_s:
            stuck = {tp.partition: position[tp] for tp in active}
            ends = {tp.partition: stop for tp, (_, stop) in active.items()}
            raise Unavailable(
                KAFKA,
                f"reading {next(iter(active)).topic}: no records for {idle_timeout_s:g} s"
                f" at offsets {stuck} (end offsets {ends})",
            )
        if chunk:
            yield chunk
            idle_since = time.monotonic()  # the consumer of the chunks took its time


async def _probe(
    consumer: AIOKafkaConsumer, spans: dict[TopicPartition, tuple[int, int]]
) -> dict[TopicPartition, dict[int, Record]]:
    """The records at offsets [first, last] of each partition (fewer where there are
    gaps), read with the partitions' positions moved."""
    found: dict[TopicPartition, dict[int, Record]] = {tp: {} for tp in spans}
    async for records in read_range(
        consumer, {tp: (first, last + 1) for tp, (first, last) in spans.items()}
    ):
        for record in records:
            found[TopicPartition(record.topic, record.partition)][record.offset] = record
    return found


async def start_offsets(
    consumer: AIOKafkaConsumer, bounds: Bounds, since_ms: int
) -> tuple[dict[TopicPartition, int], str]:
    """Where to start reading each partition for the records stamped at or after
    `since_ms`; and how it was found: "time index", or "scan" (from the beginning) when
    the broker's `offsets_for_times` answer does not hold up."""
    beginnings = {tp: beginning for tp, (beginning, _) in bounds.items()}
    nonempty = [tp for tp, (beginning, end) in bounds.items() if beginning < end]
    if not nonempty:
        return beginnings, "time index"
    try:
        answers = await bounded(
            consumer.offsets_for_times({tp: since_ms for tp in nonempty}), "looking up offsets"
        )
    except UnsupportedVersionError:
        return beginnings, "scan"
    # Check each answer against the records around it: the record at the answered offset
    # carries the answered timestamp (>= since), the one before it is older than since;
    # no answer means the last record is older than since.
    spans: dict[TopicPartition, tuple[int, int]] = {}
    for tp in nonempty:
        beginning, end = bounds[tp]
        answer = answers.get(tp)
        if answer is None:
            spans[tp] = (end - 1, end - 1)
            continue
        if not beginning <= answer.offset < end or answer.timestamp < since_ms:
            return beginnings, "scan"
        spans[tp] = (max(beginning, answer.offset - 1), answer.offset)
    records = await _probe(consumer, spans)
    starts = dict(beginnings)
    for tp in nonempty:
        beginning, end = bounds[tp]
        answer = answers.get(tp)
        at = records[tp]
        if answer is None:
            last = at.get(end - 1)
            if last is None or last.timestamp >= since_ms:
                return beginnings, "scan"
            starts[tp] = end
            continue
        record = at.get(answer.offset)
        if record is None or record.timestamp != answer.timestamp:
            return beginnings, "scan"
        if answer.offset > beginning:
            before = at.get(answer.offset - 1)
            if before is None or before.timestamp >= since_ms:
                return beginnings, "scan"
        starts[tp] = answer.offset
    return starts, "time index"


# --- applying ---------------------------------------------------------------------------


@dataclass
class _DryRunCarry:
    """What earlier batches of a dry run decided (and rolled back), for later batches:
    only new decisions' effects, so it grows with what would be applied, not the range."""

    outcomes: dict[CancelKey, StoredOutcome] = field(default_factory=dict)
    bets: dict[BetKey, Bet] = field(default_factory=dict)
    tombstones: set[BetKey] = field(default_factory=set)
    accounts: dict[int, Account] = field(default_factory=dict)

    def overlay(self, snapshot: LedgerSnapshot, events: Sequence[CancelRequested]) -> None:
        for event in events:
            provider = event.provider.value
            key = (provider, event.cancel_id)
            if key in self.outcomes:
                snapshot.outcomes[key] = self.outcomes[key]
            for item in event.items:
                bet_key = (provider, item.bet_tx)
                if bet_key in self.bets:
                    snapshot.bets[bet_key] = self.bets[bet_key]
                if bet_key in self.tombstones:
                    snapshot.tombstones.add(bet_key)
        for account_id in list(snapshot.accounts):
            if account_id in self.accounts:
                snapshot.add_account(self.accounts[account_id])

    def remember(
        self, decided: Sequence[tuple[CancelRequested, Decision]], snapshot: LedgerSnapshot
    ) -> None:
        for event, decision in decided:
            if not decision.store:
                continue
            key = (event.provider.value, event.cancel_id)
            self.outcomes[key] = snapshot.outcomes[key]
            self.tombstones.update(decision.tombstones)
            for refund in decision.refunds:
                bet_key = (refund.provider, refund.bet_tx)
                self.bets[bet_key] = snapshot.bets[bet_key]
                self.accounts[refund.account_id] = snapshot.accounts[refund.account_id]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Applier:
    def __init__(
        self, pool: asyncpg.Pool, settings: WorkerSettings, dry_run: bool, decide: DecideBatch
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._dry_run = dry_run
        self._decide = decide
        self._carry = _DryRunCarry()

    async def apply(
        self, entries: Sequence[tuple[Record, CancelRequested]], counts: ReplayCounts
    ) -> None:
        """Apply (or, in a dry run, try and roll back) `entries` as the worker does: a
        failure that will not pass is isolated by splitting (`apply_isolating`), the
        event it stands on counts as failed, and the others are applied."""

        async def attempt(
            lo: int, hi: int, refused: Mapping[int, Refusal]
        ) -> Sequence[CancelOutcome]:
            events = [event for i, (_, event) in enumerate(entries[lo:hi], lo) if i not in refused]
            if self._dry_run:
                return [decision.outcome for _, decision in await self._rolled_back(events)]
            return await apply_batch(
                self._pool,
                events,
                group=self._settings.kafka.consumer_group,
                advances=[],  # the worker's stored offsets stay as they are
                now_ms=_now_ms(),
                attempts_max=self._settings.apply_attempts_max,
                backoff_ms_max=self._settings.apply_backoff_ms_max,
                decide=self._decide,
            )

        isolation = await apply_isolating([True] * len(entries), attempt)
        if isolation.stopped is not None:
            raise isolation.stopped
        for i, refusal in sorted(isolation.refused.items()):
            record = entries[i][0]
            log.warning(
                "replay_event_failed",
                source=f"{record.topic}:{record.partition}:{record.offset}",
                cause=refusal.cause.value,
                reason=refusal.reason,
            )
        counts.failed += len(isolation.refused)
        for outcome in isolation.outcomes.values():
            if outcome.replayed:
                counts.already_applied += 1
            elif outcome.outcome is Outcome.INVALID:  # only a reused cancel id is invalid
                counts.failed += 1
            else:
                counts.applied += 1

    async def _rolled_back(
        self, events: Sequence[CancelRequested]
    ) -> list[tuple[CancelRequested, Decision]]:
        """apply_batch's lock, load, decide and write, in a transaction that is rolled
        back (the writes too, so that what the database would refuse fails here too)."""
        attempts_max = self._settings.apply_attempts_max
        for attempt in range(attempts_max):
            try:
                async with self._pool.acquire() as conn:
                    transaction = conn.transaction()
                    await transaction.start()
                    try:
                        snapshot = await ledger.load_snapshot(conn, events)
                        self._carry.overlay(snapshot, events)
                        decided = decide_checked(self._decide, events, snapshot, _now_ms())
                        await ledger.write_decisions(conn, decided)
                    finally:
                        await transaction.rollback()
                self._carry.remember(decided, snapshot)
                return decided
            except DecisionFailed:
                raise
            except Exception as exc:
                if not is_transient(exc) or attempt + 1 == attempts_max:
                    raise
                await asyncio.sleep(backoff_s(attempt, self._settings.apply_backoff_ms_max))
        raise AssertionError("unreachable: the loop returns or raises")


async def replay(
    settings: WorkerSettings,
    window: Window,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    decide: DecideBatch = decide_batch,
) -> ReplayReport:
    """Replay the request topic's records in `window` (see the module docstring).
    `decide` is the worker's decision (a test may pass one that raises)."""
    kafka = settings.kafka
    topic = kafka.topics.requests
    partitions = (await topic_partitions(kafka, [topic]))[topic]
    tps = [TopicPartition(topic, p) for p in partitions]
    batch_max = settings.batch_records_max
    pool = await asyncpg.create_pool(
        **(settings.database.pool_options("refundctl-replay") | {"max_size": 1}),
        timeout=DB_CONNECT_TIMEOUT_S,
        command_timeout=max(settings.db_command_timeout_s, DB_COMMAND_TIMEOUT_S),
    )
    assert pool is not None
    counts = ReplayCounts()
    try:
        async with standalone_consumer(kafka, "refundctl-replay", batch_max) as consumer:
            consumer.assign(tps)
            bounds = await log_bounds(consumer, tps)
            if window.since_ms is None:
                starts, how = {tp: bounds[tp][0] for tp in tps}, "beginning"
            else:
                starts, how = await start_offsets(consumer, bounds, window.since_ms)
            applier = _Applier(pool, settings, dry_run, decide)
            pending: list[tuple[Record, CancelRequested]] = []
            async for records in read_range(
                consumer,
                {tp: (starts[tp], bounds[tp][1]) for tp in tps},
                window=window,
                max_records=batch_max,
                progress=progress,
            ):
                counts.events += len(records)
                for record in records:
                    decoded = decode_record(record, kafka.topics.replies)
                    if isinstance(decoded, Undecodable):
                        counts.failed += 1  # the worker dead-lettered it
                    else:
                        pending.append((record, decoded))
                while len(pending) >= batch_max:
                    await applier.apply(pending[:batch_max], counts)
                    del pending[:batch_max]
            if pending:
                await applier.apply(pending, counts)
    finally:
        await pool.close()
    return ReplayReport(counts, topic, len(tps), how, dry_run)
