"""py-spy on one process of a benchmark run: start `tests.bench.run`, find its process
of a role (a descendant of the run: never another one), record it, and summarize the
samples. Shared by `profile_ingress` and `profile_worker`.

py-spy is not a dependency of the project: install it in your own venv
(`.venv/bin/pip install py-spy`). The report is the top functions by cumulative share
of the samples (a function counted once per sample it is on the stack of) and by own
share, from py-spy's collapsed stacks.
"""

import collections
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

import psutil

FIND_TIMEOUT_S = 180.0  # the bench's stack start (a fresh broker and database) included
SAMPLE_RATE_HZ = 200
BENCH_TIMEOUT_S = 1800.0


def executable() -> str:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    assert Path(py_spy).exists(), "py-spy: .venv/bin/pip install py-spy"
    return py_spy


def find_process(bench: "subprocess.Popen[str]", role: str) -> psutil.Process:
    """The bench's own `refundctl <role>` process."""
    deadline = time.monotonic() + FIND_TIMEOUT_S
    while time.monotonic() < deadline:
        if bench.poll() is not None:
            raise RuntimeError(f"the bench exited ({bench.returncode}) before its {role}")
        for child in psutil.Process(bench.pid).children(recursive=True):
            try:
                if child.cmdline()[-1:] == [role]:
                    return child
            except psutil.Error:
                continue
        time.sleep(0.2)
    raise RuntimeError(f"no {role} process in {FIND_TIMEOUT_S} s")


def await_line(stream: IO[str], marker: str) -> None:
    """Echo the bench's stderr until a line with `marker`, then on in a thread (a full
    pipe would stop the bench)."""
    for line in stream:
        sys.stderr.write(line)
        if marker in line:
            break
    else:
        raise RuntimeError(f"the bench ended before {marker!r}")
    threading.Thread(target=lambda: sys.stderr.writelines(stream), daemon=True).start()


def profile(
    bench_args: list[str],
    role: str,
    seconds: float,
    *,
    ready_marker: str | None = None,
    nonblocking: bool = False,
    raw_copy: Path | None = None,
) -> str:
    """Run `python -m tests.bench.run *bench_args`; record its `role` process for
    `seconds` once it is up (and, with `ready_marker`, once the bench's stderr has a line
    with it); py-spy's collapsed stacks, once the bench has ended."""
    py_spy = executable()
    with tempfile.TemporaryDirectory(prefix=f"profile-{role}-") as work:
        raw = Path(work) / f"{role}.txt"
        command = [sys.executable, "-m", "tests.bench.run", *bench_args]
        command += ["--plot", str(Path(work) / "bench.png")]
        stderr = subprocess.PIPE if ready_marker else None
        bench = subprocess.Popen(command, stderr=stderr, text=True)
        try:
            target = find_process(bench, role)
            if ready_marker is not None:
                assert bench.stderr is not None
                await_line(bench.stderr, ready_marker)
            print(f"profile_{role}: recording pid {target.pid} ({seconds:g} s)", flush=True)
            record = ["record", "--pid", str(target.pid), "--format", "raw", "--output", str(raw)]
            record += ["--rate", str(SAMPLE_RATE_HZ), "--duration", f"{seconds:.0f}"]
            if nonblocking:
                record.append("--nonblocking")
            spied = subprocess.run(
                [py_spy, *record], capture_output=True, text=True, timeout=seconds + 60
            )
            assert spied.returncode == 0, f"py-spy: {spied.stderr[-2000:]}"
            bench.wait(timeout=BENCH_TIMEOUT_S)
        finally:
            if bench.poll() is None:
                bench.terminate()
                bench.wait(timeout=60)
        if raw_copy is not None:
            shutil.copyfile(raw, raw_copy)
        return raw.read_text()


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
