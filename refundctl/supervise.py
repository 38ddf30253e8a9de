"""Keeping the dev stack's workers running: a worker that stops (its group join bound,
a crash, a lost database) is started again with backoff, and the ingress, broker and
database stay up.

In production a process supervisor (Kubernetes, systemd) does this for `refundctl
worker`, which exits on such failures; `refundctl dev` runs its workers in-process, so
it supervises them itself.
"""

import asyncio
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger("refundctl.supervise")

Job = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class RestartPolicy:
    """Backoff between restarts: doubles from `backoff_initial_ms` up to
    `backoff_max_ms`, with jitter; a run that lasted `healthy_after_ms` resets it."""

    backoff_initial_ms: int = 500
    backoff_max_ms: int = 15_000
    healthy_after_ms: int = 60_000

    def __post_init__(self) -> None:
        assert 0 < self.backoff_initial_ms <= self.backoff_max_ms <= 600_000
        assert self.healthy_after_ms > 0

    def backoff_ms(self, failures: int) -> int:
        assert failures >= 1
        ceiling = min(self.backoff_max_ms, self.backoff_initial_ms * 2 ** min(failures - 1, 20))
        return int(ceiling * random.uniform(0.5, 1.0))


async def supervise(name: str, job: Job, stop: asyncio.Event, policy: RestartPolicy) -> None:
    """Run `job` until `stop` is set, starting it again whenever it ends or fails.

    Every failure is logged with its reason and counted in the restart line; the wait
    before a restart is bounded by the policy and cut short by `stop`."""
    loop = asyncio.get_running_loop()
    failures = 0
    restarts = 0
    while not stop.is_set():
        started = loop.time()
        try:
            await job(stop)
            if stop.is_set():
                return
            reason = "returned"
        except asyncio.CancelledError:
            raise
        # The supervisor's boundary, as `cli.main` is the process's: any failure of a
        # job, a bug included, is logged with its traceback and the job started again.
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.error("supervised_job_failed", job=name, error=reason, exc_info=exc)
        ran_ms = (loop.time() - started) * 1000
        failures = 1 if ran_ms >= policy.healthy_after_ms else failures + 1
        wait_ms = policy.backoff_ms(failures)
        restarts += 1
        log.warning(
            "supervised_job_restarting",
            job=name,
            reason=reason,
            ran_ms=round(ran_ms),
            restart=restarts,
            backoff_ms=wait_ms,
        )
        try:
            await asyncio.wait_for(stop.wait(), wait_ms / 1000)
        except TimeoutError:
            continue
