"""Container health check for the image's HEALTHCHECK: the standard library and the
settings' declarations (the slim base image has no curl; the image's `python` is the
venv's, where the package is installed).

One image runs every `refundctl` command, so the check follows the command the
container runs (read from /proc/1/cmdline):

- `refundctl ingress`: GET /healthz on HTTP_PORT (its declared default, 8080);
- `refundctl worker`: GET /healthz on WORKER_METRICS_PORT (its declared default, 9100;
  0 = not served, nothing to check): its loop turned within WORKER_HEARTBEAT_STALE_MS;
- anything else (the one-shot `migrate` and `topics create` jobs): healthy.

Kubernetes ignores HEALTHCHECK and uses the probes in deploy/k8s/.
"""

import os
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from adapters.settings import HTTP_PORT
from worker.settings import METRICS_PORT

TIMEOUT_S = 2.0


def command_of(cmdline: Sequence[str]) -> str | None:
    """The refundctl subcommand in a process's argv (after an init or a python, if any)."""
    for index, arg in enumerate(cmdline[:-1]):
        if os.path.basename(arg) == "refundctl":
            return cmdline[index + 1]
    return None


def url_for(command: str | None, env: Mapping[str, str]) -> str | None:
    """The URL that tells this container is alive, or None when there is none."""
    if command == "ingress":
        return f"http://127.0.0.1:{env.get(HTTP_PORT.env) or HTTP_PORT.default}/healthz"
    if command == "worker":
        port = env.get(METRICS_PORT.env) or str(METRICS_PORT.default)
        return None if port == "0" else f"http://127.0.0.1:{port}/healthz"
    return None


def main() -> int:
    try:
        cmdline = Path("/proc/1/cmdline").read_bytes().decode().split("\0")
    except OSError:
        cmdline = []
    url = url_for(command_of([arg for arg in cmdline if arg]), os.environ)
    if url is None:
        return 0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
