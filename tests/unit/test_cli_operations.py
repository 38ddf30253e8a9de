"""The operations commands' arguments and pure pieces (no broker, no database)."""

import argparse
from datetime import UTC, datetime

import pytest

from refundctl import cli
from worker.dead_letters import DeadLetterId, RedriveReport
from worker.replay import ReplayCounts, ReplayReport, Window
from worker.status import partition_lag, render_status


def parse(*args: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(list(args))


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-22T05:00:00Z", ms("2026-11-22T05:00:00+00:00")),
        ("2026-11-22T05:00:00", ms("2026-11-22T05:00:00+00:00")),  # naive: UTC
        ("2026-11-22T07:00:00+02:00", ms("2026-11-22T05:00:00+00:00")),
        ("2026-11-22T05:00:00.123Z", ms("2026-11-22T05:00:00+00:00") + 123),
        ("2026-11-22", ms("2026-11-22T00:00:00+00:00")),
    ],
)
def test_times_are_iso_8601_in_utc_unless_told(text: str, expected: int) -> None:
    args = parse("replay", "--since", text)
    assert args.since == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["replay"],  # a start is required
        ["replay", "--from-beginning", "--since", "2026-11-22"],  # one start only
        ["replay", "--since", "yesterday"],
        ["replay", "--since", "2026-11-22T05:00:00Z", "--until", "2026-11-22T05:00:00Z"],
        ["replay", "--since", "2026-11-22T06:00:00Z", "--until", "2026-11-22T05:00:00Z"],
        ["dlq", "redrive"],  # --id or --all
        ["dlq", "redrive", "--all", "--id", "0:1"],
        ["dlq", "redrive", "--id", "3"],
        ["dlq", "redrive", "--id", "a:1"],
        ["dlq", "redrive", "--id", "-1:4"],
    ],
)
def test_usage_errors_exit_2_before_any_io(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_replay_arguments() -> None:
    args = parse("replay", "--from-beginning", "--until", "2026-11-22T05:00:00Z", "--dry-run")
    assert args.from_beginning
    assert args.since is None
    assert args.until == ms("2026-11-22T05:00:00+00:00")
    assert args.dry_run


def test_replay_help_says_replies_are_not_published(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("replay", "--help")
    assert "Replies are NOT published" in capsys.readouterr().out


def test_redrive_ids() -> None:
    args = parse("dlq", "redrive", "--id", "3:17", "--id", "0:0")
    assert args.ids == [DeadLetterId(3, 17), DeadLetterId(0, 0)]
    assert str(DeadLetterId.parse("3:17")) == "3:17"
    assert sorted([DeadLetterId(10, 0), DeadLetterId(2, 5)]) == [
        DeadLetterId(2, 5),
        DeadLetterId(10, 0),
    ]


def test_redrive_report_counts() -> None:
    report = RedriveReport(
        [
            {"id": "0:1", "result": "redriven", "request_partition": 0, "request_offset": 9},
            {"id": "0:2", "result": "already_redriven", "redriven_at": "t"},
            {"id": "9:9", "result": "not_found"},
        ]
    )
    summary = report.as_json()
    assert (summary["redriven"], summary["already_redriven"], summary["not_found"]) == (1, 1, 1)
    assert report.ids("not_found") == ["9:9"]


def test_replay_summary_and_json() -> None:
    counts = ReplayCounts(events=5, applied=1, already_applied=3, failed=1)
    assert counts.as_json() == {"events": 5, "applied": 1, "already_applied": 3, "failed": 1}
    summary = ReplayReport(counts, "refund.cancel-requested", 12, "scan", dry_run=False).summary()
    assert summary == (
        "replay: 5 events, 1 applied, 3 already applied, 1 failed (refund.cancel-requested,"
        " 12 partitions, start by scan; replies not published)"
    )
    dry = ReplayReport(counts, "t", 1, "beginning", dry_run=True).summary()
    assert dry.startswith("replay --dry-run (rolled back, nothing written): 5 events, 1 would")


def test_window_needs_since_before_until() -> None:
    Window(since_ms=1, until_ms=2)
    with pytest.raises(AssertionError):
        Window(since_ms=2, until_ms=2)


@pytest.mark.parametrize(
    ("beginning", "end", "stored", "lag"),
    [
        (0, 10, 4, 6),
        (0, 10, 10, 0),
        (0, 10, None, 10),  # nothing stored yet: the worker starts at the beginning
        (5, 10, 2, 5),  # below the log (retention): the worker restarts at its beginning
        (0, 10, 12, 10),  # beyond the log (a recreated topic): likewise
    ],
)
def test_lag_is_what_the_worker_still_has_to_apply(
    beginning: int, end: int, stored: int | None, lag: int
) -> None:
    assert partition_lag(beginning, end, stored) == lag


def test_status_table() -> None:
    at = datetime(2026, 11, 22, 5, 0, tzinfo=UTC).isoformat()
    text = render_status(
        {
            "topic": "refund.cancel-requested",
            "consumer_group": "refund-worker",
            "partitions": [
                {"partition": 0, "end_offset": 7, "stored_offset": 5, "lag": 2},
                {"partition": 1, "end_offset": 0, "stored_offset": None, "lag": 0},
            ],
            "lag": 2,
            "tombstones": {"count": 1, "oldest_at": at},
            "last_applied_at": None,
            "dead_letters": {"topic": "refund.cancel-dead-letters", "count": 3},
        }
    )
    lines = text.splitlines()
    assert lines[2].split() == ["0", "7", "5", "2"]
    assert lines[3].split() == ["1", "0", "-", "0"]
    assert lines[4].split() == ["total", "2"]
    assert f"tombstones: 1 (oldest {at})" in lines
    assert "last applied: never" in lines
    assert "dead letters: 3 in refund.cancel-dead-letters" in lines
