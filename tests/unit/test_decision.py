"""The refund decision, for every outcome of the spec, without I/O."""

import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.contract import request_digest
from schemas import CancelItem, CancelRequested, Outcome, Provider, ReplyTo
from worker.decision import (
    Account,
    Bet,
    BetState,
    LedgerSnapshot,
    decide,
    decide_batch,
    ledger_tx,
)

NOW = 1_700_000_000_000


def event(
    cancel_id: str = "c-1",
    bets: tuple[tuple[str, str | None], ...] = (("b-1", "10.00"),),
    player: str | None = "p1",
    currency: str | None = "EUR",
    provider: Provider = Provider.SCORPIO,
    correlation_id: str = "corr-1",
) -> CancelRequested:
    items = [CancelItem(bet_tx=tx, amount=None if a is None else Decimal(a)) for tx, a in bets]
    return CancelRequested(
        correlation_id=correlation_id,
        provider=provider,
        cancel_id=cancel_id,
        player=player,
        currency=currency,
        items=items,
        request_digest=request_digest(provider, cancel_id, player, currency, items),
        reply_to=ReplyTo(topic="r", partition=0),
        deadline_ms=NOW + 3500,
        requested_at_ms=NOW,
    )


def snapshot(*bets: Bet, balance: str = "90.00", provider: str = "scorpio") -> LedgerSnapshot:
    state = LedgerSnapshot()
    state.add_account(Account(1, "p1", "EUR", Decimal(balance)))
    state.add_account(Account(2, "p2", "EUR", Decimal("5.00")))
    for bet in bets:
        state.bets[(bet.provider, bet.tx)] = bet
    return state


def bet(tx: str = "b-1", amount: str = "10.00", state: BetState = BetState.OPEN, **kw: Any) -> Bet:
    values: dict[str, Any] = {
        "provider": "scorpio",
        "account_id": 1,
        "player": "p1",
        "currency": "EUR",
    }
    values.update(kw)
    return Bet(tx=tx, amount=Decimal(amount), state=state, **values)


def test_open_bet_is_refunded_with_balances() -> None:
    decision = decide(event(), snapshot(bet()), NOW)
    assert decision.outcome.outcome is Outcome.REFUNDED
    assert decision.store
    assert [(r.account_id, r.amount, r.bet_tx) for r in decision.refunds] == [
        (1, Decimal("10.00"), "b-1")
    ]
    assert decision.outcome.balance_before == Decimal("90.00")
    assert decision.outcome.balance_after == Decimal("100.00")
    assert decision.outcome.ledger_tx == ledger_tx(Provider.SCORPIO, "c-1")


def test_unknown_bet_is_tombstoned_and_moves_no_money() -> None:
    decision = decide(event(), snapshot(), NOW)
    assert decision.outcome.outcome is Outcome.BET_UNKNOWN
    assert decision.tombstones == (("scorpio", "b-1"),)
    assert decision.refunds == ()
    assert decision.outcome.balance_before == decision.outcome.balance_after == Decimal("90.00")


def test_unknown_bet_already_tombstoned_is_not_tombstoned_twice() -> None:
    state = snapshot()
    state.tombstones.add(("scorpio", "b-1"))
    decision = decide(event(cancel_id="c-2"), state, NOW)
    assert decision.outcome.outcome is Outcome.BET_UNKNOWN
    assert decision.tombstones == ()


def test_bet_cancelled_by_another_cancel_is_already_cancelled() -> None:
    decision = decide(
        event(cancel_id="c-2"), snapshot(bet(state=BetState.CANCELLED, cancel_id="c-1")), NOW
    )
    assert decision.outcome.outcome is Outcome.ALREADY_CANCELLED
    assert decision.refunds == ()
    assert decision.outcome.balance_after == decision.outcome.balance_before


def test_settled_bet_is_refused() -> None:
    decision = decide(event(), snapshot(bet(state=BetState.SETTLED)), NOW)
    assert decision.outcome.outcome is Outcome.BET_SETTLED
    assert decision.refunds == ()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"bets": (("b-1", "10.01"),)}, Outcome.AMOUNT_MISMATCH),
        ({"bets": (("b-1", "9.99"),)}, Outcome.AMOUNT_MISMATCH),
        ({"currency": "USD"}, Outcome.AMOUNT_MISMATCH),
        ({"player": "p2"}, Outcome.PLAYER_MISMATCH),
        ({"player": "stranger"}, Outcome.PLAYER_MISMATCH),
    ],
)
def test_mismatches_move_no_money(changes: dict[str, Any], expected: Outcome) -> None:
    decision = decide(event(**changes), snapshot(bet()), NOW)
    assert decision.outcome.outcome is expected
    assert decision.refunds == ()
    assert decision.tombstones == ()


def test_another_players_cancel_learns_nothing_of_a_cancelled_bet() -> None:
    decision = decide(
        event(player="p2"), snapshot(bet(state=BetState.CANCELLED, cancel_id="c-0")), NOW
    )
    assert decision.outcome.outcome is Outcome.PLAYER_MISMATCH
    assert decision.outcome.balance_before == Decimal("5.00")  # the asking player's own


def test_retry_gets_the_stored_outcome_with_its_own_correlation_id() -> None:
    state = snapshot(bet())
    first = decide(event(), state, NOW)
    state.apply(event(), first)
    retry = decide(event(correlation_id="corr-2"), state, NOW + 5000)
    assert not retry.store
    assert retry.refunds == ()
    assert retry.outcome.replayed
    assert retry.outcome.correlation_id == "corr-2"
    assert retry.outcome.model_dump(
        exclude={"correlation_id", "replayed"}
    ) == first.outcome.model_dump(exclude={"correlation_id", "replayed"})


def test_cancel_id_reused_for_other_content_is_invalid_and_not_stored() -> None:
    state = snapshot(bet(), bet("b-2"))
    state.apply(event(), decide(event(), state, NOW))
    reused = decide(event(bets=(("b-2", "10.00"),)), state, NOW)
    assert reused.outcome.outcome is Outcome.INVALID
    assert not reused.store
    assert reused.refunds == ()


def test_cancel_without_player_takes_player_and_amount_from_the_bet() -> None:
    """Naga: only the bet id is known."""
    decision = decide(
        event(bets=(("b-1", None),), player=None, currency=None, provider=Provider.NAGA),
        snapshot(bet(provider="naga")),
        NOW,
    )
    assert decision.outcome.outcome is Outcome.REFUNDED
    assert (decision.outcome.player, decision.outcome.currency) == ("p1", "EUR")
    assert decision.refunds[0].amount == Decimal("10.00")


def test_cancel_naming_player_not_currency_with_bets_in_two_currencies_is_refused() -> None:
    """One cancel is one account's: a stake in USD never lands in the EUR account."""
    state = snapshot(bet("b-1"), bet("b-2", account_id=3, currency="USD"))
    state.add_account(Account(3, "p1", "USD", Decimal("40.00")))
    decision = decide(event(bets=(("b-1", None), ("b-2", None)), currency=None), state, NOW)
    assert decision.outcome.outcome is Outcome.AMOUNT_MISMATCH
    assert decision.refunds == ()


def test_cancel_naming_player_not_currency_reports_only_that_players_account() -> None:
    """The first bet is another player's: the answer must not carry that player's balance."""
    state = snapshot(bet("b-2", account_id=2, player="p2"), bet("b-1"))
    decision = decide(event(bets=(("b-2", None), ("b-1", None)), currency=None), state, NOW)
    assert decision.outcome.outcome is Outcome.PLAYER_MISMATCH
    assert decision.outcome.player == "p1"
    assert decision.outcome.balance_before == Decimal("90.00")


def test_cancel_naming_player_not_currency_refunds_into_the_bets_account() -> None:
    state = snapshot(bet("b-2", account_id=3, currency="USD"))
    state.add_account(Account(3, "p1", "USD", Decimal("40.00")))
    decision = decide(event(bets=(("b-2", None),), currency=None), state, NOW)
    assert decision.outcome.outcome is Outcome.REFUNDED
    assert [(r.account_id, r.amount) for r in decision.refunds] == [(3, Decimal("10.00"))]
    assert (decision.outcome.currency, decision.outcome.balance_after) == ("USD", Decimal("50.00"))


def test_multi_item_cancel_is_all_or_nothing() -> None:
    """AMB: one refused item refuses the whole request; nothing is refunded."""
    state = snapshot(bet("b-1"), bet("b-2", state=BetState.SETTLED), bet("b-3"))
    decision = decide(
        event(bets=(("b-1", "10.00"), ("b-2", "10.00"), ("b-3", "10.00"))), state, NOW
    )
    assert decision.outcome.outcome is Outcome.BET_SETTLED
    assert decision.refunds == ()
    assert [i.outcome for i in decision.outcome.items] == [
        Outcome.REFUNDED,
        Outcome.BET_SETTLED,
        Outcome.REFUNDED,
    ]


def test_multi_item_cancel_refunds_all_open_items_at_once() -> None:
    state = snapshot(
        bet("b-1"), bet("b-2", amount="2.50"), bet("b-3", state=BetState.CANCELLED, cancel_id="x")
    )
    decision = decide(event(bets=(("b-1", "10.00"), ("b-2", "2.50"), ("b-3", "10.00"))), state, NOW)
    assert decision.outcome.outcome is Outcome.REFUNDED
    assert sum(r.amount for r in decision.refunds) == Decimal("12.50")
    assert decision.outcome.balance_after == Decimal("102.50")


def test_multi_item_unknown_bet_is_tombstoned_but_nothing_refunded() -> None:
    decision = decide(event(bets=(("b-1", "10.00"), ("gone", "1.00"))), snapshot(bet()), NOW)
    assert decision.outcome.outcome is Outcome.BET_UNKNOWN
    assert decision.refunds == ()
    assert decision.tombstones == (("scorpio", "gone"),)


def test_batch_sees_earlier_decisions_of_the_same_batch() -> None:
    state = snapshot(bet())
    decided = decide_batch(
        [event(), event(correlation_id="corr-2"), event(cancel_id="c-2", correlation_id="corr-3")],
        state,
        NOW,
    )
    outcomes = [d.outcome for _, d in decided]
    assert [o.outcome for o in outcomes] == [
        Outcome.REFUNDED,
        Outcome.REFUNDED,
        Outcome.ALREADY_CANCELLED,
    ]
    assert [o.replayed for o in outcomes] == [False, True, False]
    assert sum(len(d.refunds) for _, d in decided) == 1
    assert state.accounts[1].balance == Decimal("100.00")


def test_every_outcome_is_reachable() -> None:
    reached = {
        decide(event(), snapshot(bet()), NOW).outcome.outcome,
        decide(event(), snapshot(), NOW).outcome.outcome,
        decide(
            event(), snapshot(bet(state=BetState.CANCELLED, cancel_id="x")), NOW
        ).outcome.outcome,
        decide(event(), snapshot(bet(state=BetState.SETTLED)), NOW).outcome.outcome,
        decide(event(player="p2"), snapshot(bet()), NOW).outcome.outcome,
        decide(event(bets=(("b-1", "1.00"),)), snapshot(bet()), NOW).outcome.outcome,
    }
    state = snapshot(bet(), bet("b-2"))
    state.apply(event(), decide(event(), state, NOW))
    reached.add(decide(event(bets=(("b-2", "10.00"),)), state, NOW).outcome.outcome)
    assert reached == set(Outcome)


@given(provider=st.sampled_from(list(Provider)), cancel_id=st.text(min_size=1, max_size=256))
def test_ledger_tx_is_the_uuid5_of_provider_and_cancel_id(
    provider: Provider, cancel_id: str
) -> None:
    """The hand-rolled uuid5 (hot path) must equal the standard one: stored ids stay put."""
    namespace = uuid.UUID("0b0f6f59-3c2e-4b43-9a55-1f3f0e6a8f10")
    assert ledger_tx(provider, cancel_id) == str(
        uuid.uuid5(namespace, f"{provider.value}:{cancel_id}")
    )


def test_no_currency_and_an_unknown_bet_reports_the_players_only_account() -> None:
    """HPGames may omit `currency`: a cancel of an unknown bet is ignored (errorCode 0,
    balance unchanged), and the balance it reports is that of the named player's only
    account, not 0."""
    unknown = event(bets=(("never-debited", "10.00"),), currency=None, provider=Provider.HPGAMES)
    decision = decide(unknown, snapshot(), NOW)
    assert decision.outcome.outcome is Outcome.BET_UNKNOWN
    assert decision.outcome.balance_before == decision.outcome.balance_after == Decimal("90.00")
    assert decision.refunds == ()


def test_no_currency_and_several_accounts_reports_no_balance() -> None:
    """The player holds two currencies and names none: no account is the cancel's."""
    state = snapshot()
    state.add_account(Account(3, "p1", "USD", Decimal("7.00")))
    unknown = event(bets=(("never-debited", "10.00"),), currency=None, provider=Provider.HPGAMES)
    decision = decide(unknown, state, NOW)
    assert decision.outcome.outcome is Outcome.BET_UNKNOWN
    assert decision.outcome.balance_before is None


@pytest.mark.parametrize(
    ("amount", "refunded"), [("10.00", True), ("10.0000", True), ("10.001", False), ("9.99", False)]
)
def test_no_currency_compares_the_amount_exactly_with_the_debit(
    amount: str, refunded: bool
) -> None:
    """Without a currency the amount is checked against the debit's, exactly: the same
    value refunds the debit's own amount; more decimals than EUR has, or another value,
    is a mismatch that moves no money."""
    cancel = event(bets=(("b-1", amount),), currency=None, provider=Provider.HPGAMES)
    decision = decide(cancel, snapshot(bet(provider="hpgames")), NOW)
    if refunded:
        assert decision.outcome.outcome is Outcome.REFUNDED
        assert [r.amount for r in decision.refunds] == [Decimal("10.00")]
    else:
        assert decision.outcome.outcome is Outcome.AMOUNT_MISMATCH
        assert decision.refunds == ()
