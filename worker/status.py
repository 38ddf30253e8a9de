"""`refundctl status`: lag per request partition, tombstones, the last applied event and
the dead letters, read with the operations commands' standalone access (worker.ops)."""

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition

from schemas.database import DatabaseSettings
from schemas.transport import KafkaSettings
from worker import ledger
from worker.ops.access import OperationError as OperationError  # `refundctl` names it here
from worker.ops.access import connect_db, log_bounds, standalone_consumer, topic_partitions


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def partition_lag(beginning: int, end: int, stored: int | None) -> int:
    """Events the worker group still has to apply in one partition.

    The worker resumes from its stored offset, or from the log's beginning where none is
    stored or the stored one lies outside the log (retention, a recreated topic)."""
    resume = stored if stored is not None and beginning <= stored <= end else beginning
    return end - resume


async def status(kafka: KafkaSettings, database: DatabaseSettings) -> dict[str, Any]:
    """The operator's view: lag per request partition, tombstones, last applied event,
    dead letters. JSON-ready."""
    requests, dead_letters = kafka.topics.requests, kafka.topics.dead_letters
    partitions = await topic_partitions(kafka, [requests, dead_letters])
    request_tps = [TopicPartition(requests, p) for p in partitions[requests]]
    dlq_tps = [TopicPartition(dead_letters, p) for p in partitions[dead_letters]]
    async with standalone_consumer(kafka, "refundctl-status") as consumer:
        bounds = await log_bounds(consumer, [*request_tps, *dlq_tps])
    conn = await connect_db(database)
    try:
        stored = await ledger.read_stored_offsets(conn, kafka.consumer_group, requests)
        activity = await ledger.ledger_activity(conn)
    finally:
        await conn.close()
    rows = []
    for tp in request_tps:
        beginning, end = bounds[tp]
        rows.append(
            {
                "partition": tp.partition,
                "end_offset": end,
                "stored_offset": stored.get(tp.partition),
                "lag": partition_lag(beginning, end, stored.get(tp.partition)),
            }
        )
    return {
        "topic": requests,
        "consumer_group": kafka.consumer_group,
        "partitions": rows,
        "lag": sum(row["lag"] for row in rows),
        "tombstones": {
            "count": activity.tombstones,
            "oldest_at": _iso(activity.oldest_tombstone_at),
        },
        "last_applied_at": _iso(activity.last_applied_at),
        "dead_letters": {
            "topic": dead_letters,
            "count": sum(end - beginning for beginning, end in (bounds[tp] for tp in dlq_tps)),
        },
    }


def render_status(report: Mapping[str, Any]) -> str:
    """The human table of `refundctl status`."""
    lines = [
        f"topic {report['topic']}, worker group {report['consumer_group']}",
        f"{'partition':>9}  {'end offset':>12}  {'stored offset':>13}  {'lag':>10}",
    ]
    for row in report["partitions"]:
        stored = "-" if row["stored_offset"] is None else str(row["stored_offset"])
        lines.append(
            f"{row['partition']:>9}  {row['end_offset']:>12}  {stored:>13}  {row['lag']:>10}"
        )
    tombstones = report["tombstones"]
    oldest = f" (oldest {tombstones['oldest_at']})" if tombstones["oldest_at"] else ""
    lines += [
        f"{'total':>9}  {'':>12}  {'':>13}  {report['lag']:>10}",
        f"tombstones: {tombstones['count']}{oldest}",
        f"last applied: {report['last_applied_at'] or 'never'}",
        f"dead letters: {report['dead_letters']['count']} in {report['dead_letters']['topic']}",
    ]
    return "\n".join(lines)
