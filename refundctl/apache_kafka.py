"""Apache Kafka (KRaft, combined broker and controller) for the dev stack and the tests.

The production broker, run here from its own jars: Maven fetches them once (the pom
beside this file) into a cache outside the repository, keyed by version; the storage
tool formats a log directory under the run's work directory; `kafka.Kafka` serves one
loopback listener with a bounded heap. Needs `java` (17+) and `mvn` on the PATH; a
missing one is one clear line (`ApacheKafkaUnavailable`), not a traceback.

`KafkaBroker` can be killed, paused and restarted on the same log directory, so the
fault harness can take the broker down the ways a real cluster loses one.

With `SaslSslListener` the node serves its clients on one SASL_SSL listener instead
(TLS with the caller's certificates, SCRAM-SHA-512 users created at format time,
Kafka's StandardAuthorizer with a super user; `add_acls` grants the rest), so the tests
can show the product on a secured broker with least privilege.
"""

import base64
import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

KAFKA_VERSION = "4.4.0"
POM_FILE = Path(__file__).with_name("apache_kafka.pom.xml")
FETCH_TIMEOUT_S = 900.0  # a first Maven fetch on a cold cache (about 55 MB of jars)
FORMAT_TIMEOUT_S = 60.0
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0  # a controlled shutdown; then SIGKILL
ACL_TIMEOUT_S = 60.0  # one AclCommand run (a JVM start and one request)
SCRAM_MECHANISM = "SCRAM-SHA-512"
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
HEAP_MB_DEFAULT = 512
READY_LINE = "Kafka Server started"
PR_SET_PDEATHSIG = 1  # prctl(2)

# Broker settings for one node on loopback. Production runs three brokers (deploy/);
# here every internal topic has one replica, a new group's first join is not held
# (group.initial.rebalance.delay.ms), and topics are created only on purpose, as in
# production (`refundctl topics create`). A node restarted after a SIGKILL re-registers
# only once its old registration's session has expired (broker.session.timeout.ms,
# 9 s by default): shortened here, where the node is its own controller.
SINGLE_NODE_SETTINGS: Mapping[str, str] = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "8",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "auto.create.topics.enable": "false",
    "num.partitions": "1",
    "broker.heartbeat.interval.ms": "500",
    "broker.session.timeout.ms": "2000",
}

LOG4J2_CONFIG = """\
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
"""


class ApacheKafkaUnavailable(Exception):
    """Apache Kafka cannot be fetched or started here; `str()` is one line that says why."""


def cache_root() -> Path:
    """Where the jars are kept: `REFUND_KAFKA_CACHE`, else the user's cache folder."""
    configured = os.environ.get("REFUND_KAFKA_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "refund-worker"


def _require_tool(name: str, purpose: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ApacheKafkaUnavailable(
            f"`{name}` is not on the PATH: Apache Kafka needs it {purpose} "
            "(install a JDK 17+ and Maven, or use --broker tansu / REFUND_TEST_BROKER=tansu)"
        )
    return path


def run_tool(command: list[str], timeout_s: float, what: str) -> None:
    """Run one of Maven's or Kafka's command-line tools to completion, bounded; a
    failure is one line: the tool's last line of output."""
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ApacheKafkaUnavailable(f"{what} did not finish within {timeout_s:g} s") from exc
    if done.returncode != 0:
        last = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
        raise ApacheKafkaUnavailable(f"{what} failed (exit {done.returncode}): {last[0]}")


def fetch_jars(version: str = KAFKA_VERSION) -> Path:
    """The folder of Apache Kafka's jars, fetched by Maven on first use (once per version,
    safe against concurrent callers)."""
    root = cache_root() / f"apache-kafka-{version}"
    libs = root / "libs"
    if (root / "complete").exists():
        return libs
    mvn = _require_tool("mvn", "to fetch the broker's jars")
    root.mkdir(parents=True, exist_ok=True)
    with (root / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be fetching the same version
        if (root / "complete").exists():
            return libs
        staging = root / f"libs.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        command = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM_FILE),
            f"-Dkafka.version={version}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]
        run_tool(command, FETCH_TIMEOUT_S, f"Maven's fetch of Apache Kafka {version}")
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        (root / "complete").write_text(version + "\n")
    return libs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def die_with_parent() -> None:
    """In the child: SIGKILL it when the process that started it dies (Linux), so a
    killed test run or dev stack leaves no broker behind."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


@dataclass(frozen=True)
class SaslSslListener:
    """A node whose clients connect over SASL_SSL only.

    `keystore_file`: PEM with the node's private key (unencrypted PKCS#8) and its
    certificate chain, valid for 127.0.0.1 and for client authentication too (the node
    reaches its own controller listener over mutual TLS as `tls_principal`, a super
    user). `ca_file`: the CA that signed it. `users`: SCRAM-SHA-512 name -> password,
    created at format time; `admin` (one of them) is the other super user: the broker's
    own inter-broker identity and the harness's. Everybody else gets only what
    `KafkaBroker.add_acls` grants (no ACL: nothing allowed).
    """

    ca_file: Path
    keystore_file: Path
    users: Mapping[str, str] = field(repr=False)
    admin: str
    tls_principal: str  # e.g. "CN=refund-test-kafka": the node's certificate subject

    def __post_init__(self) -> None:
        assert self.admin in self.users
        for name, password in self.users.items():
            assert name, "a user has a name"
            assert password, name
            assert not set(name + password) & set(',=[]"\\ '), f"{name}: no SCRAM or JAAS syntax"

    def jaas(self, name: str) -> str:
        return (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{name}" password="{self.users[name]}";'
        )

    def broker_settings(self, port: int, controller_port: int) -> dict[str, str]:
        tls = {
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.keystore_file),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
        }
        return {
            "listeners": (f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"),
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{port}",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SSL",
            "inter.broker.listener.name": "SASL_SSL",
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
            f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": self.jaas(
                self.admin
            ),
            **tls,
            "listener.name.controller.ssl.client.auth": "required",
            "authorizer.class.name": STANDARD_AUTHORIZER,
            "allow.everyone.if.no.acl.found": "false",
            "super.users": f"User:{self.admin};User:{self.tls_principal}",
        }

    def client_properties(self, name: str) -> str:
        """A Java client's properties for user `name` (Kafka's own tools)."""
        return "".join(
            f"{key}={value}\n"
            for key, value in {
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": SCRAM_MECHANISM,
                "sasl.jaas.config": self.jaas(name),
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(self.ca_file),
            }.items()
        )

    def format_arguments(self) -> list[str]:
        """`--add-scram` for every user: the credentials exist before the node starts."""
        arguments = []
        for name, password in self.users.items():
            arguments += ["--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]"]
        return arguments


@dataclass
class KafkaBroker:
    """One Apache Kafka node on loopback whose log directory outlives its process."""

    work_dir: Path
    port: int
    controller_port: int
    heap_mb: int = HEAP_MB_DEFAULT
    extra_settings: Mapping[str, str] = field(default_factory=dict)
    libs: Path = field(default_factory=fetch_jars)
    security: SaslSslListener | None = None  # None: one PLAINTEXT listener, no authorizer
    process: subprocess.Popen[bytes] | None = None
    started_in_s: float = 0.0

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "broker.log"

    def _java(self) -> list[str]:
        java = _require_tool("java", "to run the broker")
        assert self.heap_mb >= 128
        return [
            java,
            f"-Xms{self.heap_mb}m",
            f"-Xmx{self.heap_mb}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.work_dir / 'log4j2.yaml'}",
            "-cp",
            f"{self.libs}/*",
        ]

    def _write_config(self) -> Path:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        settings = {
            **SINGLE_NODE_SETTINGS,
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.work_dir / "data"),
            **(
                self.security.broker_settings(self.port, self.controller_port)
                if self.security is not None
                else {}
            ),
            **self.extra_settings,
        }
        path = self.work_dir / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        (self.work_dir / "log4j2.yaml").write_text(LOG4J2_CONFIG)
        return path

    def format(self) -> None:
        """Format the log directory for a new single-node cluster (once)."""
        properties = self._write_config()
        if (self.work_dir / "data" / "meta.properties").exists():
            return
        command = [
            *self._java(),
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={_cluster_id()}",  # an id may start with "-"
            "--config",
            str(properties),
            *(self.security.format_arguments() if self.security is not None else []),
        ]
        run_tool(command, FORMAT_TIMEOUT_S, "Kafka's storage tool")

    def start(self) -> None:
        """Start the node on its formatted log directory; returns once it serves."""
        assert self.process is None or self.process.poll() is not None, "already running"
        properties = self._write_config()
        began = time.monotonic()
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [*self._java(), "kafka.Kafka", str(properties)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of the dev stack reaches us through stop()
                preexec_fn=die_with_parent,
            )
        self._wait_ready(offset, began)
        self.started_in_s = time.monotonic() - began

    def _wait_ready(self, log_offset: int, began: float) -> None:
        assert self.process is not None
        deadline = began + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:]
                raise ApacheKafkaUnavailable(
                    f"Apache Kafka exited with code {self.process.returncode}: "
                    f"{tail[0] if tail else 'no output'} (log: {self.log_path})"
                )
            with self.log_path.open("rb") as log_file:
                log_file.seek(log_offset)
                if READY_LINE.encode() in log_file.read():
                    with (
                        contextlib.suppress(OSError),
                        socket.create_connection(("127.0.0.1", self.port), 0.5),
                    ):
                        return
            time.sleep(0.05)
        self.kill()
        raise ApacheKafkaUnavailable(
            f"Apache Kafka did not start within {START_TIMEOUT_S:g} s (log: {self.log_path})"
        )

    def add_acls(
        self,
        principal: str,
        operations: Sequence[str],
        *,
        topics: Sequence[str] = (),
        groups: Sequence[str] = (),
    ) -> None:
        """Allow User:`principal` each of `operations` on each of `topics` and `groups`
        (Kafka's AclCommand as the super user, literal names). Only on a node with a
        `SaslSslListener`; the node must be running."""
        assert self.security is not None, "ACLs need the SASL_SSL listener's authorizer"
        assert operations
        assert topics or groups
        config_file = self.work_dir / "admin-client.properties"
        config_file.write_text(self.security.client_properties(self.security.admin))
        command = [
            *self._java(),
            "org.apache.kafka.tools.AclCommand",
            "--bootstrap-server",
            self.bootstrap_servers,
            "--command-config",
            str(config_file),
            "--add",
            "--allow-principal",
            f"User:{principal}",
        ]
        for operation in operations:
            command += ["--operation", operation]
        for topic in topics:
            command += ["--topic", topic]
        for group in groups:
            command += ["--group", group]
        run_tool(command, ACL_TIMEOUT_S, "Kafka's AclCommand")

    def stop(self) -> None:
        """Controlled shutdown (SIGTERM), bounded; SIGKILL after `STOP_TIMEOUT_S`."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)  # a paused broker cannot stop
            process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL, as a machine or OOM killer would; the log directory survives."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait(STOP_TIMEOUT_S)

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def resident_mb(self) -> float:
        """Resident memory of the broker's JVM, from /proc (0 when not running)."""
        if self.process is None or self.process.poll() is not None:
            return 0.0
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0


def new_broker(
    work_dir: Path,
    port: int | None = None,
    heap_mb: int | None = None,
    security: SaslSslListener | None = None,
) -> KafkaBroker:
    """A formatted, not yet started node (jars fetched if needed)."""
    heap = heap_mb or int(os.environ.get("REFUND_KAFKA_HEAP_MB", HEAP_MB_DEFAULT))
    broker = KafkaBroker(
        work_dir, port or free_port(), free_port(), heap_mb=heap, security=security
    )
    broker.format()
    return broker


@contextlib.contextmanager
def apache_kafka(
    work_dir: Path,
    port: int | None = None,
    heap_mb: int | None = None,
    security: SaslSslListener | None = None,
) -> Iterator[KafkaBroker]:
    """Run a single-node Apache Kafka under `work_dir`; stopped cleanly at the end."""
    broker = new_broker(work_dir, port, heap_mb, security)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
