"""The bad-input contract every provider route honours, table-driven over (route, case).

Each bad input gets the provider's own refusal (its status code and body shape, with
the code for "invalid" or for "authentication failed") as an immediate `Response`:
nothing would be published. Pure: the routes' `accept` functions, no I/O. The requests
come from `tests.providers`, signed with the dev secrets and the session's Naga key.
"""

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.contract import Accepted, Envelope, Request, Response, Route
from adapters.routes import routes
from refundctl import config
from schemas import ReplyTo
from tests.providers import (
    APIS,
    Api,
    BadInput,
    Cancel,
    Edits,
    Keys,
    Wire,
    assert_refused,
    bad_inputs,
    edited_wire,
    edits,
    fuzz_wire,
    json_values,
    secrets_env,
    stamped,
    tolerated_inputs,
)

NOW_MS = 1_767_225_600_000  # the server clock of every request here (2026-01-01)
ENVELOPE = Envelope(
    request_id="req-1",
    reply_to=ReplyTo(topic="t.replies", partition=0),
    deadline_ms=NOW_MS + 3500,
    requested_at_ms=NOW_MS,
)
FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def keys(naga_key_dir: Path) -> Keys:
    return Keys.dev(naga_key_dir)


@pytest.fixture
def table(naga_key_dir: Path) -> dict[str, Route]:
    """A fresh routing table per test: HPGames' replay defence remembers the hashes it
    saw, and the cases here send one hash with several transaction ids."""
    secrets = config.provider_secrets(secrets_env(naga_key_dir))
    return {route.path: route for route in routes(secrets)}


def accept(table: dict[str, Route], wire: Wire) -> Accepted | Response:
    return table[wire.path].accept(Request(wire.headers, wire.body, NOW_MS))


def test_every_route_of_the_ingress_is_in_the_matrix(table: dict[str, Route]) -> None:
    assert sorted(api.path for api in APIS) == sorted(table)


@pytest.mark.parametrize("api", APIS, ids=lambda api: api.name)
def test_the_valid_request_the_cases_spoil_is_accepted(
    api: Api, keys: Keys, table: dict[str, Route]
) -> None:
    result = accept(table, api.request(Cancel(cancel_id="cancel-1", bet_tx="bet-1"), keys, NOW_MS))
    assert isinstance(result, Accepted), result
    (event,) = stamped(result, ENVELOPE)
    assert event.provider.value == api.provider
    assert [item.bet_tx for item in event.items] == ["bet-1"]
    if api.reports_balance:  # every provider but Naga names the cancel, player and money
        assert (event.cancel_id, event.player, event.currency) == ("cancel-1", "p1", "EUR")
        assert [str(item.amount) for item in event.items] == ["10.00"]
    else:
        assert (event.cancel_id, event.player, event.currency) == ("bet-1", None, None)


MATRIX = [
    pytest.param(api, case, id=f"{api.name}-{case.name}")
    for api in APIS
    for case in bad_inputs(api)
]


@pytest.mark.parametrize(("api", "case"), MATRIX)
def test_bad_input_is_refused_at_once_in_the_providers_format(
    api: Api, case: BadInput, keys: Keys, table: dict[str, Route]
) -> None:
    result = accept(table, case.build(api, keys, NOW_MS))
    assert isinstance(result, Response), "a refusal is answered at once, nothing published"
    assert result.headers["content-type"] == "application/json"
    assert_refused(api, result.status, result.body, case.refusal)


TOLERATED = [
    pytest.param(api, case, id=f"{api.name}-{case.name}")
    for api in APIS
    for case in tolerated_inputs(api)
]


@pytest.mark.parametrize(("api", "case"), TOLERATED)
def test_fields_the_seed_does_not_list_are_accepted_ignored_and_counted(
    api: Api, case: Any, keys: Keys, table: dict[str, Route]
) -> None:
    """Issue 11: a provider that adds a field must not stop refunds (Scorpio +
    "sessionId" was ERR_UNKNOWN, HPGames + "roundId" errorCode 2, AMB txn + "betType"
    40003, Naga data + a key 400)."""
    result = accept(table, case.build(api, keys, NOW_MS))
    assert isinstance(result, Accepted), result
    assert result.unknown_fields == case.unknown_fields
    plain = accept(table, api.request(Cancel(cancel_id="cancel-1", bet_tx="bet-1"), keys, NOW_MS))
    assert isinstance(plain, Accepted)
    assert [e.request_digest for e in stamped(result, ENVELOPE)] == [
        e.request_digest for e in stamped(plain, ENVELOPE)
    ]


@pytest.mark.parametrize("api", APIS, ids=lambda api: api.name)
def test_arbitrary_json_never_raises_and_is_refused_in_the_providers_format(
    api: Api, keys: Keys, table: dict[str, Route]
) -> None:
    @FUZZ
    @given(value=json_values(api), sign_body=st.booleans())
    def check(value: Any, sign_body: bool) -> None:
        result = accept(table, fuzz_wire(api, value, keys, sign_body=sign_body))
        if isinstance(result, Response):  # arbitrary JSON may be valid (a signed Naga betId)
            assert_refused(api, result.status, result.body)

    check()


@pytest.mark.parametrize("api", APIS, ids=lambda api: api.name)
def test_arbitrary_changes_to_a_valid_request_never_raise_and_answer_in_format(
    api: Api, keys: Keys, table: dict[str, Route]
) -> None:
    """Deeper than arbitrary JSON: the valid signed request with fields removed, added
    or set to arbitrary JSON. Refused in the provider's format, or accepted; an accepted
    request's "no outcome in time" answer is in the provider's format too."""

    @FUZZ
    @given(changes=edits(api))
    def check(changes: Edits) -> None:
        result = accept(table, edited_wire(api, changes, keys, NOW_MS))
        if isinstance(result, Response):
            assert_refused(api, result.status, result.body)
        else:
            late = result.answer([None] * len(result.cancels))
            api.answers(late.status, late.body)

    check()


@pytest.mark.parametrize("api", APIS, ids=lambda api: api.name)
def test_arbitrary_bytes_never_raise_and_are_refused_in_the_providers_format(
    api: Api, keys: Keys, table: dict[str, Route]
) -> None:
    headers = api.request(Cancel(cancel_id="cancel-1", bet_tx="bet-1"), keys, NOW_MS).headers

    @FUZZ
    @given(body=st.binary(max_size=2048))
    def check(body: bytes) -> None:
        result = accept(table, Wire(api.path, body, headers))
        assert isinstance(result, Response)
        assert_refused(api, result.status, result.body)

    check()
