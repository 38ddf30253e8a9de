"""A small HTTP/1.1 server on asyncio and httptools (llhttp), bounded everywhere.

Why not uvicorn: it has no bound on the time a request head may take, nor on the number
of header fields, its idle and half-sent connections count against its concurrency
limit (past it every request gets a bare 503), and httptools buffers a header of any
size for it. Here every bound is a setting (`HttpLimits`):

- the head (request line and header fields) is at most `head_bytes_max` bytes and
  `headers_max` fields, else 431; it must arrive within `head_timeout_ms` of the
  connection (or of the first byte of a keep-alive connection's next request);
- the body must arrive within `body_timeout_ms` of the head; a body over
  `body_bytes_max` is handed to the handler as `None` at once (it answers the refusal)
  and the rest is read and thrown away while the answer is written;
- a keep-alive connection idle for `keepalive_idle_ms` is closed;
- at most `connections_max` connections are open: a new one closes the connection idle
  the longest to make room, else the one whose request has been arriving the longest.
  Connections whose request is being answered are never closed for room (the ingress
  sheds them itself, in the provider's format, past its in-flight limit);
- at most `pipeline_requests_max` requests are read ahead on one connection;
- after a refusal (400, 431) the server reads and discards for at most `linger_ms`,
  so the client can read the answer instead of a reset.

The application is a `route(method, path)` lookup giving an async handler (or an
immediate answer: 404, 405); handlers get the whole body. One task per request.
"""

import asyncio
import collections
import contextlib
import email.utils
import enum
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, cast

import httptools
import structlog

from adapters.settings import HttpLimits

log = structlog.get_logger("ingress.http")

# The reasons a connection was closed by the server, and the phases in which a client
# went away: the label values of the metrics (a bounded set).
CLOSE_REASONS = (
    "head_too_large",
    "too_many_headers",
    "head_timeout",
    "body_timeout",
    "keepalive_idle",
    "evicted",
    "refused_full",
    "bad_request",
    "pipeline_overflow",
    "linger_timeout",
)
DISCONNECT_PHASES = ("head", "body", "answer")
REASON_PHRASES = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """The loop this server (and the worker, `refundctl`'s other long-lived process)
    runs on: uvloop's where it is installed (its loop and transports are compiled: less
    CPU per request goes to the loop), else asyncio's own (uvloop has no Windows
    build)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names; a repeated field keeps its last value
    body: bytes | None  # None: over the body limit, refused unread
    received_at_ms: int  # epoch ms at which the request had arrived (body included)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


class HttpApp(Protocol):
    def route(self, method: str, path: str) -> Handler | HttpResponse:
        """The handler of `method path`, or the answer at once (404, 405)."""
        ...


@dataclass
class HttpCounters:
    """What the server counts; `adapters.metrics` reads them at scrape time."""

    connections_opened: int = 0
    closed: collections.Counter[str] = field(default_factory=collections.Counter)
    disconnects: collections.Counter[str] = field(default_factory=collections.Counter)
    handler_errors: int = 0


class _Phase(enum.Enum):
    IDLE = 0  # between requests (or none yet)
    HEAD = 1
    BODY = 2
    DISCARD = 3  # refused: reading and throwing away until closed
    DONE = 4  # the last request is read: throw away what follows, close once answered


class _HeadRefused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Connection(asyncio.Protocol):
    """One client connection: parses with httptools, answers requests in order."""

    def __init__(self, server: "HttpServer") -> None:
        self._server = server
        self._limits = server.limits
        self._loop = server.loop
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        # One timer per connection, re-armed lazily: a phase change only moves
        # `_deadline`; the timer, when it fires early, sleeps again until it.
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None  # loop time
        self._deadline_reason = ""
        self._read_ahead = False  # bytes came while a request was being answered
        self._phase = _Phase.IDLE
        self._closing = False  # no further request is read; close once answered
        self._write_paused = False
        self._fresh = True  # no byte received yet on this connection
        self._closed_here = False  # the server closed it (not the client going away)
        # The request being parsed.
        self._url = bytearray()
        self._headers: dict[str, str] = {}
        self._header_count = 0
        self._head_bytes = 0  # counted from the parser's callbacks
        self._head_raw_bytes = 0  # bytes fed since the head began (see data_received)
        self._head_ended = False  # a head ended during the current feed
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._oversized = False
        # Requests waiting for their turn, and the one being answered.
        self._queue: collections.deque[tuple[HttpRequest, bool]] = collections.deque()
        self._task: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport: asyncio's, or uvloop's (which does not subclass it).
        self._transport = cast(asyncio.Transport, transport)
        self._server.opened(self)
        self._arm(self._limits.head_timeout_ms, "head_timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._closed_here:
            pass
        elif self._phase is _Phase.HEAD or self._phase is _Phase.BODY:
            self._server.counters.disconnects[self._phase.name.lower()] += 1
        elif self._task is not None and not self._task.done():
            self._server.counters.disconnects["answer"] += 1
        self._phase = _Phase.DISCARD
        self._closing = True
        self._queue.clear()
        self._body = []
        self._server.closed(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    def data_received(self, data: bytes) -> None:
        if self._phase is _Phase.DISCARD or self._phase is _Phase.DONE:
            return
        if self._phase is _Phase.IDLE and not self._fresh:
            self._enter(_Phase.HEAD)
            self._arm(self._limits.head_timeout_ms, "head_timeout")
        self._fresh = False
        self._head_ended = False
        busy = self._task is not None
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _HeadRefused):
                self._refuse(cause.reason)
                return
            log.error("http_parser_callback_failed", exc_info=cause)  # a bug of ours
            self._server.counters.handler_errors += 1
            self._refuse("bad_request")
            return
        except httptools.HttpParserUpgrade:
            self._closing = True  # not spoken here: answer what was asked, then close
            self._discard()
            return
        except httptools.HttpParserError:
            self._refuse("bad_request")
            return
        if self._phase is _Phase.HEAD:
            # httptools holds a header field until the next one starts, unseen by the
            # callbacks: count what is fed too. A head that began at the start of a read
            # is counted exactly; one that began after another request in the same read
            # is counted from the next read on (at most one read past the limit).
            if self._head_ended:
                self._head_raw_bytes = 0
            else:
                self._head_raw_bytes += len(data)
            if max(self._head_bytes, self._head_raw_bytes) > self._limits.head_bytes_max:
                self._refuse("head_too_large")
                return
        if busy and not self._read_ahead:  # pipelining: read no further until answered
            self._read_ahead = True
            self._update_reading()

    # ---------------------------------------------------------------- parser callbacks

    def on_message_begin(self) -> None:
        if self._phase is _Phase.IDLE:  # a pipelined request: its head starts now
            self._enter(_Phase.HEAD)
        self._url.clear()
        self._headers = {}
        self._header_count = 0
        self._head_bytes = 0
        self._head_raw_bytes = 0
        self._body = []
        self._body_bytes = 0
        self._oversized = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > self._limits.head_bytes_max:
            raise _HeadRefused("head_too_large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_bytes += len(name) + len(value) + 4
        if self._header_count > self._limits.headers_max:
            raise _HeadRefused("too_many_headers")
        if self._head_bytes > self._limits.head_bytes_max:
            raise _HeadRefused("head_too_large")
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._head_ended = True
        if self._head_bytes > self._limits.head_bytes_max:
            raise _HeadRefused("head_too_large")
        self._enter(_Phase.BODY)
        if not self._busy:
            self._arm(self._limits.body_timeout_ms, "body_timeout")
        declared = self._headers.get("content-length")
        if declared is not None and int(declared) > self._limits.body_bytes_max:
            self._oversize()
        elif (
            self._headers.get("expect", "").lower() == "100-continue"
            and not self._busy
            and self._transport is not None
        ):
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._oversized:
            return
        self._body_bytes += len(body)
        if self._body_bytes > self._limits.body_bytes_max:
            self._oversize()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._oversized:  # answered (or being answered) already; now fully read
            self._oversized = False
            self._enter(_Phase.DONE)
            self._after_answer()
            return
        body = b"".join(self._body)
        self._body = []
        self._enter(_Phase.IDLE)
        self._dispatch(body)

    # ---------------------------------------------------------------- requests

    def _request(self, body: bytes | None) -> HttpRequest:
        method = self._parser.get_method().decode("ascii", "replace")
        path = bytes(self._url).split(b"?", 1)[0].decode("latin-1")
        return HttpRequest(method, path, self._headers, body, time.time_ns() // 1_000_000)

    def _dispatch(self, body: bytes | None) -> None:
        keep_alive = self._parser.should_keep_alive() and body is not None
        self._queue.append((self._request(body), keep_alive))
        if len(self._queue) > self._limits.pipeline_requests_max:
            self._server.counters.closed["pipeline_overflow"] += 1
            self._abort()
            return
        if not keep_alive:
            self._closing = True
            if self._phase is _Phase.IDLE:
                self._phase = _Phase.DONE
        self._next()

    def _oversize(self) -> None:
        """The body is over its limit: the handler answers now (body None); what is
        still coming is read and thrown away, then the connection closes."""
        self._oversized = True
        self._body = []
        self._closing = True
        self._dispatch(None)

    @property
    def _busy(self) -> bool:
        return self._task is not None

    def _next(self) -> None:
        if self._task is not None or not self._queue:
            self._update_reading()
            self._server.set_category(self, self._category())
            return
        request, keep_alive = self._queue.popleft()
        if self._phase is not _Phase.HEAD and self._phase is not _Phase.BODY:
            self._cancel_timer()
        self._task = self._loop.create_task(self._answer(request, keep_alive))
        self._update_reading()
        self._server.set_category(self, self._category())

    async def _answer(self, request: HttpRequest, keep_alive: bool) -> None:
        try:
            response = await self._server.respond(request)
            keep_alive = keep_alive and not self._server.draining
            self._write(request, response, keep_alive)
        finally:
            self._task = None
            self._read_ahead = False
        if not keep_alive:
            self._closing = True
        self._after_answer()

    def _after_answer(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._task is not None:
            return
        if self._queue:
            self._next()
            return
        if self._closing:
            if self._oversized or self._phase is _Phase.DISCARD:
                self._linger()  # the client may still be sending: let it read the answer
            else:
                self._close()
            return
        # Keep-alive: wait for the next request (or the rest of a pipelined one).
        if self._phase is _Phase.IDLE:
            self._arm(self._limits.keepalive_idle_ms, "keepalive_idle")
        elif self._phase is _Phase.HEAD:
            self._arm(self._limits.head_timeout_ms, "head_timeout")
        elif self._phase is _Phase.BODY:
            self._arm(self._limits.body_timeout_ms, "body_timeout")
        self._update_reading()
        self._server.set_category(self, self._category())

    def _write(self, request: HttpRequest, response: HttpResponse, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        body = b"" if request.method == "HEAD" else response.body
        transport.write(
            self._server.head(response.status, response.headers, len(response.body), keep_alive)
            + body
        )

    # ---------------------------------------------------------------- closing

    def _refuse(self, reason: str) -> None:
        """Answer a head the server will not read (400, 431) and linger, so the client
        can read the answer; then close."""
        self._server.counters.closed[reason] += 1
        status = 400 if reason == "bad_request" else 431
        transport = self._transport
        self._discard()
        if transport is None or transport.is_closing():
            return
        if self._task is None and not self._queue:
            transport.write(self._server.head(status, {}, 0, keep_alive=False))
            self._linger()
        # else: the requests read before it are answered, then the connection closes

    def _discard(self) -> None:
        self._phase = _Phase.DISCARD
        self._closing = True
        self._body = []
        self._url.clear()
        self._headers = {}
        self._server.set_category(self, self._category())
        self._update_reading()

    def _linger(self) -> None:
        transport = self._transport
        assert transport is not None
        self._phase = _Phase.DISCARD
        if transport.can_write_eof():
            transport.write_eof()
        self._arm(self._limits.linger_ms, "linger_timeout")
        self._update_reading()

    def evict(self) -> None:
        self._server.counters.closed["evicted"] += 1
        self._abort()

    def shut(self) -> None:
        """The server stops: an idle connection closes now, a busy one once answered."""
        self._closing = True
        if self._task is None and not self._queue and self._phase is _Phase.IDLE:
            self._close()

    def abort(self) -> None:
        self._abort()

    def _abort(self) -> None:
        self._cancel_timer()
        self._closed_here = True
        if self._transport is not None:
            self._transport.abort()

    def _close(self) -> None:
        transport = self._transport
        if transport is None:
            return
        self._closed_here = True
        if transport.get_write_buffer_size() > 0:
            transport.abort()  # a client that does not read its answers
        else:
            transport.close()

    # ---------------------------------------------------------------- timers, reading

    def _arm(self, delay_ms: int, reason: str) -> None:
        deadline = self._loop.time() + delay_ms / 1000
        self._deadline = deadline
        self._deadline_reason = reason
        if self._timer is not None and self._timer.when() > deadline:
            self._timer.cancel()
            self._timer = None
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._expired)

    def _cancel_timer(self) -> None:
        self._deadline = None  # the timer, if any, finds nothing to do

    def _expired(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return
        if self._loop.time() < deadline:  # moved later since: sleep until then
            self._timer = self._loop.call_at(deadline, self._expired)
            return
        self._deadline = None
        reason = self._deadline_reason
        self._server.counters.closed[reason] += 1
        if reason == "linger_timeout" or reason == "keepalive_idle":
            self._close()
        else:
            self._abort()

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        reading = transport.is_reading()
        want = (
            self._phase is _Phase.DISCARD
            or self._phase is _Phase.DONE
            or not (self._write_paused or (self._read_ahead and self._task is not None))
        )
        if want and not reading:
            transport.resume_reading()
        elif not want and reading:
            transport.pause_reading()

    def _enter(self, phase: _Phase) -> None:
        self._phase = phase
        self._server.set_category(self, self._category())

    def _category(self) -> int:
        if self._task is not None or self._queue:
            return _BUSY
        if self._phase is _Phase.HEAD or self._phase is _Phase.BODY:
            return _RECEIVING
        return _IDLE


_IDLE, _RECEIVING, _BUSY = 0, 1, 2


class HttpServer:
    def __init__(
        self, app: HttpApp, limits: HttpLimits, counters: HttpCounters | None = None
    ) -> None:
        self.app = app
        self.limits = limits
        self.counters = counters or HttpCounters()
        self.loop = asyncio.get_running_loop()
        self.draining = False
        # Open connections by what they are doing, each in the order they began it: the
        # first of `_idle`, then of `_receiving`, makes room for a new connection.
        self._idle: dict[_Connection, None] = {}
        self._receiving: dict[_Connection, None] = {}
        self._busy: dict[_Connection, None] = {}
        self._category: dict[_Connection, int] = {}
        self._all_closed = asyncio.Event()
        self._all_closed.set()
        self._listener: asyncio.Server | None = None
        self._date = b""
        self._date_s = 0

    @property
    def connections(self) -> int:
        return len(self._category)

    async def start(self, host: str, port: int) -> None:
        self._listener = await self.loop.create_server(
            lambda: _Connection(self), host, port, reuse_address=True, backlog=2048
        )

    async def stop(self, grace_s: float) -> None:
        """Stop accepting; close idle connections; let requests being answered finish
        (at most `grace_s`), then close what is left."""
        self.draining = True
        if self._listener is not None:
            self._listener.close()
        for connection in list(self._category):
            connection.shut()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_closed.wait(), grace_s)
        for connection in list(self._category):
            connection.abort()
        if self._listener is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._listener.wait_closed(), 1.0)

    # ---------------------------------------------------------------- bookkeeping

    def opened(self, connection: _Connection) -> None:
        self.counters.connections_opened += 1
        if len(self._category) >= self.limits.connections_max:
            victim = next(iter(self._idle), None) or next(iter(self._receiving), None)
            if victim is None:  # every connection is being answered
                self.counters.closed["refused_full"] += 1
                connection.abort()
                return
            victim.evict()
            self.closed(victim)
        self._category[connection] = _IDLE
        self._idle[connection] = None
        self._all_closed.clear()
        if self.draining:
            connection.shut()

    def closed(self, connection: _Connection) -> None:
        category = self._category.pop(connection, None)
        if category is None:
            return
        self._table(category).pop(connection, None)
        if not self._category:
            self._all_closed.set()

    def set_category(self, connection: _Connection, category: int) -> None:
        current = self._category.get(connection)
        if current is None or current == category:
            return
        self._table(current).pop(connection, None)
        self._table(category)[connection] = None
        self._category[connection] = category

    def _table(self, category: int) -> dict[_Connection, None]:
        return (self._idle, self._receiving, self._busy)[category]

    # ---------------------------------------------------------------- answering

    async def respond(self, request: HttpRequest) -> HttpResponse:
        method = "GET" if request.method == "HEAD" else request.method
        target = self.app.route(method, request.path)
        if isinstance(target, HttpResponse):
            return target
        try:
            return await target(request)
        except Exception:
            self.counters.handler_errors += 1
            log.exception("http_handler_failed", method=request.method, path=request.path)
            return HttpResponse(500, b"Internal Server Error", {"content-type": "text/plain"})

    def head(self, status: int, headers: Mapping[str, str], length: int, keep_alive: bool) -> bytes:
        """The status line and header fields of an answer."""
        now_s = int(time.time())
        if now_s != self._date_s:
            self._date_s = now_s
            self._date = email.utils.formatdate(now_s, usegmt=True).encode()
        lines = [
            b"HTTP/1.1 %d %s\r\ndate: %s\r\ncontent-length: %d\r\n"
            % (status, REASON_PHRASES.get(status, "").encode(), self._date, length)
        ]
        for name, value in headers.items():
            lines.append(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")))
        if not keep_alive:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)
