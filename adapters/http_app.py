"""The HTTP ingress: call the provider's adapter on the request `adapters.http_server`
read within its bounds, publish and await via the request/reply client, answer in the
provider's format. The deadline runs from the moment the request had arrived."""

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from typing import Any, Protocol

import asyncpg
import pydantic
import structlog

from adapters import reply_lease
from adapters.bus import BusCounters, RequestReplyClient
from adapters.contract import Accepted, Envelope, Request, Response, Route
from adapters.http_server import Handler, HttpCounters, HttpRequest, HttpResponse, HttpServer
from adapters.metrics import IngressMetrics
from adapters.routes import routes
from adapters.settings import IngressSettings
from schemas import CancelRequested

log = structlog.get_logger("ingress")

NOT_FOUND = HttpResponse(404, b"Not Found", {"content-type": "text/plain; charset=utf-8"})
# The request line names the provider's cancel ids, bounded: at most this many, each cut
# to this many characters (cancel_ids_count says how many there were).
CANCEL_IDS_LOGGED_MAX = 10
READYZ_CHECK_TIMEOUT_S = 1.0  # each of /readyz's checks (broker, database)
CANCEL_ID_CHARS_LOGGED = 64
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _json(content: Mapping[str, Any], status: int = 200) -> HttpResponse:
    body = json.dumps(content, separators=(",", ":")).encode()
    return HttpResponse(status, body, {"content-type": "application/json"})


class StreamedRequest(Protocol):
    """What `read_body` needs of a streamed request (the benchmark's Starlette one)."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    def stream(self) -> AsyncIterable[bytes]: ...


async def read_body(request: StreamedRequest, limit: int) -> bytes | None:
    """The body, or None if it is over `limit` bytes (refused before it is read whole)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def cancel_ids(accepted: Accepted) -> list[str]:
    """The request's distinct cancel ids in order, as many as the log line takes."""
    ids = dict.fromkeys(cancel.cancel_id for cancel in accepted.cancels)
    return [i[:CANCEL_ID_CHARS_LOGGED] for i in list(ids)[:CANCEL_IDS_LOGGED_MAX]]


def _http(response: Response) -> HttpResponse:
    return HttpResponse(response.status, response.body, response.headers)


class Ingress:
    """What the handlers share: the bus client, the metrics, the database pool (for the
    reply-partition lease and /readyz; the ingress never touches the ledger)."""

    def __init__(self, settings: IngressSettings) -> None:
        self.settings = settings
        self.instance_id = uuid.uuid4().hex
        self.counters = BusCounters()
        self.http_counters = HttpCounters()
        self.metrics = IngressMetrics(self.counters, self.http_counters)
        self.client: RequestReplyClient | None = None
        self.in_flight = 0
        self.metrics.in_flight.set_function(lambda: self.in_flight)
        self.lease_lost = False
        self._db: asyncpg.Pool | None = None
        self._table: dict[str, dict[str, Handler]] = {}
        for route in routes(settings.secrets):
            self._table[route.path] = {"POST": self._provider_handler(route)}
        self._table["/healthz"] = {"GET": self.healthz}
        self._table["/readyz"] = {"GET": self.readyz}
        self._table["/metrics"] = {"GET": self.metrics_endpoint}

    def _provider_handler(self, route: Route) -> Handler:
        async def handler(request: HttpRequest) -> HttpResponse:
            return await self.handle(route, request)

        return handler

    def route(self, method: str, path: str) -> Handler | HttpResponse:
        """The handler of `method path` (`adapters.http_server.HttpApp`)."""
        methods = self._table.get(path)
        if methods is None:
            return NOT_FOUND
        handler = methods.get(method)
        if handler is None:
            allow = ", ".join(methods)
            return HttpResponse(
                405,
                b"Method Not Allowed",
                {"content-type": "text/plain; charset=utf-8", "allow": allow},
            )
        return handler

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        kafka = self.settings.kafka
        self._db = await asyncpg.create_pool(
            **self.settings.database.pool_options("refund-ingress"), command_timeout=5
        )
        renewing: asyncio.Task[None] | None = None
        try:
            partition = self.settings.reply_partition
            if partition is None:
                partition = await reply_lease.acquire(
                    self._db, kafka.topics.replies, kafka.reply_partitions, self.instance_id
                )
                renewing = asyncio.create_task(self._renew_lease(partition))
            self.client = RequestReplyClient(
                kafka, partition, self.settings.pending_events_max, self.counters
            )
            await self.client.start()
            log.info("ingress_started", reply_partition=partition, lease_owner=self.instance_id)
            try:
                yield
            finally:
                await self.client.stop()
                if renewing is not None:
                    renewing.cancel()
                    await asyncio.gather(renewing, return_exceptions=True)
                    with contextlib.suppress(  # else the lease expires on its own
                        asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError
                    ):
                        await reply_lease.release(
                            self._db, kafka.topics.replies, partition, self.instance_id
                        )
        finally:
            await self._db.close()

    async def _renew_lease(self, partition: int) -> None:
        topic = self.settings.kafka.topics.replies
        assert self._db is not None
        while True:
            await asyncio.sleep(reply_lease.LEASE_TTL_S / 3)
            try:
                renewed = await reply_lease.renew(self._db, topic, partition, self.instance_id)
            except Exception as exc:  # the database is away: keep serving, try again
                log.warning("reply_lease_renew_failed", error=type(exc).__name__)
                continue
            if not renewed:  # another instance owns it now: replies may go astray
                self.lease_lost = True
                log.error("reply_lease_lost", partition=partition)
                return

    async def handle(self, route: Route, http_request: HttpRequest) -> HttpResponse:
        """One provider request. Its deadline runs from its arrival (`received_at_ms`)
        and bounds the publish and the wait together."""
        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        received_ms = http_request.received_at_ms
        assert self.client is not None, "the lifespan started the client"
        body = http_request.body
        if body is None:  # over the body limit: refused unread
            refused = route.too_large(http_request.headers, received_ms)
            return self._done(route, request_id, started, refused, "too_large", [])
        accepted = route.accept(Request(http_request.headers, body, received_ms))
        if isinstance(accepted, Response):
            return self._done(route, request_id, started, accepted, "rejected", [])
        if accepted.unknown_fields:
            self.metrics.unknown_fields.labels(route.provider.value).inc(accepted.unknown_fields)
        no_outcomes = [None] * len(accepted.cancels)
        if self.in_flight >= self.settings.requests_in_flight_max:
            shed = accepted.answer(no_outcomes)
            return self._done(route, request_id, started, shed, "shed", [], accepted)
        envelope = Envelope(
            request_id=request_id,
            reply_to=self.client.reply_to,
            deadline_ms=received_ms + self.settings.reply_deadline_ms,
            requested_at_ms=received_ms,
        )
        try:  # the providers check what the event checks; should one miss a rule: invalid
            events = envelope.stamp(accepted.cancels)
        except pydantic.ValidationError:
            log.exception("request_unstampable", provider=route.provider.value, path=route.path)
            invalid = route.invalid(received_ms)
            return self._done(route, request_id, started, invalid, "rejected", [], accepted)
        try:
            response, outcomes = await self._await_outcomes(accepted, events, envelope.deadline_ms)
        except Exception:  # a bug: it shows (traceback, counter); the provider retries
            self.metrics.request_errors.labels(route.provider.value).inc()
            log.exception("request_failed", provider=route.provider.value, path=route.path)
            retry = accepted.answer(no_outcomes)
            return self._done(route, request_id, started, retry, "failed", [], accepted)
        return self._done(route, request_id, started, response, "answered", outcomes, accepted)

    async def _await_outcomes(
        self, accepted: Accepted, events: Sequence[CancelRequested], deadline_ms: int
    ) -> tuple[Response, list[str]]:
        """Publish the stamped cancels and await their outcomes."""
        assert self.client is not None
        self.in_flight += 1
        try:
            outcomes = await self.client.request(events, deadline_ms)
        finally:
            self.in_flight -= 1
        names = [o.outcome.value if o is not None else "no_outcome" for o in outcomes]
        return accepted.answer(outcomes), names

    def _done(
        self,
        route: Route,
        request_id: str,
        started: float,
        response: Response,
        result: str,
        outcomes: list[str],
        accepted: Accepted | None = None,
    ) -> HttpResponse:
        """Count, log the one canonical line of this request, and answer."""
        latency_s = time.perf_counter() - started
        provider = route.provider.value
        self.metrics.request_done(provider, result, latency_s, outcomes)
        log.info(
            "request",
            provider=provider,
            path=route.path,
            correlation_id=request_id,
            cancel_ids=[] if accepted is None else cancel_ids(accepted),
            cancel_ids_count=0
            if accepted is None
            else len({cancel.cancel_id for cancel in accepted.cancels}),
            result=result,
            outcome=",".join(sorted(set(outcomes))) or result,
            events=len(outcomes),
            status=response.status,
            latency_ms=round(latency_s * 1000, 2),
        )
        return _http(response)

    async def healthz(self, _: HttpRequest) -> HttpResponse:
        """Process up; 503 once the reply-partition lease is lost (its replies may
        reach another instance) or its reply reader stopped, so it gets restarted."""
        if self.lease_lost:
            return _json({"status": "reply_partition_lost"}, 503)
        if self.client is not None and not self.client.reading():
            return _json({"status": "not_reading_replies"}, 503)
        return _json({"status": "ok"})

    async def readyz(self, _: HttpRequest) -> HttpResponse:
        """The spec's readiness: the broker and the database are reachable, and this
        instance reads its replies and holds its reply-partition lease. Each check is
        bounded (`READYZ_CHECK_TIMEOUT_S`). Kubernetes acts on it only after several
        failures in a row (deploy/README.md, "Probes"), so a blip of a dependency every
        pod shares does not take every pod out of rotation at once."""
        reading = self.client is not None and self.client.reading()
        broker = False
        if reading and self.client is not None:
            with contextlib.suppress(TimeoutError):
                broker = await asyncio.wait_for(self.client.ready(), READYZ_CHECK_TIMEOUT_S)
        database = await self._database_reachable()
        ready = reading and not self.lease_lost and broker and database
        if not reading:
            state = "not_reading_replies"
        elif self.lease_lost:
            state = "reply_partition_lost"
        else:
            state = "ready" if ready else "not_ready"
        body = {"status": state, "broker": broker, "database": database}
        return _json(body, 200 if ready else 503)

    async def _database_reachable(self) -> bool:
        if self._db is None:
            return False
        try:
            answer = await asyncio.wait_for(self._db.fetchval("SELECT 1"), READYZ_CHECK_TIMEOUT_S)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        return bool(answer == 1)

    async def metrics_endpoint(self, _: HttpRequest) -> HttpResponse:
        return HttpResponse(200, self.metrics.render(), {"content-type": METRICS_CONTENT_TYPE})


def create_app(settings: IngressSettings) -> Ingress:
    """The ingress: serve it with `adapters.http_server.HttpServer` inside its lifespan."""
    return Ingress(settings)


async def serve(settings: IngressSettings, stop: asyncio.Event) -> None:
    """Start the ingress (bus client, lease), serve HTTP until `stop`, then stop
    accepting and let requests being answered finish (each is bounded by the reply
    deadline); raises OSError if the port cannot be bound."""
    ingress = create_app(settings)
    async with ingress.lifespan():
        server = HttpServer(ingress, settings.http, ingress.http_counters)
        ingress.metrics.http_connections.set_function(lambda: server.connections)
        await server.start(settings.http_host, settings.http_port)
        try:
            await stop.wait()
        finally:
            await server.stop(grace_s=settings.reply_deadline_ms / 1000 + 2)
