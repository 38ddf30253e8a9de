"""Topic setup (`refundctl topics create`): idempotent."""

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from schemas.transport import KafkaSettings

TOPIC_ALREADY_EXISTS = 36
RETENTION_MS = 30 * 24 * 3600 * 1000  # requests kept long enough for operator replays


async def create_topics(kafka: KafkaSettings) -> dict[str, str]:
    """Create the request, reply and dead-letter topics; returns name -> created/exists."""
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
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        response = await admin.create_topics(wanted)
    finally:
        await admin.close()
    result: dict[str, str] = {}
    for topic, error_code, message in response.topic_errors:
        if error_code == 0:
            result[topic] = "created"
        elif error_code == TOPIC_ALREADY_EXISTS:
            result[topic] = "exists"
        else:
            raise RuntimeError(f"cannot create topic {topic}: {message} ({error_code})")
    return result
