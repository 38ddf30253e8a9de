"""A lean HTTP/1.1 keep-alive client for the load generator (asyncio protocol).

The load generator shares two cores with everything it measures, so its own cost per
request matters: measured against a trivial Starlette app on this machine, httpx spent
about 2.5 ms of CPU per request and this client about 40 us. It speaks just enough
HTTP/1.1 for our servers: one request at a time per connection, responses framed by
Content-Length (uvicorn always sends it for these responses).
"""

import asyncio

from tests.bench.workload import HttpRequest

HEAD_BYTES_MAX = 64 * 1024


class HttpError(Exception):
    pass


class Connection(asyncio.Protocol):
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._prefix = f"Host: {host}:{port}\r\n".encode()
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int) -> "Connection":
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(lambda: cls(host, port), host, port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    @property
    def received_nothing(self) -> bool:
        """No byte of a response came on this connection since the last one ended."""
        return not self._buffer

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(HttpError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > HEAD_BYTES_MAX:
                waiter.set_exception(HttpError("response head too large"))
            return
        head = bytes(self._buffer[:end]).lower()
        marker = head.find(b"content-length:")
        if marker < 0:
            waiter.set_exception(HttpError("response without content-length"))
            return
        line_end = head.find(b"\r\n", marker)
        length = int(head[marker + 15 : line_end if line_end >= 0 else len(head)])
        total = end + 4 + length
        if len(self._buffer) < total:
            return
        status = int(head[9:12])
        body = bytes(self._buffer[end + 4 : total])
        del self._buffer[:total]
        waiter.set_result((status, body))

    async def send(self, request: HttpRequest, timeout_s: float) -> tuple[int, bytes]:
        """One request, one response; raises HttpError or TimeoutError (then close)."""
        if self.closed or self._transport is None:
            raise HttpError("connection closed")
        self._waiter = asyncio.get_running_loop().create_future()
        extra = "".join(f"{name}: {value}\r\n" for name, value in request.headers)
        self._transport.write(
            f"POST {request.path} HTTP/1.1\r\n".encode()
            + self._prefix
            + b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(request.body)}\r\n{extra}\r\n".encode()
            + request.body
        )
        try:
            return await asyncio.wait_for(self._waiter, timeout_s)
        finally:
            self._waiter = None

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()
