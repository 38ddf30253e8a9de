"""Per-event cost of the worker's codec: the fast path (`schemas.fast_codec`) against the
schema's (pydantic), side by side in one process, so the ratio survives a noisy machine.

`python -m tests.bench.codec_cost [--rounds R] [--events N]`

Decode: `CancelRequested.model_validate_json` against `decode_cancel_requested`, on the
records the ingress writes (every provider, 1 and 10 items) and on a refused one (which
the fast path hands to the schema: a refusal costs the twin's try more). Encode: the outcome written
twice as the worker did (stored, then published, `encode` each time) against once with
`encode_outcome`, and against a hand-written Python encoder (the reason the encoder is
the compiled serializer). Rounds alternate the two sides (ABAB...); the report gives
microseconds per event, the median over rounds, and fast/pydantic.
"""

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import Any

from schemas import CancelItem, CancelOutcome, CancelRequested, ItemResult, Outcome, Provider
from schemas.fast_codec import decode_cancel_requested, encode_outcome
from schemas.transport import encode

ROUNDS_DEFAULT = 7
EVENTS_DEFAULT = 5_000


def _encode_twice(outcome: CancelOutcome) -> tuple[bytes, str]:
    """What the worker did before: the reply's bytes and the stored text, each on its own."""
    return encode(outcome), outcome.model_dump_json()


def _request(provider: Provider, items: int) -> bytes:
    return encode(
        CancelRequested(
            correlation_id="0123456789abcdef0123456789abcdef",
            provider=provider,
            cancel_id="c-123456",
            player="player-42",
            currency="EUR",
            items=[
                CancelItem(bet_tx=f"bet-{i}", amount=Decimal("10.00"), round_id=f"r-{i}")
                for i in range(items)
            ],
            request_digest="d" * 64,
            reply_to={"topic": "cancel-outcomes", "partition": 3},
            deadline_ms=1_700_000_010_000,
            requested_at_ms=1_700_000_000_000,
        )
    )


def _outcome(items: int) -> CancelOutcome:
    return CancelOutcome(
        correlation_id="0123456789abcdef0123456789abcdef",
        provider=Provider.HPGAMES,
        cancel_id="c-123456",
        outcome=Outcome.REFUNDED,
        items=[
            ItemResult(bet_tx=f"bet-{i}", outcome=Outcome.REFUNDED, amount=Decimal("10.00"))
            for i in range(items)
        ],
        player="player-42",
        currency="EUR",
        balance_before=Decimal("90.00"),
        balance_after=Decimal("100.00"),
        ledger_tx="lt-123456",
        decided_at_ms=1_700_000_000_500,
    )


def _python_encoder(o: CancelOutcome) -> bytes:
    """The outcome's JSON written by hand (the same bytes; slower than the serializer)."""

    def text(d: Decimal | None) -> str | None:
        return None if d is None else str(d)

    items = [
        {"bet_tx": i.bet_tx, "outcome": i.outcome.value, "amount": text(i.amount)} for i in o.items
    ]
    body = {
        "schema_version": o.schema_version,
        "correlation_id": o.correlation_id,
        "provider": o.provider.value,
        "cancel_id": o.cancel_id,
        "outcome": o.outcome.value,
        "items": items,
        "player": o.player,
        "currency": o.currency,
        "balance_before": text(o.balance_before),
        "balance_after": text(o.balance_after),
        "ledger_tx": o.ledger_tx,
        "decided_at_ms": o.decided_at_ms,
        "replayed": o.replayed,
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _cost_us(work: Callable[[], Any], events: int) -> float:
    started = time.perf_counter()
    for _ in range(events):
        work()
    return (time.perf_counter() - started) / events * 1e6


def _refused(value: bytes) -> None:
    with contextlib.suppress(ValueError):
        CancelRequested.model_validate_json(value)


def _refused_fast(value: bytes) -> None:
    with contextlib.suppress(ValueError):
        decode_cancel_requested(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS_DEFAULT)
    parser.add_argument("--events", type=int, default=EVENTS_DEFAULT)
    args = parser.parse_args()
    assert args.rounds >= 1
    assert args.events >= 1

    cases: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = []
    for provider in (Provider.SCORPIO, Provider.HPGAMES):
        for items in (1, 10):
            value = _request(provider, items)
            assert decode_cancel_requested(value) == CancelRequested.model_validate_json(value)
            cases.append(
                (
                    f"decode {provider.value} items={items}",
                    partial(CancelRequested.model_validate_json, value),
                    partial(decode_cancel_requested, value),
                )
            )
    bad = _request(Provider.SCORPIO, 1).replace(b'"EUR"', b'"ZZZ"')
    cases.append(("decode refused", lambda: _refused(bad), lambda: _refused_fast(bad)))
    for items in (1, 10):
        outcome = _outcome(items)
        assert encode_outcome(outcome) == encode(outcome) == _python_encoder(outcome)
        cases.append(
            (
                f"encode twice->once items={items}",
                partial(_encode_twice, outcome),
                partial(encode_outcome, outcome),
            )
        )
        cases.append(
            (
                f"encode python/compiled items={items}",
                partial(encode_outcome, outcome),
                partial(_python_encoder, outcome),
            )
        )

    print(f"codec_cost: rounds={args.rounds} events={args.events} (us per event, median)")
    for name, slow, fast in cases:
        a: list[float] = []
        b: list[float] = []
        for _ in range(args.rounds):
            a.append(_cost_us(slow, args.events))
            b.append(_cost_us(fast, args.events))
        base, new = statistics.median(a), statistics.median(b)
        print(f"{name:<34} pydantic_us={base:7.2f} fast_us={new:7.2f} ratio={new / base:.2f}")


if __name__ == "__main__":
    main()
