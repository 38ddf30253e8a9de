"""The worker's transaction alone: `apply_batch` against a fresh embedded PostgreSQL,
no Kafka, with PostgreSQL's default plan caching (as the worker runs) and with
`plan_cache_mode=force_custom_plan` side by side, each on a fresh database. Prints,
per batch size, the median and last-tenth milliseconds per batch and the refunds/s.

    python -m tests.bench.apply_sql [--sizes 5,500] [--events 20000]

`apply_events` is the same transaction called in-process by the benchmark's worker part
(`worker_vs_sql`): given events, a batch size and a number of lanes, it applies them on
a database the caller prepared, each lane one connection with its own partition's
offsets, events spread over the lanes by the key the ingress publishes with (so, as
with Kafka's partitions, one player's events stay in one lane).
"""

import argparse
import asyncio
import statistics
import tempfile
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from adapters.bus import event_key
from refundctl import devstack
from schemas import CancelRequested, ReplyTo
from tests.bench import workload
from worker import ledger
from worker.apply import apply_batch
from worker.ledger import OffsetAdvance
from worker.migrate import migrate

GROUP = "bench-apply"
TOPIC = "bench-requests"
PLAYERS = 1_000


async def measure(url: str, mode: str, sizes: list[int], events_per_size: int) -> None:
    total = events_per_size * len(sizes)
    known = {"s": total}
    conn = await asyncpg.connect(url)
    try:
        database = f"apply_{mode}"
        await conn.execute(f"CREATE DATABASE {database}")
    finally:
        await conn.close()
    conn = await asyncpg.connect(url, database=database)
    try:
        await migrate(conn)
        for statement in workload.seed_sql(known, PLAYERS):
            await conn.execute(statement)
        await ledger.stored_offsets(conn, GROUP, TOPIC, [0])
    finally:
        await conn.close()
    settings = {"plan_cache_mode": mode}
    pool = await asyncpg.create_pool(
        url, database=database, min_size=1, max_size=1, server_settings=settings
    )
    assert pool is not None
    reply_to = ReplyTo(topic="bench-replies", partition=0)
    now_ms = int(time.time() * 1000)
    offset, n = 0, 0
    try:
        for size in sizes:
            durations_ms: list[float] = []
            refunded = 0
            for _ in range(events_per_size // size):
                events = [
                    workload.event_for(("s", 0, n + i), PLAYERS, reply_to, now_ms)
                    for i in range(size)
                ]
                n += size
                advance = OffsetAdvance(TOPIC, 0, offset, offset + size)
                offset += size
                started = time.perf_counter()
                outcomes = await apply_batch(
                    pool,
                    events,
                    group=GROUP,
                    advances=[advance],
                    now_ms=now_ms,
                    attempts_max=1,
                    backoff_ms_max=0,
                )
                durations_ms.append((time.perf_counter() - started) * 1000)
                refunded += sum(o.outcome.moves_money for o in outcomes)
            assert refunded == len(durations_ms) * size, "every seeded bet is refunded"
            seconds = sum(durations_ms) / 1000
            last_tenth = durations_ms[-max(1, len(durations_ms) // 10) :]
            print(
                f"apply: plans={mode} batch={size} batches={len(durations_ms)}"
                f" p50_ms={statistics.median(durations_ms):.2f}"
                f" last_tenth_p50_ms={statistics.median(last_tenth):.2f}"
                f" refunds_per_s={refunded / seconds:.0f}",
                flush=True,
            )
    finally:
        await pool.close()


async def apply_events(
    url: str,
    events: Sequence[CancelRequested],
    batch: int,
    lanes: int,
    now_ms: int,
    group: str = GROUP,
    topic: str = TOPIC,
) -> dict[str, float]:
    """Apply `events` in batches of `batch` with `apply_batch` over `lanes` concurrent
    connections (PostgreSQL's default plan caching, as the worker runs); returns the
    events, batches, wall seconds, events/s and the median milliseconds per batch."""
    assert 1 <= batch <= 10_000
    assert 1 <= lanes <= 64
    by_lane: list[list[CancelRequested]] = [[] for _ in range(lanes)]
    for event in events:
        by_lane[zlib.crc32(event_key(event)) % lanes].append(event)
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await ledger.stored_offsets(conn, group, topic, list(range(lanes)))
    finally:
        await conn.close()
    pools = [await asyncpg.create_pool(url, min_size=1, max_size=1) for _ in range(lanes)]
    durations_ms: list[float] = []

    async def lane(partition: int) -> None:
        pool, mine = pools[partition], by_lane[partition]
        assert pool is not None
        for offset in range(0, len(mine), batch):
            chunk = mine[offset : offset + batch]
            advance = OffsetAdvance(topic, partition, offset, offset + len(chunk))
            started = time.perf_counter()
            await apply_batch(
                pool,
                chunk,
                group=group,
                advances=[advance],
                now_ms=now_ms,
                attempts_max=8,
                backoff_ms_max=2_000,
            )
            durations_ms.append((time.perf_counter() - started) * 1000)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(lane(i) for i in range(lanes)))
        seconds = max(1e-9, time.perf_counter() - started)
    finally:
        for pool in pools:
            assert pool is not None
            await pool.close()
    return {
        "events": len(events),
        "batches": len(durations_ms),
        "seconds": seconds,
        "events_per_s": len(events) / seconds,
        "batch_p50_ms": statistics.median(durations_ms) if durations_ms else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5,500", help="batch sizes, comma-separated")
    parser.add_argument("--events", type=int, default=20_000, help="events per batch size")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    assert all(1 <= s <= 10_000 for s in sizes)
    assert 1 <= args.events <= 1_000_000
    with (
        tempfile.TemporaryDirectory(prefix="refund-apply-") as work,
        devstack.postgres(Path(work) / "pg") as url,
    ):
        for mode in ("auto", "force_custom_plan"):
            asyncio.run(measure(url, mode, sizes, args.events))


if __name__ == "__main__":
    main()
