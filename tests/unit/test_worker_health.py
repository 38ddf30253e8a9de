"""The worker's /healthz, /readyz and /metrics (worker.health): the verdicts, pure, and
the server on a real socket in this event loop."""

import asyncio

import httpx

from refundctl import devstack
from worker.health import HealthServer, WorkerStatus, liveness, readiness, serve_health
from worker.metrics import WorkerMetrics

STALE_S = 10.0
JOIN_S = 30.0


def status(
    last_tick: float = 100.0,
    joining_since: float | None = None,
    joined_once: bool = True,
    partitions: tuple[int, ...] = (0, 1),
) -> WorkerStatus:
    return WorkerStatus(last_tick, joining_since, joined_once, partitions)


def test_alive_while_the_loop_turns_within_the_bound() -> None:
    assert liveness(status(last_tick=100.0), 109.0, STALE_S, JOIN_S).ok
    stalled = liveness(status(last_tick=100.0), 111.0, STALE_S, JOIN_S)
    assert not stalled.ok
    assert stalled.body["status"] == "loop_stalled"
    assert stalled.body["heartbeat_age_ms"] == 11_000


def test_a_join_is_alive_within_its_own_bound_only() -> None:
    joining = status(last_tick=0.0, joining_since=100.0, joined_once=False, partitions=())
    assert liveness(joining, 125.0, STALE_S, JOIN_S).body["status"] == "joining"
    assert liveness(joining, 125.0, STALE_S, JOIN_S).ok
    assert not liveness(joining, 131.0, STALE_S, JOIN_S).ok  # the worker should have exited


def test_ready_once_a_member_with_partitions_or_legitimately_none() -> None:
    assert readiness(status(), 101.0, STALE_S, JOIN_S).body == {
        "status": "ready",
        "partitions": [0, 1],
        "heartbeat_age_ms": 1000,
    }
    assert readiness(status(partitions=()), 101.0, STALE_S, JOIN_S).ok  # more members
    first_join = status(joining_since=100.0, joined_once=False, partitions=())
    assert readiness(first_join, 101.0, STALE_S, JOIN_S).body["status"] == "joining"
    rebalancing = status(joining_since=100.5)
    assert not readiness(rebalancing, 101.0, STALE_S, JOIN_S).ok
    assert readiness(status(), 200.0, STALE_S, JOIN_S).body["status"] == "loop_stalled"


async def test_the_endpoints_on_a_socket_answer_from_this_loop() -> None:
    now = [100.0]
    current = [status(last_tick=100.0)]
    metrics = WorkerMetrics()
    server = HealthServer(
        lambda: current[0],
        metrics.registry,
        stale_ms=10_000,
        join_ms=30_000,
        clock=lambda: now[0],
    )
    port = devstack.free_port()
    async with (
        serve_health(server, "127.0.0.1", port) as bound,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client,
    ):
        assert bound == port
        assert (await client.get("/healthz")).json()["status"] == "ok"
        assert (await client.get("/readyz")).status_code == 200
        scraped = await client.get("/metrics")
        assert scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert 'refund_worker_dead_letters_total{cause="contract"} 0.0' in scraped.text
        assert "process_cpu_seconds_total" in scraped.text
        assert 'refund_build_info{python="' in scraped.text
        assert (await client.get("/nope")).status_code == 404
        assert (await client.post("/healthz")).status_code == 405
        now[0] = 200.0  # the loop has not turned for 100 s
        stalled = await client.get("/healthz")
        assert stalled.status_code == 503
        assert stalled.json()["status"] == "loop_stalled"
        assert (await client.get("/readyz")).status_code == 503
        # A client that sends half a head and goes away does not hold the server.
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        writer.close()
        await writer.wait_closed()
        assert (await client.get("/metrics")).status_code == 200


async def test_port_zero_serves_nothing_and_a_busy_port_is_not_fatal() -> None:
    metrics = WorkerMetrics()
    server = HealthServer(lambda: status(), metrics.registry, stale_ms=10_000, join_ms=30_000)
    async with serve_health(server, "127.0.0.1", 0) as bound:
        assert bound is None
    port = devstack.free_port()
    async with (
        serve_health(server, "127.0.0.1", port) as first,
        serve_health(server, "127.0.0.1", port) as second,
    ):
        assert first == port
        assert second is None


def test_the_lag_gauge_is_removed_on_revoke_with_its_timestamp() -> None:
    metrics = WorkerMetrics()
    metrics.observe_lag(3, 42, now_s=1234.0)
    text = metrics_text(metrics)
    assert 'refund_worker_consumer_lag{partition="3"} 42.0' in text
    assert 'refund_worker_consumer_lag_updated_timestamp_seconds{partition="3"} 1234.0' in text
    metrics.forget_partitions([3, 7])
    text = metrics_text(metrics)
    assert 'partition="3"' not in text


def metrics_text(metrics: WorkerMetrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()
