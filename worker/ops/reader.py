"""The operations commands' topic reader: a bounded range of each partition, optionally
a time window of it, found by the broker's time index where its answer holds up.

Per partition, a window starts at the first record stamped at or after `since` and stops
before the first record, from there, stamped at or after `until`: exactly the offsets
Kafka's `offsets_for_times` names. The start is looked up with `offsets_for_times` and
the answer is checked against the records around it; a broker whose answer does not hold
(Tansu, the dev and test broker, answers the log's first offset and its own clock) is
read from the beginning of each partition instead, and the start is found by the
records' timestamps while reading. Either way the same records are selected. `until` is
always found while reading (no lookup needed).
"""

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import UnsupportedVersionError
from aiokafka.structs import ConsumerRecord

from schemas.failures import KAFKA, Unavailable
from worker.ops.access import KAFKA_TIMEOUT_S, Bounds, bounded

POLL_TIMEOUT_MS = 200
Record: TypeAlias = ConsumerRecord[bytes, bytes]


class Progress(Protocol):
    """Where a long read reports how far it got (a progress bar, or nothing)."""

    def start(self, total: int) -> None: ...

    def advance(self, count: int) -> None: ...


class _NoProgress:
    def start(self, total: int) -> None:
        pass

    def advance(self, count: int) -> None:
        pass


@dataclass(frozen=True)
class Window:
    """Which records of each partition: stamped in [since_ms, until_ms) as above."""

    since_ms: int | None = None  # None: from the beginning of the log
    until_ms: int | None = None  # None: up to the end offsets taken at start

    def __post_init__(self) -> None:
        if self.since_ms is not None and self.until_ms is not None:
            assert self.since_ms < self.until_ms, "since before until"


async def read_range(
    consumer: AIOKafkaConsumer,
    ranges: dict[TopicPartition, tuple[int, int]],
    *,
    window: Window = Window(),
    max_records: int = 500,
    progress: Progress | None = None,
    idle_timeout_s: float = KAFKA_TIMEOUT_S,
) -> AsyncIterator[list[Record]]:
    """Yield the records of each partition's [start, stop) offsets that fall in `window`,
    in chunks of at most `max_records`, each partition in order. The partitions must be
    assigned. Fails if no partition moves on for `idle_timeout_s`."""
    progress = progress or _NoProgress()
    active = {tp: span for tp, span in ranges.items() if span[0] < span[1]}
    progress.start(sum(stop - start for start, stop in active.values()))
    position: dict[TopicPartition, int] = {}
    started = {tp: window.since_ms is None for tp in active}
    for tp, (start, _) in active.items():
        consumer.resume(tp)  # an earlier read paused what it finished
        consumer.seek(tp, start)
        position[tp] = start
    idle_since = time.monotonic()
    while active:
        fetched = await bounded(
            consumer.getmany(*active, timeout_ms=POLL_TIMEOUT_MS, max_records=max_records),
            "reading records",
        )
        chunk: list[Record] = []
        moved = False
        for tp in list(active):
            stop = active[tp][1]
            done = False
            for record in fetched.get(tp, []):
                if record.offset >= stop:
                    done = True
                    break
                if not started[tp]:
                    assert window.since_ms is not None
                    if record.timestamp < window.since_ms:
                        continue
                    started[tp] = True
                if window.until_ms is not None and record.timestamp >= window.until_ms:
                    done = True
                    break
                chunk.append(record)
            now_at = stop if done else min(stop, await consumer.position(tp))
            if now_at > position[tp]:
                progress.advance(now_at - position[tp])
                position[tp] = now_at
                moved = True
            if now_at >= stop:
                del active[tp]
                consumer.pause(tp)
        if moved:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > idle_timeout_s:
            stuck = {tp.partition: position[tp] for tp in active}
            ends = {tp.partition: stop for tp, (_, stop) in active.items()}
            raise Unavailable(
                KAFKA,
                f"reading {next(iter(active)).topic}: no records for {idle_timeout_s:g} s"
                f" at offsets {stuck} (end offsets {ends})",
            )
        if chunk:
            yield chunk
            idle_since = time.monotonic()  # the consumer of the chunks took its time


async def _probe(
    consumer: AIOKafkaConsumer, spans: dict[TopicPartition, tuple[int, int]]
) -> dict[TopicPartition, dict[int, Record]]:
    """The records at offsets [first, last] of each partition (fewer where there are
    gaps), read with the partitions' positions moved."""
    found: dict[TopicPartition, dict[int, Record]] = {tp: {} for tp in spans}
    async for records in read_range(
        consumer, {tp: (first, last + 1) for tp, (first, last) in spans.items()}
    ):
        for record in records:
            found[TopicPartition(record.topic, record.partition)][record.offset] = record
    return found


async def start_offsets(
    consumer: AIOKafkaConsumer, bounds: Bounds, since_ms: int
) -> tuple[dict[TopicPartition, int], str]:
    """Where to start reading each partition for the records stamped at or after
    `since_ms`; and how it was found: "time index", or "scan" (from the beginning) when
    the broker's `offsets_for_times` answer does not hold up."""
    beginnings = {tp: beginning for tp, (beginning, _) in bounds.items()}
    nonempty = [tp for tp, (beginning, end) in bounds.items() if beginning < end]
    if not nonempty:
        return beginnings, "time index"
    try:
        answers = await bounded(
            consumer.offsets_for_times({tp: since_ms for tp in nonempty}), "looking up offsets"
        )
    except UnsupportedVersionError:
        return beginnings, "scan"
    # Check each answer against the records around it: the record at the answered offset
    # carries the answered timestamp (>= since), the one before it is older than since;
    # no answer means the last record is older than since.
    spans: dict[TopicPartition, tuple[int, int]] = {}
    for tp in nonempty:
        beginning, end = bounds[tp]
        answer = answers.get(tp)
        if answer is None:
            spans[tp] = (end - 1, end - 1)
            continue
        if not beginning <= answer.offset < end or answer.timestamp < since_ms:
            return beginnings, "scan"
        spans[tp] = (max(beginning, answer.offset - 1), answer.offset)
    records = await _probe(consumer, spans)
    starts = dict(beginnings)
    for tp in nonempty:
        beginning, end = bounds[tp]
        answer = answers.get(tp)
        at = records[tp]
        if answer is None:
            last = at.get(end - 1)
            if last is None or last.timestamp >= since_ms:
                return beginnings, "scan"
            starts[tp] = end
            continue
        record = at.get(answer.offset)
        if record is None or record.timestamp != answer.timestamp:
            return beginnings, "scan"
        if answer.offset > beginning:
            before = at.get(answer.offset - 1)
            if before is None or before.timestamp >= since_ms:
                return beginnings, "scan"
        starts[tp] = answer.offset
    return starts, "time index"
