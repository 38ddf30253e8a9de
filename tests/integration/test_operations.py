"""Operations commands on the real broker and database: `refundctl replay`, `dlq`, `status`.

The commands run through `refundctl.cli.main` in a thread (it calls `asyncio.run`), with
the test's environment set, and their stdout is parsed.
"""

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndTimestamp

from adapters.bus import RequestReplyClient, event_key
from refundctl import cli, logs
from schemas import CancelOutcome, CancelRequested, Outcome
from schemas.transport import (
    HEADER_CORRELATION_ID,
    HEADER_DEAD_LETTER_REASON,
    HEADER_SCHEMA,
    HEADER_SOURCE,
    SCHEMA_CANCEL_REQUESTED,
    KafkaSettings,
    encode,
)
from tests.conftest import wait_until
from tests.support import (
    assert_conservation,
    balance,
    cancel_event,
    reply_client,
    running_worker,
    seed_bet,
)
from worker.ops.access import log_bounds, standalone_consumer
from worker.ops.reader import start_offsets

pytestmark = pytest.mark.integration

HOUR_MS = 3600 * 1000


class Refundctl:
    """`refundctl …` in a thread, with the test's environment; returns (code, stdout)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    async def __call__(self, *args: str) -> tuple[int, str]:
        self._capsys.readouterr()
        code = await asyncio.wait_for(asyncio.to_thread(cli.main, list(args)), 60)
        return code, self._capsys.readouterr().out

    async def json(self, *args: str, expect_code: int = 0) -> Any:
        code, out = await self(*args, "--json")
        assert code == expect_code, out
        return json.loads(out)


@pytest.fixture
def refundctl(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Refundctl]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # `main` points process-wide logging at the stderr of the moment (here a capture that
    # closes with the test); in-process, the worker's logs must not follow it, nor land
    # in the captured stdout the commands print their JSON on.
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)
    saved = structlog.get_config()
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(file=sys.__stderr__),
        cache_logger_on_first_use=False,
    )
    try:
        yield Refundctl(capsys)
    finally:
        structlog.configure(**saved)


async def request_one(client: RequestReplyClient, event: CancelRequested) -> CancelOutcome:
    [outcome] = await client.request([event], event.deadline_ms)
    assert outcome is not None, "no outcome before the deadline"
    return outcome


async def publish(
    kafka: KafkaSettings,
    topic: str,
    values: Sequence[bytes | None],
    *,
    key: bytes | None = b"p1",
    partition: int | None = None,
    timestamp_ms: int | None = None,
    headers: Sequence[tuple[str, bytes]] = (),
) -> None:
    producer = AIOKafkaProducer(**kafka.producer_options())
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(
                topic,
                value,
                key=key,
                partition=partition,
                timestamp_ms=timestamp_ms,
                headers=list(headers),
            )
    finally:
        await producer.stop()


async def end_offsets(kafka: KafkaSettings, topic: str, partitions: int = 4) -> list[int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await asyncio.wait_for(consumer.end_offsets(tps), 15)
        return [ends[tp] for tp in tps]
    finally:
        await consumer.stop()


async def ledger_state(db: asyncpg.Connection) -> tuple[list[Any], ...]:
    """Everything a replay could change, to compare before and after."""
    return (
        [tuple(r) for r in await db.fetch("SELECT * FROM ledger_entries ORDER BY id")],
        [tuple(r) for r in await db.fetch("SELECT id, balance FROM accounts ORDER BY id")],
        [tuple(r) for r in await db.fetch("SELECT * FROM bets ORDER BY provider, tx")],
        [tuple(r) for r in await db.fetch("SELECT * FROM cancel_outcomes ORDER BY cancel_id")],
        [tuple(r) for r in await db.fetch("SELECT * FROM tombstones ORDER BY tx")],
        [tuple(r) for r in await db.fetch("SELECT * FROM consumer_offsets ORDER BY partition")],
    )


def counts(events: int, applied: int, already: int, failed: int) -> dict[str, int]:
    return {"events": events, "applied": applied, "already_applied": already, "failed": failed}


def iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat()


# --- replay -------------------------------------------------------------------------------


async def test_replay_after_the_worker_applied_everything_changes_nothing(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection, refundctl: Refundctl
) -> None:
    for n in range(3):
        await seed_bet(db, f"bet-{n}")
    async with reply_client(kafka) as client, running_worker(env):
        for n in range(3):
            event = cancel_event(client, cancel_id=f"c-{n}", bet_tx=f"bet-{n}")
            assert (await request_one(client, event)).outcome is Outcome.REFUNDED
    assert await balance(db) == Decimal("100.00")
    before = await ledger_state(db)
    replies_before = await end_offsets(kafka, kafka.topics.replies)

    assert await refundctl.json("replay", "--from-beginning") == counts(3, 0, 3, 0)
    code, out = await refundctl("replay", "--from-beginning")
    assert code == 0
    assert out.startswith("replay: 3 events, 0 applied, 3 already applied, 0 failed (")
    assert "replies not published" in out
    assert out.count("\n") == 1

    assert await ledger_state(db) == before  # stored offsets included: not touched
    assert await end_offsets(kafka, kafka.topics.replies) == replies_before
    await assert_conservation(db)


async def test_replay_applies_published_events_exactly_once(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection, refundctl: Refundctl
) -> None:
    """Published, never applied (no worker ran): a dry run writes nothing, the replay
    applies each once, and a second replay changes nothing."""
    for n in range(4):
        await seed_bet(db, f"bet-{n}")
    async with reply_client(kafka) as client:
        events = [cancel_event(client, cancel_id=f"c-{n}", bet_tx=f"bet-{n}") for n in range(4)]
        events.append(cancel_event(client, cancel_id="c-late", bet_tx="late"))  # tombstone
    for n, event in enumerate(events):
        await publish(kafka, kafka.topics.requests, [encode(event)], partition=n % 4)
    before = await ledger_state(db)
    replies_before = await end_offsets(kafka, kafka.topics.replies)

    assert await refundctl.json("replay", "--from-beginning", "--dry-run") == counts(5, 5, 0, 0)
    assert await ledger_state(db) == before
    code, out = await refundctl("replay", "--from-beginning", "--dry-run")
    assert code == 0
    assert out.startswith("replay --dry-run (rolled back, nothing written): 5 events, 5 would")

    assert await refundctl.json("replay", "--from-beginning") == counts(5, 5, 0, 0)
    assert await balance(db) == Decimal("100.00")  # 60.00 + 4 x 10.00, once each
    assert await db.fetchval("SELECT count(*) FROM ledger_entries WHERE kind = 'refund'") == 4
    assert await db.fetchval("SELECT count(*) FROM tombstones") == 1
    assert await db.fetchval("SELECT count(*) FROM consumer_offsets") == 0  # no offsets
    after_first = await ledger_state(db)

    assert await refundctl.json("replay", "--from-beginning") == counts(5, 0, 5, 0)
    assert await refundctl.json("replay", "--from-beginning", "--dry-run") == counts(5, 0, 5, 0)
    assert await ledger_state(db) == after_first
    assert await end_offsets(kafka, kafka.topics.replies) == replies_before  # nothing sent
    await assert_conservation(db)


async def test_dry_run_agrees_with_the_replay_across_batches(
    env: dict[str, str],
    kafka: KafkaSettings,
    db: asyncpg.Connection,
    refundctl: Refundctl,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batches of 2: a retry, a reused cancel id and a second cancel of a bet land in
    later batches than the cancels they depend on; undecodable records fail."""
    monkeypatch.setenv("WORKER_BATCH_RECORDS_MAX", "2")
    for n in range(3):
        await seed_bet(db, f"bet-{n}")
    async with reply_client(kafka) as client:
        first = cancel_event(client, cancel_id="c-0", bet_tx="bet-0")
        events = [
            first,
            cancel_event(client, cancel_id="c-1", bet_tx="bet-1"),
            first.model_copy(update={"correlation_id": uuid.uuid4().hex}),  # a retry
            cancel_event(client, cancel_id="c-1", bet_tx="bet-2"),  # id reused: invalid
            cancel_event(client, cancel_id="c-2", bet_tx="bet-0"),  # bet already cancelled
        ]
    values: list[bytes | None] = [encode(e) for e in events]
    values[2:2] = [b"{not json", b'{"schema_version": 1}', None]
    await publish(kafka, kafka.topics.requests, values, partition=0)
    before = await ledger_state(db)

    expected = counts(8, 3, 1, 4)
    assert await refundctl.json("replay", "--from-beginning", "--dry-run") == expected
    assert await ledger_state(db) == before
    # A dry run holds its locks until it ends, so it is bounded in time: a batch begun
    # later than the bound after the first (here 1 ms: batches of 2) stops it, exit 1.
    monkeypatch.setenv("REPLAY_DRY_RUN_HOLD_MS_MAX", "1")
    code, out = await refundctl("replay", "--from-beginning", "--dry-run")
    assert (code, out) == (1, "")
    assert await ledger_state(db) == before
    monkeypatch.delenv("REPLAY_DRY_RUN_HOLD_MS_MAX")
    assert await refundctl.json("replay", "--from-beginning") == expected

    assert await balance(db) == Decimal("90.00")  # bet-0 and bet-1 refunded, bet-2 open
    outcomes = {
        row["cancel_id"]: row["outcome"]
        for row in await db.fetch(
            "SELECT cancel_id, outcome->>'outcome' AS outcome FROM cancel_outcomes"
        )
    }
    assert outcomes == {"c-0": "refunded", "c-1": "refunded", "c-2": "already_cancelled"}
    assert await db.fetchval("SELECT state FROM bets WHERE tx = 'bet-2'") == "open"
    assert await refundctl.json("replay", "--from-beginning") == counts(8, 0, 4, 4)
    await assert_conservation(db)


async def test_since_and_until_select_a_sub_range(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection, refundctl: Refundctl
) -> None:
    now = int(time.time() * 1000)
    stamped = {"old": now - 3 * HOUR_MS, "mid": now - 2 * HOUR_MS, "new": now - HOUR_MS}
    sizes = {"old": 2, "mid": 3, "new": 2}
    async with reply_client(kafka) as client:
        n = 0
        for age, size in sizes.items():
            for _ in range(size):
                await seed_bet(db, f"bet-{age}-{n}", amount="1.00")
                event = cancel_event(
                    client, cancel_id=f"c-{age}-{n}", bet_tx=f"bet-{age}-{n}", amount=Decimal(1)
                )
                await publish(
                    kafka,
                    kafka.topics.requests,
                    [encode(event)],
                    partition=n % 4,
                    timestamp_ms=stamped[age],
                )
                n += 1

    async def refunded() -> set[str]:
        rows = await db.fetch("SELECT tx FROM ledger_entries WHERE kind = 'refund'")
        return {row["tx"].split("-")[1] for row in rows}

    window = ("--since", iso(now - 150 * 60 * 1000), "--until", iso(now - 90 * 60 * 1000))
    assert await refundctl.json("replay", *window, "--dry-run") == counts(3, 3, 0, 0)
    assert await refunded() == set()
    assert await refundctl.json("replay", *window) == counts(3, 3, 0, 0)
    assert await refunded() == {"mid"}
    assert await db.fetchval("SELECT count(*) FROM ledger_entries WHERE kind = 'refund'") == 3

    # --since alone: to the end; a naive time is UTC; exactly a record's stamp is included
    naive_new = datetime.fromtimestamp(stamped["new"] / 1000, UTC).replace(tzinfo=None)
    assert await refundctl.json("replay", "--since", naive_new.isoformat()) == counts(2, 2, 0, 0)
    assert await refunded() == {"mid", "new"}
    # --until alone (from the beginning): the old ones
    until = ("--until", iso(now - 150 * 60 * 1000))
    assert await refundctl.json("replay", "--from-beginning", *until) == counts(2, 2, 0, 0)
    assert await refundctl.json("replay", "--since", iso(now)) == counts(0, 0, 0, 0)
    code, out = await refundctl("replay", *window)
    assert code == 0
    assert "start by scan" in out or "start by time index" in out
    assert await refundctl.json("replay", "--from-beginning") == counts(7, 0, 7, 0)
    assert await refunded() == {"old", "mid", "new"}
    await assert_conservation(db)


# --- dead letters -------------------------------------------------------------------------


async def test_dlq_list_shows_a_dead_letter_from_the_worker(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection, refundctl: Refundctl
) -> None:
    await seed_bet(db, "bet-1")
    assert await refundctl.json("dlq", "list") == []
    await publish(kafka, kafka.topics.requests, [b"{not json"], key=b"p1")
    async with reply_client(kafka) as client, running_worker(env):
        # Same key, same partition: once this is answered, the garbage was dead-lettered.
        marker = cancel_event(client, cancel_id="c-1", bet_tx="bet-1")
        assert event_key(marker) == b"p1"
        assert (await request_one(client, marker)).outcome is Outcome.REFUNDED

    letters = await refundctl.json("dlq", "list")
    # Dead letters land at least once (inside the batch's transaction, before its commit:
    # a crash or a retried commit sends them again). All of them are copies of ours.
    assert letters
    assert len({(entry["source"], entry["reason"]) for entry in letters}) == 1
    letter = letters[0]
    partition, offset = map(int, letter["id"].split(":"))
    assert offset == 0
    assert "json" in letter["reason"].lower()
    # Keyed alike, the dead letter sits in the partition number of its original.
    assert letter["source"] == f"{kafka.topics.requests}:{partition}:0"
    assert letter["key"] == "p1"
    assert letter["size"] == len(b"{not json")
    assert letter["redriven_at"] is None
    assert abs(datetime.fromisoformat(letter["timestamp"]).timestamp() - time.time()) < 120
    code, out = await refundctl("dlq", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ID", "TIMESTAMP", "SIZE"]
    assert lines[1].startswith(f"{letter['id']} ")
    assert lines[-1] == f"{len(letters)} dead letter(s)"

    status = await refundctl.json("status")
    assert status["dead_letters"]["count"] == len(letters)
    await assert_conservation(db)


async def test_redrive_of_a_fixed_dead_letter_is_applied_once(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection, refundctl: Refundctl
) -> None:
    await seed_bet(db, "bet-1")
    await seed_bet(db, "bet-2")
    async with reply_client(kafka) as client:
        fixed = cancel_event(client, cancel_id="c-1", bet_tx="bet-1")
        original_headers = [
            (HEADER_SCHEMA, SCHEMA_CANCEL_REQUESTED),
            (HEADER_CORRELATION_ID, fixed.correlation_id.encode()),
        ]
        await publish(
            kafka,
            kafka.topics.dead_letters,
            [encode(fixed)],
            key=b"p1",
            headers=[
                *original_headers,
                (HEADER_DEAD_LETTER_REASON, b"schema_version: was 0, fixed since"),
                (HEADER_SOURCE, f"{kafka.topics.requests}:3:17".encode()),
            ],
        )
        [letter] = await refundctl.json("dlq", "list")
        assert letter["reason"] == "schema_version: was 0, fixed since"
        assert letter["source"] == f"{kafka.topics.requests}:3:17"

        code, out = await refundctl("dlq", "redrive", "--id", letter["id"])
        assert code == 0
        summary = json.loads(out)
        assert summary["redriven"] == 1
        assert summary["already_redriven"] == summary["not_found"] == 0
        [item] = summary["items"]
        assert item["id"] == letter["id"]
        assert item["result"] == "redriven"

        # The copy in the request topic: same value and key, no dead-letter headers.
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers, fetch_max_wait_ms=kafka.fetch_max_wait_ms
        )
        await consumer.start()
        try:
            tp = TopicPartition(kafka.topics.requests, item["request_partition"])
            consumer.assign([tp])
            consumer.seek(tp, item["request_offset"])
            copy = await asyncio.wait_for(consumer.getone(), 15)
        finally:
            await consumer.stop()
        assert copy.value == encode(fixed)
        assert copy.key == b"p1"
        assert list(copy.headers) == original_headers

        async with running_worker(env):
            # Same key, same partition: once this is answered, the copy was applied.
            marker = cancel_event(client, cancel_id="c-2", bet_tx="bet-2")
            assert (await request_one(client, marker)).outcome is Outcome.REFUNDED
    assert await db.fetchval("SELECT state FROM bets WHERE tx = 'bet-1'") == "cancelled"
    stored = await db.fetchval(
        "SELECT outcome->>'outcome' FROM cancel_outcomes WHERE cancel_id = 'c-1'"
    )
    assert stored == "refunded"
    assert await balance(db) == Decimal("100.00")

    # A second redrive of the same dead letter is refused and publishes nothing.
    ends_before = await end_offsets(kafka, kafka.topics.requests)
    code, out = await refundctl("dlq", "redrive", "--id", letter["id"], "--id", "0:999")
    assert code == 1
    again = json.loads(out)
    assert (again["redriven"], again["already_redriven"], again["not_found"]) == (0, 1, 1)
    results = {item["id"]: item for item in again["items"]}
    assert results["0:999"]["result"] == "not_found"
    assert results[letter["id"]]["result"] == "already_redriven"
    assert results[letter["id"]]["redriven_at"] is not None
    code, out = await refundctl("dlq", "redrive", "--all")
    assert code == 0
    assert json.loads(out)["redriven"] == 0
    assert await end_offsets(kafka, kafka.topics.requests) == ends_before
    [listed] = await refundctl.json("dlq", "list")
    assert listed["redriven_at"] is not None
    assert await db.fetchval("SELECT count(*) FROM dead_letter_redrives") == 1
    await assert_conservation(db)


# --- status -------------------------------------------------------------------------------


async def test_status_shows_lag_tombstones_and_dead_letters(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection, refundctl: Refundctl
) -> None:
    for n in range(3):
        await seed_bet(db, f"bet-{n}")
    async with reply_client(kafka) as client:
        events = [cancel_event(client, cancel_id=f"c-{n}", bet_tx=f"bet-{n}") for n in range(3)]
        events.append(cancel_event(client, cancel_id="c-late", bet_tx="late"))
        for n, event in enumerate(events):
            await publish(kafka, kafka.topics.requests, [encode(event)], partition=n % 2)
        await publish(kafka, kafka.topics.requests, [b"garbage"], partition=3)

        before = await refundctl.json("status")
        assert before["topic"] == kafka.topics.requests
        assert before["consumer_group"] == kafka.consumer_group
        assert [(p["end_offset"], p["stored_offset"], p["lag"]) for p in before["partitions"]] == [
            (2, None, 2),
            (2, None, 2),
            (0, None, 0),
            (1, None, 1),
        ]
        assert before["lag"] == 5
        assert before["tombstones"] == {"count": 0, "oldest_at": None}
        assert before["last_applied_at"] is None
        assert before["dead_letters"]["count"] == 0

        async with running_worker(env):
            marker = cancel_event(client, cancel_id="c-marker", bet_tx="nope", player="p9")
            assert (await request_one(client, marker)).outcome is Outcome.BET_UNKNOWN

            async def caught_up() -> Any:
                report = await refundctl.json("status")
                return report if report["lag"] == 0 else None

            after = await wait_until(caught_up, timeout_s=30, interval_s=0.2)
    assert all(p["lag"] == 0 for p in after["partitions"])
    assert all(p["stored_offset"] == p["end_offset"] for p in after["partitions"])
    assert after["tombstones"]["count"] == 2  # c-late and the marker
    assert after["tombstones"]["oldest_at"] is not None
    assert after["last_applied_at"] is not None
    letters = await refundctl.json("dlq", "list")  # the garbage, maybe more than once
    assert {entry["source"] for entry in letters} == {f"{kafka.topics.requests}:3:0"}
    assert after["dead_letters"]["count"] == len(letters)
    code, out = await refundctl("status")
    assert code == 0
    assert "tombstones: 2 (oldest " in out
    assert f"dead letters: {len(letters)} in " in out
    await assert_conservation(db)


async def test_commands_fail_in_one_line_when_a_topic_is_missing(
    env: dict[str, str],
    refundctl: Refundctl,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KAFKA_TOPIC_PREFIX", f"missing-{uuid.uuid4().hex[:8]}.")
    for command in (["replay", "--from-beginning"], ["dlq", "list"], ["status"]):
        code = await asyncio.wait_for(asyncio.to_thread(cli.main, command), 60)
        err = capsys.readouterr().err
        assert code == 1
        assert err.count("\n") == 1
        assert "does not exist (run `refundctl topics create`)" in err


async def test_start_offsets_trust_a_time_index_only_when_the_records_confirm_it(
    env: dict[str, str], kafka: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tansu answers `offsets_for_times` with the log's first offset and its own clock,
    so the replay reads from the beginning there. A broker with a real time index (Kafka)
    is trusted when the records around its answer confirm it; the answers of such a
    broker are simulated here on the real records."""
    base = int(time.time() * 1000) - HOUR_MS
    topic = kafka.topics.requests
    for n in range(10):  # partition 0: one record a second
        await publish(kafka, topic, [b"x"], partition=0, timestamp_ms=base + n * 1000)
    await publish(kafka, topic, [b"x", b"x"], partition=2, timestamp_ms=base - HOUR_MS)
    since = base + 4500  # the first record at or after it: offset 5
    p0, p2 = TopicPartition(topic, 0), TopicPartition(topic, 2)
    tps = [TopicPartition(topic, p) for p in range(4)]
    async with standalone_consumer(kafka, "test") as consumer:
        consumer.assign(tps)
        bounds = await log_bounds(consumer, tps)
        assert bounds[p0] == (0, 10)
        beginnings = {tp: 0 for tp in tps}

        starts, how = await start_offsets(consumer, bounds, since)  # the broker's own answer
        if env.get("KAFKA_PRODUCER_IDEMPOTENCE") == "false":  # Tansu (tests.infra)
            assert (starts, how) == (beginnings, "scan")
        else:
            assert (starts, how) == ({**beginnings, p0: 5, p2: 2}, "time index")

        def broker_answers(answers: dict[TopicPartition, OffsetAndTimestamp | None]) -> None:
            async def offsets_for_times(_: object) -> dict[TopicPartition, Any]:
                return answers

            monkeypatch.setattr(consumer, "offsets_for_times", offsets_for_times)

        broker_answers({p0: OffsetAndTimestamp(5, base + 5000), p2: None})  # right
        assert await start_offsets(consumer, bounds, since) == (
            {**beginnings, p0: 5, p2: 2},
            "time index",
        )
        for wrong in (
            {p0: OffsetAndTimestamp(7, base + 7000), p2: None},  # too late: skips 5 and 6
            {p0: OffsetAndTimestamp(4, base + 4000), p2: None},  # stamped before since
            {p0: OffsetAndTimestamp(0, base + 9999), p2: None},  # not the record's stamp
            {p0: None, p2: None},  # the last record is newer than since
            {p0: OffsetAndTimestamp(5, base + 5000), p2: OffsetAndTimestamp(0, -1)},
        ):
            broker_answers(wrong)
            assert await start_offsets(consumer, bounds, since) == (beginnings, "scan")
