"""The load generator: a separate process, `python -m tests.bench.load SPEC OUT`.

SPEC is a JSON file written by `tests.bench.run`; OUT receives the results as JSON.
Two modes, both bounded in count (the plan) and in time (the spec's seconds plus one
request timeout):

- `mix`: closed loop over `connections` keep-alive connections spread over `urls`; each
  connection sends the plan's next cancel (all four providers, retries, unknown bets),
  freshly stamped and signed, as soon as its previous answer arrived. Requests answered
  during the first `warmup_s` are not counted; then for `seconds` every answer counts:
  its latency (send to last byte, measured here) and whether it was the right answer.
- `open`: open loop at a fixed arrival rate (`rate` per second, `arrival` "even" or
  "poisson"), independent of the answers: each arrival takes an idle keep-alive
  connection (or opens one) and sends the plan's next cancel. At most `outstanding_max`
  requests are unanswered at once; an arrival past that bound, or with the plan used
  up, is not sent and counted `unsent`; one sent more than `LATE_S` after its time is
  counted `late`. Latency runs from the arrival's scheduled time (no coordinated
  omission), and requests scheduled in the window count. With `abort`, the step stops
  early once it cannot pass (a wrong answer, an unsent arrival, or more answers over
  `p99_target_ms` than 1% of the window's arrivals); unanswered requests then count as
  infinitely late. `check` "status200" accepts any 200 (the floor's trivial handler).
- `burst`: opens `connections` connections, warms the pipeline with a few single
  cancels, then puts every cancel of the burst (HPGames bulks and single requests) on
  the wire at once and records when each cancel's answer arrived.
"""

import argparse
import asyncio
import contextlib
import json
import math
import random
import resource
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.bench.httpclient import Connection, HttpError
from tests.bench.workload import (
    NEW,
    HttpRequest,
    answer_good,
    build_request,
    hpgames_bulk,
    hpgames_request,
    make_plan,
)

OPEN_CONCURRENCY = 200  # connections opened at the same time
BAD_SAMPLES_MAX = 5
LATE_S = 0.010  # an arrival sent later than this after its time is counted late


def percentile(sorted_values: list[float], share: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(share * len(sorted_values)) - 1))
    return sorted_values[index]


def _endpoints(urls: list[str]) -> list[tuple[str, int]]:
    result = []
    for url in urls:
        parts = urlsplit(url)
        assert parts.hostname == "127.0.0.1", "the benchmark talks to 127.0.0.1 only"
        assert parts.port is not None
        result.append((parts.hostname, parts.port))
    return result


async def _open_all(endpoints: list[tuple[str, int]], count: int) -> list[Connection]:
    """`count` connections, round-robin over the endpoints, a bounded number at a time."""
    connections: list[Connection] = []
    for start in range(0, count, OPEN_CONCURRENCY):
        batch = [
            Connection.open(*endpoints[i % len(endpoints)])
            for i in range(start, min(count, start + OPEN_CONCURRENCY))
        ]
        connections += await asyncio.wait_for(asyncio.gather(*batch), 30)
    return connections


class HttpxSender:
    """The same requests through httpx (`--client httpx`), to compare client cost."""

    def __init__(self, url: str, connections: int) -> None:
        import httpx

        self._client = httpx.AsyncClient(
            base_url=url,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

    async def send(self, request: HttpRequest, timeout_s: float) -> tuple[int, bytes]:
        response = await self._client.post(
            request.path,
            content=request.body,
            headers={"Content-Type": "application/json", **dict(request.headers)},
            timeout=timeout_s,
        )
        return response.status_code, response.content

    async def aclose(self) -> None:
        await self._client.aclose()


async def run_mix(spec: dict[str, Any]) -> dict[str, Any]:
    plan = make_plan(spec["plan_size"], spec["plan_seed"]).entries
    players = spec["players"]
    signatures = _load_signatures(spec.get("naga_signatures"))
    endpoints = _endpoints(spec["urls"])
    timeout_s = spec["timeout_s"]
    latencies = array("d")
    counts: Counter[str] = Counter()
    bad_samples: list[str] = []
    position = start = spec.get("plan_start", 0)
    httpx_sender = (
        HttpxSender(spec["urls"][0], spec["connections"]) if spec["client"] == "httpx" else None
    )
    # Opened before the clock starts: connecting is not the service's work.
    connections = [] if httpx_sender else await _open_all(endpoints, spec["connections"])
    started = time.perf_counter()
    window_start = started + spec["warmup_s"]
    window_end = window_start + spec["seconds"]

    async def loop(index: int) -> None:
        nonlocal position
        connection = connections[index] if connections else None
        while position < len(plan):
            if time.perf_counter() >= window_end:
                return
            entry = plan[position]
            position += 1
            request = build_request(entry, players, signatures)
            sent = time.perf_counter()
            try:
                if connection is not None:
                    if connection.closed:
                        connection = await Connection.open(connection.host, connection.port)
                    status, body = await connection.send(request, timeout_s)
                else:
                    assert httpx_sender is not None
                    status, body = await httpx_sender.send(request, timeout_s)
            except (HttpError, OSError, TimeoutError) as exc:
                status, body = 0, f"{type(exc).__name__}: {exc}".encode()
                if connection is not None:
                    connection.close()
            done = time.perf_counter()
            if not window_start <= done <= window_end:
                continue
            latencies.append(done - sent)
            good = answer_good(entry[0], entry[1], status, body)
            counts[f"{entry[0]}_{'good' if good else 'bad'}"] += 1
            if not good and len(bad_samples) < BAD_SAMPLES_MAX:
                bad_samples.append(f"{entry} {status} {body[:200]!r}")

    tasks = [asyncio.create_task(loop(i)) for i in range(spec["connections"])]
    await asyncio.wait(tasks, timeout=spec["warmup_s"] + spec["seconds"] + timeout_s + 5)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for connection in connections:
        connection.close()
    if httpx_sender is not None:
        await httpx_sender.aclose()
    ordered = sorted(latencies)
    good = sum(v for k, v in counts.items() if k.endswith("_good"))
    return {
        "requests": len(ordered),
        "good": good,
        "bad": len(ordered) - good,
        "rps": len(ordered) / spec["seconds"],
        "p50_ms": percentile(ordered, 0.50) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000,
        "max_ms": (ordered[-1] if ordered else math.nan) * 1000,
        "sent": position - start,
        "plan_exhausted": position >= len(plan),
        "by_provider": dict(sorted(counts.items())),
        "bad_samples": bad_samples,
    }


def _raise_file_limit(wanted: int) -> int:
    """Raise this process's open-file limit toward `wanted` + slack; returns the
    connections it allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted + 64 if hard == resource.RLIM_INFINITY else min(hard, wanted + 64)
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return max(1, soft - 64)


async def run_open(spec: dict[str, Any]) -> dict[str, Any]:
    """Open loop: arrivals at `rate`/s for `warmup_s` + `seconds`; see the module doc."""
    plan = make_plan(spec["plan_size"], spec["plan_seed"]).entries
    players = spec["players"]
    signatures = _load_signatures(spec.get("naga_signatures"))
    endpoints = _endpoints(spec["urls"])
    timeout_s = float(spec["timeout_s"])
    rate = float(spec["rate"])
    assert 0 < rate <= 1_000_000, rate
    wrap = bool(spec.get("plan_wrap", False))
    check_any_200 = spec.get("check", "answer") == "status200"
    outstanding_max = min(int(spec["outstanding_max"]), _raise_file_limit(spec["outstanding_max"]))
    target_s = spec.get("p99_target_ms", 100) / 1000
    abort = bool(spec.get("abort", False))
    rng = random.Random(spec.get("arrival_seed", 1))
    poisson = spec.get("arrival", "even") == "poisson"
    # Connections opened before the clock starts (about 50 ms of arrivals); more are
    # opened on demand, up to the outstanding bound.
    initial = min(outstanding_max, max(8, math.ceil(rate * 0.05)))
    idle: list[Connection] = await _open_all(endpoints, initial)
    opened = len(idle)
    latencies = array("d")  # seconds from scheduled arrival to answer, in the window
    counts: Counter[str] = Counter()
    bad_samples: list[str] = []
    scheduled_in_window = unsent = late = errors = over_target = stale_retries = 0
    outstanding = outstanding_peak = 0
    position = start = spec.get("plan_start", 0)
    plan_exhausted = aborted = False
    tasks: set[asyncio.Task[None]] = set()
    seconds = float(spec["seconds"])
    started = time.perf_counter()
    window_start = started + spec["warmup_s"]
    window_end = window_start + seconds
    over_target_max = max(1, math.floor(0.01 * rate * seconds))

    async def one(entry: tuple[str, int, int], scheduled: float, counted: bool) -> None:
        nonlocal outstanding, opened, errors, over_target, aborted, stale_retries
        request = build_request(entry, players, signatures)
        connection: Connection | None = None
        while idle and idle[-1].closed:  # the server closed it while idle (keep-alive)
            idle.pop()
        try:
            reused = bool(idle)
            if reused:
                connection = idle.pop()
                try:
                    status, body = await connection.send(request, timeout_s)
                except HttpError:
                    if not (connection.closed and connection.received_nothing):
                        raise
                    # The server closed the idle connection as this request went out
                    # (the keep-alive race, RFC 9112 9.3.1): sent again on a new one,
                    # as HTTP clients do (a cancel's retry is answered the same).
                    stale_retries += 1
                    reused = False
            if not reused:
                opened += 1
                host, port = endpoints[opened % len(endpoints)]
                connection = await asyncio.wait_for(Connection.open(host, port), timeout_s)
                status, body = await connection.send(request, timeout_s)
        except (HttpError, OSError, TimeoutError) as exc:
            status, body = 0, f"{type(exc).__name__}: {exc}".encode()
            errors += 1
            if connection is not None:
                connection.close()
                connection = None
        finally:
            outstanding -= 1
        if connection is not None and not connection.closed:
            idle.append(connection)
        done = time.perf_counter()
        good = status == 200 if check_any_200 else answer_good(*entry[:2], status, body)
        if not counted:
            return
        latency = done - scheduled
        latencies.append(latency)
        counts[f"{entry[0]}_{'good' if good else 'bad'}"] += 1
        if not good and len(bad_samples) < BAD_SAMPLES_MAX:
            bad_samples.append(f"{entry} {status} {body[:200]!r}")
        over_target += latency > target_s
        if abort and (not good or over_target > over_target_max):
            aborted = True

    arrivals = math.ceil(rate * (spec["warmup_s"] + seconds))
    at = started
    for _ in range(arrivals):
        at += rng.expovariate(rate) if poisson else 1 / rate
        if at >= window_end or aborted:
            break
        now = time.perf_counter()
        if at > now:
            await asyncio.sleep(at - now)
            now = time.perf_counter()
        counted = at >= window_start
        scheduled_in_window += counted
        if outstanding >= outstanding_max or (position - start >= len(plan) and not wrap):
            plan_exhausted |= position - start >= len(plan)
            unsent += counted
            aborted |= abort and counted
            continue
        late += now - at > LATE_S
        entry = plan[position % len(plan)]
        position += 1
        outstanding += 1
        outstanding_peak = max(outstanding_peak, outstanding)
        task = asyncio.create_task(one(entry, at, counted))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks and not aborted:
        await asyncio.wait(set(tasks), timeout=timeout_s + 5)
    unanswered = len(tasks)
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for connection in idle:
        connection.close()
    # Requests of the window left unanswered (an aborted step) count as infinitely late.
    answered = len(latencies)
    ordered = sorted(latencies)
    ordered += [math.inf] * max(0, scheduled_in_window - unsent - answered)
    good = sum(v for k, v in counts.items() if k.endswith("_good"))
    return {
        "rate": rate,
        "arrival": "poisson" if poisson else "even",
        "seconds": seconds,
        "requests": scheduled_in_window,
        "answered": answered,
        "good": good,
        "bad": answered - good,
        "errors": errors,
        "unsent": unsent,
        "late": late,
        "stale_retries": stale_retries,
        "unanswered": unanswered,
        "aborted": aborted,
        "rps": answered / seconds,
        "p50_ms": percentile(ordered, 0.50) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000,
        "max_ms": (ordered[-1] if ordered else math.nan) * 1000,
        "outstanding_peak": outstanding_peak,
        "connections_opened": opened,
        "sent": position - start,
        "plan_exhausted": plan_exhausted,
        "by_provider": dict(sorted(counts.items())),
        "bad_samples": bad_samples,
    }


async def run_burst(spec: dict[str, Any]) -> dict[str, Any]:
    total = spec["burst"]
    bulk_items = spec["bulk_items"]
    players = spec["players"]
    deadline_s = spec["deadline_ms"] / 1000
    timeout_s = spec["timeout_s"]
    bulks = (total // 2) // bulk_items
    connections = await _open_all(_endpoints(spec["urls"]), spec["connections"])
    # Warm-up: a few single cancels of other bets, so every process has done real work.
    now_ms = time.time_ns() // 1_000_000
    warm = [hpgames_request(("h", NEW, total + i), players, now_ms) for i in range(spec["warm"])]
    warm_answers = await asyncio.wait_for(
        asyncio.gather(
            *(connections[i % len(connections)].send(r, timeout_s) for i, r in enumerate(warm))
        ),
        timeout_s + 5,
    )
    warm_good = sum(answer_good("h", NEW, status, body) for status, body in warm_answers)
    # The burst, built before the clock starts.
    now_ms = time.time_ns() // 1_000_000
    queue: deque[tuple[str, int, HttpRequest]] = deque()
    for b in range(bulks):
        numbers = range(b * bulk_items, (b + 1) * bulk_items)
        queue.append(("bulk", bulk_items, hpgames_bulk(numbers, players, now_ms)))
    for n in range(bulks * bulk_items, total):
        queue.append(("single", 1, hpgames_request(("h", NEW, n), players, now_ms)))
    answered_at: list[float] = []  # seconds after t0, one per cancel answered correctly
    bad = 0
    failures: list[str] = []

    async def worker(connection: Connection) -> None:
        nonlocal bad
        while queue:
            kind, cancels, request = queue.popleft()
            try:
                if connection.closed:
                    connection = await Connection.open(connection.host, connection.port)
                status, body = await connection.send(request, timeout_s)
            except (HttpError, OSError, TimeoutError) as exc:
                bad += cancels
                connection.close()
                if len(failures) < BAD_SAMPLES_MAX:
                    failures.append(f"{kind}: {type(exc).__name__}")
                continue
            at = time.perf_counter() - t0
            good = _burst_good(kind, status, body)
            answered_at.extend([at] * good)
            bad += cancels - good
            if good < cancels and len(failures) < BAD_SAMPLES_MAX:
                failures.append(f"{kind} {status} {_first_failed(kind, body)[:200]!r}")

    t0 = time.perf_counter()
    tasks = [asyncio.create_task(worker(c)) for c in connections]
    await asyncio.wait(tasks, timeout=deadline_s + timeout_s + 10)
    elapsed = time.perf_counter() - t0
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for connection in connections:
        connection.close()
    ordered = sorted(answered_at)
    in_deadline = sum(1 for at in ordered if at <= deadline_s)
    return {
        "cancels": total,
        "bulks": bulks,
        "bulk_items": bulk_items,
        "singles": total - bulks * bulk_items,
        "in_deadline": in_deadline,
        "in_deadline_pct": 100.0 * in_deadline / total if total else math.nan,
        "answered_good": len(ordered),
        "bad": bad,
        "p50_ms": percentile(ordered, 0.5) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000,
        "max_ms": (ordered[-1] if ordered else math.nan) * 1000,
        "elapsed_s": elapsed,
        "warm_good": warm_good,
        "failures": failures,
    }


def _burst_good(kind: str, status: int, body: bytes) -> int:
    """Cancels in one answer that got a definite success (errorCode 0)."""
    if status != 200:
        return 0
    try:
        answer = json.loads(body)
        if kind == "single":
            return int(answer["errorCode"] == 0)
        return sum(1 for item in answer["cancelDebitResponses"] if item["errorCode"] == 0)
    except (ValueError, KeyError, TypeError):
        return 0


def _first_failed(kind: str, body: bytes) -> str:
    """A failed single answer, or the first failed item of a bulk answer."""
    if kind == "bulk":
        with contextlib.suppress(ValueError, KeyError, TypeError):
            for item in json.loads(body)["cancelDebitResponses"]:
                if item["errorCode"] != 0:
                    return json.dumps(item)
    return body.decode(errors="replace")


def _load_signatures(path: str | None) -> dict[str, str]:
    signatures: dict[str, str] = {}
    if path:
        for line in Path(path).read_text().splitlines():
            tx, _, signature = line.partition(" ")
            signatures[tx] = signature
    return signatures


def _event_loop_runner() -> Callable[[Any], Any]:
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.run
    return asyncio.run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("spec", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    spec = json.loads(args.spec.read_text())
    runner = _event_loop_runner()
    modes = {"mix": run_mix, "open": run_open, "burst": run_burst}
    result = runner(modes[spec["mode"]](spec))
    result["cpu_s"] = time.process_time()
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
