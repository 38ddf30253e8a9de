"""Leases on reply partitions: an ingress instance owns its reply partition for as long
as it renews the lease, so instances need no manual numbering.

All SQL of the ingress is here (it never touches the ledger).
"""

import asyncpg

LEASE_TTL_S = 30  # a crashed instance's partition is free again after this
ACQUIRE_ATTEMPTS_MAX = 8


class NoReplyPartition(Exception):
    """Every reply partition is leased: run fewer instances or add reply partitions."""


async def acquire(pool: asyncpg.Pool, topic: str, partitions: int, owner: str) -> int:
    """Lease the lowest free (or expired) reply partition; returns its number."""
    for _ in range(ACQUIRE_ATTEMPTS_MAX):
        partition = await pool.fetchval(
            """
            INSERT INTO reply_partition_leases (topic, partition, owner, expires_at)
            SELECT $1, p, $3, now() + make_interval(secs => $4)
            FROM generate_series(0, $2 - 1) AS p
            WHERE NOT EXISTS (
                SELECT 1 FROM reply_partition_leases l
                WHERE l.topic = $1 AND l.partition = p AND l.expires_at > now()
                  AND l.owner <> $3)
            ORDER BY p LIMIT 1
            ON CONFLICT (topic, partition) DO UPDATE
                SET owner = excluded.owner, expires_at = excluded.expires_at
                WHERE reply_partition_leases.expires_at <= now()
                   OR reply_partition_leases.owner = excluded.owner
            RETURNING partition
            """,
            topic,
            partitions,
            owner,
            float(LEASE_TTL_S),
        )
        if partition is not None:
            return int(partition)
        # Lost a race for the same partition, or none is free: look again.
        free = await pool.fetchval(
            "SELECT $2 - count(*) FROM reply_partition_leases"
            " WHERE topic = $1 AND expires_at > now() AND owner <> $3",
            topic,
            partitions,
            owner,
        )
        if not free:
            break
    raise NoReplyPartition(f"all {partitions} partitions of {topic} are leased")


async def renew(pool: asyncpg.Pool, topic: str, partition: int, owner: str) -> bool:
    """Extend the lease; False if another instance took it (ours had expired)."""
    renewed = await pool.fetchval(
        "UPDATE reply_partition_leases SET expires_at = now() + make_interval(secs => $4)"
        " WHERE topic = $1 AND partition = $2 AND owner = $3 RETURNING 1",
        topic,
        partition,
        owner,
        float(LEASE_TTL_S),
    )
    return renewed is not None


async def release(pool: asyncpg.Pool, topic: str, partition: int, owner: str) -> None:
    await pool.execute(
        "DELETE FROM reply_partition_leases WHERE topic = $1 AND partition = $2 AND owner = $3",
        topic,
        partition,
        owner,
    )
