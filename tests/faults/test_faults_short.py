"""A short run of the fault harness as part of the suite (about a minute of faults).

The figure to report comes from a longer `FAULTS_MINUTES=10 make faults`."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

LINE = re.compile(
    r"^faults: seed=\d+ requests=(\d+) faults=(\d+) double_refunds=(\d+) lost=(\d+)"
    r" unanswered=(\d+) retry_mismatches=(\d+) replay_changes=(\d+) conservation_errors=(\d+)$"
)


@pytest.mark.timeout(900)
def test_short_fault_run_keeps_every_invariant(tmp_path: Path) -> None:
    harness = [sys.executable, "-m", "tests.faults.harness", "--minutes", "1", "--seed", "7"]
    result = subprocess.run(
        [*harness, "--work-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=840,
    )
    last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    match = LINE.match(last)
    assert match, f"no figures line:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    requests, faults, *violations = (int(value) for value in match.groups())
    print(result.stdout)
    assert requests > 100
    assert faults >= 5
    assert violations == [0, 0, 0, 0, 0, 0], last
    assert result.returncode == 0
