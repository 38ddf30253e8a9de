"""The dev stack's supervisor: a worker that stops is started again, with backoff."""

import asyncio

import pytest

from refundctl.supervise import RestartPolicy, supervise
from worker.consumer import GroupJoinStalled

FAST = RestartPolicy(backoff_initial_ms=1, backoff_max_ms=4, healthy_after_ms=60_000)


async def test_a_failing_job_is_restarted_until_it_runs() -> None:
    stop = asyncio.Event()
    runs: list[str] = []
    running = asyncio.Event()

    async def job(job_stop: asyncio.Event) -> None:
        runs.append("run")
        if len(runs) == 1:
            raise GroupJoinStalled("no partition assignment after 30 s")
        if len(runs) == 2:
            raise RuntimeError("a crash")
        running.set()
        await job_stop.wait()

    supervisor = asyncio.create_task(supervise("worker-0", job, stop, FAST))
    await asyncio.wait_for(running.wait(), 5)
    assert not supervisor.done()  # two failures did not end the supervisor
    stop.set()
    await asyncio.wait_for(supervisor, 5)
    assert runs == ["run", "run", "run"]


async def test_a_job_that_returns_early_is_restarted_and_stop_ends_the_backoff() -> None:
    stop = asyncio.Event()
    returned = asyncio.Event()
    runs = 0
    slow = RestartPolicy(backoff_initial_ms=60_000, backoff_max_ms=60_000)

    async def job(_: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        returned.set()

    supervisor = asyncio.create_task(supervise("worker-0", job, stop, slow))
    await asyncio.wait_for(returned.wait(), 5)  # the supervisor now backs off 30-60 s
    stop.set()
    await asyncio.wait_for(supervisor, 1)  # not the 30-60 s backoff
    assert runs == 1


@pytest.mark.parametrize(("failures", "ceiling_ms"), [(1, 500), (2, 1000), (3, 2000), (9, 15_000)])
def test_backoff_doubles_up_to_its_ceiling(failures: int, ceiling_ms: int) -> None:
    policy = RestartPolicy()
    for _ in range(50):
        assert ceiling_ms / 2 <= policy.backoff_ms(failures) <= ceiling_ms
