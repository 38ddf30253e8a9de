"""The worker's transaction alone: `apply_batch` against a fresh embedded PostgreSQL,
no Kafka, with PostgreSQL's default plan caching (as the worker runs) and with
`plan_cache_mode=force_custom_plan` side by side, each on a fresh database. Prints,
per batch size, the median and last-tenth milliseconds per batch and the refunds/s.

    python -m tests.bench.apply_sql [--sizes 5,500] [--events 20000]
"""

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg

from refundctl import devstack
from schemas import ReplyTo
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
