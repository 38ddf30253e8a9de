"""The one shape every provider adapter has, so a new provider is a module and a row.

A provider module exposes `accept(request, config)` returning either an `Accepted` (the
cancels to publish, and the provider's typed answer to their outcomes) or a `Response`
to send at once (authentication or validation failed: nothing is published). A cancel
is the provider's part of an event (`CancelFields`); the ingress stamps the envelope
(correlation id, reply partition, deadline, digest) on it, here and nowhere else
(`Envelope.stamp`). `Accepted.unknown_fields` reports the fields the request carried
that the seed does not list (accepted and ignored): the I/O layer counts them in a
metric. Provider modules read no clock: every answer is dated from the request's
receive time, passed in.
"""

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from adapters.credentials import ProviderSecrets, Secret
from schemas import (
    CancelItem,
    CancelOutcome,
    CancelRequested,
    Provider,
    ReplyTo,
    canonical_amount,
)

REQUEST_BYTES_MAX = 1024 * 1024  # bodies over 1 MiB are refused (spec)
TIMESTAMP_SKEW_MAX_MS = 300_000  # requests more than 300 s off the server clock are refused


@dataclass(frozen=True)
class Request:
    """What the ingress read off the wire; header names are lower-case."""

    headers: Mapping[str, str]
    body: bytes
    received_at_ms: int


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=lambda: {"content-type": "application/json"})


# An outcome per published cancel, in the order of `Accepted.cancels`; None when no
# outcome arrived within the deadline.
Outcomes = Sequence[CancelOutcome | None]


@dataclass(frozen=True)
class CancelFields:
    """The part of a `CancelRequested` its provider decides; the ingress adds the rest.

    Its items are `CancelItem`s, validated where the provider built them, and the provider
    has checked what the event checks of the whole (currency, amounts, distinct bets), so
    stamping it cannot fail."""

    provider: Provider
    cancel_id: str
    player: str | None  # None: not named (Naga); the worker takes the bet's
    currency: str | None  # None: not named (Naga, HPGames may omit it); the bet's
    items: tuple[CancelItem, ...]

    def digest(self) -> str:
        """What a retry repeats (`request_digest`): equal digests, the same cancel."""
        return request_digest(self.provider, self.cancel_id, self.player, self.currency, self.items)


@dataclass(frozen=True)
class Envelope:
    """Values the ingress stamps on every event of one HTTP request."""

    request_id: str  # unique per HTTP request; correlation ids derive from it
    reply_to: ReplyTo
    deadline_ms: int  # epoch ms at which the ingress stops waiting
    requested_at_ms: int  # when the request was received

    def correlation_id(self, index: int) -> str:
        return f"{self.request_id}.{index}"

    def stamp(self, cancels: Sequence[CancelFields]) -> tuple[CancelRequested, ...]:
        """The request's events: each cancel with this envelope, in order."""
        return tuple(
            CancelRequested(
                correlation_id=self.correlation_id(index),
                provider=cancel.provider,
                cancel_id=cancel.cancel_id,
                player=cancel.player,
                currency=cancel.currency,
                items=list(cancel.items),
                request_digest=cancel.digest(),
                reply_to=self.reply_to,
                deadline_ms=self.deadline_ms,
                requested_at_ms=self.requested_at_ms,
            )
            for index, cancel in enumerate(cancels)
        )


@dataclass(frozen=True)
class Accepted:
    """Cancels to publish, and the provider's answer to their outcomes.

    `answer` is the provider's `render` bound to the request it parsed (its own typed
    value), so the ingress needs to know nothing of it."""

    cancels: tuple[CancelFields, ...]
    answer: Callable[[Outcomes], Response]
    unknown_fields: int = 0  # fields the seed does not list, ignored: for the metric


@dataclass(frozen=True)
class Route:
    """One provider endpoint: a row in the ingress's routing table."""

    path: str
    provider: Provider
    accept: Callable[[Request], "Accepted | Response"]
    # The answer to a body the ingress refuses unread, from the time it was received.
    invalid: Callable[[int], Response]
    # The answer to a body over REQUEST_BYTES_MAX, from the request's headers and the
    # time it was received (a provider that authenticates by header, AMB, answers a
    # request without valid credentials as unauthenticated first); None: `invalid`.
    refuse_too_large: Callable[[Mapping[str, str], int], Response] | None = None

    def too_large(self, headers: Mapping[str, str], received_at_ms: int) -> Response:
        """The answer to a body over REQUEST_BYTES_MAX, read no further (header names
        lower-case)."""
        if self.refuse_too_large is None:
            return self.invalid(received_at_ms)
        return self.refuse_too_large(headers, received_at_ms)


@dataclass(frozen=True)
class ProviderAdapter:
    """A provider module as the routing table and the configuration see it: the
    credentials it declares, and its routes once they are read."""

    provider: Provider
    secrets: tuple[Secret, ...]
    routes: Callable[[ProviderSecrets], list[Route]]


def request_digest(
    provider: Provider,
    cancel_id: str,
    player: str | None,
    currency: str | None,
    items: Sequence[CancelItem],
) -> str:
    """Digest of what a cancel asks for; a retry carries the same digest.

    Excludes what legitimately changes between retries (timestamps, signatures).
    Amounts enter as their exact value (`canonical_amount`: 10.50 and 10.5 are one
    amount; no rounding context, so 10.000000000000000000000000000001 is not 10).
    """
    parts = [provider.value, cancel_id, player or "", currency or ""]
    for item in items:
        parts += [item.bet_tx, "" if item.amount is None else canonical_amount(item.amount)]
    hasher = hashlib.sha256()
    for part in parts:
        encoded = part.encode()
        hasher.update(len(encoded).to_bytes(4, "big"))
        hasher.update(encoded)
    return hasher.hexdigest()


def within_skew(timestamp_ms: int, now_ms: int) -> bool:
    return abs(timestamp_ms - now_ms) <= TIMESTAMP_SKEW_MAX_MS


def epoch_ms(value: int) -> int:
    """Provider timestamps come in seconds or milliseconds (HPGames' own example says
    milliseconds but shows seconds): values below 10^11 are read as seconds."""
    return value * 1000 if value < 100_000_000_000 else value
