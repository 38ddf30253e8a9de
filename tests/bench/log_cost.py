"""Per-line cost of the ingress's canonical request line, before and after the log
changes, side by side in one process (so the ratio survives a noisy machine).

`python -m tests.bench.log_cost [--rounds R] [--lines N]`

Two measures, each with its "before" (the code as it was, kept here verbatim) and its
"after" (`refundctl.logs` as it is):

- `redact`: the redaction processor alone, on the request line's fields;
- `line`: the whole line as `log.info("request", ...)` writes it (structlog's chain,
  the redaction, the JSON, the write to a file), into /dev/null.

Before measuring, both sides render the same lines and the bytes must be equal (apart
from the timestamp, fixed for the check). Rounds alternate the two sides (ABAB...); the
report gives microseconds per line, the median over rounds, and after/before.
"""

import argparse
import contextlib
import io
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from decimal import Decimal
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor

from refundctl import logs

ROUNDS_DEFAULT = 7
LINES_DEFAULT = 20_000
SECRETS = ("dev-scorpio-token", "dev-naga-private-key-material", "hp-games-secret-0123456789")
FIXED_TIMESTAMP = "2026-12-01T03:20:00.000000Z"


def request_fields(n: int) -> dict[str, Any]:
    """The fields `adapters.http_app.Ingress._done` logs for an answered request."""
    return {
        "provider": "hpgames",
        "path": "/hpgames/cancel",
        "correlation_id": f"{n:032x}",
        "cancel_ids": [f"c-{n}"],
        "cancel_ids_count": 1,
        "result": "answered",
        "outcome": "refunded",
        "events": 1,
        "status": 200,
        "latency_ms": 3.27,
    }


# ------------------------------------------------------------------ before (verbatim)

SECRET_FIELD_MARKERS_BEFORE = logs.SECRET_FIELD_MARKERS


def is_secret_field_before(name: str) -> bool:
    lowered = name.lower().replace("-", "_")
    return any(marker in lowered for marker in SECRET_FIELD_MARKERS_BEFORE)


def make_redactor_before(secret_values: Iterable[str]) -> Processor:
    values = sorted({v for v in secret_values if v.strip()}, key=len, reverse=True)

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            for secret in values:
                value = value.replace(secret, logs.REDACTED)
            return value
        if isinstance(value, dict):
            return {
                k: logs.REDACTED if is_secret_field_before(str(k)) else scrub(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [scrub(v) for v in value]
        return value

    def redact(_: Any, __: str, event_dict: EventDict) -> EventDict:
        result: MutableMapping[str, Any] = {}
        for key, value in event_dict.items():
            result[key] = logs.REDACTED if is_secret_field_before(key) else scrub(value)
        return dict(result)

    return redact


def fixed_timestamp(_: Any, __: str, event_dict: EventDict) -> EventDict:
    event_dict["timestamp"] = FIXED_TIMESTAMP
    return event_dict


def configure_before(secret_values: Iterable[str], instance: str, fixed: bool) -> None:
    """`refundctl.logs.configure`'s structlog part as it was (stdlib handler left out)."""
    stamp: Processor = (
        fixed_timestamp if fixed else structlog.processors.TimeStamper(fmt="iso", utc=True)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            logs.add_logger_name,
            logs.make_instance_adder(instance),
            stamp,
            structlog.processors.format_exc_info,
            make_redactor_before(secret_values),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=logs.named_print_logger_factory(logs.CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )


# ------------------------------------------------------------------ measuring


@contextlib.contextmanager
def stderr_to(stream: TextIO) -> Iterator[None]:
    previous = sys.stderr
    sys.stderr = stream
    try:
        yield
    finally:
        sys.stderr = previous


@contextlib.contextmanager
def configured(side: str, fixed: bool = False) -> Iterator[None]:
    """structlog configured as `side` ("before" or "after"); the library handler the
    product's `configure` adds is taken off again."""
    root = logging.getLogger()
    level = root.level
    if side == "before":
        configure_before(SECRETS, "bench:1", fixed)
    else:
        logs.configure(SECRETS, instance="bench:1")
        if fixed:
            processors = structlog.get_config()["processors"]
            at = [type(p).__name__ for p in processors].index("TimeStamper")
            processors[at] = fixed_timestamp
    try:
        yield
    finally:
        logs.unconfigure(level)


def rendered(side: str, fields: list[dict[str, Any]]) -> list[str]:
    """The lines `side` writes for `fields` (timestamp fixed)."""
    stream = io.StringIO()
    with configured(side, fixed=True), stderr_to(stream):
        log = structlog.get_logger("ingress")
        for f in fields:
            log.info("request", **f)
    return stream.getvalue().splitlines()


def time_redact(redact: Processor, events: list[dict[str, Any]]) -> float:
    """Microseconds per line of the redaction processor alone."""
    started = time.perf_counter()
    for event in events:
        redact(None, "info", event)
    return (time.perf_counter() - started) * 1e6 / len(events)


def time_lines(side: str, fields: list[dict[str, Any]]) -> float:
    """Microseconds per line of `log.info("request", ...)` into /dev/null."""
    with (
        open(os.devnull, "w") as null,
        stderr_to(null),
        configured(side),
    ):
        log = structlog.get_logger("ingress")
        started = time.perf_counter()
        for f in fields:
            log.info("request", **f)
        return (time.perf_counter() - started) * 1e6 / len(fields)


def side_by_side(
    name: str, before: Callable[[], float], after: Callable[[], float], rounds: int
) -> str:
    times: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(rounds):
        times["before"].append(before())
        times["after"].append(after())
    b, a = statistics.median(times["before"]), statistics.median(times["after"])
    return f"log_cost: {name} before_us={b:.2f} after_us={a:.2f} after_vs_before={a / b:.2f}"


class _Structlogged:
    def __structlog__(self) -> dict[str, int]:
        return {"own": 1}


def check_same_output(lines_count: int) -> None:
    fields = [request_fields(n) for n in range(lines_count)]
    fields.append(
        request_fields(0)
        | {
            "token": "x",
            "headers": {"Authorization": "Basic y", "accept": "json", "n": 1},
            "detail": f"leaked {SECRETS[0]} and {SECRETS[2]}",
            "items": [{"signature": "s", "v": [1.5, None, True, SECRETS[1]]}],
            "amount": Decimal("10.50"),  # no JSON type: its repr
            "own": _Structlogged(),  # its __structlog__()
            "who": 'Zoë \u2603 "quoted"\n',
        }
    )
    before, after = rendered("before", fields), rendered("after", fields)
    assert before == after, "the lines differ"
    for line in after:
        json.loads(line)
    assert not any(secret in line for line in after for secret in SECRETS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS_DEFAULT)
    parser.add_argument("--lines", type=int, default=LINES_DEFAULT)
    args = parser.parse_args()
    check_same_output(100)
    fields = [request_fields(n) for n in range(args.lines)]
    events = [
        {
            "event": "request",
            **f,
            "level": "info",
            "logger": "ingress",
            "instance": "bench:1",
            "timestamp": FIXED_TIMESTAMP,
        }
        for f in fields
    ]
    redact_before = make_redactor_before(SECRETS)
    redact_after = logs.make_redactor(SECRETS)
    print(
        side_by_side(
            "redact",
            lambda: time_redact(redact_before, events),
            lambda: time_redact(redact_after, events),
            args.rounds,
        ),
        flush=True,
    )
    print(
        side_by_side(
            "line",
            lambda: time_lines("before", fields),
            lambda: time_lines("after", fields),
            args.rounds,
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
