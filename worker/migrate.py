"""Schema migrations: numbered SQL files applied once each, in order, idempotently.

What a DBA can rely on:

- **One migrator at a time**: a session advisory lock, waited for at most
  `LOCK_WAIT_S_MAX` (another migrator holding it longer is an error, not a hang).
- **Each file in its own transaction**, recorded in `schema_migrations` in that same
  transaction: a failing file leaves the files before it applied and recorded, and
  nothing of itself.
- **A checksum per applied file** (SHA-256 of its text): a file changed after it was
  applied is refused before anything runs (`MigrationError`, one line). A database
  migrated before checksums existed gets the current files' checksums recorded on the
  first run.
- **`lock_timeout`** on every statement of a migration (default 5 s): a DDL statement
  that would queue behind a long transaction (and make every query on that table queue
  behind *it*) fails instead; run it again later.
- **No-transaction files**: a file whose first line is `-- migrate: no-transaction`
  runs outside a transaction, one statement at a time (statements end with `;` at the
  end of a line; no function bodies), for what PostgreSQL refuses inside one
  (`CREATE INDEX CONCURRENTLY`). Such a file must be safe to run again (`IF NOT
  EXISTS`): it is recorded only once all of it ran, and it is refused while an index
  is left invalid by a failed concurrent build (drop it, then migrate again).
"""

import asyncio
import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from importlib import resources
from typing import Any

import asyncpg

from worker.ledger import Connection
from worker.status import OperationError

_LOCK_KEY = 0x72656675_6E64  # one migrator at a time, across processes
LOCK_WAIT_S_MAX = 60.0  # waiting for another migrator
_LOCK_POLL_S = 0.2
LOCK_TIMEOUT_MS_DEFAULT = 5000  # PostgreSQL's lock_timeout for each migration statement
NO_TRANSACTION_MARKER = "-- migrate: no-transaction"

_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name        text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text
"""
# A statement of a no-transaction file ends with `;` at the end of a line.
_STATEMENT_END = re.compile(r";[ \t]*(?:--[^\n]*)?$", re.MULTILINE)


class MigrationError(OperationError):
    """The migrations cannot be applied as they are; `str()` is the one-line reason."""


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def transactional(self) -> bool:
        first_line = self.sql.lstrip("\ufeff").split("\n", 1)[0].strip()
        return first_line != NO_TRANSACTION_MARKER

    def statements(self) -> list[str]:
        """The statements of a no-transaction file, each run on its own."""
        statements: list[str] = []
        start = 0
        for end in _STATEMENT_END.finditer(self.sql):
            statements.append(self.sql[start : end.start() + 1])
            start = end.end()
        statements.append(self.sql[start:])
        return [s for s in statements if _without_comments(s).strip()]


def _without_comments(sql: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines())


def migration_files() -> list[Migration]:
    folder = resources.files("worker") / "migrations"
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [Migration(name, (folder / name).read_text()) for name in names]


async def _applied(conn: Connection) -> dict[str, asyncpg.Record]:
    """The applied migrations by name (name, applied_at, checksum: None when recorded
    before checksums existed); empty when nothing was ever migrated. Read only."""
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return {}
    has_checksum = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'schema_migrations'::regclass"
        " AND attname = 'checksum' AND NOT attisdropped)"
    )
    checksum = "checksum" if has_checksum else "NULL::text AS checksum"
    rows = await conn.fetch(
        f"SELECT name, applied_at, {checksum} FROM schema_migrations ORDER BY name"  # noqa: S608
    )
    return {row["name"]: row for row in rows}


def _mismatches(applied: dict[str, asyncpg.Record], files: Sequence[Migration]) -> list[str]:
    return [
        m.name
        for m in files
        if m.name in applied
        and applied[m.name]["checksum"] is not None
        and applied[m.name]["checksum"] != m.checksum
    ]


async def status(conn: Connection, files: Sequence[Migration] | None = None) -> dict[str, Any]:
    """`refundctl migrate --status`: what is applied (with when and its checksum),
    pending, and whether each applied file still has the checksum recorded for it.
    Writes nothing."""
    files = migration_files() if files is None else files
    applied = await _applied(conn)
    by_name = {m.name: m for m in files}
    mismatch = _mismatches(applied, files)
    unrecorded = [
        name for name, row in applied.items() if row["checksum"] is None and name in by_name
    ]
    return {
        "applied": [
            {
                "name": name,
                "applied_at": row["applied_at"].astimezone(UTC).isoformat(),
                "checksum": row["checksum"],
            }
            for name, row in applied.items()
        ],
        "pending": [m.name for m in files if m.name not in applied],
        "checksums": {
            "ok": [
                name
                for name, row in applied.items()
                if name in by_name and row["checksum"] == by_name[name].checksum
            ],
            "mismatch": mismatch,
            # Applied before checksums existed: recorded by the next `refundctl migrate`.
            "unrecorded": unrecorded,
        },
        # Applied here, but no such file in this version of the code (a newer one ran).
        "unknown": [name for name in applied if name not in by_name],
    }


async def _lock(conn: Connection, wait_s_max: float) -> None:
    deadline = time.monotonic() + wait_s_max
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_KEY):
        if time.monotonic() >= deadline:
            raise MigrationError(
                f"another migration has held the migration lock for over {wait_s_max:g} s"
            )
        await asyncio.sleep(_LOCK_POLL_S)


async def migrate(
    conn: Connection,
    files: Sequence[Migration] | None = None,
    *,
    lock_timeout_ms: int = LOCK_TIMEOUT_MS_DEFAULT,
    lock_wait_s_max: float = LOCK_WAIT_S_MAX,
) -> list[str]:
    """Apply the migrations not applied yet, each in its own transaction (or none, for
    a no-transaction file); returns their names. Raises MigrationError when an applied
    file has changed, a statement waited past `lock_timeout_ms` for a lock, or a file
    failed (the files before it stay applied)."""
    files = migration_files() if files is None else files
    if conn.is_in_transaction():
        raise MigrationError("migrate runs its own transactions: call it outside one")
    await _lock(conn, lock_wait_s_max)
    try:
        await conn.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
        await conn.execute(_MIGRATIONS_TABLE)
        applied = await _applied(conn)
        mismatch = _mismatches(applied, files)
        if mismatch:
            raise MigrationError(
                f"migration {mismatch[0]} was changed after it was applied (its checksum"
                f" differs from the one recorded): restore the file and put the change in"
                f" a new migration"
            )
        unrecorded = [m for m in files if m.name in applied and applied[m.name]["checksum"] is None]
        if unrecorded:  # migrated before checksums existed: trust the files as they are now
            await conn.execute(
                "UPDATE schema_migrations s SET checksum = t.checksum"
                " FROM unnest($1::text[], $2::text[]) AS t(name, checksum)"
                " WHERE s.name = t.name AND s.checksum IS NULL",
                [m.name for m in unrecorded],
                [m.checksum for m in unrecorded],
            )
        applied_now: list[str] = []
        for migration in files:
            if migration.name in applied:
                continue
            await _apply(conn, migration, lock_timeout_ms)
            applied_now.append(migration.name)
        return applied_now
    finally:
        if not conn.is_closed():
            await conn.execute("RESET lock_timeout")
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


_RECORD = "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)"


async def _apply(conn: Connection, migration: Migration, lock_timeout_ms: int) -> None:
    try:
        if migration.transactional:
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(_RECORD, migration.name, migration.checksum)
            return
        for statement in migration.statements():
            await conn.execute(statement)
        invalid = await conn.fetch(
            "SELECT i.indexrelid::regclass::text AS name FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE NOT i.indisvalid AND c.relnamespace = current_schema()::regnamespace"
            " ORDER BY 1"
        )
        if invalid:
            raise MigrationError(
                f"migration {migration.name}: index {invalid[0]['name']} is invalid (a"
                f" concurrent build failed): drop it, then migrate again"
            )
        await conn.execute(_RECORD, migration.name, migration.checksum)
    except asyncpg.LockNotAvailableError as exc:
        raise MigrationError(
            f"migration {migration.name}: a lock was not granted within lock_timeout"
            f" ({lock_timeout_ms} ms; a long transaction holds it)"
            + (": nothing of it applied" if migration.transactional else "")
            + "; migrate again later"
        ) from exc
    except asyncpg.PostgresError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MigrationError(
            f"migration {migration.name} failed (SQLSTATE {exc.sqlstate}: {first_line})"
            + (": nothing of it applied" if migration.transactional else "")
        ) from exc
