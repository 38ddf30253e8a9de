"""`refundctl dlq`: inspect the dead-letter topic and re-drive dead letters.

A dead letter is named by its place in the dead-letter topic, `<partition>:<offset>`.
Listing reads the topic from its beginning to the end offsets taken at start (a
standalone consumer outside the worker's group). A redrive republishes the original
value to the request topic with the same key and the original headers (without the
dead-letter ones), and records the redrive in the database under the dead letter's
id, so a dead letter is re-driven at most once: asked again, it is skipped and reported.

One transaction per chunk claims the ids (the primary key refuses one redriven before;
a concurrent redrive of the same id waits, then finds it taken), publishes, waits for
the broker's acknowledgements, records where each copy landed, and commits. A publish
that fails rolls the chunk's claims back, so redriving again is safe. A copy published
whose commit then failed would be published again by the next redrive: harmless, a
cancel applies once (the retry gets the stored outcome). A redriven event that is
still bad is dead-lettered again by the worker, under a new id.
"""

import asyncio
import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from schemas.database import DatabaseSettings
from schemas.failures import KAFKA, Unavailable
from schemas.transport import HEADER_DEAD_LETTER_REASON, HEADER_SOURCE, KafkaSettings
from worker import ledger
from worker.ledger import RedriveClaim, RedrivePosition
from worker.ops.access import (
    KAFKA_TIMEOUT_S,
    bounded,
    connect_db,
    log_bounds,
    standalone_consumer,
    topic_partitions,
)
from worker.ops.reader import read_range
from worker.records import redriven_headers

Record: TypeAlias = ConsumerRecord[bytes, bytes]
CHUNK_MAX = 500  # dead letters per redrive transaction
_ID = re.compile(r"([0-9]{1,9}):([0-9]{1,18})")


@dataclass(frozen=True, order=True)
class DeadLetterId:
    partition: int
    offset: int

    @classmethod
    def parse(cls, text: str) -> "DeadLetterId":
        """`<partition>:<offset>`; ValueError otherwise."""
        match = _ID.fullmatch(text)
        if match is None:
            raise ValueError(f"a dead-letter id is <partition>:<offset>, got {text!r}")
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}"


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", errors="replace")


def _header(record: Record, name: str) -> str | None:
    values = [value for key, value in record.headers if key == name]
    return _text(values[-1]) if values else None


def _iso_ms(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")


def describe(record: Record) -> dict[str, Any]:
    """One dead letter as `refundctl dlq list --json` prints it (`redriven_at` is filled
    in from the database)."""
    return {
        "id": str(DeadLetterId(record.partition, record.offset)),
        "reason": _header(record, HEADER_DEAD_LETTER_REASON),
        "source": _header(record, HEADER_SOURCE),
        "key": _text(record.key),
        "timestamp": _iso_ms(record.timestamp),
        "size": len(record.value or b""),
        "redriven_at": None,
    }


async def list_dead_letters(
    kafka: KafkaSettings, database: DatabaseSettings
) -> list[dict[str, Any]]:
    """Every dead letter from the topic's beginning to its end offsets at start, in
    (partition, offset) order, with when it was redriven, if it was."""
    topic = kafka.topics.dead_letters
    tps = [TopicPartition(topic, p) for p in (await topic_partitions(kafka, [topic]))[topic]]
    async with standalone_consumer(kafka, "refundctl-dlq", CHUNK_MAX) as consumer:
        consumer.assign(tps)
        bounds = await log_bounds(consumer, tps)
        entries: list[tuple[tuple[int, int], dict[str, Any]]] = []
        async for records in read_range(consumer, bounds, max_records=CHUNK_MAX):
            # Described at once: the values (up to 1 MiB each) are not kept.
            entries.extend(((r.partition, r.offset), describe(r)) for r in records)
    conn = await connect_db(database)
    try:
        redriven = await ledger.redriven_at(conn, topic, [place for place, _ in entries])
    finally:
        await conn.close()
    for place, entry in entries:
        if place in redriven:
            entry["redriven_at"] = redriven[place].astimezone(UTC).isoformat()
    return [entry for _, entry in sorted(entries, key=lambda item: item[0])]


@dataclass
class RedriveReport:
    items: list[dict[str, Any]]  # one per dead letter considered, in id order

    def ids(self, result: str) -> list[str]:
        return [item["id"] for item in self.items if item["result"] == result]

    def as_json(self) -> dict[str, Any]:
        return {
            "redriven": len(self.ids("redriven")),
            "already_redriven": len(self.ids("already_redriven")),
            "not_found": len(self.ids("not_found")),
            "items": self.items,
        }


async def redrive(
    kafka: KafkaSettings, database: DatabaseSettings, ids: Sequence[DeadLetterId] | None
) -> RedriveReport:
    """Re-drive the dead letters named by `ids` (None: every one not redriven yet) up
    to the dead-letter topic's end offsets at start."""
    dead_letters, requests = kafka.topics.dead_letters, kafka.topics.requests
    partitions = (await topic_partitions(kafka, [dead_letters, requests]))[dead_letters]
    tps = [TopicPartition(dead_letters, p) for p in partitions]
    wanted = None if ids is None else set(ids)
    items: list[dict[str, Any]] = []
    conn = await connect_db(database)
    producer = AIOKafkaProducer(
        **kafka.producer_options(), request_timeout_ms=int(KAFKA_TIMEOUT_S * 1000)
    )
    try:
        await bounded(producer.start(), f"connecting to Kafka at {kafka.bootstrap_servers}")
        async with standalone_consumer(kafka, "refundctl-dlq", CHUNK_MAX) as consumer:
            consumer.assign(tps)
            bounds = await log_bounds(consumer, tps)
            ranges = dict(bounds)
            if wanted is not None:  # read only the span of the ids asked for
                ranges = {}
                for tp, (beginning, end) in bounds.items():
                    offsets = [i.offset for i in wanted if i.partition == tp.partition]
                    if offsets:
                        ranges[tp] = (max(beginning, min(offsets)), min(end, max(offsets) + 1))
            seen: set[DeadLetterId] = set()
            async for records in read_range(consumer, ranges, max_records=CHUNK_MAX):
                chosen = [
                    r
                    for r in records
                    if wanted is None or DeadLetterId(r.partition, r.offset) in wanted
                ]
                seen.update(DeadLetterId(r.partition, r.offset) for r in chosen)
                items.extend(await _redrive_chunk(conn, producer, kafka, chosen))
        for missing in sorted((wanted or set()) - seen):
            items.append({"id": str(missing), "result": "not_found"})
    finally:
        with contextlib.suppress(KafkaError, OSError, TimeoutError):
            await asyncio.wait_for(producer.stop(), KAFKA_TIMEOUT_S)
        await conn.close()
    items.sort(key=lambda item: DeadLetterId.parse(item["id"]))
    return RedriveReport(items)


async def _redrive_chunk(
    conn: ledger.Connection,
    producer: AIOKafkaProducer,
    kafka: KafkaSettings,
    records: Sequence[Record],
) -> list[dict[str, Any]]:
    """Claim, publish, record and commit one chunk (see the module docstring)."""
    if not records:
        return []
    dead_letters, requests = kafka.topics.dead_letters, kafka.topics.requests
    claims = [RedriveClaim(r.partition, r.offset, _header(r, HEADER_SOURCE)) for r in records]
    async with conn.transaction():
        claimed = await ledger.claim_redrives(conn, dead_letters, requests, claims)
        to_send = [r for r in records if (r.partition, r.offset) in claimed]
        try:
            sends = [
                await bounded(
                    producer.send(
                        requests,
                        r.value,
                        key=r.key,
                        headers=redriven_headers(r.headers),
                    ),
                    f"publishing to {requests}",
                )
                for r in to_send
            ]
            landed = await bounded(asyncio.gather(*sends), f"publishing to {requests}")
        except (KafkaError, Unavailable) as exc:
            raise Unavailable(
                KAFKA,
                f"publishing to {requests} failed ({getattr(exc, 'reason', exc)}); this "
                "chunk's redrives were rolled back, redriving again is safe",
            ) from exc
        await ledger.record_redrive_positions(
            conn,
            dead_letters,
            [
                RedrivePosition(r.partition, r.offset, meta.partition, meta.offset)
                for r, meta in zip(to_send, landed, strict=True)
            ],
        )
    skipped = [(r.partition, r.offset) for r in records if (r.partition, r.offset) not in claimed]
    earlier = await ledger.redriven_at(conn, dead_letters, skipped)
    items: list[dict[str, Any]] = [
        {
            "id": str(DeadLetterId(r.partition, r.offset)),
            "result": "redriven",
            "request_partition": meta.partition,
            "request_offset": meta.offset,
        }
        for r, meta in zip(to_send, landed, strict=True)
    ]
    for place in skipped:
        at = earlier.get(place)
        items.append(
            {
                "id": str(DeadLetterId(*place)),
                "result": "already_redriven",
                "redriven_at": None if at is None else at.astimezone(UTC).isoformat(),
            }
        )
    return items
