"""`adapters.bus.all_done`, the request/reply client's wait (deliveries, then outcomes):
what `asyncio.wait(futures)` did there, and no more."""

import asyncio

import pytest

from adapters.bus import all_done

BOUND_S = 5.0


async def test_it_returns_once_every_future_is_done_whatever_its_end() -> None:
    loop = asyncio.get_running_loop()
    ok, failed, cancelled = loop.create_future(), loop.create_future(), loop.create_future()
    futures = [ok, failed, cancelled, ok]  # a future twice counts once, as in asyncio.wait
    waiting = asyncio.create_task(all_done(futures))
    loop.call_soon(ok.set_result, 1)
    loop.call_soon(failed.set_exception, RuntimeError("refused"))
    await asyncio.sleep(0)
    assert not waiting.done()
    cancelled.cancel()
    await asyncio.wait_for(waiting, BOUND_S)  # the failure is not raised here
    assert failed.exception() is not None


async def test_done_futures_return_at_once() -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    done.set_result(None)
    await asyncio.wait_for(all_done([done]), BOUND_S)
    await asyncio.wait_for(all_done([]), BOUND_S)


async def test_a_timed_out_wait_leaves_the_futures_alone() -> None:
    loop = asyncio.get_running_loop()
    slow = [loop.create_future(), loop.create_future()]
    slow[0].set_result(None)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await all_done(slow)
    assert not slow[1].cancelled()
    assert not slow[1].done()
    slow[1].set_result(2)  # no callback of the finished wait is left to run
    await asyncio.sleep(0)
