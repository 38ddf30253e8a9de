"""The worker's Kafka clients, built by a factory the worker is given: production builds
aiokafka's from the settings; a test passes fakes through the same door."""

from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from worker.settings import WorkerSettings


@dataclass(frozen=True)
class KafkaClients:
    consumer: AIOKafkaConsumer  # the group member: the request topic, one batch per getmany
    producer: AIOKafkaProducer  # replies and dead letters


ClientFactory = Callable[[WorkerSettings], KafkaClients]


def kafka_clients(settings: WorkerSettings) -> KafkaClients:
    """The real clients (not started: the worker starts and stops them)."""
    kafka = settings.kafka
    # The worker's own fetch (it batches events: WORKER_FETCH_*), over KAFKA_FETCH_*.
    fetch = {
        "fetch_min_bytes": settings.fetch_min_bytes,
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
    }
    return KafkaClients(
        consumer=AIOKafkaConsumer(
            **(kafka.consumer_options() | fetch),
            group_id=kafka.consumer_group,
            auto_offset_reset="earliest",
            max_poll_records=settings.batch_records_max,
        ),
        producer=AIOKafkaProducer(**kafka.producer_options()),
    )
