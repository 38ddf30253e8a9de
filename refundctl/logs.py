"""structlog set-up: one JSON line per event on stderr, secrets redacted.

Processors are plain functions. `redact` blanks fields whose names say they hold a
secret, and scrubs the configured secret values wherever they appear in a string,
whatever their length (a blank value is no secret: configuration refuses those). The
client libraries' own log records (aiokafka's group joins, say) come out as JSON lines
through the same redaction, from `library_level` up.
"""

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog
from structlog.typing import EventDict, Processor

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


def is_secret_field(name: str) -> bool:
    lowered = name.lower().replace("-", "_")
    return any(marker in lowered for marker in SECRET_FIELD_MARKERS)


def make_redactor(secret_values: Iterable[str]) -> Processor:
    values = sorted({v for v in secret_values if v.strip()}, key=len, reverse=True)

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            for secret in values:
                value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: REDACTED if is_secret_field(str(k)) else scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [scrub(v) for v in value]
        return value

    def redact(_: Any, __: str, event_dict: EventDict) -> EventDict:
        result: MutableMapping[str, Any] = {}
        for key, value in event_dict.items():
            result[key] = REDACTED if is_secret_field(key) else scrub(value)
        return dict(result)

    return redact


class LibraryLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root logger's handler: the libraries' records as JSON lines on stderr."""


def configure(
    secret_values: Iterable[str] = (),
    level: int = logging.INFO,
    library_level: int = logging.WARNING,
) -> None:
    redact = make_redactor(secret_values)
    timestamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamp,
            structlog.processors.format_exc_info,
            redact,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = LibraryLogHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                timestamp,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    for previous in [h for h in root.handlers if isinstance(h, LibraryLogHandler)]:
        root.removeHandler(previous)  # configured again (tests call main() repeatedly)
    root.addHandler(handler)
    root.setLevel(library_level)
