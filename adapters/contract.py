"""The one shape every provider adapter has, so a new provider is a module and a row.

A provider module exposes `accept(request, envelope, config)` returning either an
`Accepted` (events to publish, plus what `render` needs) or a `Response` to send at
once (authentication or validation failed: nothing is published), and
`render(accepted, outcomes)` mapping the worker's outcomes to the provider's reply.
`Accepted.unknown_fields` reports the fields the request carried that the seed does
not list (accepted and ignored): the I/O layer counts them in a metric.
"""

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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


@dataclass(frozen=True)
class Envelope:
    """Values the ingress stamps on every event of one HTTP request."""

    request_id: str  # unique per HTTP request; correlation ids derive from it
    reply_to: ReplyTo
    deadline_ms: int  # epoch ms at which the ingress stops waiting

    def correlation_id(self, index: int) -> str:
        return f"{self.request_id}.{index}"


@dataclass(frozen=True)
class Accepted:
    """Events to publish, and the parsed request that `render` needs to answer."""

    events: tuple[CancelRequested, ...]
    parsed: Any
    unknown_fields: int = 0  # fields the seed does not list, ignored: for the metric


# An outcome per published event, in the order of `Accepted.events`; None when no
# outcome arrived within the deadline.
Outcomes = Sequence[CancelOutcome | None]


@dataclass(frozen=True)
class Route:
    """One provider endpoint: a row in the ingress's routing table."""

    path: str
    provider: Provider
    accept: Callable[[Request, Envelope], "Accepted | Response"]
    render: Callable[[Accepted, Outcomes], Response]
    invalid: Callable[[], Response]  # the answer to a body the ingress refuses unread
    # The answer to a body over REQUEST_BYTES_MAX, from the request's headers and the
    # time it was received (a provider that authenticates by header, AMB, answers a
    # request without valid credentials as unauthenticated first); None: `invalid()`.
    refuse_too_large: Callable[[Mapping[str, str], int], Response] | None = None

    def too_large(self, headers: Mapping[str, str], received_at_ms: int) -> Response:
        """The answer to a body over REQUEST_BYTES_MAX, read no further (header names
        lower-case)."""
        if self.refuse_too_large is None:
            return self.invalid()
        return self.refuse_too_large(headers, received_at_ms)


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
