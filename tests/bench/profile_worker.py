"""Where the worker spends its CPU per event in the open-loop regime (events arriving
a few at a time, not a drain): the benchmark's e2e part at a fixed arrival rate
(`--open-rates`) runs while py-spy samples the worker process (`tests.bench.pyspy`),
from the end of the warm-up step on.

`python -m tests.bench.profile_worker [--rate R] [--seconds S] [--top N] [-- bench options]`

py-spy is not a dependency of the project: install it in your own venv
(`.venv/bin/pip install py-spy`).
"""

import argparse
from pathlib import Path

from tests.bench.pyspy import profile, summarize

RATE_DEFAULT = 200.0
STEPS = 4  # fixed steps at the rate, about 6 s each, after the bench's warm-up step
SECONDS_DEFAULT = 20.0
TOP_DEFAULT = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=RATE_DEFAULT, help="arrivals/s")
    parser.add_argument("--seconds", type=float, default=SECONDS_DEFAULT)
    parser.add_argument("--top", type=int, default=TOP_DEFAULT)
    parser.add_argument("--raw", type=Path, help="also keep py-spy's collapsed stacks here")
    parser.add_argument("bench", nargs="*", help="more options of tests.bench.run")
    args = parser.parse_args()
    rate = f"{args.rate:g}"
    steps = ["--open-rates", ",".join([rate] * STEPS), "--open-start-rate", rate]
    collapsed = profile(
        ["--parts", "e2e_open", *steps, *args.bench],
        "worker",
        args.seconds,
        ready_marker="open warm-up",
        raw_copy=args.raw,
    )
    for line in summarize(collapsed, args.top):
        print(f"profile_worker: {line}")


if __name__ == "__main__":
    main()
