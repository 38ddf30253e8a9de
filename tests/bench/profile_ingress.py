"""Where the ingress spends its CPU per request, under open-loop load with the broker
answering instantly: the benchmark's `floor` part (`ingress_stub`, then the trivial
handler) runs while py-spy samples the ingress process.

`python -m tests.bench.profile_ingress [--seconds S] [--top N] [-- bench options]`

py-spy is not a dependency of the project: install it in your own venv
(`.venv/bin/pip install py-spy`). The bench starts; once its ingress process is up,
py-spy records it for `--seconds` (the stub search's steps, all rates); the report is
the top functions by cumulative share of the samples (a function counted once per
sample it is on the stack of) and by own share, from py-spy's collapsed stacks.

By default py-spy pauses the ingress for each sample, which can lower the capacity the
bench lines report during the recording; `--nonblocking` reads it without pausing
(the capacity is then the ingress's own; a sample's stack may be slightly torn).
"""

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

FIND_TIMEOUT_S = 120.0
SAMPLE_RATE_HZ = 200
SECONDS_DEFAULT = 40.0
TOP_DEFAULT = 15


def _find_ingress(bench: subprocess.Popen[bytes]) -> psutil.Process:
    """The bench's own ingress process (a descendant of it: never another one)."""
    deadline = time.monotonic() + FIND_TIMEOUT_S
    while time.monotonic() < deadline:
        if bench.poll() is not None:
            raise RuntimeError(f"the bench exited ({bench.returncode}) before its ingress")
        for child in psutil.Process(bench.pid).children(recursive=True):
            try:
                if child.cmdline()[-1:] == ["ingress"]:
                    return child
            except psutil.Error:
                continue
        time.sleep(0.2)
    raise RuntimeError(f"no ingress process in {FIND_TIMEOUT_S} s")


def _frame(text: str) -> str:
    """`function (path/to/module.py:line)` -> `module.py:function` (lines merged)."""
    name, _, where = text.partition(" (")
    path = where.rsplit(":", 1)[0]
    return f"{'/'.join(Path(path).parts[-2:])}:{name}"


def summarize(collapsed: str, top: int) -> list[str]:
    """The top functions by cumulative and by own share of py-spy's collapsed stacks."""
    cumulative: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")[1:]]  # [0] is the thread
        total += count
        for name in set(frames):
            cumulative[name] += count
        if frames:
            own[frames[-1]] += count
    lines = [f"samples={total}"]
    if total == 0:
        return lines
    lines.append(f"top {top} cumulative (% of samples):")
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in cumulative.most_common(top)]
    lines.append(f"top {top} own:")
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=SECONDS_DEFAULT)
    parser.add_argument("--top", type=int, default=TOP_DEFAULT)
    parser.add_argument("--raw", type=Path, help="also keep py-spy's collapsed stacks here")
    parser.add_argument(
        "--nonblocking", action="store_true", help="sample without pausing the ingress"
    )
    parser.add_argument("bench", nargs="*", help="more options of tests.bench.run")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    assert Path(py_spy).exists(), "py-spy: .venv/bin/pip install py-spy"
    with tempfile.TemporaryDirectory(prefix="profile-ingress-") as work:
        raw = Path(work) / "ingress.txt"
        command = [sys.executable, "-m", "tests.bench.run", "--parts", "floor"]
        command += ["--plot", str(Path(work) / "bench.png"), *args.bench]
        bench = subprocess.Popen(command)
        try:
            ingress = _find_ingress(bench)
            print(f"profile_ingress: recording pid {ingress.pid} ({args.seconds:g} s)", flush=True)
            record = ["record", "--pid", str(ingress.pid), "--format", "raw", "--output", str(raw)]
            record += ["--rate", str(SAMPLE_RATE_HZ), "--duration", f"{args.seconds:.0f}"]
            if args.nonblocking:
                record.append("--nonblocking")
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
            print(f"profile_ingress: {line}")


if __name__ == "__main__":
    main()
