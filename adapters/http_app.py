"""The HTTP ingress (ASGI): read the body within bounds, call the provider's adapter,
publish and await via the request/reply client, answer in the provider's format."""

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

from adapters.bus import RequestReplyClient
from adapters.contract import REQUEST_BYTES_MAX, Accepted, Envelope, Request, Response, Route
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
    """Holds what the handlers share: the bus client, counters, the readiness pool."""

    def __init__(self, settings: IngressSettings) -> None:
        self.settings = settings
        self.client = RequestReplyClient(
            settings.kafka, settings.reply_partition, settings.pending_events_max
        )
        self.in_flight = 0
        self._db: asyncpg.Pool | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.client.start()
        self._db = await asyncpg.create_pool(
            self.settings.database_url, min_size=0, max_size=1, command_timeout=2
        )
        log.info("ingress_started", reply_partition=self.settings.reply_partition)
        try:
            yield
        finally:
            await self.client.stop()
            if self._db is not None:
                await self._db.close()

    async def handle(self, route: Route, http_request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        received_ms = now_ms()
        body = await read_body(http_request, REQUEST_BYTES_MAX)
        if body is None:
            response = route.invalid()
            self._log(route, request_id, started, response, "body_too_large")
            return _http(response)
        envelope = Envelope(
            request_id=request_id,
            reply_to=self.client.reply_to,
            deadline_ms=received_ms + self.settings.reply_deadline_ms,
        )
        headers = {key.lower(): value for key, value in http_request.headers.items()}
        accepted = route.accept(Request(headers, body, received_ms), envelope)
        if isinstance(accepted, Response):
            self._log(route, request_id, started, accepted, "rejected")
            return _http(accepted)
        response, outcomes = await self._await_outcomes(route, accepted, envelope.deadline_ms)
        self._log(route, request_id, started, response, outcomes)
        return _http(response)

    async def _await_outcomes(
        self, route: Route, accepted: Accepted, deadline_ms: int
    ) -> tuple[Response, str]:
        if self.in_flight >= self.settings.requests_in_flight_max:  # shed load at once
            return route.render(accepted, [None] * len(accepted.events)), "shed"
        self.in_flight += 1
        try:
            outcomes = await self.client.request(accepted.events, deadline_ms)
        finally:
            self.in_flight -= 1
        summary = ",".join(sorted({o.outcome.value if o else "no_outcome" for o in outcomes}))
        return route.render(accepted, outcomes), summary

    def _log(
        self, route: Route, request_id: str, started: float, response: Response, outcome: str
    ) -> None:
        log.info(
            "request",
            provider=route.provider.value,
            path=route.path,
            correlation_id=request_id,
            outcome=outcome,
            status=response.status,
            latency_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    async def healthz(self, _: HttpRequest) -> HttpResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(self, _: HttpRequest) -> HttpResponse:
        broker = await self.client.ready()
        database = False
        if self._db is not None:
            with contextlib.suppress(Exception):
                database = await self._db.fetchval("SELECT 1") == 1
        ready = broker and database
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "broker": broker, "database": database},
            status_code=200 if ready else 503,
        )


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
    ]
    app = Starlette(routes=http_routes, lifespan=ingress.lifespan)
    app.state.ingress = ingress
    return app
