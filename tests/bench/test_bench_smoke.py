"""The benchmark runs end to end at tiny sizes and prints its summary lines.

Asserts that it completes, that every field is there and that the PNG and its results
are written, not how fast anything is. To stay quick it shares one broker between the
parts (`--shared-broker`) and searches the open-loop rates in two short steps.
"""

import json
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
    "--open-steps=2",
    "--open-step-seconds=1",
    "--open-step-warmup=0.5",
    "--open-start-rate=40",
    "--floor-rate-max=400",
    "--shared-broker",
]
NUMBER = r"(\d+(?:\.\d+)?)"
# Figures at the open-loop capacity: nan when no step of the tiny search passed.
AT_RATE = r"(\d+(?:\.\d+)?|nan)"
CLOSED = re.compile(
    rf"^bench_closed: broker=(kafka|tansu) e2e_rps={NUMBER} e2e_p50_ms={NUMBER}"
    rf" e2e_p99_ms={NUMBER} direct_rps={NUMBER} ratio_e2e_direct={NUMBER}$"
)
SUMMARY = re.compile(
    rf"^bench: broker=(kafka|tansu) e2e_rps={NUMBER} e2e_p50_ms={NUMBER} e2e_p99_ms={NUMBER}"
    rf" direct_rps={NUMBER} ratio_e2e_direct={AT_RATE} worker_refunds_per_s={NUMBER}"
    rf" burst_in_deadline_pct={NUMBER} e2e_open_rps={NUMBER} e2e_open_p50_ms={AT_RATE}"
    rf" e2e_open_p99_ms={AT_RATE} direct_open_rps={NUMBER} direct_open_p99_ms={AT_RATE}"
    rf" worker_vs_sql={NUMBER} ingress_vs_floor={AT_RATE}"
    rf" burst_x2_in_deadline_pct={AT_RATE}$"
)
PARTS = ("e2e", "direct", "e2e_open", "direct_open", "ingress_stub", "floor", "worker", "burst")


@pytest.mark.parametrize("broker", ["kafka"])
def test_benchmark_runs_end_to_end_and_prints_every_field(broker: str, tmp_path: Path) -> None:
    png = tmp_path / "bench.png"
    completed = subprocess.run(
        [sys.executable, "-m", "tests.bench.run", *TINY, "--broker", broker, "--plot", str(png)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_S,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.strip().splitlines()
    for part in PARTS:
        assert any(line.startswith(f"{part}: ") for line in lines), completed.stdout
    assert CLOSED.match(lines[-2]), lines[-2]
    summary = SUMMARY.match(lines[-1])
    assert summary, lines[-1]
    assert summary.group(1) == broker
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    results = json.loads(png.with_suffix(".json").read_text())
    assert results["lines"] == lines[-2:]
    assert set(results["open_loop"]) == {"e2e", "direct", "ingress_stub", "floor"}
    assert f"bench: plot {png}" in completed.stderr
