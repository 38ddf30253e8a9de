"""Topic setup (`refundctl topics create`): idempotent."""

import asyncio
import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from schemas.failures import KAFKA, Unavailable
from schemas.transport import KafkaSettings

TOPIC_ALREADY_EXISTS = 36
RETENTION_MS = 30 * 24 * 3600 * 1000  # requests kept long enough for operator replays
ADMIN_TIMEOUT_S = 15.0  # connecting, and the create request itself


async def create_topics(kafka: KafkaSettings) -> dict[str, str]:
    """Create the request, reply and dead-letter topics; returns name -> created/exists.
    A broker that does not answer in time, or refuses a topic (not authorized, too few
    brokers for the replication factor), is Unavailable."""
    configs = {"retention.ms": str(RETENTION_MS)}
    if kafka.replication_factor >= 3:
        configs["min.insync.replicas"] = "2"
    wanted = [
        NewTopic(
            kafka.topics.requests,
            kafka.request_partitions,
            kafka.replication_factor,
            topic_configs=configs,
        ),
        NewTopic(kafka.topics.replies, kafka.reply_partitions, kafka.replication_factor),
        NewTopic(
            kafka.topics.dead_letters,
            kafka.request_partitions,
            kafka.replication_factor,
            topic_configs=configs,
        ),
    ]
    admin = AIOKafkaAdminClient(
        **kafka.admin_options(), request_timeout_ms=int(ADMIN_TIMEOUT_S * 1000)
    )
    try:
        async with asyncio.timeout(ADMIN_TIMEOUT_S * 2):
            await admin.start()
            response = await admin.create_topics(wanted)
    except TimeoutError as exc:
        raise Unavailable(
            KAFKA, f"creating topics: no answer within {ADMIN_TIMEOUT_S * 2:g} s"
        ) from exc
    finally:
        with contextlib.suppress(KafkaError, OSError, TimeoutError):
            await asyncio.wait_for(admin.close(), ADMIN_TIMEOUT_S)
    result: dict[str, str] = {}
    for topic, error_code, message in response.topic_errors:
        if error_code == 0:
            result[topic] = "created"
        elif error_code == TOPIC_ALREADY_EXISTS:
            result[topic] = "exists"
        else:
            raise Unavailable(
                KAFKA, f"the broker refused to create topic {topic}: {message} (error {error_code})"
            )
    return result
