"""`adapters.http_server` on loopback sockets with a trivial application (no broker, no
database), and the ingress's HTTP settings as `refundctl` reads them.

Each wait is bounded: the tests await the answer or the socket's close, never a sleep.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from adapters.http_server import (
    Handler,
    HttpRequest,
    HttpResponse,
    HttpServer,
    event_loop_factory,
)
from adapters.settings import HttpLimits
from refundctl import config, devstack

MIB = 1024 * 1024
BOUND_S = 5.0  # no wait here may take longer


class App:
    """POST /echo answers the body's length (-1: over the limit); GET /slow waits for
    `release`."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    def route(self, method: str, path: str) -> Handler | HttpResponse:
        if path == "/echo" and method == "POST":
            return self.echo
        if path == "/slow" and method == "GET":
            return self.slow
        if path == "/boom":
            return self.boom
        return HttpResponse(404, b"Not Found")

    async def echo(self, request: HttpRequest) -> HttpResponse:
        length = -1 if request.body is None else len(request.body)
        return HttpResponse(200, b"%d" % length, {"content-type": "text/plain"})

    async def slow(self, request: HttpRequest) -> HttpResponse:
        self.started.set()
        await self.release.wait()
        return HttpResponse(200, b"slow")

    async def boom(self, request: HttpRequest) -> HttpResponse:
        raise RuntimeError("a bug")


@contextlib.asynccontextmanager
async def serving(**limits: int) -> AsyncIterator[tuple[HttpServer, App, int]]:
    app = App()
    server = HttpServer(app, HttpLimits(**limits))
    port = devstack.free_port()
    await server.start("127.0.0.1", port)
    try:
        yield server, app, port
    finally:
        app.release.set()
        await server.stop(grace_s=2)


async def exchange(port: int, data: bytes, within_s: float = BOUND_S) -> bytes:
    """Send `data`, return all the server sends until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        chunks = []
        async with asyncio.timeout(within_s):
            while chunk := await reader.read(65536):
                chunks.append(chunk)
        return b"".join(chunks)
    except ConnectionResetError:
        return b"".join(chunks)
    finally:
        writer.close()


def statuses(answer: bytes) -> list[int]:
    return [int(part[:3]) for part in answer.split(b"HTTP/1.1 ")[1:]]


async def test_keep_alive_pipelining_and_chunked_bodies() -> None:
    async with serving(keepalive_idle_ms=200) as (_, _, port):
        answer = await exchange(
            port,
            b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc"
            b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"
            b"GET /nowhere HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
    assert statuses(answer) == [200, 200, 404]
    assert answer.count(b"connection: close") == 1
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in answer.split(b"HTTP/1.1 ")[1:]]
    assert bodies == [b"3", b"5", b"Not Found"]


async def test_head_limits_answer_431() -> None:
    async with serving(head_bytes_max=4096, headers_max=10) as (server, _, port):
        one_big_field = b"GET /x HTTP/1.1\r\nx-big: " + b"a" * 100_000  # never finished
        assert statuses(await exchange(port, one_big_field)) == [431]
        many = b"GET /x HTTP/1.1\r\n" + b"x-a: b\r\n" * 11 + b"\r\n"
        assert statuses(await exchange(port, many)) == [431]
        long_url = b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n"
        assert statuses(await exchange(port, long_url)) == [431]
        fits = b"GET /x HTTP/1.1\r\n" + b"x-a: b\r\n" * 9 + b"connection: close\r\n\r\n"
        assert statuses(await exchange(port, fits)) == [404]
        assert statuses(await exchange(port, b"NOT HTTP\r\n\r\n")) == [400]
    assert server.counters.closed["head_too_large"] == 2
    assert server.counters.closed["too_many_headers"] == 1
    assert server.counters.closed["bad_request"] == 1


async def test_a_body_over_the_limit_is_answered_at_once_and_thrown_away() -> None:
    async with serving(body_bytes_max=1000) as (_, _, port):
        declared = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5000000\r\n\r\n"
        answer = await exchange(port, declared)  # answered before any of the body
        assert statuses(answer) == [200]
        assert answer.endswith(b"\r\n\r\n-1")
        chunked = (
            b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
            + b"400\r\n"
            + b"x" * 1024
            + b"\r\n0\r\n\r\n"
        )
        answer = await exchange(port, chunked)
        assert answer.endswith(b"\r\n\r\n-1")


async def test_timeouts_close_silent_slow_and_idle_connections() -> None:
    async with serving(head_timeout_ms=200, body_timeout_ms=200, keepalive_idle_ms=200) as (
        server,
        _,
        port,
    ):
        results = list(  # a list at run time already; typed as a tuple
            await asyncio.gather(
                exchange(port, b""),
                exchange(port, b"POST /echo HTTP/1.1\r\nhost: x\r\n"),
                exchange(port, b"POST /echo HTTP/1.1\r\ncontent-length: 10\r\n\r\nabc"),
                exchange(port, b"POST /echo HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc"),
            )
        )
    assert results[:3] == [b"", b"", b""]
    assert statuses(results[3]) == [200]  # then closed as idle
    assert server.counters.closed["head_timeout"] == 2
    assert server.counters.closed["body_timeout"] == 1
    assert server.counters.closed["keepalive_idle"] == 1
    assert not server.counters.disconnects  # the server closed them: not the clients


async def test_idle_connections_make_room_and_busy_ones_are_kept() -> None:
    async with serving(connections_max=3) as (server, app, port):
        busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", port)
        busy_writer.write(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        await asyncio.wait_for(app.started.wait(), BOUND_S)
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        request = b"POST /echo HTTP/1.1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        answer = await exchange(port, request)
        assert statuses(answer) == [200]
        assert server.counters.closed["evicted"] >= 1
        assert server.connections <= 3
        app.release.set()
        assert (await asyncio.wait_for(busy_reader.readuntil(b"slow"), BOUND_S)).endswith(b"slow")
        busy_writer.close()
        for _, writer in idle:
            writer.close()


async def test_a_handler_that_raises_is_a_500_and_counted() -> None:
    async with serving() as (server, _, port):
        answer = await exchange(port, b"GET /boom HTTP/1.1\r\nconnection: close\r\n\r\n")
    assert statuses(answer) == [500]
    assert server.counters.handler_errors == 1


async def test_a_client_gone_mid_body_is_counted() -> None:
    async with serving() as (server, _, port):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /echo HTTP/1.1\r\ncontent-length: 100\r\n\r\nab")
        await writer.drain()
        writer.close()
        async with asyncio.timeout(BOUND_S):
            while server.counters.disconnects["body"] != 1:  # noqa: ASYNC110 - a counter
                await asyncio.sleep(0.01)


async def test_stop_answers_the_request_in_progress_then_closes() -> None:
    app = App()
    server = HttpServer(app, HttpLimits())
    port = devstack.free_port()
    await server.start("127.0.0.1", port)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
    await asyncio.wait_for(app.started.wait(), BOUND_S)
    stopping = asyncio.create_task(server.stop(grace_s=BOUND_S))
    app.release.set()
    answer = await asyncio.wait_for(reader.read(), BOUND_S)
    await asyncio.wait_for(stopping, BOUND_S)
    assert statuses(answer) == [200]
    assert b"connection: close" in answer
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    writer.close()


# ---------------------------------------------------------------- on the ingress's loop

ON_EVERY_LOOP = (
    test_keep_alive_pipelining_and_chunked_bodies,
    test_head_limits_answer_431,
    test_a_body_over_the_limit_is_answered_at_once_and_thrown_away,
    test_timeouts_close_silent_slow_and_idle_connections,
    test_idle_connections_make_room_and_busy_ones_are_kept,
    test_a_handler_that_raises_is_a_500_and_counted,
    test_a_client_gone_mid_body_is_counted,
    test_stop_answers_the_request_in_progress_then_closes,
)


def test_the_ingress_serves_on_uvloop() -> None:
    """`refundctl ingress` runs on `event_loop_factory`'s loop: uvloop, installed with
    the package wherever it builds (here, always)."""
    assert event_loop_factory() is uvloop.new_event_loop


@pytest.mark.parametrize("case", ON_EVERY_LOOP, ids=lambda case: case.__name__)
def test_the_limits_hold_on_the_ingress_loop(case: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """The tests above (run on the test session's asyncio loop), again on the loop the
    ingress serves on: its transports are uvloop's own (reading paused and resumed,
    half-close, abort, the write buffer)."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(case())


# ---------------------------------------------------------------- configuration


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    key = tmp_path / "naga.pem"
    devstack.naga_dev_key(tmp_path)
    key = tmp_path / "naga-dev-public.pem"
    return {
        **config.DEV_SECRETS,
        "NAGA_PUBLIC_KEY_FILE": str(key),
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
        "DATABASE_URL": "postgresql://x@127.0.0.1/x",
    }


def test_http_limits_are_read_with_their_defaults(env: dict[str, str]) -> None:
    settings = config.ingress_settings(env)
    assert settings.http == HttpLimits()
    assert settings.http.head_bytes_max == 16 * 1024
    assert settings.http.headers_max == 100
    assert settings.http.head_timeout_ms == settings.http.body_timeout_ms == 10_000
    assert settings.http.keepalive_idle_ms == 5_000
    assert settings.reply_deadline_ms == 3_500
    custom = config.ingress_settings(
        {**env, "HTTP_HEAD_TIMEOUT_MS": "250", "HTTP_CONNECTIONS_MAX": "20",
         "INGRESS_REQUESTS_IN_FLIGHT_MAX": "10"}
    )  # fmt: skip
    assert custom.http.head_timeout_ms == 250
    assert custom.http.connections_max == 20
    assert custom.requests_in_flight_max == 10


@pytest.mark.parametrize(
    "variables",
    [
        {"REPLY_DEADLINE_MS": "99"},
        {"REPLY_DEADLINE_MS": "3901"},
        {"REPLY_DEADLINE_MS": "60000"},
        {"HTTP_HEAD_BYTES_MAX": "100"},
        {"HTTP_HEADERS_MAX": "0"},
        {"HTTP_KEEPALIVE_IDLE_MS": "0"},
        {"HTTP_CONNECTIONS_MAX": "100", "INGRESS_REQUESTS_IN_FLIGHT_MAX": "100"},
    ],
)
def test_out_of_range_http_settings_are_refused(
    env: dict[str, str], variables: dict[str, str]
) -> None:
    with pytest.raises(config.ConfigError):
        config.ingress_settings({**env, **variables})


def test_the_reply_deadline_range_is_100_to_3900(env: dict[str, str]) -> None:
    assert config.ingress_settings({**env, "REPLY_DEADLINE_MS": "100"}).reply_deadline_ms == 100
    assert config.ingress_settings({**env, "REPLY_DEADLINE_MS": "3900"}).reply_deadline_ms == 3900
