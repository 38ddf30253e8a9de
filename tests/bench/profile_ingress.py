"""Where the ingress spends its CPU per request, under open-loop load with the broker
answering instantly: the benchmark's `floor` part (`ingress_stub`, then the trivial
handler) runs while py-spy samples the ingress process (`tests.bench.pyspy`).

`python -m tests.bench.profile_ingress [--seconds S] [--top N] [-- bench options]`

py-spy is not a dependency of the project: install it in your own venv
(`.venv/bin/pip install py-spy`). The bench starts; once its ingress process is up,
py-spy records it for `--seconds` (the stub search's steps, all rates).

By default py-spy pauses the ingress for each sample, which can lower the capacity the
bench lines report during the recording; `--nonblocking` reads it without pausing
(the capacity is then the ingress's own; a sample's stack may be slightly torn).
"""

import argparse
from pathlib import Path

from tests.bench.pyspy import profile, summarize

SECONDS_DEFAULT = 40.0
TOP_DEFAULT = 15


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
    collapsed = profile(
        ["--parts", "floor", *args.bench],
        "ingress",
        args.seconds,
        nonblocking=args.nonblocking,
        raw_copy=args.raw,
    )
    for line in summarize(collapsed, args.top):
        print(f"profile_ingress: {line}")


if __name__ == "__main__":
    main()
