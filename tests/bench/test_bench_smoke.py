"""The benchmark runs end to end at tiny sizes and prints its summary line.

Asserts that it completes and that every field is there, not how fast anything is.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SMOKE_TIMEOUT_S = 240
TINY = [
    "--e2e-seconds=2",
    "--warmup-seconds=1",
    "--worker-events=1500",
    "--burst=200",
    "--burst-bulk=100",
    "--burst-connections=20",
    "--connections=16",
    "--direct-processes=1",
    "--direct-pool=4",
    "--rate-cap=500",
    "--players=200",
]
NUMBER = r"(\d+(?:\.\d+)?)"
SUMMARY = re.compile(
    rf"^bench: broker=(kafka|tansu) e2e_rps={NUMBER} e2e_p50_ms={NUMBER} e2e_p99_ms={NUMBER}"
    rf" direct_rps={NUMBER} ratio_e2e_direct={NUMBER} worker_refunds_per_s={NUMBER}"
    rf" burst_in_deadline_pct={NUMBER}$"
)


@pytest.mark.parametrize("broker", ["kafka"])
def test_benchmark_runs_end_to_end_and_prints_every_field(broker: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "tests.bench.run", *TINY, "--broker", broker],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_S,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.strip().splitlines()
    for part in ("e2e", "direct", "worker", "burst"):
        assert any(line.startswith(f"{part}: ") for line in lines), completed.stdout
    summary = SUMMARY.match(lines[-1])
    assert summary, lines[-1]
    assert summary.group(1) == broker
