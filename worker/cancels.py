"""`refundctl cancel show`: one cancel as the service knows it.

From the database: its stored outcome (what every retry is answered), when it was
applied, the balances reported, the items, where its event sat in the request topic
(stored with the outcome since migration 004; None for older outcomes and for those
stored by `refundctl replay`), and the tombstones it left. From the dead-letter topic:
the dead letters whose event names this provider and cancel id, found by a bounded read
of each partition's latest records (`SCAN_RECORDS_MAX` in all); the answer says how
many it read and whether that was the whole topic.

A cancel with neither a stored outcome nor a dead letter is unknown: OperationError.
"""

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from schemas import CancelOutcome, Provider, format_amount
from schemas.database import DatabaseSettings
from schemas.money import MoneyError
from schemas.transport import KafkaSettings
from worker import dead_letters, ledger
from worker.ops.access import (
    OperationError,
    connect_db,
    log_bounds,
    standalone_consumer,
    topic_partitions,
)
from worker.ops.reader import read_range

SCAN_RECORDS_MAX = 20_000  # dead-letter records read per look-up, over all partitions
_CHUNK_MAX = 500


def _amount(value: Decimal | None, currency: str | None) -> str | None:
    """An amount as a decimal string, with the currency's minor units where known."""
    if value is None:
        return None
    if currency is not None:
        try:
            return format_amount(value, currency)
        except (MoneyError, KeyError):
            pass
    return format(value, "f")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


async def _stored(
    database: DatabaseSettings, provider: Provider, cancel_id: str
) -> dict[str, Any] | None:
    """The stored outcome as `cancel show` prints it, or None when none is stored."""
    conn = await connect_db(database)
    try:
        row = await conn.fetchrow(
            "SELECT outcome::text AS outcome, created_at, source_topic, source_partition,"
            " source_offset FROM cancel_outcomes WHERE provider = $1 AND cancel_id = $2",
            provider.value,
            cancel_id,
        )
        if row is None:
            return None
        outcome = CancelOutcome.model_validate_json(row["outcome"])
        # A cancel's tombstones are on its own items' bets (the primary key finds them).
        tombstones = await conn.fetch(
            "SELECT tx, created_at FROM tombstones"
            " WHERE provider = $1 AND tx = ANY($2::text[]) AND cancel_id = $3 ORDER BY tx",
            provider.value,
            [item.bet_tx for item in outcome.items],
            cancel_id,
        )
    finally:
        await conn.close()
    currency = outcome.currency
    return {
        "outcome": outcome.outcome.value,
        "applied_at": _iso(row["created_at"]),
        "decided_at": _iso(datetime.fromtimestamp(outcome.decided_at_ms / 1000, UTC)),
        "correlation_id": outcome.correlation_id,
        "ledger_tx": outcome.ledger_tx,
        "player": outcome.player,
        "currency": currency,
        "balance_before": _amount(outcome.balance_before, currency),
        "balance_after": _amount(outcome.balance_after, currency),
        "items": [
            {
                "bet_tx": item.bet_tx,
                "outcome": item.outcome.value,
                "amount": _amount(item.amount, currency),
            }
            for item in outcome.items
        ],
        "source": None
        if row["source_topic"] is None
        else {
            "topic": row["source_topic"],
            "partition": row["source_partition"],
            "offset": row["source_offset"],
        },
        "tombstones": [{"tx": t["tx"], "at": _iso(t["created_at"])} for t in tombstones],
    }


def _names(record: ConsumerRecord[bytes, bytes], provider: Provider, cancel_id: str) -> bool:
    """Whether a dead letter's event names this provider and cancel id (read as JSON,
    not as a valid event: a dead letter often is not one)."""
    if not record.value:
        return False
    try:
        event = json.loads(record.value)
    except ValueError:  # not JSON, or not UTF-8: it names nothing we can read
        return False
    return (
        isinstance(event, dict)
        and event.get("provider") == provider.value
        and event.get("cancel_id") == cancel_id
    )


async def _dead_letters(
    kafka: KafkaSettings, database: DatabaseSettings, provider: Provider, cancel_id: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The dead letters of this cancel among the latest records of the dead-letter
    topic (at most SCAN_RECORDS_MAX in all), and what was read."""
    topic = kafka.topics.dead_letters
    tps = [TopicPartition(topic, p) for p in (await topic_partitions(kafka, [topic]))[topic]]
    per_partition = max(1, SCAN_RECORDS_MAX // max(1, len(tps)))
    found: list[dict[str, Any]] = []
    read = 0
    async with standalone_consumer(kafka, "refundctl-cancel", _CHUNK_MAX) as consumer:
        consumer.assign(tps)
        bounds = await log_bounds(consumer, tps)
        ranges = {tp: (max(start, end - per_partition), end) for tp, (start, end) in bounds.items()}
        complete = all(ranges[tp][0] == start for tp, (start, _) in bounds.items())
        async for records in read_range(consumer, ranges, max_records=_CHUNK_MAX):
            read += len(records)
            found.extend(
                dead_letters.describe(r) for r in records if _names(r, provider, cancel_id)
            )
    if found:
        places = [(int(p), int(o)) for p, o in (entry["id"].split(":") for entry in found)]
        conn = await connect_db(database)
        try:
            redriven = await ledger.redriven_at(conn, topic, places)
        finally:
            await conn.close()
        for place, entry in zip(places, found, strict=True):
            if place in redriven:
                entry["redriven_at"] = _iso(redriven[place])
    found.sort(key=lambda entry: dead_letters.DeadLetterId.parse(entry["id"]))
    return found, {"topic": topic, "records": read, "complete": complete}


_NOT_STORED: dict[str, Any] = {
    "outcome": None,
    "applied_at": None,
    "decided_at": None,
    "correlation_id": None,
    "ledger_tx": None,
    "player": None,
    "currency": None,
    "balance_before": None,
    "balance_after": None,
    "items": [],
    "source": None,
    "tombstones": [],
}


async def show_cancel(
    kafka: KafkaSettings, database: DatabaseSettings, provider: Provider, cancel_id: str
) -> dict[str, Any]:
    """One cancel as `refundctl cancel show --json` prints it; OperationError when the
    service knows nothing of it."""
    stored = await _stored(database, provider, cancel_id)
    letters, scanned = await _dead_letters(kafka, database, provider, cancel_id)
    if stored is None and not letters:
        where = (
            "the whole dead-letter topic"
            if scanned["complete"]
            else (f"the latest {scanned['records']} dead letters")
        )
        raise OperationError(
            f"no cancel {provider.value} {cancel_id!r}: no stored outcome, and no dead letter"
            f" in {where}"
        )
    return {
        "provider": provider.value,
        "cancel_id": cancel_id,
        **(_NOT_STORED if stored is None else stored),
        "dead_letters": letters,
        "dead_letters_scanned": scanned,
    }


def render(cancel: dict[str, Any]) -> str:
    """`refundctl cancel show` without --json."""
    lines = [f"{cancel['provider']} cancel {cancel['cancel_id']}"]
    if cancel["outcome"] is None:
        lines.append("  outcome:      none stored (not applied)")
    else:
        lines.append(f"  outcome:      {cancel['outcome']}, applied at {cancel['applied_at']}")
        account = " ".join(str(v) for v in (cancel["player"], cancel["currency"]) if v)
        lines.append(
            f"  balance:      {cancel['balance_before'] or '-'} -> "
            f"{cancel['balance_after'] or '-'}" + (f" ({account})" if account else "")
        )
        for item in cancel["items"]:
            lines.append(
                f"  item:         {item['bet_tx']} {item['outcome']} {item['amount'] or '-'}"
            )
        source = cancel["source"]
        lines.append(
            "  source:       "
            + (
                "-"
                if source is None
                else f"{source['topic']}:{source['partition']}:{source['offset']}"
            )
        )
        lines.append(f"  ledger tx:    {cancel['ledger_tx']}")
        for tombstone in cancel["tombstones"]:
            lines.append(f"  tombstone:    {tombstone['tx']} at {tombstone['at']}")
    for letter in cancel["dead_letters"]:
        redriven = "" if letter["redriven_at"] is None else f", redriven at {letter['redriven_at']}"
        lines.append(
            f"  dead letter:  {letter['id']} from {letter['source'] or '-'}: {letter['reason']}"
            f"{redriven}"
        )
    scanned = cancel["dead_letters_scanned"]
    lines.append(
        f"  dead letters: {len(cancel['dead_letters'])} in {scanned['records']} read"
        + ("" if scanned["complete"] else " (the latest only)")
    )
    return "\n".join(lines)
