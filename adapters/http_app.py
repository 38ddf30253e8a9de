"""The HTTP ingress (ASGI): read the body within bounds, call the provider's adapter,
publish and await via the request/reply client, answer in the provider's format."""

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import structlog
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse
from starlette.responses import Response as HttpResponse
from starlette.routing import Route as HttpRoute

from adapters import reply_lease
from adapters.bus import BusCounters, RequestReplyClient
from adapters.contract import REQUEST_BYTES_MAX, Accepted, Envelope, Request, Response, Route
from adapters.metrics import IngressMetrics
from adapters.routes import routes
from adapters.settings import IngressSettings

log = structlog.get_logger("ingress")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def read_body(request: HttpRequest, limit: int) -> bytes | None:
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


def _http(response: Response) -> HttpResponse:
    return HttpResponse(response.body, status_code=response.status, headers=dict(response.headers))


class Ingress:
    """What the handlers share: the bus client, the metrics, the database pool (for the
    reply-partition lease and /readyz; the ingress never touches the ledger)."""

    def __init__(self, settings: IngressSettings) -> None:
        self.settings = settings
        self.instance_id = uuid.uuid4().hex
        self.counters = BusCounters()
        self.metrics = IngressMetrics(self.counters)
        self.client: RequestReplyClient | None = None
        self.in_flight = 0
        self.metrics.in_flight.set_function(lambda: self.in_flight)
        self.lease_lost = False
        self._db: asyncpg.Pool | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        kafka = self.settings.kafka
        self._db = await asyncpg.create_pool(
            self.settings.database_url, min_size=1, max_size=2, command_timeout=5
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
            log.info("ingress_started", reply_partition=partition, instance=self.instance_id)
            try:
                yield
            finally:
                await self.client.stop()
                if renewing is not None:
                    renewing.cancel()
                    await asyncio.gather(renewing, return_exceptions=True)
                    with contextlib.suppress(Exception):
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
        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        received_ms = now_ms()
        assert self.client is not None, "the lifespan started the client"
        body = await read_body(http_request, REQUEST_BYTES_MAX)
        if body is None:
            return self._done(route, request_id, started, route.invalid(), "too_large", [])
        envelope = Envelope(
            request_id=request_id,
            reply_to=self.client.reply_to,
            deadline_ms=received_ms + self.settings.reply_deadline_ms,
        )
        headers = {key.lower(): value for key, value in http_request.headers.items()}
        accepted = route.accept(Request(headers, body, received_ms), envelope)
        if isinstance(accepted, Response):
            return self._done(route, request_id, started, accepted, "rejected", [])
        if self.in_flight >= self.settings.requests_in_flight_max:
            shed = route.render(accepted, [None] * len(accepted.events))
            return self._done(route, request_id, started, shed, "shed", [])
        response, outcomes = await self._await_outcomes(route, accepted, envelope.deadline_ms)
        return self._done(route, request_id, started, response, "answered", outcomes)

    async def _await_outcomes(
        self, route: Route, accepted: Accepted, deadline_ms: int
    ) -> tuple[Response, list[str]]:
        assert self.client is not None
        self.in_flight += 1
        try:
            outcomes = await self.client.request(accepted.events, deadline_ms)
        finally:
            self.in_flight -= 1
        names = [o.outcome.value if o is not None else "no_outcome" for o in outcomes]
        return route.render(accepted, outcomes), names

    def _done(
        self,
        route: Route,
        request_id: str,
        started: float,
        response: Response,
        result: str,
        outcomes: list[str],
    ) -> HttpResponse:
        """Count, log the one canonical line of this request, and answer."""
        latency_s = time.perf_counter() - started
        provider = route.provider.value
        self.metrics.requests.labels(provider, result).inc()
        self.metrics.latency.labels(provider).observe(latency_s)
        for name in outcomes:
            self.metrics.outcomes.labels(provider, name).inc()
        log.info(
            "request",
            provider=provider,
            path=route.path,
            correlation_id=request_id,
            result=result,
            outcome=",".join(sorted(set(outcomes))) or result,
            events=len(outcomes),
            status=response.status,
            latency_ms=round(latency_s * 1000, 2),
        )
        return _http(response)

    async def healthz(self, _: HttpRequest) -> HttpResponse:
        """Process up; 503 once the reply-partition lease is lost, so it gets restarted
        (its replies may reach another instance)."""
        if self.lease_lost:
            return JSONResponse({"status": "reply_partition_lost"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def readyz(self, _: HttpRequest) -> HttpResponse:
        broker = self.client is not None and await self.client.ready()
        database = False
        if self._db is not None:
            with contextlib.suppress(Exception):
                database = await self._db.fetchval("SELECT 1") == 1
        ready = broker and database and not self.lease_lost
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "broker": broker, "database": database},
            status_code=200 if ready else 503,
        )

    async def metrics_endpoint(self, _: HttpRequest) -> HttpResponse:
        return HttpResponse(self.metrics.render(), media_type="text/plain; version=0.0.4")


def create_app(settings: IngressSettings) -> Starlette:
    ingress = Ingress(settings)

    def endpoint(route: Route):  # type: ignore[no-untyped-def]
        async def handler(request: HttpRequest) -> HttpResponse:
            return await ingress.handle(route, request)

        return handler

    http_routes = [
        HttpRoute(route.path, endpoint(route), methods=["POST"])
        for route in routes(settings.secrets)
    ]
    http_routes += [
        HttpRoute("/healthz", ingress.healthz, methods=["GET"]),
        HttpRoute("/readyz", ingress.readyz, methods=["GET"]),
        HttpRoute("/metrics", ingress.metrics_endpoint, methods=["GET"]),
    ]
    app = Starlette(routes=http_routes, lifespan=ingress.lifespan)
    app.state.ingress = ingress
    return app
