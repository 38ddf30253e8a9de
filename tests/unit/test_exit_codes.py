"""Exit codes and one-line errors (SPEC): 0 ok, 1 refused, 2 usage or configuration,
3 a dependency unreachable or refusing us. No broker or database runs here: the
dependencies are closed ports."""

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from unittest import mock

import pytest
import structlog

from refundctl import cli, failures, logs
from schemas.failures import HTTP_LISTENER, Misconfigured, Unavailable
from worker.ledger import LedgerRefusal
from worker.status import OperationError

REFUNDCTL = str(Path(sys.executable).with_name("refundctl"))
KEPT = ("PATH", "HOME", "LANG", "REFUND_KAFKA_CACHE", "XDG_CACHE_HOME")
DB_PASSWORD = "pg-Passw0rd-of-the-worker"
BOUND_S = 30  # a closed port is refused at once; the probe is bounded at 10 s


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def _restored_logging() -> Iterator[None]:
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


def run_main(
    argv: Sequence[str],
    env: Mapping[str, str],
    capsys: pytest.CaptureFixture[str],
    cwd: Path | None = None,
) -> tuple[int, str]:
    """`refundctl argv…` in-process with exactly `env` (plus PATH and HOME), in `cwd`
    (default: an empty directory, so no dev stack); returns (exit code, stderr)."""
    kept = {name: os.environ[name] for name in KEPT if name in os.environ}
    capsys.readouterr()
    previous = Path.cwd()
    with (
        mock.patch.dict(os.environ, {**kept, **env}, clear=True),
        _restored_logging(),
        contextlib.ExitStack() as stack,
    ):
        if cwd is None:
            import tempfile

            cwd = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        os.chdir(cwd)
        try:
            code = cli.main(list(argv))
        finally:
            os.chdir(previous)
    return code, capsys.readouterr().err


def test_kafka_on_a_closed_port_is_exit_3_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
    env = {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"}
    code, err = run_main(["topics", "create"], env, capsys)
    assert code == 3
    assert err.splitlines() == [
        f"refundctl: kafka at 127.0.0.1:{port} (KAFKA_BOOTSTRAP_SERVERS from the environment): "
        f"connection refused (Connect call failed ('127.0.0.1', {port}))"
    ]


def test_postgresql_on_a_closed_port_is_exit_3_in_one_line_without_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = closed_port()
    env = {"DATABASE_URL": f"postgresql://worker:{DB_PASSWORD}@127.0.0.1:{port}/refund"}
    code, err = run_main(["migrate"], env, capsys)
    assert code == 3
    assert err.splitlines() == [
        f"refundctl: postgresql at 127.0.0.1:{port}/refund (DATABASE_URL from the "
        f"environment): connection refused (Connect call failed ('127.0.0.1', {port}))"
    ]
    assert DB_PASSWORD not in err


def test_the_line_says_when_the_address_came_from_the_dev_stack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = closed_port()
    (tmp_path / ".refund-dev").mkdir()
    (tmp_path / ".refund-dev" / "stack.json").write_text(
        json.dumps(
            {
                "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
                "DATABASE_URL": f"postgresql://127.0.0.1:{port}/refund",
            }
        )
    )
    code, err = run_main(["status"], {}, capsys, cwd=tmp_path)
    assert code == 3
    assert err.splitlines() == [
        f"refundctl: kafka at 127.0.0.1:{port} (KAFKA_BOOTSTRAP_SERVERS from the dev stack's "
        f".refund-dev/stack.json): connection refused (Connect call failed ('127.0.0.1', "
        f"{port}))"
    ]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u:pw@db:abc/refund", "DATABASE_URL has an invalid host:port ('db:abc')"),
        (
            "mysql://u:pw@db/refund",
            "DATABASE_URL must start with postgresql:// (got a mysql scheme)",
        ),
        (
            "db.internal:5432",
            "DATABASE_URL must start with postgresql:// (got a db.internal scheme)",
        ),
        ("postgres://u:pw@[::1/refund", "DATABASE_URL is not a URL: Invalid IPv6 URL"),
    ],
)
def test_a_malformed_database_url_is_exit_2_in_one_line(
    url: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main(["migrate"], {"DATABASE_URL": url}, capsys)
    assert code == 2
    assert err.splitlines() == [f"refundctl: configuration: {message}"]
    assert "pw" not in err


def test_a_refusal_is_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def refused(*_: object) -> int:
        raise LedgerRefusal("the balance would go below zero")

    monkeypatch.setattr(cli, "_run", refused)
    code, err = run_main(["ledger", "show", "--player", "p", "--currency", "EUR"], {}, capsys)
    assert (code, err) == (1, "refundctl: refused: the balance would go below zero\n")

    async def missing_topic(*_: object) -> int:
        raise OperationError(
            "topic t.cancel-requested does not exist (run `refundctl topics create`)"
        )

    monkeypatch.setattr(cli, "_run", missing_topic)
    code, err = run_main(["status"], {}, capsys)
    assert code == 1
    assert (
        err
        == "refundctl: topic t.cancel-requested does not exist (run `refundctl topics create`)\n"
    )


def test_the_error_tree_maps_to_the_exit_codes() -> None:
    cases = [
        (LedgerRefusal("x"), None),  # handled before (its own "refused:" line)
        (OperationError("x"), 1),
        (Misconfigured("x"), 2),
        (Unavailable("kafka", "x"), 3),
        (ConnectionRefusedError(111, "Connect call failed"), 3),
        (RuntimeError("a bug"), None),  # not ours to explain: its traceback shows
    ]
    for exc, code in cases:
        classified = failures.classify(exc)
        assert (classified and classified.exit_code) == code, exc
    # An OperationError raised from a socket error (the ingress's port) is the port's.
    try:
        try:
            raise OSError(98, "Address already in use")
        except OSError as exc:
            raise OperationError("ingress could not start on port 8080") from exc
    except OperationError as wrapped:
        classified = failures.classify(wrapped)
    assert classified is not None
    assert (classified.exit_code, classified.dependency) == (3, HTTP_LISTENER)


def test_the_ingress_that_cannot_start_exits_3_with_one_json_line(tmp_path: Path) -> None:
    port = closed_port()
    env = {name: os.environ[name] for name in KEPT if name in os.environ}
    env |= {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "DATABASE_URL": f"postgresql://ingress:{DB_PASSWORD}@127.0.0.1:{port}/refund",
        "SCORPIO_API_TOKEN": "dev-scorpio-token",
        "HPGAMES_MERCHANT_ID": "21385394-6dda-4171-a003-02fa4a975643",
        "HPGAMES_SECRET_KEY": "dev-hpgames-secret",
        "AMB_AGENT_USERNAME": "dev-amb-agent",
        "AMB_API_KEY": "dev-amb-api-key",
        "NAGA_PUBLIC_KEY_FILE": str(_naga_key(tmp_path)),
        "HTTP_PORT": str(closed_port()),
    }
    done = subprocess.run(
        [REFUNDCTL, "ingress"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=BOUND_S,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    record = json.loads(lines[0])
    assert record["event"] == "exiting"
    assert record["level"] == "error"
    assert record["exit_code"] == 3
    assert record["dependency"] == "postgresql"
    assert record["address"] == f"127.0.0.1:{port}/refund"
    assert record["source"] == "DATABASE_URL from the environment"
    assert record["error"].startswith("connection refused")
    assert DB_PASSWORD not in done.stderr


def _naga_key(directory: Path) -> Path:
    from refundctl import devstack

    return devstack.naga_dev_key(directory)


def test_the_text_and_json_forms_carry_the_same_fields() -> None:
    classified = failures.Classified(3, "kafka", "authentication failed")
    fields = failures.describe(
        classified, {}, {"KAFKA_BOOTSTRAP_SERVERS": "k:9093"}, Path("/nonexistent")
    )
    assert fields == {
        "dependency": "kafka",
        "address": "k:9093",
        "source": "KAFKA_BOOTSTRAP_SERVERS from the dev stack's .refund-dev/stack.json",
        "error": "authentication failed",
        "exit_code": 3,
    }
    assert failures.line(fields) == (
        "refundctl: kafka at k:9093 (KAFKA_BOOTSTRAP_SERVERS from the dev stack's "
        ".refund-dev/stack.json): authentication failed"
    )
    assert logs.REDACTED not in failures.line(failures.scrubbed(fields, ["nothing-here"]))
    assert failures.scrubbed({"error": "pw=hunter22"}, ["hunter22"]) == {
        "error": f"pw={logs.REDACTED}"
    }
