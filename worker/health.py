"""The worker's HTTP endpoints, served from the worker's own event loop on its metrics
port (WORKER_METRICS_PORT): `/healthz`, `/readyz` and `/metrics`.

Served by the loop that applies the refunds (not by a thread of prometheus_client's),
so that an answer at all means the loop turns:

- `/healthz` (liveness): 200 while the worker's loop turned within
  WORKER_HEARTBEAT_STALE_MS (it writes a heartbeat each turn), or while it is joining
  its group within the join bound (the worker exits by itself past it); else 503.
- `/readyz` (readiness): 200 once the worker is a member of its group (joined, not
  rebalancing) with its partitions positioned, or legitimately none (more members than
  partitions), and its loop is alive; else 503.
- `/metrics`: the worker's registry, in Prometheus's text format.

Connections are few (probes, Prometheus): each is bounded in size and time, answered
once and closed; beyond CONNECTIONS_MAX at a time they are closed unanswered.
"""

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import structlog
from prometheus_client import CollectorRegistry, generate_latest

log = structlog.get_logger("worker.health")

HEAD_BYTES_MAX = 8192
READ_TIMEOUT_S = 5.0
WRITE_TIMEOUT_S = 5.0
CONNECTIONS_MAX = 32
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


@dataclass(frozen=True)
class WorkerStatus:
    """What the worker tells its endpoints; times are `time.monotonic()` seconds."""

    last_tick: float  # the loop's last turn (or the worker's creation)
    joining_since: float | None  # a (re)join of the group under way since then
    joined_once: bool  # the group was joined at least once (partitions positioned)
    partitions: tuple[int, ...]  # the request partitions owned


@dataclass(frozen=True)
class Verdict:
    ok: bool
    body: dict[str, object]


def liveness(status: WorkerStatus, now: float, stale_s: float, join_s: float) -> Verdict:
    """Alive: the loop turned within `stale_s`, or a join under way for less than
    `join_s` (the worker's own bound: past it, the worker exits). Pure."""
    age_s = now - status.last_tick
    joining_s = None if status.joining_since is None else now - status.joining_since
    if age_s <= stale_s:
        state = "ok"
    elif joining_s is not None and joining_s <= join_s:
        state = "joining"
    else:
        state = "loop_stalled"
    return Verdict(
        state != "loop_stalled",
        {
            "status": state,
            "heartbeat_age_ms": round(age_s * 1000),
            "heartbeat_stale_ms": round(stale_s * 1000),
        },
    )


def readiness(status: WorkerStatus, now: float, stale_s: float, join_s: float) -> Verdict:
    """Ready: alive, and a member of the group with its partitions positioned (none is
    legitimate: more members than partitions). Pure."""
    alive = liveness(status, now, stale_s, join_s)
    member = status.joined_once and status.joining_since is None
    if not alive.ok:
        state = "loop_stalled"
    elif not member:
        state = "joining"
    else:
        state = "ready"
    return Verdict(
        state == "ready",
        {
            "status": state,
            "partitions": list(status.partitions),
            "heartbeat_age_ms": alive.body["heartbeat_age_ms"],
        },
    )


def _response(status: int, body: bytes, content_type: str) -> bytes:
    head = (
        f"HTTP/1.1 {status} {REASONS[status]}\r\n"
        f"content-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


def _json(verdict: Verdict) -> bytes:
    body = json.dumps(verdict.body, separators=(",", ":")).encode()
    return _response(200 if verdict.ok else 503, body, "application/json")


class HealthServer:
    """The endpoints above, for one worker."""

    def __init__(
        self,
        status: Callable[[], WorkerStatus],
        registry: CollectorRegistry,
        *,
        stale_ms: int,
        join_ms: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._status = status
        self._registry = registry
        self._stale_s = stale_ms / 1000
        self._join_s = join_ms / 1000
        self._clock = clock
        self._connections = 0

    def answer(self, method: str, path: str) -> bytes:
        """The whole HTTP response to `method path`."""
        if path not in ("/healthz", "/readyz", "/metrics"):
            return _response(404, b"Not Found", "text/plain; charset=utf-8")
        if method not in ("GET", "HEAD"):
            return _response(405, b"Method Not Allowed", "text/plain; charset=utf-8")
        if path == "/metrics":
            return _response(200, generate_latest(self._registry), METRICS_CONTENT_TYPE)
        check = liveness if path == "/healthz" else readiness
        return _json(check(self._status(), self._clock(), self._stale_s, self._join_s))

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        try:
            if self._connections > CONNECTIONS_MAX:
                return
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            except ConnectionError:
                return
            parts = head.split(b"\r\n", 1)[0].split(b" ")
            if len(parts) != 3:
                return
            method = parts[0].decode("latin-1")
            path = parts[1].split(b"?", 1)[0].decode("latin-1")
            response = self.answer(method, path)
            if method == "HEAD":
                response = response.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
            writer.write(response)
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
        finally:
            self._connections -= 1
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), WRITE_TIMEOUT_S)


@contextlib.asynccontextmanager
async def serve_health(server: HealthServer, host: str, port: int) -> AsyncIterator[int | None]:
    """Serve `server` on `host:port` (0: not at all) while the worker runs; yields the
    port bound. A port in use is logged, not fatal: refunds matter more than metrics."""
    if port == 0:
        yield None
        return
    try:
        listening = await asyncio.start_server(server.handle, host, port, limit=HEAD_BYTES_MAX)
    except OSError as exc:
        log.warning("metrics_port_unavailable", port=port, error=str(exc))
        yield None
        return
    try:
        yield port
    finally:
        listening.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(listening.wait_closed(), WRITE_TIMEOUT_S)
