"""AMB "Cancel Tips" adapter: authentication, validation, normalization, answers.

Pure: no broker, no database. Outcomes are built directly to exercise `render`.
"""

import base64
import copy
import json
from decimal import Decimal
from typing import Any

import pytest

from adapters import amb, jsonbody
from adapters.contract import Accepted, Envelope, Request, Response, request_digest
from adapters.credentials import ProviderSecrets
from schemas import (
    CancelItem,
    CancelOutcome,
    CancelRequested,
    ItemResult,
    Outcome,
    Provider,
    ReplyTo,
)
from tests.providers import provider_secrets, stamped

AGENT = "agent001"
API_KEY = "851d8beb-2055-4107-bd77-63efd76fdead"
CONFIG = amb.AmbConfig(agent_username=AGENT.encode(), api_key=API_KEY.encode())
AUTH = amb.basic_auth_header(AGENT, API_KEY)

NOW = 1_760_000_000_000  # the server clock when the request arrived
DECIDED = NOW + 42  # when the worker decided
REPLY_TO = ReplyTo(topic="refund.replies", partition=3)
ENVELOPE = Envelope(
    request_id="req-1", reply_to=REPLY_TO, deadline_ms=NOW + 3500, requested_at_ms=NOW
)

REQUEST_ID = "26cf1ce1-8ee1-4bbf-9d42-872631054bcf"
PRODUCT_ID = "{{ Product ID }}"


def seed_body(**changes: Any) -> dict[str, Any]:
    """The seed's request example, its timestamp replaced by a current one."""
    body: dict[str, Any] = {
        "id": REQUEST_ID,
        "productId": PRODUCT_ID,
        "username": "foobar",
        "currency": "THB",
        "timestampMillis": NOW - 1_500,
        "txns": [{"id": "Tip-001", "status": "REFUND", "roundId": "Tip-R-0001", "betAmount": 1000}],
    }
    body.update(changes)
    return body


def txn(index: int, **changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": f"Tip-{index:03}",
        "status": "REFUND",
        "roundId": f"Tip-R-{index:04}",
        "betAmount": Decimal(10 * index),
    }
    item.update(changes)
    return item


def encode(body: Any) -> bytes:
    """JSON with Decimal written as a number literal (never through float)."""
    return jsonbody.dumps(body)


def request(body: bytes, authorization: str | None = AUTH, received_at_ms: int = NOW) -> Request:
    headers = {"content-type": "application/json"}
    if authorization is not None:
        headers["authorization"] = authorization
    return Request(headers=headers, body=body, received_at_ms=received_at_ms)


def accept(body: bytes, authorization: str | None = AUTH) -> Accepted | Response:
    return amb.accept(request(body, authorization), CONFIG)


def accepted(body: bytes) -> Accepted:
    result = accept(body)
    assert isinstance(result, Accepted), result
    return result


def decoded(response: Response) -> Any:
    """The body as JSON, numbers as Decimal/int so that a string would not pass as one."""
    return json.loads(response.body, parse_float=Decimal)


def fail_body(status_code: int, request_id: str = "", product_id: str = "") -> bytes:
    return encode(
        {
            "id": request_id,
            "statusCode": status_code,
            "productId": product_id,
            "timestampMillis": NOW,
        }
    )


def outcome(
    kind: Outcome,
    before: Decimal | None = Decimal("8600"),
    after: Decimal | None = Decimal("8700"),
    replayed: bool = False,
) -> CancelOutcome:
    return CancelOutcome(
        correlation_id=ENVELOPE.correlation_id(0),
        provider=Provider.AMB,
        cancel_id=REQUEST_ID,
        outcome=kind,
        items=[ItemResult(bet_tx="Tip-001", outcome=kind, amount=Decimal(1000))],
        player="foobar",
        currency="THB",
        balance_before=before,
        balance_after=after,
        ledger_tx="00000000-0000-5000-8000-000000000000",
        decided_at_ms=DECIDED,
        replayed=replayed,
    )


def render(result: CancelOutcome | None) -> Response:
    return accepted(encode(seed_body())).answer([result])


# Authentication


def test_basic_auth_header_is_base64_of_username_colon_key() -> None:
    # base64("agent001:851d8beb-2055-4107-bd77-63efd76fdead")
    assert AUTH == "Basic YWdlbnQwMDE6ODUxZDhiZWItMjA1NS00MTA3LWJkNzctNjNlZmQ3NmZkZWFk"


def test_valid_credentials_are_accepted() -> None:
    assert amb.verify(AUTH, CONFIG)
    assert isinstance(accept(encode(seed_body())), Accepted)


def test_scheme_name_is_case_insensitive() -> None:
    assert amb.verify("basic " + AUTH.removeprefix("Basic "), CONFIG)


def test_api_key_may_contain_a_colon() -> None:
    config = amb.AmbConfig(agent_username=b"agent", api_key=b"key:with:colons")
    assert amb.verify(amb.basic_auth_header("agent", "key:with:colons"), config)
    assert not amb.verify(amb.basic_auth_header("agent", "key"), config)


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(amb.basic_auth_header(AGENT, API_KEY + "x"), id="wrong-key"),
        pytest.param(amb.basic_auth_header(AGENT, API_KEY[:-1]), id="key-prefix"),
        pytest.param(amb.basic_auth_header(AGENT, ""), id="empty-key"),
        pytest.param(amb.basic_auth_header("agent002", API_KEY), id="wrong-username"),
        pytest.param(amb.basic_auth_header("", API_KEY), id="empty-username"),
        pytest.param(amb.basic_auth_header(API_KEY, AGENT), id="swapped"),
        pytest.param(None, id="missing-header"),
        pytest.param("", id="empty-header"),
        pytest.param("Basic", id="scheme-only"),
        pytest.param("Basic ", id="empty-credentials"),
        pytest.param("Bearer " + AUTH.removeprefix("Basic "), id="not-basic"),
        pytest.param(AUTH.removeprefix("Basic "), id="no-scheme"),
        pytest.param("Basic !!!not-base64!!!", id="garbage-base64"),
        pytest.param("Basic " + AUTH.removeprefix("Basic ")[:-1], id="bad-padding"),
        pytest.param("Basic " + base64.b64encode(b"no-colon").decode(), id="no-colon"),
        pytest.param("Basic " + base64.b64encode(b"\xff\xfe:\x00").decode(), id="binary"),
        pytest.param("Basic caf\u00e9", id="non-ascii"),
        pytest.param(AUTH + "A" * 2000, id="over-long"),
    ],
)
def test_bad_credentials_get_401_and_are_not_published(authorization: str | None) -> None:
    assert not amb.verify(authorization, CONFIG)
    result = accept(encode(seed_body()), authorization)
    assert isinstance(result, Response)
    assert result.status == 401
    assert result.body == fail_body(amb.STATUS_INVALID_TOKEN)


def test_credentials_are_checked_before_the_body() -> None:
    result = accept(b"{not json", amb.basic_auth_header(AGENT, "wrong"))
    assert isinstance(result, Response)
    assert result.status == 401
    assert decoded(result)["statusCode"] == amb.STATUS_INVALID_TOKEN


def test_config_repr_hides_the_api_key() -> None:
    assert API_KEY not in repr(CONFIG)


@pytest.mark.parametrize(
    ("username", "api_key"), [(b"", b"key"), (b"agent", b""), (b"a:b", b"key")]
)
def test_config_refuses_unusable_credentials(username: bytes, api_key: bytes) -> None:
    with pytest.raises(AssertionError):
        amb.AmbConfig(agent_username=username, api_key=api_key)


# The seed's example, end to end


def test_golden_seed_request_and_response() -> None:
    result = accepted(encode(seed_body()))
    (event,) = stamped(result, ENVELOPE)
    items = [CancelItem(bet_tx="Tip-001", amount=Decimal(1000), round_id="Tip-R-0001")]
    assert event.correlation_id == "req-1.0"
    assert event.provider is Provider.AMB
    assert event.cancel_id == REQUEST_ID
    assert event.player == "foobar"
    assert event.currency == "THB"
    assert event.items == items
    assert event.request_digest == request_digest(Provider.AMB, REQUEST_ID, "foobar", "THB", items)
    assert event.reply_to == REPLY_TO
    assert event.deadline_ms == NOW + 3500
    assert event.requested_at_ms == NOW

    response = result.answer([outcome(Outcome.REFUNDED)])
    assert response.status == 200
    assert response.body == (
        b'{"id":"26cf1ce1-8ee1-4bbf-9d42-872631054bcf","statusCode":0,'
        b'"timestampMillis":1760000000042,"productId":"{{ Product ID }}","currency":"THB",'
        b'"balanceBefore":8600,"balanceAfter":8700,"username":"foobar"}'
    )
    assert response.headers["content-type"] == "application/json"


def test_seed_text_with_fractional_amount_stays_exact() -> None:
    body = encode(seed_body(txns=[txn(1, betAmount=Decimal("12.34"))]))
    assert b'"betAmount":12.34' in body
    (event,) = stamped(accepted(body), ENVELOPE)
    assert event.items[0].amount == Decimal("12.34")
    assert isinstance(event.items[0].amount, Decimal)


def test_multi_txn_request_is_one_event_with_every_item_in_order() -> None:
    txns = [txn(3), txn(1), txn(2)]
    result = accepted(encode(seed_body(txns=txns)))
    assert len(result.cancels) == 1
    (event,) = stamped(result, ENVELOPE)
    assert [item.bet_tx for item in event.items] == ["Tip-003", "Tip-001", "Tip-002"]
    assert [item.amount for item in event.items] == [Decimal(30), Decimal(10), Decimal(20)]
    assert [item.round_id for item in event.items] == ["Tip-R-0003", "Tip-R-0001", "Tip-R-0002"]
    assert event.correlation_id == ENVELOPE.correlation_id(0)
    assert event.request_digest == request_digest(
        Provider.AMB, REQUEST_ID, "foobar", "THB", event.items
    )


def test_hundred_txns_are_accepted() -> None:
    (event,) = stamped(accepted(encode(seed_body(txns=[txn(i) for i in range(1, 101)]))), ENVELOPE)
    assert len(event.items) == 100


def test_retry_carries_the_same_cancel_id_and_digest() -> None:
    first = accepted(encode(seed_body()))
    later = amb.accept(
        request(encode(seed_body(timestampMillis=NOW + 9_000)), received_at_ms=NOW + 10_000),
        CONFIG,
    )
    assert isinstance(later, Accepted)
    envelope = Envelope("req-2", REPLY_TO, deadline_ms=NOW + 13_500, requested_at_ms=NOW + 10_000)
    (first_event,), (later_event,) = stamped(first, ENVELOPE), stamped(later, envelope)
    assert later_event.cancel_id == first_event.cancel_id
    assert later_event.request_digest == first_event.request_digest
    assert later_event.correlation_id == "req-2.0"


@pytest.mark.parametrize("skew_ms", [-300_000, 0, 300_000])
def test_timestamp_within_300_seconds_is_accepted(skew_ms: int) -> None:
    assert isinstance(accept(encode(seed_body(timestampMillis=NOW + skew_ms))), Accepted)


# Validation: answered at once with 40003, HTTP 200, nothing published


def _without(key: str) -> dict[str, Any]:
    body = seed_body()
    del body[key]
    return body


def _txn_without(key: str) -> dict[str, Any]:
    item = txn(1)
    del item[key]
    return seed_body(txns=[item])


LONG = "x" * 10_000
EXACT_MAX = "x" * 256

INVALID_BODIES: list[Any] = [
    # body level
    pytest.param(b"", id="empty-body"),
    pytest.param(b"   \n", id="blank-body"),
    pytest.param(b"{", id="invalid-json"),
    pytest.param(b"[]", id="top-level-array"),
    pytest.param(encode([seed_body()]), id="top-level-array-of-request"),
    pytest.param(b'"text"', id="top-level-string"),
    pytest.param(b"1000", id="top-level-number"),
    pytest.param(b"null", id="top-level-null"),
    pytest.param(b'{"id":"\xff\xfe"}', id="non-utf8"),
    pytest.param(encode(seed_body())[:-1] + b',"id":"again"}', id="duplicate-key"),
    pytest.param(b"[" * 100 + b"]" * 100, id="nested-too-deep"),
    # missing request fields
    *[
        pytest.param(encode(_without(key)), id=f"missing-{key}")
        for key in ("id", "timestampMillis", "productId", "currency", "username", "txns")
    ],
    *[
        pytest.param(encode(seed_body(**{key: None})), id=f"null-{key}")
        for key in ("id", "timestampMillis", "productId", "currency", "username", "txns")
    ],
    # missing txn fields
    *[
        pytest.param(encode(_txn_without(key)), id=f"missing-txn-{key}")
        for key in ("id", "status", "roundId", "betAmount")
    ],
    # wrong types, request level
    pytest.param(encode(seed_body(id=123)), id="id-number"),
    pytest.param(encode(seed_body(id=["x"])), id="id-array"),
    pytest.param(encode(seed_body(productId=1)), id="productId-number"),
    pytest.param(encode(seed_body(username=True)), id="username-bool"),
    pytest.param(encode(seed_body(username={"name": "foobar"})), id="username-object"),
    pytest.param(encode(seed_body(currency=764)), id="currency-number"),
    pytest.param(encode(seed_body(timestampMillis=str(NOW))), id="timestamp-string"),
    pytest.param(encode(seed_body(timestampMillis=True)), id="timestamp-bool"),
    pytest.param(encode(seed_body(timestampMillis=Decimal(NOW) + Decimal("0.5"))), id="ts-frac"),
    pytest.param(encode(seed_body(txns={"id": "Tip-001"})), id="txns-object"),
    pytest.param(encode(seed_body(txns="Tip-001")), id="txns-string"),
    pytest.param(encode(seed_body(txns=[])), id="txns-empty"),
    pytest.param(encode(seed_body(txns=["Tip-001"])), id="txn-string"),
    pytest.param(encode(seed_body(txns=[[txn(1)]])), id="txn-array"),
    pytest.param(encode(seed_body(txns=[None])), id="txn-null"),
    # wrong types, txn level
    pytest.param(encode(seed_body(txns=[txn(1, id=1)])), id="txn-id-number"),
    pytest.param(encode(seed_body(txns=[txn(1, status=0)])), id="txn-status-number"),
    pytest.param(encode(seed_body(txns=[txn(1, roundId=False)])), id="txn-roundId-bool"),
    pytest.param(encode(seed_body(txns=[txn(1, betAmount="1000")])), id="betAmount-string"),
    pytest.param(encode(seed_body(txns=[txn(1, betAmount=True)])), id="betAmount-bool"),
    pytest.param(encode(seed_body(txns=[txn(1, betAmount=[10])])), id="betAmount-array"),
    # control characters in ids (the ledger cannot hold a NUL)
    pytest.param(encode(seed_body(id="req\u0000")), id="nul-in-request-id"),
    pytest.param(encode(seed_body(username="p\n1")), id="newline-in-username"),
    pytest.param(encode(seed_body(txns=[txn(1, id="Tip\u007f")])), id="delete-in-txn-id"),
    pytest.param(encode(seed_body(txns=[txn(1, roundId="r\u001f")])), id="control-in-round"),
    # txn status
    pytest.param(encode(seed_body(txns=[txn(1, status="REJECT")])), id="status-reject"),
    pytest.param(encode(seed_body(txns=[txn(1, status="refund")])), id="status-lowercase"),
    pytest.param(encode(seed_body(txns=[txn(1, status="OPEN")])), id="status-open"),
    pytest.param(encode(seed_body(txns=[txn(1), txn(2, status="")])), id="status-empty"),
    # amounts
    pytest.param(encode(seed_body(txns=[txn(1, betAmount=Decimal(-1))])), id="amount-negative"),
    pytest.param(encode(seed_body(txns=[txn(1, betAmount=Decimal(0))])), id="amount-zero"),
    pytest.param(
        encode(seed_body(txns=[txn(1, betAmount=Decimal("0.00"))])), id="amount-zero-decimals"
    ),
    pytest.param(
        encode(seed_body()).replace(b'"betAmount":1000', b'"betAmount":NaN'), id="amount-nan"
    ),
    pytest.param(
        encode(seed_body()).replace(b'"betAmount":1000', b'"betAmount":Infinity'),
        id="amount-infinity",
    ),
    pytest.param(
        encode(seed_body(txns=[txn(1, betAmount=Decimal("10.001"))])), id="amount-3-decimals-THB"
    ),
    pytest.param(
        encode(seed_body(currency="JPY", txns=[txn(1, betAmount=Decimal("10.5"))])),
        id="amount-decimals-JPY",
    ),
    pytest.param(encode(seed_body(txns=[txn(1, betAmount=Decimal("1e400"))])), id="amount-1e400"),
    pytest.param(encode(seed_body(txns=[txn(1, betAmount=Decimal("1e13"))])), id="amount-huge"),
    pytest.param(
        encode(seed_body()).replace(b'"betAmount":1000', b'"betAmount":1e400'),
        id="amount-1e400-literal",
    ),
    pytest.param(
        encode(seed_body(txns=[txn(1, betAmount=Decimal("1" * 60))])), id="amount-60-digits"
    ),
    pytest.param(
        encode(seed_body(txns=[txn(1, betAmount=Decimal("1e-999999"))])), id="amount-tiny"
    ),
    # currency
    pytest.param(encode(seed_body(currency="XYZ")), id="currency-unknown"),
    pytest.param(encode(seed_body(currency="thb")), id="currency-lowercase"),
    pytest.param(encode(seed_body(currency="")), id="currency-empty"),
    # lengths
    pytest.param(encode(seed_body(id=LONG)), id="id-10000-chars"),
    pytest.param(encode(seed_body(id=EXACT_MAX + "x")), id="id-257-chars"),
    pytest.param(encode(seed_body(id="")), id="id-empty"),
    pytest.param(encode(seed_body(productId=LONG)), id="productId-10000-chars"),
    pytest.param(encode(seed_body(username=LONG)), id="username-10000-chars"),
    pytest.param(encode(seed_body(username="")), id="username-empty"),
    pytest.param(encode(seed_body(txns=[txn(1, id=LONG)])), id="txn-id-10000-chars"),
    pytest.param(encode(seed_body(txns=[txn(1, roundId=LONG)])), id="roundId-10000-chars"),
    pytest.param(encode(seed_body(txns=[txn(1, id="")])), id="txn-id-empty"),
    # timestamps
    pytest.param(encode(seed_body(timestampMillis=NOW - 300_001)), id="timestamp-stale"),
    pytest.param(encode(seed_body(timestampMillis=NOW + 300_001)), id="timestamp-future"),
    pytest.param(encode(seed_body(timestampMillis=1712767012000)), id="timestamp-seed-2024"),
    pytest.param(encode(seed_body(timestampMillis=0)), id="timestamp-zero"),
    pytest.param(encode(seed_body(timestampMillis=-NOW)), id="timestamp-negative"),
    pytest.param(encode(seed_body(timestampMillis=Decimal("1" * 25))), id="timestamp-25-digits"),
    # txns count and duplicates
    pytest.param(encode(seed_body(txns=[txn(i) for i in range(1, 102)])), id="txns-101"),
    pytest.param(encode(seed_body(txns=[txn(1), txn(1)])), id="duplicate-txn-ids"),
    pytest.param(
        encode(seed_body(txns=[txn(1), txn(2), txn(1, roundId="other", betAmount=Decimal(5))])),
        id="duplicate-txn-ids-different-content",
    ),
]


@pytest.mark.parametrize(
    ("body", "unknown"),
    [
        pytest.param(encode(seed_body(extra="x")), 1, id="extra-request-field"),
        pytest.param(encode(seed_body(gameCode="G1")), 1, id="extra-gameCode"),
        pytest.param(encode(seed_body(txns=[txn(1, betType="TIP")])), 1, id="extra-txn-field"),
        pytest.param(
            encode(seed_body(meta={"a": [1]}, txns=[txn(1, x=None, y=1)])), 3, id="several"
        ),
    ],
)
def test_fields_the_seed_does_not_list_are_accepted_and_counted(body: bytes, unknown: int) -> None:
    """Issue 11: AMB txn + "betType" was refused 40003; providers add fields."""
    result = accept(body)
    assert isinstance(result, Accepted), result
    assert result.unknown_fields == unknown
    (event,) = stamped(result, ENVELOPE)
    assert event.request_digest == accepted_event(plain_twin(body)).request_digest


def plain_twin(body: bytes) -> bytes:
    """The same request without the fields AMB's seed does not list."""
    parsed = json.loads(body, parse_float=Decimal, parse_int=Decimal)
    plain = {k: v for k, v in parsed.items() if k in amb.FIELDS}
    plain["txns"] = [{k: v for k, v in t.items() if k in amb.TXN_FIELDS} for t in plain["txns"]]
    return encode(plain)


def accepted_event(body: bytes) -> CancelRequested:
    result = accept(body)
    assert isinstance(result, Accepted), result
    (event,) = stamped(result, ENVELOPE)
    return event


@pytest.mark.parametrize("body", INVALID_BODIES)
def test_invalid_request_is_refused_at_once(body: bytes) -> None:
    result = accept(body)
    assert isinstance(result, Response), "an invalid request is never published"
    assert result.status == 200
    answer = decoded(result)
    assert answer["statusCode"] == amb.STATUS_FORBIDDEN
    assert answer["timestampMillis"] == NOW
    assert list(answer) == ["id", "statusCode", "productId", "timestampMillis"]


def test_invalid_request_echoes_its_id_and_product_id_when_usable() -> None:
    result = accept(encode(seed_body(txns=[txn(1, status="REJECT")])))
    assert isinstance(result, Response)
    assert result.body == fail_body(amb.STATUS_FORBIDDEN, REQUEST_ID, PRODUCT_ID)


def test_invalid_request_does_not_echo_unusable_values() -> None:
    result = accept(encode(seed_body(id=LONG, productId=7, currency="XYZ")))
    assert isinstance(result, Response)
    assert result.body == fail_body(amb.STATUS_FORBIDDEN)


def test_unparseable_body_gets_empty_id() -> None:
    result = accept(b"{")
    assert isinstance(result, Response)
    assert result.body == fail_body(amb.STATUS_FORBIDDEN)


def test_strings_of_256_characters_are_accepted() -> None:
    body = seed_body(id=EXACT_MAX, productId=EXACT_MAX, username=EXACT_MAX)
    body["txns"] = [txn(1, id=EXACT_MAX, roundId=EXACT_MAX)]
    (event,) = stamped(accepted(encode(body)), ENVELOPE)
    assert event.cancel_id == EXACT_MAX


def test_amount_at_currency_precision_is_accepted() -> None:
    body = seed_body(currency="KWD", txns=[txn(1, betAmount=Decimal("0.001"))])
    (event,) = stamped(accepted(encode(body)), ENVELOPE)
    assert event.items[0].amount == Decimal("0.001")


def test_refused_unread_body_answer() -> None:
    (route,) = amb.routes(_secrets())
    response = route.invalid(NOW)
    assert response.status == 200
    answer = decoded(response)
    assert list(answer) == ["id", "statusCode", "productId", "timestampMillis"]
    assert answer["statusCode"] == amb.STATUS_FORBIDDEN
    assert answer["id"] == answer["productId"] == ""
    assert isinstance(answer["timestampMillis"], int)
    assert answer["timestampMillis"] > NOW - 10**12


# Outcomes to answers


def test_every_outcome_has_a_status_code() -> None:
    assert set(amb.STATUS_OF_OUTCOME) == set(Outcome)


def test_refunded_answers_0_with_before_and_after() -> None:
    response = render(outcome(Outcome.REFUNDED, Decimal("8600.50"), Decimal("9600.50")))
    assert response.status == 200
    assert response.body == (
        b'{"id":"26cf1ce1-8ee1-4bbf-9d42-872631054bcf","statusCode":0,'
        b'"timestampMillis":1760000000042,"productId":"{{ Product ID }}","currency":"THB",'
        b'"balanceBefore":8600.50,"balanceAfter":9600.50,"username":"foobar"}'
    )
    answer = decoded(response)
    assert answer["balanceBefore"] == Decimal("8600.50")
    assert isinstance(answer["balanceAfter"], Decimal)
    assert isinstance(answer["statusCode"], int)
    assert isinstance(answer["timestampMillis"], int)


def test_already_cancelled_answers_0_with_before_equal_after() -> None:
    response = render(outcome(Outcome.ALREADY_CANCELLED, Decimal(8700), Decimal(8700)))
    assert response.status == 200
    assert response.body == (
        b'{"id":"26cf1ce1-8ee1-4bbf-9d42-872631054bcf","statusCode":0,'
        b'"timestampMillis":1760000000042,"productId":"{{ Product ID }}","currency":"THB",'
        b'"balanceBefore":8700,"balanceAfter":8700,"username":"foobar"}'
    )


def test_success_without_a_known_balance_answers_user_not_found() -> None:
    response = render(outcome(Outcome.ALREADY_CANCELLED, None, None))
    assert response.status == 200
    assert response.body == (
        b'{"id":"26cf1ce1-8ee1-4bbf-9d42-872631054bcf","statusCode":10001,'
        b'"productId":"{{ Product ID }}","timestampMillis":1760000000042}'
    )


@pytest.mark.parametrize(
    ("kind", "status_code"),
    [
        (Outcome.BET_UNKNOWN, 20001),
        (Outcome.BET_SETTLED, 20004),
        (Outcome.PLAYER_MISMATCH, 10001),
        (Outcome.AMOUNT_MISMATCH, 40003),
        (Outcome.INVALID, 40003),
    ],
)
def test_refusals_answer_non_zero_in_the_fail_shape(kind: Outcome, status_code: int) -> None:
    with_balance = render(outcome(kind, Decimal(8600), Decimal(8600)))
    assert with_balance.status == 200
    assert with_balance.body == (
        b'{"id":"26cf1ce1-8ee1-4bbf-9d42-872631054bcf","statusCode":'
        + str(status_code).encode()
        + b',"productId":"{{ Product ID }}","timestampMillis":1760000000042,'
        b'"balanceBefore":8600,"balanceAfter":8600}'
    )
    without_balance = render(outcome(kind, None, None))
    assert without_balance.status == 200
    assert without_balance.body == (
        b'{"id":"26cf1ce1-8ee1-4bbf-9d42-872631054bcf","statusCode":'
        + str(status_code).encode()
        + b',"productId":"{{ Product ID }}","timestampMillis":1760000000042}'
    )


def test_no_outcome_in_time_answers_retryable_internal_error() -> None:
    response = render(None)
    assert response.status == 200
    assert response.body == (
        b'{"id":"26cf1ce1-8ee1-4bbf-9d42-872631054bcf","statusCode":50001,'
        b'"productId":"{{ Product ID }}","timestampMillis":1760000000000}'
    )


@pytest.mark.parametrize("kind", list(Outcome))
def test_a_retry_hears_the_same_answer(kind: Outcome) -> None:
    first = render(outcome(kind, Decimal(8600), Decimal(8600)))
    retry = accepted(encode(seed_body(timestampMillis=NOW + 5_000)))
    again = retry.answer([outcome(kind, Decimal(8600), Decimal(8600), replayed=True)])
    assert again == first


# Routing


def _secrets() -> ProviderSecrets:
    return provider_secrets(AMB_AGENT_USERNAME=AGENT, AMB_API_KEY=API_KEY)


def test_routes_bind_the_configured_credentials() -> None:
    (route,) = amb.routes(_secrets())
    assert route.path == "/amb/cancelTips"
    assert route.provider is Provider.AMB
    good = route.accept(request(encode(seed_body())))
    assert isinstance(good, Accepted)
    bad = route.accept(request(encode(seed_body()), amb.basic_auth_header(AGENT, "other")))
    assert isinstance(bad, Response)
    assert bad.status == 401


def test_parse_keeps_every_field() -> None:
    body = jsonbody.require_object(jsonbody.loads(encode(seed_body(txns=[txn(1), txn(2)]))))
    cancel = amb.parse(copy.deepcopy(body), NOW)
    assert cancel == amb.AmbCancel(
        request_id=REQUEST_ID,
        product_id=PRODUCT_ID,
        currency="THB",
        username="foobar",
        timestamp_ms=NOW - 1_500,
        txns=(
            amb.AmbTxn(id="Tip-001", round_id="Tip-R-0001", bet_amount=Decimal(10)),
            amb.AmbTxn(id="Tip-002", round_id="Tip-R-0002", bet_amount=Decimal(20)),
        ),
        received_at_ms=NOW,
    )
