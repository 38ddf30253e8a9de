"""Per-request cost of the ingress's HTTP server, old (uvicorn + httptools + Starlette,
the settings `run_ingress` had) against new (`adapters.http_server`), with a trivial
handler that reads the body and answers a small JSON body.

`python -m tests.bench.http_server_cost [--seconds S] [--connections C] [--rounds R]`

Each server runs in its own process on the default asyncio loop; the load comes from
another process over keep-alive connections (one request at a time per connection), so
the server's CPU time (user + system, from /proc via psutil) is its own. Rounds
alternate old and new (ABAB...) in one sitting; the report gives requests/s and CPU per
request for each, and the ratios new/old.
"""

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import psutil

BODY = b'{"command":"cancel","transactionId":"c-1","amount":10}'
REQUEST = (
    b"POST /x HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
    b"x-request-signature: abcdefghijklmnopqrstuvwxyz0123456789\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY)
)
ANSWER = b'{"balance":100,"statusCode":"OK"}'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- the servers


def serve_old(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def handler(request: Request) -> Response:
        await request.body()
        return Response(ANSWER, headers={"content-type": "application/json"})

    app = Starlette(routes=[Route("/x", handler, methods=["POST"])])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="asyncio",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        limit_concurrency=10_000,
    )
    uvicorn.Server(config).run()


def serve_new(port: int) -> None:
    from adapters.http_server import HttpRequest, HttpResponse, HttpServer
    from adapters.settings import HttpLimits

    async def handler(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, ANSWER, {"content-type": "application/json"})

    class App:
        def route(self, method: str, path: str):  # type: ignore[no-untyped-def]
            if path != "/x":
                return HttpResponse(404, b"Not Found")
            return handler

    async def main() -> None:
        server = HttpServer(App(), HttpLimits())
        await server.start("127.0.0.1", port)
        await asyncio.Event().wait()

    asyncio.run(main())


# ---------------------------------------------------------------- the load


async def _one_connection(port: int, until: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    done = 0
    while time.monotonic() < until:
        writer.write(REQUEST)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length)
        assert body == ANSWER, body
        done += 1
    counts.append(done)
    writer.close()


def load(port: int, seconds: float, connections: int) -> None:
    """Run in its own process: prints the number of requests answered."""

    async def main() -> int:
        counts: list[int] = []
        until = time.monotonic() + seconds
        await asyncio.gather(*(_one_connection(port, until, counts) for _ in range(connections)))
        return sum(counts)

    print(asyncio.run(main()))


# ---------------------------------------------------------------- the sitting


@dataclass
class Result:
    server: str
    requests: int
    seconds: float
    cpu_s: float

    @property
    def per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.requests * 1e6


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the server did not listen in time")


def measure(server: str, seconds: float, connections: int) -> Result:
    port = free_port()
    here = [sys.executable, "-m", "tests.bench.http_server_cost"]
    process = subprocess.Popen([*here, "--serve", server, "--port", str(port)])
    try:
        _wait_listening(port, process)
        warm = subprocess.run(
            [*here, "--load", str(port), "--seconds", "1", "--connections", str(connections)],
            check=True,
            capture_output=True,
        )
        assert int(warm.stdout) > 0
        ps = psutil.Process(process.pid)
        before = ps.cpu_times()
        started = time.monotonic()
        run = subprocess.run(
            [
                *here,
                "--load",
                str(port),
                "--seconds",
                str(seconds),
                "--connections",
                str(connections),
            ],
            check=True,
            capture_output=True,
        )
        elapsed = time.monotonic() - started
        after = ps.cpu_times()
        cpu_s = (after.user - before.user) + (after.system - before.system)
        return Result(server, int(run.stdout), elapsed, cpu_s)
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=("old", "new"))
    parser.add_argument("--load", type=int, metavar="PORT")
    parser.add_argument("--port", type=int)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.serve == "old":
        serve_old(args.port)
        return
    if args.serve == "new":
        serve_new(args.port)
        return
    if args.load is not None:
        load(args.load, args.seconds, args.connections)
        return
    results: dict[str, list[Result]] = {"old": [], "new": []}
    for _ in range(args.rounds):
        for server in ("old", "new"):
            result = measure(server, args.seconds, args.connections)
            results[server].append(result)
            print(
                f"{server}: {result.per_s:8.0f} req/s  {result.cpu_us:6.1f} us CPU/request "
                f"({result.requests} requests in {result.seconds:.1f} s)",
                flush=True,
            )
    summary = {}
    for server, rows in results.items():
        requests = sum(r.requests for r in rows)
        summary[server] = {
            "requests_per_s": round(requests / sum(r.seconds for r in rows)),
            "cpu_us_per_request": round(sum(r.cpu_s for r in rows) / requests * 1e6, 1),
        }
    summary["ratio_new_over_old"] = {
        "requests_per_s": round(
            summary["new"]["requests_per_s"] / summary["old"]["requests_per_s"], 2
        ),
        "cpu_per_request": round(
            summary["new"]["cpu_us_per_request"] / summary["old"]["cpu_us_per_request"], 2
        ),
    }
    summary["cpus"] = {"count": os.cpu_count() or 0}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
