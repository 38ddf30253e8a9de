"""Migrations a DBA accepts, on the real database: a checksum per applied file (a changed
one is refused), `refundctl migrate --status`, databases migrated before checksums,
each file in its own transaction, `lock_timeout`, no-transaction files (CREATE INDEX
CONCURRENTLY), one migrator at a time."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from refundctl import cli
from tests.infra import Infra, with_database
from worker.migrate import (
    NO_TRANSACTION_MARKER,
    Migration,
    MigrationError,
    migrate,
    migration_files,
    status,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def empty_url(infra: Infra) -> AsyncIterator[str]:
    """A database of its own with nothing in it (not the migrated template)."""
    name = f"refund_migrate_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(infra.database_url, timeout=10)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    yield with_database(infra.database_url, name)
    admin = await asyncpg.connect(infra.database_url, timeout=10)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def conn(empty_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(empty_url, timeout=10)
    try:
        yield connection
    finally:
        await connection.close()


A = Migration("001_a.sql", "CREATE TABLE a (id int PRIMARY KEY);\n")
B = Migration("002_b.sql", "INSERT INTO a VALUES (1), (2);\n")


async def tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {row["tablename"] for row in rows}


async def test_a_fresh_database_gets_every_file_once_with_its_checksum(
    conn: asyncpg.Connection,
) -> None:
    files = migration_files()
    before = await status(conn)
    assert before["applied"] == []
    assert before["pending"] == [m.name for m in files]

    assert await migrate(conn) == [m.name for m in files]
    assert await migrate(conn) == []
    recorded = {
        r["name"]: r["checksum"] for r in await conn.fetch("SELECT * FROM schema_migrations")
    }
    assert recorded == {m.name: m.checksum for m in files}
    report = await status(conn)
    assert report["pending"] == []
    assert report["checksums"] == {
        "ok": [m.name for m in files],
        "mismatch": [],
        "unrecorded": [],
    }
    assert report["unknown"] == []
    assert {"cancel_outcomes", "consumer_offsets", "tombstones"} <= await tables(conn)
    source_columns = await conn.fetch(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_name = 'cancel_outcomes' AND column_name LIKE 'source_%'"
    )
    assert {r["column_name"] for r in source_columns} == {
        "source_topic",
        "source_partition",
        "source_offset",
    }
    assert not conn.is_in_transaction()
    # The session is left as it was: no lock_timeout, no advisory lock held.
    assert await conn.fetchval("SHOW lock_timeout") == "0"
    assert await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0


async def test_a_changed_applied_file_is_refused_before_anything_runs(
    conn: asyncpg.Connection,
) -> None:
    assert await migrate(conn, [A]) == ["001_a.sql"]
    changed = Migration(A.name, A.sql.replace("id int", "id bigint"))
    with pytest.raises(MigrationError) as refused:
        await migrate(conn, [changed, B])
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("migration 001_a.sql was changed after it was applied")
    assert await conn.fetchval("SELECT count(*) FROM a") == 0  # B did not run
    report = await status(conn, [changed, B])
    assert report["checksums"]["mismatch"] == ["001_a.sql"]
    assert report["pending"] == ["002_b.sql"]
    # Restored, it applies what is pending.
    assert await migrate(conn, [A, B]) == ["002_b.sql"]


async def test_a_database_migrated_before_checksums_gets_them_recorded(
    conn: asyncpg.Connection,
) -> None:
    # As the old migrator left it: a table without the checksum column.
    await conn.execute(
        "CREATE TABLE schema_migrations (name text PRIMARY KEY,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    await conn.execute(A.sql)
    await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", A.name)
    before = await status(conn, [A, B])
    assert before["checksums"] == {"ok": [], "mismatch": [], "unrecorded": ["001_a.sql"]}
    assert [entry["checksum"] for entry in before["applied"]] == [None]
    assert before["pending"] == ["002_b.sql"]

    assert await migrate(conn, [A, B]) == ["002_b.sql"]
    after = await status(conn, [A, B])
    assert after["checksums"] == {
        "ok": ["001_a.sql", "002_b.sql"],
        "mismatch": [],
        "unrecorded": [],
    }
    changed = Migration(A.name, A.sql + "-- edited\n")
    with pytest.raises(MigrationError):
        await migrate(conn, [changed, B])


async def test_each_file_in_its_own_transaction(conn: asyncpg.Connection) -> None:
    failing = Migration("003_c.sql", "CREATE TABLE c (id int);\nINSERT INTO c VALUES ('x');\n")
    later = Migration("004_d.sql", "CREATE TABLE d (id int);\n")
    with pytest.raises(MigrationError) as failed:
        await migrate(conn, [A, B, failing, later])
    assert str(failed.value).startswith("migration 003_c.sql failed (SQLSTATE 22P02: ")
    assert str(failed.value).endswith(": nothing of it applied")
    # The files before it are applied and recorded; nothing of it, nothing after it.
    assert await tables(conn) == {"schema_migrations", "a"}
    assert await conn.fetchval("SELECT count(*) FROM a") == 2
    report = await status(conn, [A, B, failing, later])
    assert [entry["name"] for entry in report["applied"]] == ["001_a.sql", "002_b.sql"]
    assert report["pending"] == ["003_c.sql", "004_d.sql"]


async def test_a_statement_waiting_for_a_lock_fails_at_the_lock_timeout(
    conn: asyncpg.Connection, empty_url: str
) -> None:
    assert await migrate(conn, [A]) == ["001_a.sql"]
    alter = Migration("002_alter.sql", "ALTER TABLE a ADD COLUMN note text;\n")
    holder = await asyncpg.connect(empty_url, timeout=10)
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("SELECT * FROM a")  # ACCESS SHARE, held: a long read
        started = asyncio.get_running_loop().time()
        with pytest.raises(MigrationError) as timed_out:
            await asyncio.wait_for(migrate(conn, [A, alter], lock_timeout_ms=300), 30)
        waited = asyncio.get_running_loop().time() - started
        await transaction.rollback()
    finally:
        await holder.close()
    assert waited < 10
    assert str(timed_out.value) == (
        "migration 002_alter.sql: a lock was not granted within lock_timeout (300 ms; a long"
        " transaction holds it): nothing of it applied; migrate again later"
    )
    assert (await status(conn, [A, alter]))["pending"] == ["002_alter.sql"]
    assert await migrate(conn, [A, alter]) == ["002_alter.sql"]  # once the reader is gone


async def test_a_no_transaction_file_builds_an_index_concurrently(
    conn: asyncpg.Connection,
) -> None:
    concurrently = Migration(
        "003_index.sql",
        f"{NO_TRANSACTION_MARKER}\n-- one statement at a time, outside a transaction\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS a_id_desc ON a (id DESC);\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS a_id_hash ON a USING hash (id);\n",
    )
    assert not concurrently.transactional
    assert len(concurrently.statements()) == 2
    # Inside a transaction PostgreSQL refuses it: the marker is what makes it work.
    inside = Migration("003_index.sql", concurrently.sql.split("\n", 1)[1])
    with pytest.raises(MigrationError, match="SQLSTATE 25001"):
        await migrate(conn, [A, B, inside])
    assert await migrate(conn, [A, B, concurrently]) == ["003_index.sql"]
    indexes = await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'a'")
    assert {"a_id_desc", "a_id_hash"} <= {row["indexname"] for row in indexes}
    assert (await status(conn, [A, B, concurrently]))["checksums"]["ok"] == [
        "001_a.sql",
        "002_b.sql",
        "003_index.sql",
    ]


async def test_a_failed_concurrent_build_is_not_recorded_and_its_invalid_index_is_named(
    conn: asyncpg.Connection,
) -> None:
    duplicates = Migration("002_dup.sql", "INSERT INTO dup VALUES (1), (1);\n")
    table = Migration("001_dup.sql", "CREATE TABLE dup (v int);\n")
    unique = Migration(
        "003_unique.sql",
        f"{NO_TRANSACTION_MARKER}\n"
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS dup_v ON dup (v);\n",
    )
    with pytest.raises(MigrationError, match="SQLSTATE 23505"):
        await migrate(conn, [table, duplicates, unique])
    # Run again, IF NOT EXISTS skips the invalid index the failed build left: refused.
    with pytest.raises(MigrationError) as invalid:
        await migrate(conn, [table, duplicates, unique])
    assert str(invalid.value) == (
        "migration 003_unique.sql: index dup_v is invalid (a concurrent build failed):"
        " drop it, then migrate again"
    )
    assert (await status(conn, [table, duplicates, unique]))["pending"] == ["003_unique.sql"]


async def test_concurrent_migrators_apply_each_file_once(empty_url: str) -> None:
    slow = Migration("002_slow.sql", "SELECT pg_sleep(0.3);\nCREATE TABLE slow (id int);\n")
    connections = [await asyncpg.connect(empty_url, timeout=10) for _ in range(3)]
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(migrate(c, [A, slow]) for c in connections)), 30
        )
        assert sorted(results, key=len) == [[], [], ["001_a.sql", "002_slow.sql"]]
        assert await connections[0].fetchval("SELECT count(*) FROM schema_migrations") == 2
    finally:
        for connection in connections:
            await connection.close()


async def test_the_migration_lock_wait_is_bounded(conn: asyncpg.Connection, empty_url: str) -> None:
    other = await asyncpg.connect(empty_url, timeout=10)
    try:
        await other.execute("SELECT pg_advisory_lock($1)", 0x72656675_6E64)
        with pytest.raises(MigrationError, match=r"held the migration lock for over 0\.5 s"):
            await asyncio.wait_for(migrate(conn, [A], lock_wait_s_max=0.5), 10)
    finally:
        await other.close()
    assert await migrate(conn, [A]) == ["001_a.sql"]


async def test_refundctl_migrate_status(
    empty_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", empty_url)

    async def refundctl(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.wait_for(asyncio.to_thread(cli.main, list(args)), 60)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    names = [m.name for m in migration_files()]
    code, out, _ = await refundctl("migrate", "--status")
    assert code == 0
    assert json.loads(out)["pending"] == names
    code, out, _ = await refundctl("migrate")
    assert (code, json.loads(out)) == (0, {"applied": names})
    code, out, _ = await refundctl("migrate", "--status")
    report = json.loads(out)
    assert code == 0
    assert [entry["name"] for entry in report["applied"]] == names
    assert report["pending"] == []
    assert report["checksums"]["ok"] == names

    conn = await asyncpg.connect(empty_url, timeout=10)
    try:
        await conn.execute(
            "UPDATE schema_migrations SET checksum = 'edited' WHERE name = $1", names[0]
        )
    finally:
        await conn.close()
    code, out, err = await refundctl("migrate", "--status")
    assert code == 1
    assert json.loads(out)["checksums"]["mismatch"] == [names[0]]
    assert err == f"refundctl: refused: migration {names[0]} was changed after it was applied\n"
    code, out, err = await refundctl("migrate")
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"refundctl: migration {names[0]} was changed after it was applied")
