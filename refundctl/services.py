"""Running the long-lived processes until a stop event: ingress, worker, dev stack."""

import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from adapters import http_app
from adapters.settings import IngressSettings
from worker.status import OperationError


async def run_ingress(settings: IngressSettings, stop: asyncio.Event) -> None:
    """Serve until `stop`; then stop accepting and let in-flight requests finish
    (each is bounded by the reply deadline). The HTTP server is ours
    (`adapters.http_server`): uvicorn cannot bound heads, header counts or idle
    connections."""
    try:
        await http_app.serve(settings, stop)
    except OSError as exc:
        raise OperationError(
            f"ingress could not start on port {settings.http_port}: {exc.strerror or exc}"
        ) from exc


async def run_ingress_once_assigned(
    settings: IngressSettings,
    assigned: list[asyncio.Event],
    assigned_timeout_s: float,
    stop: asyncio.Event,
) -> None:
    """The dev stack's ingress: started only once every in-process worker has joined
    the group and positioned its partitions, so /readyz does not answer 200 while
    nobody consumes the requests (a new group's first join takes seconds on some
    brokers)."""

    async def all_assigned() -> None:
        for event in assigned:
            await event.wait()

    async def stopped() -> None:
        await stop.wait()

    joined = asyncio.create_task(all_assigned())
    stopping = asyncio.create_task(stopped())
    try:
        await asyncio.wait(
            {joined, stopping}, timeout=assigned_timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        stopping.cancel()
    if stop.is_set():
        joined.cancel()
        return
    if not joined.done():
        joined.cancel()
        raise OperationError(
            f"workers did not join the consumer group within {assigned_timeout_s:g} s"
        )
    print(
        "refundctl dev: workers joined the group; starting the ingress",
        file=sys.stderr,
        flush=True,
    )
    await run_ingress(settings, stop)


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGINT/SIGTERM set `stop`. Stopping is bounded (a batch, the reply deadline), so
    repeated signals are not needed and only noted."""
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            print("refundctl: already stopping", file=sys.stderr, flush=True)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)


async def run_until_stopped(
    jobs: list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]], stop: asyncio.Event
) -> None:
    """Run `jobs` together; when one fails or `stop` is set, stop them all."""
    tasks = [asyncio.create_task(job(stop)) for job in jobs]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result
