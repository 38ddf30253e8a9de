"""Issue 11's ingress input rules outside the adapters' own tests: the one text rule,
exact amounts, events read exactly, every debit path, secrets, the pre-authentication
cost, HPGames' replay defence and AMB's size answer. Pure: no broker, no database."""

import asyncio
import base64
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from adapters import amb, hpgames, jsonbody
from adapters.contract import request_digest
from refundctl import cli, config, logs
from schemas import (
    AMOUNT_DIGITS_MAX,
    CancelItem,
    CancelOutcome,
    CancelRequested,
    MoneyError,
    Provider,
    TextError,
    canonical_amount,
    validate_amount,
    validate_text,
)
from tests.providers import provider_secrets
from tests.unit import preauth_cost
from worker import ledger

PAST_28_DIGITS = "10.000000000000000000000000000001"


# The one text rule.


@pytest.mark.parametrize(
    "value", ["", "a\x00b", "evil\x00", "\n", "a\x1fb", "a\x7fb", "\ud800", "i" * 257]
)
def test_the_text_rule_refuses_what_the_ledger_cannot_hold(value: str) -> None:
    with pytest.raises(TextError):
        validate_text(value)


@pytest.mark.parametrize("value", ["a", "i" * 256, "ставка-é-€-😀", "a b", "\u0080\u2028"])
def test_the_text_rule_keeps_ordinary_ids(value: str) -> None:
    assert validate_text(value) == value


def event_json(**changes: Any) -> str:
    event: dict[str, Any] = {
        "correlation_id": "r.0",
        "provider": "scorpio",
        "cancel_id": "c-1",
        "player": "p1",
        "currency": "EUR",
        "items": [{"bet_tx": "b-1", "amount": "10.00"}],
        "request_digest": "d",
        "reply_to": {"topic": "t.replies", "partition": 0},
        "deadline_ms": 1,
        "requested_at_ms": 1,
    }
    event.update(changes)
    return json.dumps(event)


@pytest.mark.parametrize(
    "changes",
    [
        {"cancel_id": "evil\u0000"},
        {"player": "p\n1"},
        {"items": [{"bet_tx": "b\u007f", "amount": "10.00"}]},
        {"items": [{"bet_tx": "b-1", "amount": "10.00", "round_id": "r\u001f"}]},
        {"correlation_id": "i" * 10_000},
        {"items": [{"bet_tx": "b-1", "amount": 10.5}]},  # a JSON number: through a float
        {"items": [{"bet_tx": "b-1", "amount": 10}]},
        {"items": [{"bet_tx": "b-1", "amount": "NaN"}]},
        {"items": [{"bet_tx": "b-1", "amount": " 10"}]},
        {"items": [{"bet_tx": "b-1", "amount": "1" * 40}]},
        {"items": [{"bet_tx": "b-1", "amount": PAST_28_DIGITS}]},
        {"currency": None, "items": [{"bet_tx": "b-1", "amount": "10.00001"}]},
    ],
)
def test_a_hand_written_event_the_ledger_cannot_hold_fails_decoding(changes: Any) -> None:
    """Issue 11: the worker trusted the topic (a NUL id stopped a partition; amounts
    were read through a float). Such an event now fails decoding (a dead letter)."""
    with pytest.raises(ValidationError):
        CancelRequested.model_validate_json(event_json(**changes))


def test_events_write_amounts_as_strings_and_read_them_back_exactly() -> None:
    event = CancelRequested.model_validate_json(
        event_json(items=[{"bet_tx": "b", "amount": "10.0001"}], currency="CLF")
    )
    assert event.items[0].amount == Decimal("10.0001")
    wire = json.loads(event.model_dump_json())
    assert wire["items"][0]["amount"] == "10.0001"
    assert CancelRequested.model_validate_json(event.model_dump_json()) == event


def test_an_hpgames_event_may_carry_an_amount_without_a_currency() -> None:
    event = CancelRequested.model_validate_json(event_json(provider="hpgames", currency=None))
    assert (event.currency, event.items[0].amount) == (None, Decimal("10.00"))


def test_outcome_balances_are_read_from_strings_only() -> None:
    outcome = {
        "correlation_id": "r.0",
        "provider": "scorpio",
        "cancel_id": "c-1",
        "outcome": "refunded",
        "items": [{"bet_tx": "b-1", "outcome": "refunded", "amount": "10.00"}],
        "balance_before": "90.00",
        "balance_after": "100.00",
        "ledger_tx": "x",
        "decided_at_ms": 1,
    }
    assert CancelOutcome.model_validate_json(json.dumps(outcome)).balance_after == Decimal("100")
    with pytest.raises(ValidationError):
        CancelOutcome.model_validate_json(json.dumps({**outcome, "balance_after": 100.0}))


# Exact amounts.


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        (PAST_28_DIGITS, "EUR"),  # normalize() rounded it to 10: accepted before
        ("1.0000000000000000000000000001", "EUR"),
        ("10.000000000000000000000000000001", "CLF"),
        ("0.00000000000000000000000000001", "EUR"),
        ("10.00001", None),
    ],
)
def test_decimals_are_counted_on_the_exact_value(amount: str, currency: str | None) -> None:
    with pytest.raises(MoneyError):
        validate_amount(Decimal(amount), currency)


def test_the_digit_bound_is_13_integer_digits_and_the_currencys_decimals() -> None:
    assert AMOUNT_DIGITS_MAX == 17
    assert validate_amount(Decimal("999999999999.9999"), "CLF")  # 16 digits
    assert validate_amount(Decimal("1000000000000.0000"), "CLF")  # trailing zeros are free
    assert validate_amount(Decimal("10.000000000000000000000000000000"), "EUR")  # exactly 10


def test_the_digest_covers_the_exact_amount_and_not_its_rounding() -> None:
    """Issue 11: 10.000000000000000000000000000001 digested like 10."""

    def digest(amount: str) -> str:
        items = [CancelItem.model_construct(bet_tx="b", amount=Decimal(amount), round_id=None)]
        return request_digest(Provider.SCORPIO, "c", "p", "EUR", items)

    assert digest(PAST_28_DIGITS) != digest("10")
    assert digest("10") == digest("10.00") == digest("1E+1")
    # The text is the one digests were made of before (str(normalize())), so a retry of
    # a cancel decided before this change still matches its stored digest.
    for text in ["10", "10.50", "0.01", "1000000000000", "123.4567", "7E+3"]:
        assert canonical_amount(Decimal(text)) == str(Decimal(text).normalize())


def test_json_numbers_are_read_exactly_never_through_a_float() -> None:
    body = jsonbody.loads(
        ('{"amount": ' + PAST_28_DIGITS + ', "n": 12345678901234567890}').encode()
    )
    assert jsonbody.decimal(body, "amount") == Decimal(PAST_28_DIGITS)
    assert str(jsonbody.decimal(body, "amount")) == PAST_28_DIGITS
    assert body["n"].literal == "12345678901234567890"


# Every debit path refuses what the ledger could not show back.


class Untouched:
    """A connection that fails the test if the ledger writes anything."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the ledger touched the database ({name}) for a refused debit")


@pytest.mark.parametrize(
    "changes",
    [
        {"amount": Decimal("1.0000000000000000000000000001")},  # issue 11: committed, then broke
        {"amount": Decimal(PAST_28_DIGITS)},
        {"amount": Decimal("10.001")},
        {"tx": ""},
        {"tx": "bet\x00"},
        {"player": "p\n"},
        {"bet_id": "b\x7f"},
        {"round_id": "r" * 257},
        {"provider": "scorpio\x00"},
    ],
)
def test_a_debit_the_ledger_could_not_show_back_is_refused_before_any_write(
    changes: dict[str, Any],
) -> None:
    args: dict[str, Any] = {
        "provider": "scorpio",
        "player": "p1",
        "currency": "EUR",
        "amount": Decimal("10"),
        "tx": "bet-1",
        **changes,
    }
    with pytest.raises(ledger.LedgerRefusal) as refusal:
        # Untouched stands in for a connection (and fails on any use): not one by type
        asyncio.run(ledger.debit(Untouched(), **args))  # type: ignore[arg-type]
    assert "\n" not in str(refusal.value)


@pytest.mark.parametrize(
    ("player", "balance"), [("p\x00", Decimal(100)), ("p1", Decimal(PAST_28_DIGITS))]
)
def test_an_opening_balance_the_ledger_could_not_show_back_is_refused(
    player: str, balance: Decimal
) -> None:
    with pytest.raises(ledger.LedgerRefusal):
        # Untouched stands in for a connection (and fails on any use): not one by type
        asyncio.run(ledger.open_account(Untouched(), player, "EUR", balance))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "args",
    [
        ["--tx", ""],  # issue 11: accepted
        ["--tx", "bet\x01"],
        ["--tx", "b" * 257],
        ["--player", "p\n1"],
        ["--bet-id", ""],
        ["--round", "r\x7f"],
    ],
)
def test_ledger_debit_arguments_are_ids(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    base = {
        "--provider": "scorpio",
        "--player": "p1",
        "--currency": "EUR",
        "--amount": "10",
        "--tx": "bet-1",
    }
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = ["ledger", "debit", *[part for pair in base.items() for part in pair]]
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args(argv)
    assert exited.value.code == 2
    reason = capsys.readouterr().err.strip().splitlines()[-1]  # after the usage lines
    assert reason.startswith(f"refundctl ledger debit: error: argument {args[0]}")


# Secrets.


def secrets_env(tmp_path: Path, bits: int = 2048, **changes: str) -> dict[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    pem = tmp_path / "naga.pem"
    pem.write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return {
        "SCORPIO_API_TOKEN": "s" * 16,
        "HPGAMES_MERCHANT_ID": "m",
        "HPGAMES_SECRET_KEY": "h" * 16,
        "AMB_AGENT_USERNAME": "agent",
        "AMB_API_KEY": "a" * 16,
        "NAGA_PUBLIC_KEY_FILE": str(pem),
        **changes,
    }


@pytest.mark.parametrize(
    "changes",
    [
        {"SCORPIO_API_TOKEN": "   "},  # issue 11: whitespace-only accepted
        {"AMB_AGENT_USERNAME": "\t"},
        {"HPGAMES_SECRET_KEY": ""},
        {"AMB_API_KEY": "a" * 15},
        {"SCORPIO_API_TOKEN": "short"},
    ],
)
def test_blank_and_short_secrets_are_refused(tmp_path: Path, changes: dict[str, Any]) -> None:
    with pytest.raises(config.ConfigError):
        config.provider_secrets(secrets_env(tmp_path, **changes))


def test_the_dev_stack_may_use_short_secrets_and_the_dev_values_pass(tmp_path: Path) -> None:
    env = secrets_env(tmp_path, AMB_API_KEY="short-key")
    assert config.provider_secrets(env, dev_stack=True).value("AMB_API_KEY") == "short-key"
    with pytest.raises(config.ConfigError, match="blank"):
        config.provider_secrets({**env, "AMB_API_KEY": " "}, dev_stack=True)
    dev = {**env, **config.DEV_SECRETS}
    assert len(dev["AMB_API_KEY"]) == 15  # the documented dev value: kept as it is
    assert config.provider_secrets(dev).value("AMB_API_KEY") == "dev-amb-api-key"


def test_a_naga_key_under_2048_bits_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="2048"):
        config.provider_secrets(secrets_env(tmp_path, bits=1024))


@pytest.mark.parametrize("secret", ["k", "abc", "12345"])
def test_secrets_of_any_length_are_scrubbed_from_logs(secret: str) -> None:
    """Issue 11: secrets under 6 characters were never scrubbed."""
    redact = logs.make_redactor([secret, "  "])
    event = redact(None, "info", {"event": "x", "detail": f"v={secret};"})
    assert isinstance(event, dict)
    assert event["detail"] == f"v={logs.REDACTED};"


# Pre-authentication cost, replay defence, AMB's size answer.


def test_pre_authentication_work_on_a_hostile_1_mib_body_is_cheap(tmp_path: Path) -> None:
    """Issue 11: a 1 MiB `[0,0,…]` cost 336 ms (Scorpio) and 491 ms (Naga) of CPU on the
    one event loop before authentication. `python -m tests.unit.preauth_cost` prints it."""
    slow = [
        (path, name, round(ms, 2))
        for path, name, ms in preauth_cost.results(tmp_path)
        if ms > preauth_cost.PREAUTH_CPU_MS_MAX
    ]
    assert not slow


def test_seen_hashes_refuse_a_hash_with_another_transaction_id() -> None:
    seen = hpgames.SeenHashes(entries_max=3)
    assert seen.admit("h1", "c-1", expires_ms=1_000, now_ms=0)
    assert seen.admit("h1", "c-1", expires_ms=1_000, now_ms=1)  # a retry
    assert not seen.admit("h1", "c-2", expires_ms=1_000, now_ms=2)  # a replay
    assert seen.admit("h1", "c-2", expires_ms=3_000, now_ms=1_000)  # expired: forgotten
    for n in range(10):  # bounded: the oldest go first
        seen.admit(f"x{n}", "c", expires_ms=5_000, now_ms=1_500)
    assert len(seen) == 3
    assert seen.dropped > 0


def test_amb_authenticates_before_the_size_answer() -> None:
    """Issue 11: a body over 1 MiB without credentials got 200/40003, not 401/30001."""
    secrets = provider_secrets(AMB_AGENT_USERNAME="agent", AMB_API_KEY="key-key-key-key-key")
    (route,) = amb.routes(secrets)
    unauthenticated = route.too_large({}, 1_000)
    assert unauthenticated.status == 401
    assert json.loads(unauthenticated.body)["statusCode"] == amb.STATUS_INVALID_TOKEN
    header = "Basic " + base64.b64encode(b"agent:key-key-key-key-key").decode()
    authenticated = route.too_large({"authorization": header}, 1_000)
    assert authenticated.status == 200
    assert json.loads(authenticated.body) == {
        "id": "",
        "statusCode": amb.STATUS_FORBIDDEN,
        "productId": "",
        "timestampMillis": 1_000,
    }


def test_other_routes_answer_a_too_large_body_as_invalid() -> None:
    secrets = provider_secrets(HPGAMES_MERCHANT_ID="m", HPGAMES_SECRET_KEY="h")
    single, bulk = hpgames.routes(secrets)
    assert single.too_large({}, 0) == single.invalid(0)
    assert json.loads(bulk.too_large({}, 0).body)["cancelDebitResponses"][0]["errorCode"] == 2
