"""`refundctl status`, and the standalone Kafka access the operations commands share.

Operations commands (`replay`, `dlq`, `status`) read topics with their own consumer:
no group id, partitions assigned by hand, nothing committed. They never join the
worker's consumer group, so they never trigger a rebalance of the workers and never
move the workers' offsets. Every Kafka and database call is bounded in time.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas.database import DatabaseSettings
from schemas.failures import KAFKA, Refused, Unavailable
from schemas.transport import KafkaSettings
from worker import ledger

KAFKA_TIMEOUT_S = 15.0  # one Kafka call (connect, metadata, offsets, a publish)
DB_CONNECT_TIMEOUT_S = 10.0
DB_COMMAND_TIMEOUT_S = 30.0

T = TypeVar("T")

# A partition's log: (first offset still stored, next offset to be written).
Bounds = dict[TopicPartition, tuple[int, int]]


class OperationError(Refused):
    """An operations command cannot do its work (a topic missing, a record that does
    not come); `str()` is the one-line reason (exit 1). A broker that does not answer
    is `schemas.failures.Unavailable` (exit 3)."""


async def bounded(awaitable: Awaitable[T], what: str, timeout_s: float = KAFKA_TIMEOUT_S) -> T:
    """`awaitable` (a Kafka call), or Unavailable naming `what` after `timeout_s`."""
    try:
        return await asyncio.wait_for(awaitable, timeout_s)
    except TimeoutError as exc:
        raise Unavailable(KAFKA, f"{what}: no answer within {timeout_s:g} s") from exc


async def connect_db(
    database: DatabaseSettings, application_name: str = "refundctl"
) -> asyncpg.Connection:
    return await asyncpg.connect(
        **database.connect_options(application_name),
        timeout=DB_CONNECT_TIMEOUT_S,
        command_timeout=DB_COMMAND_TIMEOUT_S,
    )


async def topic_partitions(kafka: KafkaSettings, topics: Sequence[str]) -> dict[str, list[int]]:
    """The partitions of each topic; OperationError when a topic does not exist."""
    admin = AIOKafkaAdminClient(
        **kafka.admin_options(), request_timeout_ms=int(KAFKA_TIMEOUT_S * 1000)
    )
    try:
        await bounded(admin.start(), f"connecting to Kafka at {kafka.bootstrap_servers}")
        # Listing first: describing a missing topic may auto-create it on some brokers.
        existing = set(await bounded(admin.list_topics(), "listing topics"))
        missing = [topic for topic in topics if topic not in existing]
        if missing:
            raise OperationError(
                f"topic {missing[0]} does not exist (run `refundctl topics create`)"
            )
        described = await bounded(admin.describe_topics(list(topics)), "describing topics")
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(admin.close(), KAFKA_TIMEOUT_S)
    partitions: dict[str, list[int]] = {}
    for topic in described:
        if topic["error_code"] != 0:
            raise OperationError(f"topic {topic['topic']}: broker error {topic['error_code']}")
        partitions[topic["topic"]] = sorted(p["partition"] for p in topic["partitions"])
    return partitions


@contextlib.asynccontextmanager
async def standalone_consumer(
    kafka: KafkaSettings, client_id: str, max_records: int = 500
) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer outside any group (assign partitions by hand); stopped on exit.
    `client_id` names the command in our logs; the broker knows the process by the
    settings' client id (its quotas and ACLs are the role's)."""
    del client_id
    consumer = AIOKafkaConsumer(
        **kafka.consumer_options(),
        group_id=None,
        auto_offset_reset="earliest",  # retention removed a record under us: go on
        max_poll_records=max_records,
        request_timeout_ms=int(KAFKA_TIMEOUT_S * 1000),
    )
    try:
        await bounded(consumer.start(), f"connecting to Kafka at {kafka.bootstrap_servers}")
        yield consumer
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), KAFKA_TIMEOUT_S)


async def log_bounds(consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition]) -> Bounds:
    """(beginning, end) offsets of each partition, taken now."""
    if not tps:
        return {}
    beginnings = await bounded(consumer.beginning_offsets(list(tps)), "reading log starts")
    ends = await bounded(consumer.end_offsets(list(tps)), "reading end offsets")
    return {tp: (beginnings[tp], ends[tp]) for tp in tps}


# --- `refundctl status` ---------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def partition_lag(beginning: int, end: int, stored: int | None) -> int:
    """Events the worker group still has to apply in one partition.

    The worker resumes from its stored offset, or from the log's beginning where none is
    stored or the stored one lies outside the log (retention, a recreated topic)."""
    resume = stored if stored is not None and beginning <= stored <= end else beginning
    return end - resume


async def status(kafka: KafkaSettings, database: DatabaseSettings) -> dict[str, Any]:
    """The operator's view: lag per request partition, tombstones, last applied event,
    dead letters. JSON-ready."""
    requests, dead_letters = kafka.topics.requests, kafka.topics.dead_letters
    partitions = await topic_partitions(kafka, [requests, dead_letters])
    request_tps = [TopicPartition(requests, p) for p in partitions[requests]]
    dlq_tps = [TopicPartition(dead_letters, p) for p in partitions[dead_letters]]
    async with standalone_consumer(kafka, "refundctl-status") as consumer:
        bounds = await log_bounds(consumer, [*request_tps, *dlq_tps])
    conn = await connect_db(database)
    try:
        stored = await ledger.read_stored_offsets(conn, kafka.consumer_group, requests)
        activity = await ledger.ledger_activity(conn)
    finally:
        await conn.close()
    rows = []
    for tp in request_tps:
        beginning, end = bounds[tp]
        rows.append(
            {
                "partition": tp.partition,
                "end_offset": end,
                "stored_offset": stored.get(tp.partition),
                "lag": partition_lag(beginning, end, stored.get(tp.partition)),
            }
        )
    return {
        "topic": requests,
        "consumer_group": kafka.consumer_group,
        "partitions": rows,
        "lag": sum(row["lag"] for row in rows),
        "tombstones": {
            "count": activity.tombstones,
            "oldest_at": _iso(activity.oldest_tombstone_at),
        },
        "last_applied_at": _iso(activity.last_applied_at),
        "dead_letters": {
            "topic": dead_letters,
            "count": sum(end - beginning for beginning, end in (bounds[tp] for tp in dlq_tps)),
        },
    }


def render_status(report: Mapping[str, Any]) -> str:
    """The human table of `refundctl status`."""
    lines = [
        f"topic {report['topic']}, worker group {report['consumer_group']}",
        f"{'partition':>9}  {'end offset':>12}  {'stored offset':>13}  {'lag':>10}",
    ]
    for row in report["partitions"]:
        stored = "-" if row["stored_offset"] is None else str(row["stored_offset"])
        lines.append(
            f"{row['partition']:>9}  {row['end_offset']:>12}  {stored:>13}  {row['lag']:>10}"
        )
    tombstones = report["tombstones"]
    oldest = f" (oldest {tombstones['oldest_at']})" if tombstones["oldest_at"] else ""
    lines += [
        f"{'total':>9}  {'':>12}  {'':>13}  {report['lag']:>10}",
        f"tombstones: {tombstones['count']}{oldest}",
        f"last applied: {report['last_applied_at'] or 'never'}",
        f"dead letters: {report['dead_letters']['count']} in {report['dead_letters']['topic']}",
    ]
    return "\n".join(lines)
