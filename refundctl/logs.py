"""structlog set-up: one JSON line per event on stderr, secrets redacted.

Every line names its logger (`logger`: the name given to `structlog.get_logger`, or
the library's logger) and the process (`instance`: host name and process id, the pod's
name in Kubernetes), so that an operator can search by either.

Processors are plain functions. `redact` blanks fields whose names say they hold a
secret, and scrubs the configured secret values wherever they appear in a string,
whatever their length (a blank value is no secret: configuration refuses those). The
client libraries' own log records (aiokafka's group joins, say) come out as JSON lines
through the same redaction, from `library_level` up.
"""

import functools
import io
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO, cast

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[redacted]"
SECRET_FIELD_MARKERS = (
    "secret",
    "password",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "signature",
    "hash",
    "private",
)


# Distinct field names whose verdict is remembered: the names are the code's own (and
# a few header names), far fewer than this; the bound keeps a stray source of names
# (a dict of a client's header fields, say) from growing the cache.
SECRET_FIELD_NAMES_CACHED_MAX = 1024
# Values the scrub leaves as they are without looking (exact types: a subclass, say a
# str enum, takes the general path and comes out as it did before).
_PLAIN_TYPES = frozenset({int, float, bool, type(None)})


@functools.lru_cache(maxsize=SECRET_FIELD_NAMES_CACHED_MAX)
def is_secret_field(name: str) -> bool:
    """Whether a field of this name holds a secret. Cached (a pure function of the
    name): every log line asks it of each of its keys, and the keys repeat."""
    lowered = name.lower().replace("-", "_")
    return any(marker in lowered for marker in SECRET_FIELD_MARKERS)


def make_redactor(secret_values: Iterable[str]) -> Processor:
    values = sorted({v for v in secret_values if v.strip()}, key=len, reverse=True)
    # A string shorter than the shortest secret holds none: it is not searched.
    shortest = len(values[-1]) if values else 0

    def scrub_text(value: str) -> str:
        if not values:
            return value
        if len(value) < shortest:  # a plain str, as `replace` makes of a str subclass
            return str.__str__(value)
        for secret in values:
            value = value.replace(secret, REDACTED)
        return value

    def scrub(value: Any) -> Any:
        if value.__class__ in _PLAIN_TYPES:
            return value
        if isinstance(value, str):
            return scrub_text(value)
        if isinstance(value, dict):
            return {k: REDACTED if is_secret_field(str(k)) else scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [scrub(v) for v in value]
        return value

    def redact(_: Any, __: str, event_dict: EventDict) -> EventDict:
        result: EventDict = {}
        for key, value in event_dict.items():
            if is_secret_field(key):
                result[key] = REDACTED
            elif value.__class__ in _PLAIN_TYPES:  # the common cases first, inline
                result[key] = value
            elif value.__class__ is str:
                result[key] = scrub_text(value)
            else:
                result[key] = scrub(value)
        return result

    return redact


def default_instance() -> str:
    """This process, as its log lines name it: `<host name>:<pid>`."""
    return f"{socket.gethostname()}:{os.getpid()}"


class CurrentStderr(io.TextIOBase):
    """Whatever `sys.stderr` is when a line is written, not when logging was configured:
    loggers are cached on first use, and a test harness (or anything else) may swap
    stderr afterwards; a cached logger must not keep writing to a closed stream."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class NamedPrintLogger(structlog.PrintLogger):
    """A PrintLogger that knows the name it was asked for (`get_logger("worker")`)."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name

    def msg(self, message: str) -> None:
        """The line and its newline in one write, then a flush: the bytes `print` writes
        in two writes and a flush (one system call either way: stderr is line-buffered)."""
        with self._lock:
            self._file.write(message + "\n")
            self._file.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def _json_fallback(value: Any) -> Any:
    """What JSON has no type for, as structlog's `JSONRenderer` writes it: the value's
    `__structlog__()`, else its repr."""
    try:
        return value.__structlog__()
    except AttributeError:
        return repr(value)


def make_json_renderer() -> Processor:
    """structlog's `JSONRenderer()` byte for byte (`json.dumps`' defaults, the same
    fallback), with the encoder built once: `json.dumps` builds one per line when given
    a `default`."""
    encode = json.JSONEncoder(default=_json_fallback).encode

    def render(_: WrappedLogger, __: str, event_dict: EventDict) -> str:
        return encode(event_dict)

    return render


def named_print_logger_factory(file: TextIO) -> Callable[..., NamedPrintLogger]:
    """structlog's logger factory: the first argument of `get_logger` is the name."""

    def factory(*args: Any) -> NamedPrintLogger:
        return NamedPrintLogger(file, str(args[0]) if args else "refundctl")

    return factory


def add_logger_name(logger: WrappedLogger, _: str, event_dict: EventDict) -> EventDict:
    """`logger`: the name of the logger the line was written with."""
    name = getattr(logger, "name", None)
    if name is not None:
        event_dict.setdefault("logger", name)
    return event_dict


def make_instance_adder(instance: str) -> Processor:
    def add_instance(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        """`instance`: which process wrote the line."""
        event_dict.setdefault("instance", instance)
        return event_dict

    return add_instance


class LibraryLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root logger's handler: the libraries' records as JSON lines on stderr."""


def configure(
    secret_values: Iterable[str] = (),
    level: int = logging.INFO,
    library_level: int = logging.WARNING,
    instance: str | None = None,
) -> None:
    redact = make_redactor(secret_values)
    add_instance = make_instance_adder(default_instance() if instance is None else instance)
    timestamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    render = make_json_renderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            add_logger_name,
            add_instance,
            timestamp,
            structlog.processors.format_exc_info,
            redact,
            render,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=named_print_logger_factory(cast(TextIO, CurrentStderr())),
        cache_logger_on_first_use=True,
    )
    handler = LibraryLogHandler(CurrentStderr())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                add_instance,
                timestamp,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact,
                render,
            ],
        )
    )
    root = logging.getLogger()
    _remove_library_handlers(root)  # configured again (tests call main() repeatedly)
    root.addHandler(handler)
    root.setLevel(library_level)


def unconfigure(root_level: int) -> None:
    """Undo `configure` (the tests' and benchmarks' own set-ups): structlog's defaults,
    no library handler, the root logger at `root_level` again."""
    root = logging.getLogger()
    _remove_library_handlers(root)
    root.setLevel(root_level)
    structlog.reset_defaults()


def _remove_library_handlers(root: logging.Logger) -> None:
    for previous in [h for h in root.handlers if isinstance(h, LibraryLogHandler)]:
        root.removeHandler(previous)


class ProgressLog:
    """A long operation's progress as JSON lines (`refundctl replay` when stderr is not a
    terminal): `<what>_progress` with `done`, `total` and `percent` at the start, then at
    most once per `interval_s`, and `<what>_finished` at the end."""

    def __init__(
        self,
        what: str,
        interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = structlog.get_logger(f"refundctl.{what}")
        self._what = what
        self._interval_s = interval_s
        self._clock = clock
        self._started = clock()
        self._logged_at: float | None = None
        self.total: int | None = None
        self.done = 0

    def _fields(self) -> dict[str, Any]:
        elapsed_s = self._clock() - self._started
        percent = None if not self.total else round(100 * self.done / self.total, 1)
        return {
            "done": self.done,
            "total": self.total,
            "percent": percent,
            "elapsed_s": round(elapsed_s, 1),
            "per_s": round(self.done / elapsed_s, 1) if elapsed_s > 0 else None,
        }

    def start(self, total: int) -> None:
        self.total = total
        self._logged_at = self._clock()
        self._log.info(f"{self._what}_progress", **self._fields())

    def advance(self, count: int) -> None:
        self.done += count
        now = self._clock()
        if self._logged_at is None or now - self._logged_at >= self._interval_s:
            self._logged_at = now
            self._log.info(f"{self._what}_progress", **self._fields())

    def finish(self) -> None:
        self._log.info(f"{self._what}_finished", **self._fields())
