"""Where the worker spends its CPU per event in the open-loop regime (events arriving
a few at a time, not a drain): the benchmark's e2e part at fixed arrival rates
(`--open-rates`) runs while py-spy samples the worker process.

`python -m tests.bench.profile_worker [--rate R] [--seconds S] [--top N] [-- bench options]`

py-spy is not a dependency of the project: install it in your own venv
(`.venv/bin/pip install py-spy`). The report is the same as `profile_ingress`'s: the top
functions by cumulative and by own share of the samples.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

import psutil

from tests.bench.profile_ingress import SAMPLE_RATE_HZ, summarize

FIND_TIMEOUT_S = 180.0
RATE_DEFAULT = 200.0
STEPS = 4  # fixed steps at the rate: about 6 s each, a warm-up step before them
SECONDS_DEFAULT = 20.0
TOP_DEFAULT = 20


def _find_worker(bench: subprocess.Popen[str]) -> psutil.Process:
    """The bench's own worker process (a descendant of it: never another one)."""
    deadline = time.monotonic() + FIND_TIMEOUT_S
    while time.monotonic() < deadline:
        if bench.poll() is not None:
            raise RuntimeError(f"the bench exited ({bench.returncode}) before its worker")
        for child in psutil.Process(bench.pid).children(recursive=True):
            try:
                if child.cmdline()[-1:] == ["worker"]:
                    return child
            except psutil.Error:
                continue
        time.sleep(0.2)
    raise RuntimeError(f"no worker process in {FIND_TIMEOUT_S} s")


def _await_line(stream: IO[str], marker: str) -> None:
    """Echo the bench's stderr until a line with `marker` (its warm-up step is over),
    then on in a thread (a full pipe would stop the bench)."""
    for line in stream:
        sys.stderr.write(line)
        if marker in line:
            break
    else:
        raise RuntimeError(f"the bench ended before {marker!r}")
    threading.Thread(target=lambda: sys.stderr.writelines(stream), daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=RATE_DEFAULT, help="arrivals/s")
    parser.add_argument("--seconds", type=float, default=SECONDS_DEFAULT)
    parser.add_argument("--top", type=int, default=TOP_DEFAULT)
    parser.add_argument("--raw", type=Path, help="also keep py-spy's collapsed stacks here")
    parser.add_argument("bench", nargs="*", help="more options of tests.bench.run")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    assert Path(py_spy).exists(), "py-spy: .venv/bin/pip install py-spy"
    rates = ",".join([f"{args.rate:g}"] * STEPS)
    with tempfile.TemporaryDirectory(prefix="profile-worker-") as work:
        raw = Path(work) / "worker.txt"
        command = [sys.executable, "-m", "tests.bench.run", "--parts", "e2e_open"]
        command += ["--open-rates", rates, "--open-start-rate", f"{args.rate:g}"]
        command += ["--plot", str(Path(work) / "bench.png"), *args.bench]
        bench = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        assert bench.stderr is not None
        try:
            worker = _find_worker(bench)
            _await_line(bench.stderr, "open warm-up")  # the samples are of the steps
            print(f"profile_worker: recording pid {worker.pid} ({args.seconds:g} s)", flush=True)
            record = ["record", "--pid", str(worker.pid), "--format", "raw", "--output", str(raw)]
            record += ["--rate", str(SAMPLE_RATE_HZ), "--duration", f"{args.seconds:.0f}"]
            spied = subprocess.run(
                [py_spy, *record], capture_output=True, text=True, timeout=args.seconds + 60
            )
            assert spied.returncode == 0, f"py-spy: {spied.stderr[-2000:]}"
            bench.wait(timeout=1800)
        finally:
            if bench.poll() is None:
                bench.terminate()
                bench.wait(timeout=60)
        if args.raw is not None:
            shutil.copyfile(raw, args.raw)
        for line in summarize(raw.read_text(), args.top):
            print(f"profile_worker: {line}")


if __name__ == "__main__":
    main()
