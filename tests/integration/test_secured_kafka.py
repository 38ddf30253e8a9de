"""The product on a secured Apache Kafka: SASL_SSL, SCRAM-SHA-512 users per role, ACLs.

A second Apache Kafka node, started once per session and only when these tests run
(`secured_kafka`): its clients' only listener is SASL_SSL, with a CA and a server
certificate generated here, one SCRAM-SHA-512 user per role created at format time and
Kafka's StandardAuthorizer. The ACLs are the least privilege of deploy/: the ingress
writes the request topic and reads the reply topic; the worker reads the request topic,
uses its group and writes the reply and dead-letter topics; nobody else may write the
request topic (the admin is the harness's super user).
"""

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import ClusterAuthorizationFailedError, TopicAuthorizationFailedError

from refundctl import apache_kafka, config
from refundctl.topics import create_topics
from schemas.transport import Topics
from tests.certs import Authority, cert_pem, key_pem, make_ca
from tests.support import (
    assert_conservation,
    balance,
    running_ingress,
    running_worker,
    scorpio_body,
    scorpio_headers,
    seed_bet,
)

pytestmark = pytest.mark.integration

REFUNDCTL = str(Path(sys.executable).with_name("refundctl"))
BROKER_HEAP_MB = 256  # the second node only carries these tests' few records
NODE_PRINCIPAL = "CN=refund-test-kafka"  # the node's certificate subject (super user)
ROLES = ("admin", "ingress", "worker", "forger")  # the forger has no ACL at all
FAILURE_BOUND_S = 30.0  # a refused connection is reported well within this
PARTITIONS = 4


# --- certificates -------------------------------------------------------------------


def make_keystore(directory: Path, ca: Authority) -> Path:
    """The node's PEM keystore: its unencrypted PKCS#8 key, its certificate, the CA."""
    key, cert = ca.issue(NODE_PRINCIPAL.removeprefix("CN="), client_auth=True)
    path = directory / "kafka-keystore.pem"
    path.write_bytes(key_pem(key) + cert_pem(cert) + cert_pem(ca.cert))
    path.chmod(0o600)
    return path


# --- the secured node -----------------------------------------------------------------


@dataclass(frozen=True)
class SecuredKafka:
    bootstrap_servers: str
    ca_file: Path
    unknown_ca_file: Path  # a CA that did not sign the node's certificate
    password_files: Mapping[str, Path]  # role -> file holding its SCRAM password
    topic_prefix: str
    consumer_group: str

    def env(self, role: str, **overrides: str) -> dict[str, str]:
        """The Kafka part of a process's environment, as user `role`."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": role,
            "KAFKA_SASL_PASSWORD_FILE": str(self.password_files[role]),
            "KAFKA_SSL_CAFILE": str(self.ca_file),
            "KAFKA_TOPIC_PREFIX": self.topic_prefix,
            "KAFKA_CONSUMER_GROUP": self.consumer_group,
            "KAFKA_REQUEST_PARTITIONS": str(PARTITIONS),
            "KAFKA_REPLY_PARTITIONS": str(PARTITIONS),
            **overrides,
        }


@pytest.fixture(scope="session")
def secured_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafka]:
    """One SASL_SSL node for the session, with its users, topics and ACLs."""
    if not (shutil.which("java") and shutil.which("mvn")):
        pytest.skip("the secured Kafka tests need java and mvn (Apache Kafka from its jars)")
    work_dir = Path(tmp_path_factory.mktemp("secured-kafka"))
    ca = make_ca("refund-test-ca")
    ca_file = ca.write(work_dir / "refund-test-ca.pem")
    unknown_ca_file = make_ca("someone-elses-ca").write(work_dir / "someone-elses-ca.pem")
    keystore = make_keystore(work_dir, ca)
    passwords = {role: secrets.token_urlsafe(24) for role in ROLES}
    password_files = {}
    for role, password in passwords.items():
        path = work_dir / f"{role}.password"
        path.write_text(password + "\n")
        path.chmod(0o600)
        password_files[role] = path
    listener = apache_kafka.SaslSslListener(
        ca_file=ca_file,
        keystore_file=keystore,
        users=passwords,
        admin="admin",
        tls_principal=NODE_PRINCIPAL,
    )
    prefix = f"sec{uuid.uuid4().hex[:8]}."
    topics = Topics.with_prefix(prefix)
    group = f"{prefix}worker"
    with apache_kafka.apache_kafka(
        work_dir / "kafka", heap_mb=BROKER_HEAP_MB, security=listener
    ) as broker:
        secured = SecuredKafka(
            broker.bootstrap_servers, ca_file, unknown_ca_file, password_files, prefix, group
        )
        admin = config.kafka_settings(secured.env("admin"), role="harness")
        asyncio.run(create_topics(admin))
        grants = [  # (principal, operations, topics, groups)
            ("ingress", ["Write"], [topics.requests], []),
            ("ingress", ["Read"], [topics.replies], []),
            ("worker", ["Read"], [topics.requests], [group]),
            ("worker", ["Write"], [topics.replies, topics.dead_letters], []),
        ]
        with ThreadPoolExecutor(len(grants)) as pool:  # one JVM each: in parallel
            done = [
                pool.submit(broker.add_acls, principal, ops, topics=names, groups=groups)
                for principal, ops, names, groups in grants
            ]
            for future in done:
                future.result()
        yield secured


@pytest.fixture
def secured_env(
    secured_kafka: SecuredKafka, database_url: str, naga_key_dir: Path
) -> dict[str, str]:
    """The rest of a process's environment: the test's database, the dev secrets."""
    return {
        **config.DEV_SECRETS,
        "NAGA_PUBLIC_KEY_FILE": str(naga_key_dir / "naga-dev-public.pem"),
        "DATABASE_URL": database_url,
        "WORKER_METRICS_PORT": "0",
    }


# --- the whole flow -------------------------------------------------------------------


async def test_a_cancel_is_refunded_over_sasl_ssl_with_the_roles_own_users(
    secured_kafka: SecuredKafka, secured_env: dict[str, str], db: asyncpg.Connection
) -> None:
    await seed_bet(db, "bet-1")
    ingress_env = {**secured_env, **secured_kafka.env("ingress")}
    worker_env = {**secured_env, **secured_kafka.env("worker")}
    body = scorpio_body(transaction_id="c-1", reference_id="bet-1")
    async with (
        running_worker(worker_env),
        running_ingress(ingress_env) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        first = await client.post("/scorpio", content=body, headers=scorpio_headers(body))
        retry = await client.post("/scorpio", content=body, headers=scorpio_headers(body))
    assert first.json() == retry.json() == {"balance": 100, "statusCode": "OK"}
    assert await balance(db) == 100
    assert await db.fetchval("SELECT count(*) FROM ledger_entries WHERE kind = 'refund'") == 1
    await assert_conservation(db)


# --- what the broker refuses ----------------------------------------------------------


async def _request_topic_end_offsets(secured: SecuredKafka) -> dict[int, int]:
    admin = config.kafka_settings(secured.env("admin"), role="harness")
    consumer = AIOKafkaConsumer(**admin.consumer_options())
    await consumer.start()
    try:
        tps = [TopicPartition(admin.topics.requests, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


@pytest.mark.parametrize("role", ["worker", "forger"])
async def test_only_the_ingress_may_write_the_request_topic(
    secured_kafka: SecuredKafka, role: str
) -> None:
    """The forged-event scenario: a workload with broker credentials but no write ACL on
    the request topic puts a well-formed cancel there. The broker refuses it."""
    before = await _request_topic_end_offsets(secured_kafka)
    kafka = config.kafka_settings(secured_kafka.env(role), role=role)
    producer = AIOKafkaProducer(**kafka.producer_options(), request_timeout_ms=10_000)
    try:
        # Without any write ACL even the idempotent producer's id is refused (at start);
        # with one elsewhere (the worker's replies) the request topic's write is.
        async def forge() -> None:
            async with asyncio.timeout(FAILURE_BOUND_S):
                await producer.start()
                await producer.send_and_wait(kafka.topics.requests, b'{"forged": 1}', key=b"p1")

        with pytest.raises((TopicAuthorizationFailedError, ClusterAuthorizationFailedError)):
            await forge()
    finally:
        with contextlib.suppress(ClusterAuthorizationFailedError):  # its sender's end
            await asyncio.wait_for(producer.stop(), FAILURE_BOUND_S)
    assert await _request_topic_end_offsets(secured_kafka) == before


def _refundctl(tmp_path: Path, env: Mapping[str, str], *args: str) -> tuple[int, str, float]:
    """`refundctl args…` in a directory without a dev stack; (exit code, stderr, seconds)."""
    clean = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KAFKA_", "DATABASE_URL"))
    }
    began = time.monotonic()
    done = subprocess.run(
        [REFUNDCTL, *args],
        cwd=tmp_path,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=FAILURE_BOUND_S * 2,
        check=False,
    )
    return done.returncode, done.stderr, time.monotonic() - began


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong password", "authentication failed (SASL_SSL, SCRAM-SHA-512 as 'ingress')"),
        ("unknown CA", "TLS: the broker's certificate is not trusted"),
        ("PLAINTEXT client", "KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
        ("no ACL to create topics", "the broker refused to create topic"),
    ],
)
def test_a_refused_connection_is_one_line_and_exit_3(
    secured_kafka: SecuredKafka, tmp_path: Path, case: str, expected: str
) -> None:
    env = secured_kafka.env("ingress", KAFKA_TOPIC_PREFIX=f"refused{uuid.uuid4().hex[:6]}.")
    if case == "wrong password":
        (tmp_path / "wrong.password").write_text("not-the-password\n")
        env["KAFKA_SASL_PASSWORD_FILE"] = str(tmp_path / "wrong.password")
    elif case == "unknown CA":
        env["KAFKA_SSL_CAFILE"] = str(secured_kafka.unknown_ca_file)
    elif case == "PLAINTEXT client":
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": secured_kafka.bootstrap_servers,
            "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
        }
    code, stderr, seconds = _refundctl(tmp_path, env, "topics", "create")
    lines = stderr.strip().splitlines()
    print(f"{case} ({seconds:.1f} s): {stderr.strip()}")  # the operator's line, in -rA output
    assert code == 3, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith(
        f"refundctl: kafka at {secured_kafka.bootstrap_servers} "
        "(KAFKA_BOOTSTRAP_SERVERS from the environment): "
    ), lines[0]
    assert expected in lines[0], lines[0]
    assert "Traceback" not in stderr
    assert seconds < FAILURE_BOUND_S, f"{case}: {seconds:.1f} s"
    for password_file in secured_kafka.password_files.values():
        assert password_file.read_text().strip() not in stderr


def test_an_ingress_that_cannot_start_exits_3_with_one_json_line(
    secured_kafka: SecuredKafka, secured_env: dict[str, str], tmp_path: Path
) -> None:
    """The database answers; Kafka refuses the password, then the port is taken. Each
    time the process's last line, and its only error, says why, as JSON (no traceback);
    a refused password is its only line."""
    (tmp_path / "wrong.password").write_text("not-the-password\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        base = {**secured_env, "HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(port)}
        cases = {
            "kafka": {
                **base,
                **secured_kafka.env(
                    "ingress", KAFKA_SASL_PASSWORD_FILE=str(tmp_path / "wrong.password")
                ),
            },
            "http listener": {**base, **secured_kafka.env("ingress")},
        }
        outputs = {}
        for dependency, env in cases.items():
            code, stderr, seconds = _refundctl(tmp_path, env, "ingress")
            print(f"ingress, {dependency} ({seconds:.1f} s): {stderr.strip()}")
            records = [json.loads(line) for line in stderr.strip().splitlines()]
            assert code == 3, stderr
            errors = [record for record in records if record["level"] == "error"]
            assert errors == records[-1:], stderr  # one line says why, and it is the last
            record = records[-1]
            assert (record["event"], record["dependency"]) == ("exiting", dependency)
            assert seconds < FAILURE_BOUND_S
            outputs[dependency] = records
    assert len(outputs["kafka"]) == 1
    assert outputs["kafka"][0]["error"].startswith("authentication failed"), outputs
    assert outputs["http listener"][-1]["error"].startswith("address already in use"), outputs
