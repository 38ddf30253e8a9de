"""No event can stop a partition (SPEC "Deadline"; issue 11, items 1 and 5).

Poison written straight to the request topic with a raw producer, between valid cancels
of the same player in the same partition, on the real broker and database: each poison
is dead-lettered with its reason and source offset (or answered `invalid` where that is
the contract), the valid cancels around it are refunded, and the partition's stored
offset ends past it. A decision that raises, and one the database refuses, come in
through the worker's front door: its `decide` parameter.
"""

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import asyncpg
import pydantic
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from adapters.bus import RequestReplyClient
from refundctl import config
from schemas import CancelOutcome, CancelRequested, Outcome, Provider
from schemas.transport import KafkaSettings, encode
from tests.support import assert_conservation, balance, cancel_event, reply_client, seed_bet
from worker import ledger
from worker.apply import Cause, Refusal, apply_isolating
from worker.consumer import RefundWorker
from worker.dead_letters import list_dead_letters
from worker.decision import Decision, LedgerSnapshot, decide_batch
from worker.records import contract_violation
from worker.replay import Window, replay

Json = dict[str, Any]

# The decision's test seam: it raises for these cancel ids, and for these it produces an
# outcome the database refuses (a NUL in a jsonb text: SQLSTATE 22P05), whatever the
# schemas accept or refuse.
BOOM = "boom-"
DB_REFUSES = "db-refuses-"


def poisoned_decide(
    events: list[CancelRequested], snapshot: LedgerSnapshot, now_ms: int
) -> list[tuple[CancelRequested, Decision]]:
    for event in events:
        if event.cancel_id.startswith(BOOM):
            raise RuntimeError(f"a bug deciding {event.cancel_id}")
    decided = decide_batch(events, snapshot, now_ms)
    return [
        (
            event,
            dataclasses.replace(
                decision,
                outcome=decision.outcome.model_copy(update={"ledger_tx": "nul\x00"}),
            )
            if event.cancel_id.startswith(DB_REFUSES)
            else decision,
        )
        for event, decision in decided
    ]


@dataclasses.dataclass(frozen=True)
class Poison:
    """One record the worker must not let stop its partition.

    `causes`: the dead-letter causes that may handle it (schemas and worker both check
    some things; either may be the one that refuses); `outcomes`: outcomes that are the
    contract's answer to it instead (stored, no money moved)."""

    name: str
    value: Callable[[RequestReplyClient], bytes | None]
    causes: frozenset[Cause] = frozenset()
    outcomes: frozenset[Outcome] = frozenset()
    reason: str = ""  # in the dead letter's reason, lowercased


def _event(client: RequestReplyClient, name: str, **changes: Any) -> CancelRequested:
    return cancel_event(client, cancel_id=f"x-{name}", bet_tx=f"bet-{name}", **changes)


def _raw(
    name: str, change: Callable[[Json], None], **event: Any
) -> Callable[[RequestReplyClient], bytes]:
    """The JSON of a valid cancel of `bet-<name>` (an open bet: a poison applied by
    mistake would refund it), changed by `change`."""

    def build(client: RequestReplyClient) -> bytes:
        body = _event(client, name, **event).model_dump(mode="json")
        change(body)
        return json.dumps(body).encode()

    return build


def _set(path: str, value: Any) -> Callable[[Json], None]:
    def change(body: Json) -> None:
        *parents, last = path.split(".")
        target: Any = body
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value

    return change


_DELETE = object()
DEAD = frozenset({Cause.UNDECODABLE, Cause.CONTRACT})  # refused before any transaction


def _poisons() -> list[Poison]:
    def raw(name: str, path: str, value: Any, **event: Any) -> Poison:
        return Poison(name, _raw(name, _set(path, value), **event), DEAD)

    def constant(name: str, value: bytes | None) -> Poison:
        return Poison(name, lambda _: value, frozenset({Cause.UNDECODABLE}))

    return [
        raw("nul-in-cancel-id", "cancel_id", "x-evil\x00tail"),
        raw("nul-in-bet-tx", "items.0.bet_tx", "bet-nul-in-bet-tx\x00"),
        raw("control-in-player", "player", "p1\x01"),
        raw("del-in-player", "player", "p1\x7f"),
        raw("escape-in-correlation-id", "correlation_id", "\x1b[31mred"),
        raw("nul-in-request-digest", "request_digest", "digest\x00"),
        raw("newline-in-round-id", "items.0.round_id", "r\n1"),
        raw("long-cancel-id", "cancel_id", "x" * 10_000),
        raw("long-bet-tx", "items.0.bet_tx", "b" * 10_000),
        raw("long-player", "player", "p" * 10_000),
        raw("amount-40-digits", "items.0.amount", "1" * 40),
        raw("amount-40-decimals", "items.0.amount", "0." + "0" * 39 + "1"),
        # 38 significant digits: refused by the schema's digit limit, or else refused by
        # the decision as not the debit's amount; never refunded.
        Poison(
            "amount-38-significant-digits",
            _raw(
                "amount-38-significant-digits",
                _set("items.0.amount", "10.000000000000000000000000000000000001"),
            ),
            DEAD,
            frozenset({Outcome.AMOUNT_MISMATCH}),
        ),
        raw("amount-json-number", "items.0.amount", 1e400),
        raw("amount-negative", "items.0.amount", "-10.00"),
        raw("amount-nan", "items.0.amount", "NaN"),
        raw("unknown-currency", "currency", "ZZZ"),
        Poison(
            "reply-to-another-topic",
            _raw("reply-to-another-topic", _set("reply_to.topic", "__consumer_offsets")),
            frozenset({Cause.CONTRACT}),
            reason="reply_to.topic",
        ),
        Poison(
            "scorpio-without-player",
            _raw("scorpio-without-player", _set("player", None)),
            frozenset({Cause.CONTRACT}),
            reason="without player",
        ),
        Poison(
            "amb-without-amounts",
            _raw("amb-without-amounts", _set("items.0.amount", None), provider=Provider.AMB),
            frozenset({Cause.CONTRACT}),
            reason="without items.amount",
        ),
        raw("scorpio-without-currency", "currency", None),
        raw("missing-items", "items", _DELETE),
        raw("missing-cancel-id", "cancel_id", _DELETE),
        raw("missing-reply-to", "reply_to", _DELETE),
        raw("ill-typed-deadline", "deadline_ms", "soon"),
        raw("ill-typed-items", "items", "bet-1"),
        raw("ill-typed-amount", "items.0.amount", [10]),
        raw("ill-typed-provider", "provider", "pokerstars"),
        raw("unknown-schema-version", "schema_version", 2),
        constant("wrong-schema-json", b'{"hello": "world", "items": [1, 2]}'),
        constant("json-array", b"[]"),
        constant("json-string", b'"a cancel"'),
        constant("not-json", b"\xff\xfe\x00 not json {"),
        constant("empty-value", None),
        Poison(
            "decision-raises",
            lambda client: encode(
                cancel_event(client, cancel_id=f"{BOOM}1", bet_tx="bet-decision-raises")
            ),
            frozenset({Cause.DECISION}),
            reason="runtimeerror: a bug deciding boom-1",
        ),
        Poison(
            "database-refuses",
            lambda client: encode(
                cancel_event(client, cancel_id=f"{DB_REFUSES}1", bet_tx="bet-database-refuses")
            ),
            frozenset({Cause.DATABASE}),
            reason="sqlstate 22p05",
        ),
        Poison(  # the contract's answer: `invalid`, stored nowhere
            "cancel-id-reused",
            lambda client: encode(cancel_event(client, cancel_id="ok-0", bet_tx="bet-reused")),
            outcomes=frozenset({Outcome.INVALID}),
        ),
    ]


POISONS = _poisons()
BETS = [f"bet-{p.name}" for p in POISONS]


def _ok(client: RequestReplyClient, n: int) -> CancelRequested:
    return cancel_event(client, cancel_id=f"ok-{n}", bet_tx=f"ok-{n}")


async def _seed(db: asyncpg.Connection, valid: int) -> None:
    await ledger.open_account(db, "p1", "EUR", Decimal("1000.00"))
    for tx in [f"ok-{n}" for n in range(valid)] + BETS:
        await seed_bet(db, tx)
    await seed_bet(db, "naga-bet", provider="naga")


async def _publish(kafka: KafkaSettings, values: list[bytes | None]) -> None:
    """In order, keyed like the player's cancels, in their partition (that of key p1)."""
    partitions = list(range(kafka.request_partitions))
    partition = DefaultPartitioner()(b"p1", partitions, partitions)
    producer = AIOKafkaProducer(**kafka.producer_options())
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(
                kafka.topics.requests, value, key=b"p1", partition=partition
            )
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def refund_worker(env: dict[str, str], batch_records_max: int) -> AsyncIterator[RefundWorker]:
    """A worker with the poisoned decision, yielded once it owns its partitions."""
    settings = config.worker_settings({**env, "WORKER_BATCH_RECORDS_MAX": str(batch_records_max)})
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    worker = RefundWorker(settings, pool, decide=poisoned_decide)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        joined = asyncio.create_task(worker.assigned.wait())
        await asyncio.wait({joined, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        joined.cancel()
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise AssertionError("the worker stopped before it joined") from task.exception()
        assert worker.assigned.is_set(), "worker got no partitions in time"
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await pool.close()


async def request_one(client: RequestReplyClient, event: CancelRequested) -> CancelOutcome:
    [outcome] = await client.request([event], event.deadline_ms)
    assert outcome is not None, "no outcome before the deadline"
    return outcome


@pytest.mark.integration
@pytest.mark.parametrize("batch_records_max", [500, 1], ids=["one-batch", "one-by-one"])
async def test_poison_matrix_is_dead_lettered_and_the_partition_moves_on(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection, batch_records_max: int
) -> None:
    """ok-0, poison, ok-1, poison, …, ok-N in one partition: in one batch (the worker
    splits it until each failing event stands alone) and one event per batch."""
    valid = len(POISONS) + 2
    await _seed(db, valid)
    async with reply_client(kafka) as client:
        values: list[bytes | None] = []
        for n, poison in enumerate(POISONS):
            values += [encode(_ok(client, n)), poison.value(client)]
        naga = cancel_event(
            client,
            cancel_id="naga-cancel",
            bet_tx="naga-bet",
            player=None,
            currency=None,
            amount=None,
            provider=Provider.NAGA,
        )
        values += [encode(_ok(client, len(POISONS))), encode(naga)]
        await _publish(kafka, values)
        async with refund_worker(env, batch_records_max) as worker:
            # The same key, so the same partition, last: answered once all before it are.
            last = await request_one(client, _ok(client, len(POISONS) + 1))
    assert last.outcome is Outcome.REFUNDED

    # The valid cancels around every poison were refunded, the Naga one from its bet.
    refunded = {
        row["tx"] for row in await db.fetch("SELECT tx FROM ledger_entries WHERE kind = 'refund'")
    }
    assert refunded == {f"ok-{n}" for n in range(valid)} | {"naga-bet"}
    # No poison moved money; its bet is still open.
    states: dict[str, str] = {
        tx: state
        for tx, state in await db.fetch("SELECT tx, state FROM bets WHERE tx = ANY($1)", BETS)
    }
    assert states == dict.fromkeys(BETS, "open")
    assert await balance(db) == Decimal("1000.00") - 10 * len(BETS)  # debited, not refunded
    await assert_conservation(db)

    # Each poison is dead-lettered, with its reason and source offset, or answered.
    [partition] = {
        row["partition"]
        for row in await db.fetch("SELECT partition FROM consumer_offsets WHERE next_offset > 0")
    }
    source = f"{kafka.topics.requests}:{partition}"
    letters: dict[str, list[str]] = {}
    for letter in await list_dead_letters(kafka, config.database_settings(env)):
        letters.setdefault(letter["source"], []).append(letter["reason"])
    stored: dict[str, str] = {
        cancel_id: outcome
        for cancel_id, outcome in await db.fetch(
            "SELECT cancel_id, outcome->>'outcome' FROM cancel_outcomes"
        )
    }
    handled: dict[str, str] = {}
    for n, poison in enumerate(POISONS):
        offset = 2 * n + 1
        reasons = letters.pop(f"{source}:{offset}", [])
        if reasons:
            causes = {reason.split(":", 1)[0] for reason in reasons}
            assert causes <= {c.value for c in poison.causes}, (poison.name, reasons)
            assert all(poison.reason in r.lower() for r in reasons), (poison.name, reasons)
            handled[poison.name] = "dead letter"
        else:
            answer = stored.get(f"x-{poison.name}")
            assert answer is not None or poison.outcomes == {Outcome.INVALID}, (
                f"{poison.name}: neither dead-lettered nor answered"
            )
            assert answer is None or Outcome(answer) in poison.outcomes, (poison.name, answer)
            handled[poison.name] = "answered"
    assert letters == {}, f"dead letters of valid events: {letters}"
    assert len(handled) == len(POISONS)
    # `invalid` is the contract's answer to a reused cancel id: stored nowhere.
    assert stored["ok-0"] == Outcome.REFUNDED.value
    assert handled["cancel-id-reused"] == "answered"
    assert handled["decision-raises"] == handled["database-refuses"] == "dead letter"

    # The partition's stored offset is past everything, the others untouched.
    offsets: dict[int, int] = {
        number: offset
        for number, offset in await db.fetch("SELECT partition, next_offset FROM consumer_offsets")
    }
    assert offsets[partition] == len(values) + 1
    assert sum(offsets.values()) == len(values) + 1

    metric = worker.metrics.registry.get_sample_value
    assert metric("refund_worker_dead_letters_total", {"cause": "decision"}) == 1
    assert metric("refund_worker_dead_letters_total", {"cause": "database"}) == 1
    isolating = metric("refund_worker_isolating_batches_total")
    assert isolating in (1, 2), "the batches the two poisoned decisions were in"


@pytest.mark.integration
async def test_a_database_refusal_dead_letters_only_its_event(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection
) -> None:
    """The events of one batch on both sides of the refused one, in other partitions
    too, are applied in the same transaction discipline: offsets chained per range."""
    await ledger.open_account(db, "p1", "EUR", Decimal("1000.00"))
    for n in range(40):
        await seed_bet(db, f"bet-{n}")
    await seed_bet(db, "bet-refused")
    async with reply_client(kafka) as client:
        events = [cancel_event(client, cancel_id=f"c-{n}", bet_tx=f"bet-{n}") for n in range(40)]
        events.insert(23, cancel_event(client, cancel_id=f"{DB_REFUSES}x", bet_tx="bet-refused"))
        producer = AIOKafkaProducer(**kafka.producer_options())
        await producer.start()
        try:
            for n, event in enumerate(events):  # one player spread over all partitions
                await producer.send(kafka.topics.requests, encode(event), partition=n % 4)
            await producer.flush()
        finally:
            await producer.stop()
        async with refund_worker(env, batch_records_max=500):
            marker = await request_one(client, cancel_event(client, cancel_id="m", bet_tx="none"))
    assert marker.outcome is Outcome.BET_UNKNOWN
    assert await db.fetchval("SELECT count(*) FROM ledger_entries WHERE kind = 'refund'") == 40
    assert await db.fetchval("SELECT state FROM bets WHERE tx = 'bet-refused'") == "open"
    [letter] = await list_dead_letters(kafka, config.database_settings(env))
    assert letter["source"] == f"{kafka.topics.requests}:{23 % 4}:{23 // 4}"
    assert letter["reason"].startswith("database: SQLSTATE 22P05: ")
    offsets: dict[int, int] = {
        number: offset
        for number, offset in await db.fetch("SELECT partition, next_offset FROM consumer_offsets")
    }
    assert sum(offsets.values()) == len(events) + 1  # the marker too
    await assert_conservation(db)


@pytest.mark.integration
async def test_replay_over_a_poisoned_topic_completes_and_counts_it_failed(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection
) -> None:
    await ledger.open_account(db, "p1", "EUR", Decimal("100.00"))
    for n in range(3):
        await seed_bet(db, f"bet-{n}")
    await seed_bet(db, "bet-boom")
    await seed_bet(db, "bet-refused")
    async with reply_client(kafka) as client:
        values: list[bytes | None] = [
            encode(cancel_event(client, cancel_id="c-0", bet_tx="bet-0")),
            encode(cancel_event(client, cancel_id=f"{BOOM}r", bet_tx="bet-boom")),
            encode(cancel_event(client, cancel_id="c-1", bet_tx="bet-1")),
            b"{not json",
            encode(cancel_event(client, cancel_id=f"{DB_REFUSES}r", bet_tx="bet-refused")),
            encode(cancel_event(client, cancel_id="c-2", bet_tx="bet-2")),
        ]
    await _publish(kafka, values)
    settings = config.worker_settings(env)

    async def run(dry_run: bool) -> dict[str, int]:
        report = await asyncio.wait_for(
            replay(settings, Window(), dry_run=dry_run, decide=poisoned_decide), 60
        )
        return report.counts.as_json()

    expected = {"events": 6, "applied": 3, "already_applied": 0, "failed": 3}
    assert await run(dry_run=True) == expected
    assert await db.fetchval("SELECT count(*) FROM cancel_outcomes") == 0
    assert await run(dry_run=False) == expected
    assert await balance(db) == Decimal("80.00")  # 100 - 5 x 10 + 3 x 10
    assert await db.fetchval("SELECT count(*) FROM bets WHERE state = 'open'") == 2
    assert await run(dry_run=False) == {**expected, "applied": 0, "already_applied": 3}
    assert await db.fetchval("SELECT count(*) FROM consumer_offsets") == 0
    await assert_conservation(db)


# --- pure: the bisection and the contract check ------------------------------------------


def _refused_by(poisoned: set[int], calls: list[tuple[int, int]]) -> Any:
    """An `attempt` that refuses any range holding a live poisoned entry."""
    import asyncpg.exceptions

    async def attempt(lo: int, hi: int, refused: Any) -> list[CancelOutcome]:
        calls.append((lo, hi))
        if any(i in poisoned and i not in refused for i in range(lo, hi)):
            raise asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence")
        return [_outcome(i) for i in range(lo, hi) if i not in refused]

    return attempt


def _outcome(i: int) -> CancelOutcome:
    return CancelOutcome.model_validate(
        {
            "correlation_id": f"c{i}",
            "provider": "scorpio",
            "cancel_id": f"c{i}",
            "outcome": "refunded",
            "items": [{"bet_tx": f"b{i}", "outcome": "refunded"}],
            "ledger_tx": "t",
            "decided_at_ms": 0,
        }
    )


@pytest.mark.parametrize(
    ("size", "poisoned"),
    [
        (1, set()),
        (1, {0}),
        (2, {1}),
        (500, {0}),
        (500, {499}),
        (500, {7, 8, 300}),
        (64, set(range(64))),
    ],
)
async def test_the_bisection_isolates_each_poison_within_its_bound(
    size: int, poisoned: set[int]
) -> None:
    calls: list[tuple[int, int]] = []
    isolation = await apply_isolating([True] * size, _refused_by(poisoned, calls))
    assert isolation.stopped is None
    assert isolation.settled == size
    assert set(isolation.refused) == poisoned
    assert all(
        r.cause is Cause.DATABASE and "SQLSTATE 22021" in r.reason
        for r in isolation.refused.values()
    )
    assert sorted(isolation.outcomes) == [i for i in range(size) if i not in poisoned]
    assert isolation.attempts == len(calls) <= 3 * size + 1
    if len(poisoned) == 1 and size == 500:
        assert len(calls) <= 2 * 9 + 3  # about two ranges per halving, not one per event


async def test_a_failure_no_event_can_be_blamed_for_stops_with_the_committed_prefix() -> None:
    calls: list[tuple[int, int]] = []

    async def attempt(lo: int, hi: int, refused: Any) -> list[CancelOutcome]:
        calls.append((lo, hi))
        if 3 in range(lo, hi) and 3 not in refused:
            raise asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence")
        if hi > 5:  # the environment: a read-only database, say
            raise asyncpg.exceptions.ReadOnlySQLTransactionError("read-only transaction")
        return [_outcome(i) for i in range(lo, hi) if i not in refused]

    isolation = await apply_isolating([True] * 8, attempt)
    assert isinstance(isolation.stopped, asyncpg.exceptions.ReadOnlySQLTransactionError)
    assert isolation.settled == 4  # [0, 4) committed, 3 dead-lettered with them
    assert set(isolation.refused) == {3}
    assert sorted(isolation.outcomes) == [0, 1, 2]


async def test_entries_without_an_event_are_never_blamed() -> None:
    async def attempt(lo: int, hi: int, refused: Any) -> list[CancelOutcome]:
        raise asyncpg.exceptions.CheckViolationError("check")

    isolation = await apply_isolating([False, False], attempt)
    assert isolation.settled == 0
    assert isolation.refused == {}
    assert isinstance(isolation.stopped, asyncpg.exceptions.CheckViolationError)


def test_the_contract_per_provider() -> None:
    from schemas import CancelItem, ReplyTo

    def event(provider: Provider, **fields: Any) -> CancelRequested:
        values: Json = {
            "correlation_id": "c",
            "provider": provider,
            "cancel_id": "x",
            "player": "p1",
            "currency": "EUR",
            "items": [CancelItem(bet_tx="b", amount=Decimal("1.00"))],
            "request_digest": "d",
            "reply_to": ReplyTo(topic="replies", partition=0),
            "deadline_ms": 1,
            "requested_at_ms": 1,
            **fields,
        }
        return CancelRequested.model_construct(**values)  # what a topic's writer may send

    bare = {"player": None, "currency": None, "items": [CancelItem(bet_tx="b")]}
    for provider in Provider:
        assert contract_violation(event(provider), "replies") is None
        other = event(provider, reply_to=ReplyTo(topic="__consumer_offsets", partition=0))
        assert "reply_to.topic" in (contract_violation(other, "replies") or "")
    assert contract_violation(event(Provider.NAGA, **bare), "replies") is None
    assert contract_violation(event(Provider.HPGAMES, currency=None), "replies") is None
    for provider in (Provider.SCORPIO, Provider.AMB, Provider.HPGAMES):
        missing = contract_violation(event(provider, **bare), "replies")
        assert missing is not None
        assert "player" in missing
        assert "items.amount" in missing
    assert "currency" in (
        contract_violation(event(Provider.SCORPIO, currency=None), "replies") or ""
    )
    assert "currency" in (contract_violation(event(Provider.AMB, currency=None), "replies") or "")
    for name in ("cancel_id", "player", "request_digest", "correlation_id"):
        bad = event(Provider.NAGA, **{name: "a\x00b"})
        assert contract_violation(bad, "replies") == f"a control character in {name}"


def test_refusals_name_their_cause() -> None:
    from worker.apply import DecisionFailed, refusal_of

    assert refusal_of(DecisionFailed(KeyError("x"))) == Refusal(
        Cause.DECISION, "raised KeyError: 'x'"
    )
    refusal = refusal_of(asyncpg.exceptions.NumericValueOutOfRangeError("overflow"))
    assert refusal is not None
    assert refusal.reason == "SQLSTATE 22003: overflow"
    try:
        CancelOutcome.model_validate_json(b"{}")
    except pydantic.ValidationError as exc:
        unreadable = refusal_of(exc)
    assert unreadable is not None
    assert unreadable.cause is Cause.DATABASE
    assert unreadable.reason.startswith("a stored row it touches is unreadable: ")
    for not_the_event in (
        asyncpg.exceptions.SerializationError("retry"),
        asyncpg.exceptions.UniqueViolationError("a race"),
        asyncpg.exceptions.UndefinedTableError("no table"),
        asyncpg.exceptions.DiskFullError("full"),
        RuntimeError("in the ledger code"),
    ):
        assert refusal_of(not_the_event) is None


def test_the_ranges_of_a_batch_chain_their_offsets() -> None:
    from aiokafka.structs import ConsumerRecord

    from worker.batch_plan import BatchPlan as _BatchPlan
    from worker.ledger import OffsetAdvance

    def record(partition: int, offset: int) -> ConsumerRecord[bytes, bytes]:
        return ConsumerRecord("t", partition, offset, 0, 0, None, b"", None, 0, 0, [])

    # partition 0: offsets 5, 6, 9 (a gap in the log); partition 1: 0, 1
    plan = _BatchPlan([record(0, 5), record(0, 6), record(0, 9), record(1, 0), record(1, 1)])
    whole = [OffsetAdvance("t", 0, 5, 10), OffsetAdvance("t", 1, 0, 2)]
    assert plan.advances(0) == plan.advances(0, 5) == whole
    # Split anywhere: each range's compare-and-set starts where the last one ended.
    assert plan.advances(0, 2) == [OffsetAdvance("t", 0, 5, 9)]
    assert plan.advances(2, 4) == [OffsetAdvance("t", 0, 9, 10), OffsetAdvance("t", 1, 0, 1)]
    assert plan.advances(4) == [OffsetAdvance("t", 1, 1, 2)]


@pytest.mark.integration
async def test_a_record_too_large_for_the_dead_letter_topic_does_not_stop_the_partition(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection
) -> None:
    """A record as large as the broker takes fits the request topic but not, with the
    dead-letter headers added, the dead-letter topic: its dead letter carries the reason
    and source, not the value (which stays at its source)."""
    await seed_bet(db, "bet-1")
    value = b"x" * (1_048_588 - 100)  # the broker's default limit, minus the batch's bytes
    await _publish(kafka, [value])
    async with reply_client(kafka) as client, refund_worker(env, batch_records_max=500):
        after = await request_one(client, cancel_event(client, cancel_id="c-1", bet_tx="bet-1"))
    assert after.outcome is Outcome.REFUNDED
    [large] = await list_dead_letters(kafka, config.database_settings(env))
    assert large["source"].endswith(":0")
    assert large["reason"].startswith("undecodable: ")
    assert "not copied" in large["reason"]
    assert large["size"] == 0
    offsets: dict[int, int] = {
        number: offset
        for number, offset in await db.fetch("SELECT partition, next_offset FROM consumer_offsets")
    }
    assert sum(offsets.values()) == 2
