"""The standalone Kafka and database access the operations commands share.

Operations commands (`replay`, `dlq`, `status`, `cancel show`) read topics with their
own consumer: no group id, partitions assigned by hand, nothing committed. They never
join the worker's consumer group, so they never trigger a rebalance of the workers and
never move the workers' offsets. Every Kafka and database call is bounded in time.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from schemas.database import DatabaseSettings
from schemas.failures import KAFKA, Refused, Unavailable
from schemas.transport import KafkaSettings

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
        with contextlib.suppress(KafkaError, OSError, TimeoutError):
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
        with contextlib.suppress(KafkaError, OSError, TimeoutError):
            await asyncio.wait_for(consumer.stop(), KAFKA_TIMEOUT_S)


async def log_bounds(consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition]) -> Bounds:
    """(beginning, end) offsets of each partition, taken now."""
    if not tps:
        return {}
    beginnings = await bounded(consumer.beginning_offsets(list(tps)), "reading log starts")
    ends = await bounded(consumer.end_offsets(list(tps)), "reading end offsets")
    return {tp: (beginnings[tp], ends[tp]) for tp in tps}
