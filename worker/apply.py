"""Apply a batch of events to the ledger in one transaction, retrying transient faults.

The transaction: compare-and-set the stored offsets (fencing), lock and load the rows,
decide (pure), write the effects. Either all of it commits or none of it does.
"""

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import structlog

from schemas import CancelOutcome, CancelRequested
from worker import ledger
from worker.decision import decide_batch
from worker.ledger import Fenced, OffsetAdvance

log = structlog.get_logger("worker.apply")

_TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "23505",  # unique_violation: a race we lost; the retry reads the winner's row
        "55P03",  # lock_not_available
        "57P01",  # admin_shutdown (pg_terminate_backend)
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now
        "53300",  # too_many_connections
    }
)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the whole transaction may succeed."""
    if isinstance(exc, asyncpg.PostgresError):
        return exc.sqlstate in _TRANSIENT_SQLSTATES or exc.sqlstate.startswith("08")
    return isinstance(
        exc, asyncpg.InterfaceError | ConnectionError | OSError | asyncio.TimeoutError
    )


def backoff_s(attempt: int, cap_ms: int) -> float:
    """Full-jitter exponential backoff."""
    return random.uniform(0, min(cap_ms, 20 * 2**attempt)) / 1000


async def apply_batch(
    pool: asyncpg.Pool,
    events: Sequence[CancelRequested],
    *,
    group: str,
    advances: Sequence[OffsetAdvance],
    now_ms: int,
    attempts_max: int,
    backoff_ms_max: int,
    before_commit: Callable[[], Awaitable[None]] | None = None,
) -> list[CancelOutcome]:
    """Decide and write `events`; returns their outcomes in order. Raises Fenced.

    `before_commit` runs inside the transaction once the offsets are ours (the
    compare-and-set passed) and the writes are done; it may run again on a retry."""
    for attempt in range(attempts_max):
        try:
            async with pool.acquire() as conn, conn.transaction():
                await ledger.advance_offsets(conn, group, advances)
                snapshot = await ledger.load_snapshot(conn, events)
                decided = decide_batch(list(events), snapshot, now_ms)
                await ledger.write_decisions(conn, decided)
                if before_commit is not None:
                    await before_commit()
            return [decision.outcome for _, decision in decided]
        except Fenced:
            raise
        except Exception as exc:
            if not is_transient(exc) or attempt + 1 == attempts_max:
                raise
            log.warning("batch_retry", attempt=attempt + 1, error=type(exc).__name__)
            await asyncio.sleep(backoff_s(attempt, backoff_ms_max))
    raise AssertionError("unreachable: the loop returns or raises")
