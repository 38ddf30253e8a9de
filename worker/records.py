"""The worker's record codec: a request record in, an event or why not; an outcome or a
dead letter out. Pure, so that the worker, replay and the dead-letter tools read and
write records one way (every header through `schemas.transport`)."""

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeAlias

import pydantic
from aiokafka.structs import ConsumerRecord

from schemas import CancelOutcome, CancelRequested, Provider
from schemas.fast_codec import decode_cancel_requested, encode_outcome
from schemas.transport import (
    HEADER_DEAD_LETTER_REASON,
    HEADER_SOURCE,
    outcome_headers,
)

Record: TypeAlias = ConsumerRecord[bytes, bytes]
Headers: TypeAlias = list[tuple[str, bytes]]

REASON_CHARS_MAX = 500
DEAD_LETTER_HEADERS = frozenset({HEADER_DEAD_LETTER_REASON, HEADER_SOURCE})


class Cause(StrEnum):
    """Why an event went to the dead-letter topic (the `cause` label of its metric)."""

    UNDECODABLE = "undecodable"  # not a CancelRequested of a known schema version
    CONTRACT = "contract"  # breaks its provider's contract, or names another reply topic
    DATABASE = "database"  # the database refused it for a reason that will not pass
    DECISION = "decision"  # deciding it raised


@dataclass(frozen=True)
class Undecodable:
    """A record the worker will not apply, and why (before any transaction)."""

    cause: Cause
    reason: str


@dataclass(frozen=True)
class DeadLetter:
    record: Record
    cause: Cause
    reason: str


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _texts(event: CancelRequested) -> Iterator[tuple[str, str]]:
    """Every text an event carries, with its field's name."""
    yield "correlation_id", event.correlation_id
    yield "cancel_id", event.cancel_id
    yield "request_digest", event.request_digest
    yield "reply_to.topic", event.reply_to.topic
    if event.player is not None:
        yield "player", event.player
    if event.currency is not None:
        yield "currency", event.currency
    for item in event.items:
        yield "items.bet_tx", item.bet_tx
        if item.round_id is not None:
            yield "items.round_id", item.round_id


def contract_violation(event: CancelRequested, reply_topic: str) -> str | None:
    """What `event` lacks that its provider's contract carries, or None when it carries
    it all (SPEC "Outcomes" and the seeds): its outcome must go to the reply topic the
    ingress reads; a Naga cancel names only the bet (the worker takes player, amount and
    currency from the recorded bet) but may name them; the others name the player and
    every item's amount, and the currency, which HPGames may omit (seed 4.8.1: the
    worker uses the debit's currency). And no text may hold a control character (SPEC:
    what the ledger cannot hold is refused at the door; the worker does not trust the
    topic's writers to have done so). Pure."""
    for name, text in _texts(event):
        if _CONTROL.search(text) is not None:
            return f"a control character in {name}"
    if event.reply_to.topic != reply_topic:
        return f"reply_to.topic {event.reply_to.topic[:64]!r} is not the reply topic"
    if event.provider is Provider.NAGA:
        return None
    missing = [
        name
        for name, absent in (
            ("player", event.player is None),
            ("currency", event.currency is None and event.provider is not Provider.HPGAMES),
            ("items.amount", any(item.amount is None for item in event.items)),
        )
        if absent
    ]
    if missing:
        return f"a {event.provider.value} cancel without {', '.join(missing)}"
    return None


def decode_record(record: Record, reply_topic: str) -> CancelRequested | Undecodable:
    """The event a record carries, or why the worker will not apply it. Never raises:
    whatever a record holds, it cannot stop the partition."""
    if record.value is None:
        return Undecodable(Cause.UNDECODABLE, "empty record")
    try:
        event = decode_cancel_requested(record.value)  # = the schema's, faster (fast_codec)
    except pydantic.ValidationError as exc:
        reason = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        return Undecodable(Cause.UNDECODABLE, reason[:REASON_CHARS_MAX])
    except Exception as exc:  # a validator that raised something else: still the record's
        return Undecodable(Cause.UNDECODABLE, f"{type(exc).__name__}: {exc}"[:REASON_CHARS_MAX])
    violation = contract_violation(event, reply_topic)
    if violation is not None:
        return Undecodable(Cause.CONTRACT, violation[:REASON_CHARS_MAX])
    return event


def source(record: Record) -> str:
    """Where a record sits: `<topic>:<partition>:<offset>` (a dead letter's `source`)."""
    return f"{record.topic}:{record.partition}:{record.offset}"


def outcome_record(outcome: CancelOutcome) -> dict[str, Any]:
    """The reply record of `outcome`, as a producer batch's `append` takes it."""
    return {
        "key": outcome.correlation_id.encode(),
        "value": encode_outcome(outcome),
        "timestamp": None,
        "headers": outcome_headers(outcome),
    }


@dataclass(frozen=True)
class Letter:
    """What a dead letter is sent as: the record's key, value and headers when `whole`
    (else none of them: too large to copy), with the reason and source headers."""

    key: bytes | None
    value: bytes | None
    headers: Headers


def letter_of(dead: DeadLetter, *, whole: bool) -> Letter:
    record = dead.record
    reason = f"{dead.cause}: {dead.reason}"
    if not whole:
        size = len(record.value or b"") + len(record.key or b"")
        reason += f" (the record, {size} bytes, is too large to copy: not copied)"
    # A record without key and value (a null record) cannot be sent as is: its dead
    # letter's value is empty bytes.
    value = record.value if whole else None
    key = record.key if whole else None
    return Letter(
        key=key,
        value=b"" if value is None and key is None else value,
        headers=[
            *(record.headers if whole else ()),
            (HEADER_DEAD_LETTER_REASON, reason.encode()),
            (HEADER_SOURCE, source(record).encode()),
        ],
    )


def redriven_headers(headers: Sequence[tuple[str, bytes]]) -> Headers:
    """A dead letter's headers as its redrive republishes them: the original ones,
    without those the dead-lettering added."""
    return [(k, v) for k, v in headers if k not in DEAD_LETTER_HEADERS]
