"""CPU spent on a hostile 1 MiB body before authentication, per route (issue 11: a 1 MiB
`[0,0,…]` cost 336 ms on /scorpio and 491 ms on /naga/cancelBet). Pure: each route's
`accept` on a request with no valid credentials, the best of `REPEATS` runs, CPU time.

    .venv/bin/python -m tests.unit.preauth_cost

prints one line per (route, body) with the milliseconds. `test_ingress_input_rules`
asserts the bound (PREAUTH_CPU_MS_MAX) with the same bodies.
"""

import time
from collections.abc import Iterator
from pathlib import Path

from adapters.contract import REQUEST_BYTES_MAX, Request, Route
from adapters.routes import routes
from refundctl import devstack
from tests.providers import provider_secrets

PREAUTH_CPU_MS_MAX = 20.0  # issue 11: pre-authentication work on 1 MiB, at most 20 ms CPU
REPEATS = 5
NOW_MS = 1_767_225_600_000


def _fill(prefix: bytes, unit: bytes, suffix: bytes) -> bytes:
    count = (REQUEST_BYTES_MAX - len(prefix) - len(suffix)) // len(unit)
    return prefix + unit * count + suffix


def hostile_bodies() -> dict[str, bytes]:
    """Bodies of just under 1 MiB (the largest the ingress reads)."""
    half = REQUEST_BYTES_MAX // 2
    return {
        "zeros-array": _fill(b"[", b"0,", b"0]"),
        "zeros-in-object": _fill(b'{"data":{"betId":"b","x":[', b"0,", b'0]},"dataHash":"x"}'),
        "bulk-of-zeros": _fill(b'{"cancelDebitRequests":[', b"0,", b"0]}"),
        "bulk-of-objects": _fill(b'{"cancelDebitRequests":[', b'{"a":0},', b"{}]}"),
        "deep-nesting": b"[" * half + b"]" * half,
        "deep-objects": _fill(b"", b'{"a":', b"") + b"}" * 10,
        "long-string": _fill(b'{"a":"', b"x", b'"}'),
        "escapes": _fill(b'{"a":"', b'\\"', b'"}'),
        "commas-in-strings": _fill(b'{"a":"', b",", b'"}'),
        # At the bulk route's bounds: parsed (not refused by the counts), then refused.
        "bulk-at-comma-bound": b'{"cancelDebitRequests":[' + b"0," * 31_999 + b"0]}",
        "bulk-1000-forged-items": b'{"cancelDebitRequests":['
        + b",".join([_FORGED_ITEM] * 1000)
        + b"]}",
    }


_FORGED_ITEM = (
    b'{"merchantId":"m","timestamp":1767225600000,"betIdToCancel":"b-1",'
    b'"transactionIdToCancel":"d-1","transactionId":"c-1","playerId":"p-1",'
    b'"gameId":1,"currency":"EUR","authToken":"t","amount":10,"hash":"' + b"0" * 64 + b'"}'
)


def table(key_dir: Path) -> list[Route]:
    secrets = provider_secrets(
        devstack.naga_dev_key(key_dir).read_bytes(),
        SCORPIO_API_TOKEN="t" * 32,
        HPGAMES_MERCHANT_ID="m",
        HPGAMES_SECRET_KEY="k" * 32,
        AMB_AGENT_USERNAME="u",
        AMB_API_KEY="a" * 32,
    )
    return routes(secrets)


def measure(route: Route, body: bytes) -> float:
    """Best CPU milliseconds of `route.accept` on `body` with no valid credentials."""
    request = Request({"authorization": "Basic dTpi", "x-signature": "x"}, body, NOW_MS)
    best = float("inf")
    for _ in range(REPEATS):
        started = time.process_time()
        route.accept(request)
        best = min(best, time.process_time() - started)
    return best * 1000


def results(key_dir: Path) -> Iterator[tuple[str, str, float]]:
    for route in table(key_dir):
        for name, body in hostile_bodies().items():
            yield route.path, name, measure(route, body)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        worst = 0.0
        for path, name, ms in results(Path(directory)):
            worst = max(worst, ms)
            print(f"{path:<28} {name:<18} {ms:7.2f} ms")
        print(f"preauth_cost: worst={worst:.2f} ms bound={PREAUTH_CPU_MS_MAX} ms")
