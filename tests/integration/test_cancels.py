"""`refundctl cancel show` on the real broker and database: a refunded cancel with its
balances and the place of its event in the request topic, a tombstone, a dead letter,
an unknown cancel, an outcome stored before the source was recorded."""

import asyncio
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from adapters.bus import event_key
from refundctl import cli
from schemas import Outcome, ReplyTo
from schemas.transport import KafkaSettings, decode_request, encode
from tests.integration.test_operations import Refundctl, publish, request_one
from tests.integration.test_operations import refundctl as refundctl  # the fixture
from tests.support import (
    assert_conservation,
    balance,
    cancel_event,
    reply_client,
    running_worker,
    seed_bet,
)

pytestmark = pytest.mark.integration


async def read_at(bootstrap: str, topic: str, partition: int, offset: int) -> bytes | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        record = await asyncio.wait_for(consumer.getone(), 15)
        value: bytes | None = record.value  # aiokafka is untyped
        return value
    finally:
        await consumer.stop()


async def show(refundctl: Refundctl, provider: str, cancel_id: str) -> Any:
    return await refundctl.json("cancel", "show", "--provider", provider, "--id", cancel_id)


async def test_a_refunded_cancel_with_its_balances_and_source(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection, refundctl: Refundctl
) -> None:
    await seed_bet(db, "bet-1", amount="10.50")
    await seed_bet(db, "bet-2")
    async with reply_client(kafka) as client, running_worker(env):
        event = cancel_event(client, cancel_id="c-1", bet_tx="bet-1", amount=Decimal("10.50"))
        assert (await request_one(client, event)).outcome is Outcome.REFUNDED
        # A retry is answered from the stored outcome: the source stays the first event's.
        retry = event.model_copy(update={"correlation_id": "retry-1"})
        assert (await request_one(client, retry)).replayed
    assert await balance(db) == Decimal("90.00")

    cancel = await show(refundctl, "scorpio", "c-1")
    source = cancel.pop("source")
    applied_at = cancel.pop("applied_at")
    decided_at = cancel.pop("decided_at")
    ledger_tx = cancel.pop("ledger_tx")
    assert cancel == {
        "provider": "scorpio",
        "cancel_id": "c-1",
        "outcome": "refunded",
        "correlation_id": event.correlation_id,
        "player": "p1",
        "currency": "EUR",
        "balance_before": "79.50",
        "balance_after": "90.00",
        "items": [{"bet_tx": "bet-1", "outcome": "refunded", "amount": "10.50"}],
        "tombstones": [],
        "dead_letters": [],
        "dead_letters_scanned": {
            "topic": kafka.topics.dead_letters,
            "records": 0,
            "complete": True,
        },
    }
    assert applied_at.endswith("+00:00")
    assert decided_at.endswith("+00:00")
    assert ledger_tx
    # The stored place is the first event's, in the request topic.
    assert source["topic"] == kafka.topics.requests
    value = await read_at(
        kafka.bootstrap_servers, source["topic"], source["partition"], source["offset"]
    )
    assert value is not None
    assert decode_request(value).correlation_id == event.correlation_id

    code, out = await refundctl("cancel", "show", "--provider", "scorpio", "--id", "c-1")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "scorpio cancel c-1"
    assert lines[1] == f"  outcome:      refunded, applied at {applied_at}"
    assert lines[2] == "  balance:      79.50 -> 90.00 (p1 EUR)"
    assert lines[3] == "  item:         bet-1 refunded 10.50"
    assert lines[4] == (
        f"  source:       {source['topic']}:{source['partition']}:{source['offset']}"
    )
    assert lines[-1] == "  dead letters: 0 in 0 read"
    await assert_conservation(db)


async def test_a_cancel_of_an_unknown_bet_shows_its_tombstone(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection, refundctl: Refundctl
) -> None:
    async with reply_client(kafka) as client, running_worker(env):
        event = cancel_event(client, cancel_id="c-late", bet_tx="late")
        assert (await request_one(client, event)).outcome is Outcome.BET_UNKNOWN
    cancel = await show(refundctl, "scorpio", "c-late")
    assert cancel["outcome"] == "bet_unknown"
    assert [t["tx"] for t in cancel["tombstones"]] == ["late"]
    assert cancel["items"] == [{"bet_tx": "late", "outcome": "bet_unknown", "amount": "10.00"}]
    code, out = await refundctl("cancel", "show", "--provider", "scorpio", "--id", "c-late")
    assert code == 0
    assert f"  tombstone:    late at {cancel['tombstones'][0]['at']}" in out.splitlines()


async def test_a_dead_lettered_cancel_shows_its_dead_letter(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection, refundctl: Refundctl
) -> None:
    await seed_bet(db, "bet-1")
    await seed_bet(db, "bet-2")
    async with reply_client(kafka) as client:
        # Breaks the contract: its outcome would go to a topic the ingress does not read.
        stray = cancel_event(client, cancel_id="c-stray", bet_tx="bet-1").model_copy(
            update={"reply_to": ReplyTo(topic="elsewhere", partition=0)}
        )
        await publish(kafka, kafka.topics.requests, [encode(stray)], key=event_key(stray))
        async with running_worker(env):
            # Same key, same partition: once this is answered, the stray was dead-lettered.
            marker = cancel_event(client, cancel_id="c-2", bet_tx="bet-2")
            assert event_key(marker) == event_key(stray)
            assert (await request_one(client, marker)).outcome is Outcome.REFUNDED

    cancel = await show(refundctl, "scorpio", "c-stray")
    assert cancel["outcome"] is None
    assert cancel["source"] is None
    assert cancel["items"] == cancel["tombstones"] == []
    assert cancel["dead_letters"]
    letter = cancel["dead_letters"][0]
    assert letter["reason"].startswith("contract: reply_to.topic 'elsewhere'")
    assert letter["source"].startswith(f"{kafka.topics.requests}:")
    assert letter["redriven_at"] is None
    assert cancel["dead_letters_scanned"]["complete"] is True
    assert cancel["dead_letters_scanned"]["records"] == len(cancel["dead_letters"])
    code, out = await refundctl("cancel", "show", "--provider", "scorpio", "--id", "c-stray")
    assert code == 0
    assert "  outcome:      none stored (not applied)" in out.splitlines()
    assert f"  dead letter:  {letter['id']} from {letter['source']}: {letter['reason']}" in out
    # Another provider's cancel of the same id is another cancel: unknown.
    code, _ = await refundctl("cancel", "show", "--provider", "amb", "--id", "c-stray")
    assert code == 1
    assert await balance(db) == Decimal("90.00")  # bet-2 only


async def test_an_unknown_cancel_is_refused_in_one_line(
    env: dict[str, str], refundctl: Refundctl, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    command = ["cancel", "show", "--provider", "naga", "--id", "nope", "--json"]
    code = await asyncio.wait_for(asyncio.to_thread(cli.main, command), 60)
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert captured.err == (
        "refundctl: no cancel naga 'nope': no stored outcome, and no dead letter in the whole"
        " dead-letter topic\n"
    )


async def test_an_outcome_stored_without_its_source_shows_none(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection, refundctl: Refundctl
) -> None:
    """Outcomes stored before migration 004 (and by `refundctl replay`) have no source."""
    await seed_bet(db, "bet-1")
    async with reply_client(kafka) as client, running_worker(env):
        event = cancel_event(client, cancel_id="c-1", bet_tx="bet-1")
        assert (await request_one(client, event)).outcome is Outcome.REFUNDED
    await db.execute(
        "UPDATE cancel_outcomes SET source_topic = NULL, source_partition = NULL,"
        " source_offset = NULL"
    )
    cancel = await show(refundctl, "scorpio", "c-1")
    assert cancel["outcome"] == "refunded"
    assert cancel["source"] is None
    code, out = await refundctl("cancel", "show", "--provider", "scorpio", "--id", "c-1")
    assert code == 0
    assert "  source:       -" in out.splitlines()
