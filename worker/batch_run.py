"""One fetched batch through the apply path: its ranges' transactions (as
`apply_isolating` asks for them), each with its events, its offsets compare-and-set and
its dead letters, sent once the offsets are ours and at most once per call."""

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import asyncpg
from aiokafka import AIOKafkaProducer

from schemas import CancelOutcome, CancelRequested
from worker import ledger
from worker.apply import DecideBatch, Isolation, Refusal, apply_batch
from worker.batch_plan import BatchPlan
from worker.dead_lettering import publish_dead_letters
from worker.faults import FaultInjector
from worker.metrics import WorkerMetrics
from worker.records import Cause, DeadLetter, Record, Undecodable
from worker.settings import WorkerSettings


@dataclass(frozen=True)
class BatchContext:
    """What every batch of a worker is applied with."""

    settings: WorkerSettings
    pool: asyncpg.Pool
    producer: AIOKafkaProducer
    decide: DecideBatch
    metrics: WorkerMetrics
    faults: FaultInjector


@dataclass
class BatchRun:
    context: BatchContext
    records: Sequence[Record]  # in (partition, offset) order
    decoded: Sequence[CancelRequested | Undecodable]  # one per record
    plan: BatchPlan
    sent: set[int] = field(default_factory=set)  # entries dead-lettered (a retry: no copy)

    def blamable(self) -> list[bool]:
        """Which entries carry an event to apply (`apply_isolating`)."""
        return [isinstance(entry, CancelRequested) for entry in self.decoded]

    async def attempt(
        self, lo: int, hi: int, refused: Mapping[int, Refusal]
    ) -> Sequence[CancelOutcome]:
        """Entries [lo, hi) in one transaction: their events but the refused ones, and
        the others' dead letters."""
        letters: list[tuple[int, DeadLetter]] = []
        events: list[CancelRequested] = []
        sources: list[ledger.EventSource] = []
        for i in range(lo, hi):
            entry, record = self.decoded[i], self.records[i]
            if isinstance(entry, Undecodable):
                letters.append((i, DeadLetter(record, entry.cause, entry.reason)))
            elif i in refused:
                letters.append((i, DeadLetter(record, refused[i].cause, refused[i].reason)))
            else:
                events.append(entry)
                sources.append(ledger.EventSource(record.topic, record.partition, record.offset))
        settings = self.context.settings

        async def before_commit() -> None:
            """Dead letters land once the offsets are ours (a fenced batch sends none)
            and before they are committed past (a crash sends them again: at least
            once, told apart by their source header)."""
            unsent = [(i, letter) for i, letter in letters if i not in self.sent]
            if unsent:
                await publish_dead_letters(
                    self.context.producer,
                    settings.kafka.topics.dead_letters,
                    [letter for _, letter in unsent],
                    settings.dead_letter_timeout_ms,
                )
                self.sent.update(i for i, _ in unsent)
            if settings.fault_points:
                self.context.faults.before_commit()

        return await apply_batch(
            self.context.pool,
            events,
            group=settings.kafka.consumer_group,
            advances=self.plan.advances(lo, hi),
            now_ms=time.time_ns() // 1_000_000,
            attempts_max=settings.apply_attempts_max,
            backoff_ms_max=settings.apply_backoff_ms_max,
            before_commit=before_commit,
            decide=self.context.decide,
            sources=sources,
            on_retry=self.context.metrics.batch_retries.inc,
        )

    def committed(
        self, isolation: Isolation[CancelOutcome]
    ) -> tuple[list[tuple[CancelRequested, CancelOutcome]], list[Cause]]:
        """The committed entries' events with their outcomes, and their dead letters'
        causes."""
        settled = isolation.settled
        applied = [
            (event, isolation.outcomes[i])
            for i in sorted(isolation.outcomes)
            if isinstance(event := self.decoded[i], CancelRequested)
        ]
        assert len(applied) == sum(
            isinstance(entry, CancelRequested) and i not in isolation.refused
            for i, entry in enumerate(self.decoded[:settled])
        ), "every committed event has its outcome"
        causes = [
            entry.cause if isinstance(entry, Undecodable) else isolation.refused[i].cause
            for i, entry in enumerate(self.decoded[:settled])
            if isinstance(entry, Undecodable) or i in isolation.refused
        ]
        return applied, causes
