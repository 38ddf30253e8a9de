"""Logs an operator can search: every line names its logger and its process, the
ingress's request line names the provider's cancel ids (bounded), and a replay without a
terminal reports its progress as JSON lines."""

import contextlib
import json
import logging
from collections.abc import Iterator
from decimal import Decimal

import pytest
import structlog

from adapters.contract import Accepted, CancelFields, Outcomes, Response
from adapters.http_app import CANCEL_ID_CHARS_LOGGED, CANCEL_IDS_LOGGED_MAX, cancel_ids
from refundctl import logs
from refundctl.cli import _progress_bar
from schemas import CancelItem, Provider


@contextlib.contextmanager
def configured() -> Iterator[None]:
    """Logging configured onto the (captured) stderr of the test's body."""
    root = logging.getLogger()
    level = root.level
    logs.configure(["dev-scorpio-token"], library_level=logging.INFO, instance="pod-7:1")
    try:
        yield
    finally:
        logs.unconfigure(level)


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().err.strip().splitlines()]


def test_every_line_names_its_logger_and_instance(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with configured():
        _test_every_line_names_its_logger_and_instance(capsys)


def _test_every_line_names_its_logger_and_instance(capsys: pytest.CaptureFixture[str]) -> None:
    structlog.get_logger("worker").info("batch_applied", events=3)
    structlog.get_logger("ingress.http").warning("x", token="dev-scorpio-token")
    logging.getLogger("aiokafka.consumer.group_coordinator").info("Joined group %s", "g")
    app, http, library = lines(capsys)
    assert (app["logger"], app["instance"], app["event"]) == ("worker", "pod-7:1", "batch_applied")
    assert (http["logger"], http["token"]) == ("ingress.http", logs.REDACTED)
    assert library["logger"] == "aiokafka.consumer.group_coordinator"
    assert library["instance"] == "pod-7:1"


def test_the_default_instance_is_host_and_pid() -> None:
    import os
    import socket

    assert logs.default_instance() == f"{socket.gethostname()}:{os.getpid()}"


def event(cancel_id: str, bet: str) -> CancelFields:
    items = (CancelItem(bet_tx=bet, amount=Decimal("1.00")),)
    return CancelFields(Provider.HPGAMES, cancel_id, "p1", "EUR", items)


def unanswered(outcomes: Outcomes) -> Response:
    raise AssertionError("the request line never answers")


def test_the_request_line_names_cancel_ids_bounded() -> None:
    one = Accepted(cancels=(event("c-1", "b1"),), answer=unanswered)
    assert cancel_ids(one) == ["c-1"]
    long_id = "x" * 200
    bulk = Accepted(
        cancels=tuple(event(long_id if n == 0 else f"c-{n}", f"b{n}") for n in range(50)),
        answer=unanswered,
    )
    ids = cancel_ids(bulk)
    assert len(ids) == CANCEL_IDS_LOGGED_MAX
    assert ids[0] == "x" * CANCEL_ID_CHARS_LOGGED
    assert ids[1:3] == ["c-1", "c-2"]
    same = Accepted(cancels=(event("c-9", "b1"), event("c-9", "b2")), answer=unanswered)
    assert cancel_ids(same) == ["c-9"]


def test_progress_without_a_terminal_is_json_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with configured():
        _test_progress_without_a_terminal_is_json_lines(capsys)


def _test_progress_without_a_terminal_is_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    now = [0.0]
    progress = logs.ProgressLog("replay", interval_s=5.0, clock=lambda: now[0])
    progress.start(1000)
    for _ in range(10):  # 10 advances within 4.5 s: one line at most per 5 s
        now[0] += 0.45
        progress.advance(10)
    now[0] = 10.0
    progress.advance(900)
    progress.finish()
    start, middle, finished = lines(capsys)
    assert start["event"] == "replay_progress"
    assert (start["done"], start["total"], start["percent"]) == (0, 1000, 0.0)
    assert (middle["done"], middle["percent"]) == (1000, 100.0)
    assert finished["event"] == "replay_finished"
    assert finished["logger"] == "refundctl.replay"
    assert finished["per_s"] == 100.0


def test_the_replay_bar_is_json_lines_when_stderr_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with configured():
        _test_the_replay_bar_is_json_lines_when_stderr_is_not_a_terminal(capsys)


def _test_the_replay_bar_is_json_lines_when_stderr_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with _progress_bar("replay") as progress:
        assert isinstance(progress, logs.ProgressLog)
        progress.start(2)
        progress.advance(2)
    events = [line["event"] for line in lines(capsys)]
    assert events[0] == "replay_progress"
    assert events[-1] == "replay_finished"


def test_redaction_holds_once_the_field_names_are_cached() -> None:
    """The verdict per field name is cached: a name seen plain stays plain, a secret
    name stays secret, at the top and nested, and secret values are scrubbed in nested
    strings however often the same shape of line was written before."""
    redact = logs.make_redactor(["sekrit-value-1"])
    line = {
        "event": "request",
        "status": 200,
        "latency_ms": 1.5,
        "ok": True,
        "none": None,
        "api_key": "k",
        "headers": {"X-Signature": "s", "accept": "json", "n": 3},
        "items": [{"password": "p", "note": "has sekrit-value-1 in it"}, ("sekrit-value-1",)],
    }
    for _ in range(3):  # cold, then warm
        event = redact(None, "info", dict(line))
        assert event == {
            "event": "request",
            "status": 200,
            "latency_ms": 1.5,
            "ok": True,
            "none": None,
            "api_key": logs.REDACTED,
            "headers": {"X-Signature": logs.REDACTED, "accept": "json", "n": 3},
            "items": [
                {"password": logs.REDACTED, "note": f"has {logs.REDACTED} in it"},
                [logs.REDACTED],
            ],
        }
    assert logs.is_secret_field.cache_info().hits > 0
    assert logs.is_secret_field.cache_info().maxsize == logs.SECRET_FIELD_NAMES_CACHED_MAX
