"""The README's first command, for real: `refundctl dev` with its embedded broker (Tansu,
the default, and Apache Kafka) and database in a fresh directory, driven with
`refundctl ledger` and a signed request."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from refundctl import devstack
from tests.support import scorpio_body, scorpio_headers

pytestmark = pytest.mark.integration
REFUNDCTL = str(Path(sys.executable).with_name("refundctl"))
STARTUP_TIMEOUT_S = 60


def refundctl(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [REFUNDCTL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def cancel(port: int, *, transaction_id: str, reference_id: str) -> dict[str, object]:
    """A signed Scorpio cancel of 10 EUR; the provider's answer."""
    body = scorpio_body(transaction_id=transaction_id, reference_id=reference_id, amount="10")
    answer = httpx.post(
        f"http://127.0.0.1:{port}/scorpio", content=body, headers=scorpio_headers(body), timeout=10
    )
    reply: dict[str, object] = answer.json()
    return reply


@pytest.mark.parametrize("broker", ["tansu", "kafka"])
def test_refundctl_dev_runs_the_whole_stack(tmp_path: Path, broker: str) -> None:
    port = devstack.free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")
    }
    env["HTTP_PORT"] = str(port)
    log = (tmp_path / "dev.log").open("w")

    def dev_log() -> str:
        return (tmp_path / "dev.log").read_text()[-3000:]

    dev = subprocess.Popen(
        [REFUNDCTL, "dev", "--workers", "1", "--broker", broker],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as in a terminal
    )
    stopping_at = 0
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert dev.poll() is None, dev_log()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "refundctl dev did not become ready"
            time.sleep(0.2)
        assert (tmp_path / ".refund-dev" / "stack.json").exists()

        # Ready means answered: a request sent the moment /readyz says 200 gets its
        # outcome, not the no-answer-in-time reply (the workers' first group join).
        answer = cancel(port, transaction_id="c0", reference_id="no-such-bet")
        assert answer["statusCode"] == "ERR_TRANSACTION_DOES_NOT_EXIST", dev_log()

        opened = refundctl(
            tmp_path,
            env,
            "ledger",
            "open-account",
            "--player",
            "p1",
            "--currency",
            "EUR",
            "--balance",
            "100",
        )
        assert opened.returncode == 0, opened.stderr
        debit = refundctl(
            tmp_path,
            env,
            "ledger",
            "debit",
            "--provider",
            "scorpio",
            "--player",
            "p1",
            "--currency",
            "EUR",
            "--amount",
            "10",
            "--tx",
            "bet-1",
        )
        assert debit.returncode == 0, debit.stderr
        refused = refundctl(
            tmp_path,
            env,
            "ledger",
            "debit",
            "--provider",
            "scorpio",
            "--player",
            "p1",
            "--currency",
            "EUR",
            "--amount",
            "1000",
            "--tx",
            "bet-2",
        )
        assert refused.returncode != 0
        assert refused.stderr.strip().count("\n") == 0
        assert "insufficient" in refused.stderr

        answer = cancel(port, transaction_id="c1", reference_id="bet-1")
        assert answer == {"balance": 100, "statusCode": "OK"}, dev_log()

        shown = refundctl(
            tmp_path, env, "ledger", "show", "--player", "p1", "--currency", "EUR", "--json"
        )
        account = json.loads(shown.stdout)
        assert account["balance"] == "100.00"
        assert [(e["kind"], e["amount"]) for e in account["entries"]] == [
            ("opening", "100.00"),
            ("debit", "-10.00"),
            ("refund", "10.00"),
        ]
    finally:
        log.flush()
        stopping_at = (tmp_path / "dev.log").stat().st_size
        os.killpg(dev.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group gets it
        code = dev.wait(30)
        log.close()
    assert code == 0, dev_log()
    stopping = (tmp_path / "dev.log").read_text()[stopping_at:]
    # Every client is closed, before the broker stops: nothing at error level.
    assert "Unclosed" not in stopping, stopping
    assert '"level": "error"' not in stopping, stopping
    assert not (tmp_path / ".refund-dev" / "stack.json").exists()
