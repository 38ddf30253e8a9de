"""Apply a batch of events to the ledger in one transaction, retrying transient faults;
and split a batch that fails for a reason that will not pass until the failing events
stand alone (`apply_isolating`), so that no event can stop a partition.

The transaction: compare-and-set the stored offsets (fencing), lock and load the rows,
decide (pure), write the effects. Either all of it commits or none of it does.
"""

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Generic, Required, TypedDict, TypeVar, Unpack

import asyncpg
import pydantic
import structlog
from aiokafka.errors import KafkaError, KafkaTimeoutError
from asyncpg.exceptions._base import DataError as ClientDataError  # not exported publicly
from asyncpg.transaction import Transaction

from schemas import CancelOutcome, CancelRequested
from schemas.failures import POSTGRESQL, Refused, Unavailable
from worker import ledger
from worker.decision import Decision, LedgerSnapshot, decide_batch
from worker.ledger import EventSource, Fenced, OffsetAdvance
from worker.records import REASON_CHARS_MAX
from worker.records import Cause as Cause  # a refusal's cause is a dead letter's

log = structlog.get_logger("worker.apply")

T = TypeVar("T")
R = TypeVar("R")  # what applying one event gives: its outcome, or its decision

# The decision of a batch, `worker.decision.decide_batch` in production; a parameter so
# that a test can make it raise through the front door.
DecideBatch = Callable[
    [list[CancelRequested], LedgerSnapshot, int], list[tuple[CancelRequested, Decision]]
]


_TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "23505",  # unique_violation: a race we lost; the retry reads the winner's row
        "55P03",  # lock_not_available
        "57014",  # query_canceled: our statement_timeout; the retry may find it quicker
        "25P03",  # idle_in_transaction_session_timeout ended the session mid-batch
        "57P01",  # admin_shutdown (pg_terminate_backend)
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now
        "53300",  # too_many_connections
    }
)

# SQLSTATE classes of a refusal caused by the data an event carries: 22 data exception
# (a NUL or an unencodable character in a text, a number out of range), 23 integrity
# constraint violation (23505 excepted: transient, above), 54 program limit exceeded (an
# index row too large). Any other permanent failure (a missing table, a read-only or
# full database, a privilege) is the environment's: the batch fails as a whole and the
# process exits, for its supervisor to restart it once the environment is repaired.
_EVENT_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the whole transaction may succeed (bounded by the attempts)."""
    if isinstance(exc, ClientDataError):  # an argument the driver cannot encode: the data's
        return False
    if isinstance(exc, asyncpg.PostgresError):
        return exc.sqlstate in _TRANSIENT_SQLSTATES or exc.sqlstate.startswith("08")
    if isinstance(exc, KafkaError):  # a dead letter's publish during a leader election, say
        return bool(exc.retriable) or isinstance(exc, KafkaTimeoutError)
    return isinstance(
        exc, asyncpg.InterfaceError | ConnectionError | OSError | asyncio.TimeoutError
    )


def backoff_s(attempt: int, cap_ms: int) -> float:
    """Full-jitter exponential backoff."""
    return random.uniform(0, min(cap_ms, 20 * 2**attempt)) / 1000


class DecisionFailed(Exception):
    """Deciding the batch raised: a bug, deterministic for the same events and rows."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


@dataclass(frozen=True)
class Refusal:
    """An event that cannot be applied, for a reason that will not pass."""

    cause: Cause
    reason: str


def _one_line(text: str) -> str:
    return " ".join(text.split())[:REASON_CHARS_MAX]


def refusal_of(exc: BaseException) -> Refusal | None:
    """The refusal `exc` stands for when it can be the events' fault (the decision
    raised, the database refused their data, or a stored outcome of theirs no longer
    reads); None when it is transient or the environment's (the caller stops instead of
    blaming an event)."""
    if isinstance(exc, DecisionFailed):
        return Refusal(Cause.DECISION, _one_line(f"raised {exc}"))
    if isinstance(exc, pydantic.ValidationError):  # a stored outcome the schema now refuses
        return Refusal(
            Cause.DATABASE, _one_line(f"a stored row it touches is unreadable: {exc.errors()[:1]}")
        )
    if (
        isinstance(exc, asyncpg.PostgresError)
        and not is_transient(exc)
        and exc.sqlstate[:2] in _EVENT_SQLSTATE_CLASSES
    ):
        return Refusal(Cause.DATABASE, _one_line(f"SQLSTATE {exc.sqlstate}: {exc}"))
    if isinstance(exc, ClientDataError):
        return Refusal(Cause.DATABASE, _one_line(f"the driver cannot send it: {exc}"))
    return None


def decide_checked(
    decide: DecideBatch,
    events: Sequence[CancelRequested],
    snapshot: LedgerSnapshot,
    now_ms: int,
) -> list[tuple[CancelRequested, Decision]]:
    """`decide` over `events`, checked: one decision per event, in order, each with the
    event's own outcome. Raises DecisionFailed when it raises or breaks that."""
    try:
        decided = decide(list(events), snapshot, now_ms)
        assert len(decided) == len(events), "one decision per event"
        assert all(
            event is mine and decision.outcome.correlation_id == mine.correlation_id
            for (event, decision), mine in zip(decided, events, strict=True)
        ), "each event's own decision, in order"
    except Exception as exc:
        raise DecisionFailed(exc) from exc
    return decided


async def retrying(
    operation: Callable[[], Awaitable[T]],
    *,
    attempts_max: int,
    backoff_ms_max: int,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """`operation`, run again after a transient failure (`is_transient`), at most
    `attempts_max` times in all, with full-jitter backoff. Fenced and DecisionFailed,
    the last failure and one that is not transient are raised. `on_retry` is called
    before each retry (the worker counts them)."""
    assert attempts_max >= 1
    for attempt in range(attempts_max):
        try:
            return await operation()
        except (Fenced, DecisionFailed):
            raise
        except Exception as exc:
            if not is_transient(exc) or attempt + 1 == attempts_max:
                raise
            log.warning("batch_retry", attempt=attempt + 1, error=type(exc).__name__)
            if on_retry is not None:
                on_retry()
            await asyncio.sleep(backoff_s(attempt, backoff_ms_max))
    raise AssertionError("unreachable: the loop returns or raises")


async def transact(
    conn: ledger.Connection,
    events: Sequence[CancelRequested],
    *,
    group: str,
    advances: Sequence[OffsetAdvance],
    now_ms: int,
    decide: DecideBatch = decide_batch,
    sources: Sequence[EventSource] | None = None,
    before_commit: Callable[[], Awaitable[None]] | None = None,
) -> list[tuple[CancelRequested, Decision]]:
    """The batch transaction, once: compare-and-set the offsets, lock and load, decide,
    write, `before_commit`, commit; the decisions in event order. Inside a transaction
    already open (a dry run's, see `rolled_back`) it is a savepoint of it, kept until
    that one is rolled back. Raises Fenced, DecisionFailed, and what the database
    raised (the transaction is then rolled back)."""
    async with conn.transaction():
        await ledger.advance_offsets(conn, group, advances)
        snapshot = await ledger.load_snapshot(conn, events)
        decided = decide_checked(decide, events, snapshot, now_ms)
        await ledger.write_decisions(conn, decided, sources)
        if before_commit is not None:
            await before_commit()
    return decided


# Where a batch's connection comes from: the pool's `acquire`, or a dry run's held
# connection (`rolled_back`).
Connect = Callable[[], AbstractAsyncContextManager[ledger.Connection]]


class ApplyOptions(TypedDict, total=False):
    """How `apply_decided` applies a batch (see there); the first five are required."""

    group: Required[str]
    advances: Required[Sequence[OffsetAdvance]]
    now_ms: Required[int]
    attempts_max: Required[int]
    backoff_ms_max: Required[int]
    before_commit: Callable[[], Awaitable[None]] | None
    decide: DecideBatch
    sources: Sequence[EventSource] | None
    on_retry: Callable[[], None] | None


async def apply_decided(
    connect: Connect, events: Sequence[CancelRequested], **options: Unpack[ApplyOptions]
) -> list[Decision]:
    """`transact` on a connection from `connect`, retried (`retrying`) up to
    `attempts_max` times; the decisions in event order (their outcomes, and whether each
    was stored). `sources`, one per event when given, are stored with the outcomes the
    events decide (`refundctl cancel show`). `before_commit` runs once the offsets are
    ours and the writes are done; it may run again on a retry."""

    async def once() -> list[Decision]:
        async with connect() as conn:
            decided = await transact(
                conn,
                events,
                group=options["group"],
                advances=options["advances"],
                now_ms=options["now_ms"],
                decide=options.get("decide", decide_batch),
                sources=options.get("sources"),
                before_commit=options.get("before_commit"),
            )
        return [decision for _, decision in decided]

    return await retrying(
        once,
        attempts_max=options["attempts_max"],
        backoff_ms_max=options["backoff_ms_max"],
        on_retry=options.get("on_retry"),
    )


async def apply_batch(
    pool: asyncpg.Pool, events: Sequence[CancelRequested], **options: Unpack[ApplyOptions]
) -> list[CancelOutcome]:
    """`apply_decided` on the pool's connections, committed; the outcomes in order."""
    return [decision.outcome for decision in await apply_decided(pool.acquire, events, **options)]


@contextlib.asynccontextmanager
async def rolled_back(pool: asyncpg.Pool, hold_ms_max: int) -> AsyncIterator[Connect]:
    """A dry run: one connection and one transaction around every batch applied through
    the `Connect` yielded, rolled back at the end, so each batch is the real
    transaction (a savepoint), later batches see earlier ones' decisions, and nothing
    is kept. Begun at the first batch (not while the range's start is sought); its
    locks are held until the end. A connection lost meanwhile took the earlier batches'
    decisions with it: Unavailable, not a retry that would count without them.
    The live worker waits on those locks: a batch begun later than `hold_ms_max` after
    the first is refused (Refused, exit 1), and everything is rolled back."""
    assert hold_ms_max > 0
    async with contextlib.AsyncExitStack() as stack:
        held: list[ledger.Connection] = []  # the connection, once begun
        begun = [0.0]  # monotonic seconds at the first batch

        async def _rollback(conn: ledger.Connection, transaction: Transaction) -> None:
            if not conn.is_closed():
                await transaction.rollback()

        @contextlib.asynccontextmanager
        async def connect() -> AsyncIterator[ledger.Connection]:
            if not held:
                conn = await stack.enter_async_context(pool.acquire())
                transaction = conn.transaction()
                await transaction.start()
                stack.push_async_callback(_rollback, conn, transaction)
                held.append(conn)
                begun[0] = time.monotonic()
            held_ms = (time.monotonic() - begun[0]) * 1000
            if held_ms > hold_ms_max:
                raise Refused(
                    f"replay --dry-run: stopped and rolled back after {held_ms:.0f} ms,"
                    f" over REPLAY_DRY_RUN_HOLD_MS_MAX={hold_ms_max} (the live worker waits"
                    " on the locks a dry run holds); narrow the range with --since/--until,"
                    " or run it against a copy of the database"
                )
            if held[0].is_closed():
                raise Unavailable(POSTGRESQL, "the dry run's database connection was lost")
            yield held[0]

        yield connect


# --- isolating the events a batch fails on -------------------------------------------

# Applies entries [lo, hi) of a batch in one transaction, leaving out (and, where the
# caller publishes dead letters, dead-lettering) the entries of `refused` in that range;
# returns what applying the others gave (their outcomes, or decisions), in order. Raises
# as `apply_batch` does.
Attempt = Callable[[int, int, Mapping[int, Refusal]], Awaitable[Sequence[R]]]


@dataclass(frozen=True)
class Isolation(Generic[R]):
    """What `apply_isolating` did: entries [0, settled) are committed, the others not.

    `outcomes` and `refused` hold the committed entries' results and refusals by entry
    index. `stopped` is the failure that ended it early (Fenced, or one that is not the
    events' fault), for the caller to handle; None when every entry is settled."""

    outcomes: dict[int, R]
    refused: dict[int, Refusal]
    settled: int
    attempts: int
    stopped: BaseException | None


async def apply_isolating(blamable: Sequence[bool], attempt: Attempt[R]) -> Isolation[R]:
    """Apply entries [0, len(blamable)) in as few transactions as the failures allow.

    First all of them in one transaction. A range whose transaction fails for a reason
    an event can be blamed for (`refusal_of`) is split in two halves with as many live
    events each (`blamable`: the entry carries an event to apply; the others are dead
    letters already, or nothing), applied left then right, so the committed ranges stay
    a prefix and each one's offsets compare-and-set starts where the last one ended. A
    range with one live event that fails refuses that event and is applied again
    without it. Anything else stops it: the committed prefix is reported, with why.

    Bounded by the batch size: with k live events, at most 2k - 1 ranges are tried (a
    binary tree with at most k leaves) and k of them again without their event; so at
    most 3k + 1 transactions (the 1: a batch without live events)."""
    live_total = sum(blamable)
    attempts_max = 3 * live_total + 1
    outcomes: dict[int, R] = {}
    refused: dict[int, Refusal] = {}
    pending = [(0, len(blamable))]  # a stack: the next range to apply is on top
    attempts = 0
    while pending:
        lo, hi = pending.pop()
        attempts += 1
        assert attempts <= attempts_max, "the bisection is bounded by the batch size"
        live = [i for i in range(lo, hi) if blamable[i] and i not in refused]
        try:
            applied = await attempt(lo, hi, {i: refused[i] for i in range(lo, hi) if i in refused})
        except Exception as exc:
            refusal = None if isinstance(exc, Fenced) else refusal_of(exc)
            if refusal is None or not live:  # not the events' fault, or nobody's to blame
                return Isolation(outcomes, _below(refused, lo), lo, attempts, exc)
            if len(live) == 1:
                refused[live[0]] = refusal
                log.warning("event_isolated", entry=live[0], cause=refusal.cause.value)
                pending.append((lo, hi))
            else:
                middle = live[len(live) // 2]  # both halves keep at least one live event
                pending += [(middle, hi), (lo, middle)]
            continue
        assert len(applied) == len(live), "one outcome per live event"
        outcomes.update(zip(live, applied, strict=True))
        assert not pending or pending[-1][0] == hi, "ranges are applied in order"
    return Isolation(outcomes, refused, len(blamable), attempts, None)


def _below(refused: dict[int, Refusal], settled: int) -> dict[int, Refusal]:
    """The refusals committed: those of entries before `settled`."""
    return {i: refusal for i, refusal in refused.items() if i < settled}
