"""What every provider route has in the tests: a cancel to send (`Cancel`), how to build
and read its requests (`Api`, `Anatomy`), and the events the ingress stamps (`stamped`)."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from adapters.contract import Accepted, Envelope
from schemas import CancelRequested
from tests.providers.credentials import Keys
from tests.providers.wire import Answer, FieldPath, Refusal, Wire, to_json


def stamped(accepted: Accepted, envelope: Envelope) -> tuple[CancelRequested, ...]:
    """The events the ingress publishes for `accepted`: its cancels, `envelope` stamped on."""
    return envelope.stamp(accepted.cancels)


@dataclass(frozen=True)
class Cancel:
    """A cancel of one bet. Naga's cancel names only the bet: `cancel_id`, `player`,
    `currency` and `amount` are not sent (its cancel id is the bet id)."""

    cancel_id: str
    bet_tx: str
    player: str = "p1"
    currency: str = "EUR"
    amount: str = "10.00"  # a JSON number literal


@dataclass(frozen=True)
class Anatomy:
    """Where a route's body keeps what the bad-input matrix changes (paths into it)."""

    strings: tuple[FieldPath, ...]  # required strings
    numbers: tuple[FieldPath, ...]  # required numbers
    containers: tuple[FieldPath, ...] = ()  # required objects and arrays
    optional: tuple[tuple[FieldPath, type], ...] = ()  # optional fields and their type
    objects: tuple[FieldPath, ...] = ((),)  # objects where an unknown field can go
    ids: tuple[FieldPath, ...] = ()
    amount: FieldPath | None = None
    currency: FieldPath | None = None
    timestamp: FieldPath | None = None
    timestamp_in_seconds: bool = False
    text: FieldPath = ()  # a string field to spoil with bad bytes
    signed: FieldPath | None = None  # a field the signature covers
    auth_header: str | None = None
    bad_auth_headers: tuple[str, ...] = ()
    auth_edits: tuple[tuple[FieldPath, Any], ...] = ()  # body edits refused as forged


Seal = Callable[[Any, Keys], tuple[Any, dict[str, str]]]


@dataclass(frozen=True)
class Api:
    """One provider route: how to build its requests and read its answers."""

    name: str
    path: str
    provider: str  # the ledger's provider name
    fields: Callable[[Cancel, int], Any]  # the unsigned JSON body of a cancel at now_ms
    seal: Seal  # sign a body: (the body with its signature fields, headers)
    answers: Callable[[int, bytes], tuple[Answer, ...]]  # asserts the format
    refusals: Mapping[Refusal, tuple[int, str]]  # (HTTP status, code) of a refusal
    anatomy: Anatomy
    reports_balance: bool = True
    unknown_balance: Decimal | None = Decimal(0)  # reported when no balance is known

    def wire(self, body: Any, keys: Keys) -> Wire:
        sealed, headers = self.seal(body, keys)
        return Wire(self.path, to_json(sealed).encode(), headers)

    def request(self, cancel: Cancel, keys: Keys, now_ms: int) -> Wire:
        return self.wire(self.fields(cancel, now_ms), keys)

    def answer(self, status: int, body: bytes) -> Answer:
        (answer,) = self.answers(status, body)
        return answer
