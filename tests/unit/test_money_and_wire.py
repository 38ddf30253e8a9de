"""Exact money, strict JSON, event round trips, and log redaction (no I/O)."""

import json
from decimal import Decimal
from typing import Any

import pydantic
import pytest
import structlog

from adapters import jsonbody
from refundctl.logs import REDACTED, make_redactor
from schemas import (
    CancelItem,
    CancelRequested,
    MoneyError,
    Provider,
    ReplyTo,
    format_amount,
    validate_amount,
)
from schemas.transport import decode_request, encode


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        ("0", "EUR"),
        ("-1", "EUR"),
        ("NaN", "EUR"),
        ("Infinity", "EUR"),
        ("1.001", "EUR"),
        ("1.5", "JPY"),
        ("1.0001", "KWD"),
        ("1E+13", "EUR"),
        ("10", "XXX"),
        ("10", "eur"),
    ],
)
def test_invalid_amounts_are_refused(amount: str, currency: str) -> None:
    with pytest.raises(MoneyError):
        validate_amount(Decimal(amount), currency)


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        ("0.01", "EUR"),
        ("10", "EUR"),
        ("10.50", "EUR"),
        ("1.000", "KWD"),
        ("500", "JPY"),
        ("1E+2", "USD"),
    ],
)
def test_valid_amounts_pass(amount: str, currency: str) -> None:
    assert validate_amount(Decimal(amount), currency) == Decimal(amount)


def test_format_amount_uses_the_currency_minor_units() -> None:
    assert format_amount(Decimal("-10"), "EUR") == "-10.00"
    assert format_amount(Decimal("7"), "JPY") == "7"
    assert format_amount(Decimal("0.5"), "KWD") == "0.500"


def test_event_round_trip_keeps_exact_decimals() -> None:
    event = CancelRequested(
        correlation_id="c",
        provider=Provider.AMB,
        cancel_id="x",
        player="p",
        currency="EUR",
        items=[
            CancelItem(bet_tx="a", amount=Decimal("0.10")),
            CancelItem(bet_tx="b", amount=Decimal("1234567890.99")),
        ],
        request_digest="d",
        reply_to=ReplyTo(topic="t", partition=1),
        deadline_ms=1,
        requested_at_ms=1,
    )
    wire = encode(event)
    assert b'"amount":"0.10"' in wire
    assert decode_request(wire) == event
    assert [i.amount for i in decode_request(wire).items] == [
        Decimal("0.10"),
        Decimal("1234567890.99"),
    ]


@pytest.mark.parametrize(
    "change",
    [
        {"schema_version": 2},
        {"surprise": 1},
        {"items": []},
        {"currency": "XXX"},
        {"items": [{"bet_tx": "a", "amount": "0.001"}]},
        {"items": [{"bet_tx": "a", "amount": "1"}, {"bet_tx": "a", "amount": "1"}]},
    ],
)
def test_events_that_break_the_schema_are_refused(change: dict[str, Any]) -> None:
    valid = {
        "correlation_id": "c",
        "provider": "scorpio",
        "cancel_id": "x",
        "player": "p",
        "currency": "EUR",
        "items": [{"bet_tx": "a", "amount": "1.00"}],
        "request_digest": "d",
        "reply_to": {"topic": "t", "partition": 0},
        "deadline_ms": 1,
        "requested_at_ms": 1,
    }
    with pytest.raises(pydantic.ValidationError):
        decode_request(json.dumps({**valid, **change}).encode())


def test_json_numbers_are_kept_as_written_and_written_exactly() -> None:
    parsed = jsonbody.loads(b'{"a": 10.50, "b": 1e2, "c": -0}')
    assert [parsed[k].literal for k in "abc"] == ["10.50", "1e2", "-0"]
    assert (
        jsonbody.dumps({"x": Decimal("0.10"), "y": [1, "s", None, True]})
        == b'{"x":0.10,"y":[1,"s",null,true]}'
    )


@pytest.mark.parametrize("raw", [b'{"a": Infinity}', b'{"a": -Infinity}', b'{"a": NaN}'])
def test_non_finite_literals_are_refused(raw: bytes) -> None:
    with pytest.raises(jsonbody.BodyError):
        jsonbody.loads(raw)


def test_redactor_blanks_secret_fields_and_scrubs_secret_values() -> None:
    redact = make_redactor(["super-secret-token"])
    event = redact(
        None,
        "info",
        {
            "event": "request",
            "signature": "abc",
            "headers": {
                "Authorization": "Basic xyz",
                "x-request-signature": "sig",
                "accept": "json",
            },
            "note": "token super-secret-token leaked",
            "hash": "deadbeef",
        },
    )
    assert isinstance(event, dict)
    assert event["signature"] == event["hash"] == REDACTED
    assert event["headers"] == {
        "Authorization": REDACTED,
        "x-request-signature": REDACTED,
        "accept": "json",
    }
    assert "super-secret-token" not in json.dumps(event)


def test_configured_logging_never_prints_a_secret(capsys: pytest.CaptureFixture[str]) -> None:
    from refundctl import logs

    logs.configure(["dev-scorpio-token"])
    try:
        structlog.get_logger("t").info(
            "request", token="dev-scorpio-token", detail="dev-scorpio-token!"
        )
        line = capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        structlog.reset_defaults()
    assert "dev-scorpio-token" not in line
    assert json.loads(line)["event"] == "request"


def test_library_records_come_out_as_redacted_json_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import logging

    from refundctl import config, logs

    root = logging.getLogger()
    level = root.level
    logs.configure(
        ["dev-scorpio-token"], library_level=config.library_log_level({"LIBRARY_LOG_LEVEL": "info"})
    )
    try:
        logging.getLogger("aiokafka.consumer.group_coordinator").info(
            "Joined group %s (token %s)", "g", "dev-scorpio-token"
        )
        logging.getLogger("aiokafka.consumer.group_coordinator").debug("not shown")
        lines = capsys.readouterr().err.strip().splitlines()
    finally:
        logs.unconfigure(level)
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["event"] == f"Joined group g (token {REDACTED})"
    assert record["level"] == "info"
    assert record["logger"] == "aiokafka.consumer.group_coordinator"


def test_library_log_level_is_a_level_name() -> None:
    from refundctl import config

    assert config.library_log_level({}) == config.LIBRARY_LOG_LEVELS["warning"]
    with pytest.raises(config.ConfigError, match="LIBRARY_LOG_LEVEL"):
        config.library_log_level({"LIBRARY_LOG_LEVEL": "loud"})


@pytest.mark.parametrize("raw", [b'{"a": "\\ud800"}', b'{"\\udfff": 1}', b'[["x\\uDBFFy"]]'])
def test_lone_surrogates_are_refused(raw: bytes) -> None:
    with pytest.raises(jsonbody.BodyError):
        jsonbody.loads(raw)


def test_surrogate_pairs_are_fine() -> None:
    assert jsonbody.loads(b'{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}
