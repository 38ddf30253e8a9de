"""Observability end to end: a real Prometheus (Debian's package, the one promtool comes
with) scrapes a running ingress and two workers (`refundctl ingress`, `refundctl
worker`, separate processes) with the shipped rules loaded; the dashboard's queries
return data through its HTTP API; the workers' /healthz and /readyz tell the truth;
and when the workers stop, "no worker in the group" fires (its `for:` shortened in a
copy of the rules, not in the shipped file)."""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from refundctl import devstack
from tests.observability import RULES, dashboard_queries, metric_names, require, rule_groups
from tests.support import scorpio_body, scorpio_headers, seed_bet

pytestmark = pytest.mark.integration
REFUNDCTL = str(Path(sys.executable).with_name("refundctl"))
STARTUP_S = 60.0
DATA_S = 60.0  # for the dashboard's queries to return data
ALERT_S = 60.0  # for the alert to fire once the workers are gone
FOR_IN_TEST = "3s"  # every rule's `for:` in the test's copy of the rules
RATE_WINDOW = "30s"  # $__rate_interval, as Grafana would choose it for a 1 s scrape


def _spawn(env: dict[str, str], args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [*args], env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )


@contextlib.contextmanager
def _stopped_at_exit(processes: list[subprocess.Popen[bytes]]) -> Iterator[None]:
    try:
        yield
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def _until(
    what: str, check: Any, timeout_s: float, interval_s: float = 0.25, logs: tuple[Path, ...] = ()
) -> Any:
    """Poll the coroutine function `check` until it returns a truthy value (bounded)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            last = await check()
            if last:
                return last
        await asyncio.sleep(interval_s)
    tails = "\n".join(f"--- {log.name}\n{_tail(log)}" for log in logs)
    raise AssertionError(f"{what}: not within {timeout_s} s (last: {last!r})\n{tails}")


def _test_rules(path: Path) -> None:
    """The shipped rules with every `for:` shortened (the test cannot wait minutes)."""
    groups = rule_groups()
    for group in groups:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = FOR_IN_TEST
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))


def _value(series: dict[str, Any]) -> float:
    value = float(series["value"][1])
    return value if value == value else float("-inf")  # NaN last


def _scraped_names(text: str) -> set[str]:
    return {
        line.split("{", 1)[0].split(" ", 1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


@contextlib.asynccontextmanager
async def _prometheus(
    tmp_path: Path, ingress_port: int, worker_ports: list[int]
) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    binary = require("prometheus")
    port = devstack.free_port()
    rules = tmp_path / "rules.yml"
    _test_rules(rules)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": "refund-ingress",
                "static_configs": [{"targets": [f"127.0.0.1:{ingress_port}"]}],
            },
            {
                "job_name": "refund-worker",
                "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in worker_ports]}],
            },
        ],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    log = tmp_path / "prometheus.log"
    process = _spawn(
        {},
        [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        log,
    )
    with _stopped_at_exit([process]):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:

            async def ready() -> bool:
                assert process.poll() is None, _tail(log)
                return (await client.get("/-/ready")).status_code == 200

            await _until("prometheus ready", ready, STARTUP_S, logs=(log,))
            yield client, log


async def _query(client: httpx.AsyncClient, expr: str) -> list[dict[str, Any]]:
    answer = await client.get("/api/v1/query", params={"query": expr})
    body = answer.json()
    assert body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def test_a_real_prometheus_scrapes_the_stack_and_fires_an_alert_when_workers_stop(
    env: dict[str, str], db: Any, tmp_path: Path
) -> None:
    require("prometheus")
    await seed_bet(db, "bet-1")
    ingress_port = devstack.free_port()
    worker_ports = [devstack.free_port(), devstack.free_port()]
    ingress_log = tmp_path / "ingress.log"
    worker_logs = [tmp_path / f"worker-{n}.log" for n in range(2)]
    logs = (ingress_log, *worker_logs)
    ingress = _spawn(
        {**env, "HTTP_PORT": str(ingress_port), "HTTP_HOST": "127.0.0.1"},
        [REFUNDCTL, "ingress"],
        ingress_log,
    )
    workers = [
        _spawn({**env, "WORKER_METRICS_PORT": str(port)}, [REFUNDCTL, "worker"], log)
        for port, log in zip(worker_ports, worker_logs, strict=True)
    ]
    with _stopped_at_exit([*workers, ingress]):
        async with httpx.AsyncClient(timeout=5) as http:
            worker_urls = [f"http://127.0.0.1:{port}" for port in worker_ports]
            ingress_url = f"http://127.0.0.1:{ingress_port}"

            async def all_ready() -> bool:
                for process in (ingress, *workers):
                    assert process.poll() is None, "\n".join(_tail(log) for log in logs)
                answers = [await http.get(f"{url}/readyz") for url in (ingress_url, *worker_urls)]
                return all(a.status_code == 200 for a in answers)

            await _until("ingress and workers ready", all_ready, STARTUP_S, logs=logs)
            owned = [(await http.get(f"{url}/readyz")).json()["partitions"] for url in worker_urls]
            assert sorted(p for partitions in owned for p in partitions) == [0, 1, 2, 3], owned
            for url in worker_urls:
                health = await http.get(f"{url}/healthz")
                assert health.status_code == 200
                assert health.json()["status"] == "ok"

            # Traffic: a refund, and a request refused at the door.
            body = scorpio_body(transaction_id="c1", reference_id="bet-1")
            answer = await http.post(
                f"{ingress_url}/scorpio", content=body, headers=scorpio_headers(body)
            )
            assert answer.json()["statusCode"] == "OK", answer.text
            await http.post(
                f"{ingress_url}/scorpio", content=b"{", headers={"X-Request-Signature": "x"}
            )

            async def lag_measured() -> bool:
                texts = [(await http.get(f"{url}/metrics")).text for url in worker_urls]
                return all("refund_worker_consumer_lag{" in text for text in texts)

            await _until("lag measured on every worker", lag_measured, 30, logs=logs)

            # Every name the rules and the dashboard use is in a live scrape.
            scraped: set[str] = set()
            for url in (ingress_url, *worker_urls):
                scraped |= _scraped_names((await http.get(f"{url}/metrics")).text)
            for group in rule_groups():
                for rule in group["rules"]:
                    missing = metric_names(rule["expr"]) - scraped
                    assert not missing, f"rule {rule.get('alert')}: not scraped: {missing}"
            for title, expr in dashboard_queries():
                missing = metric_names(expr) - scraped
                assert not missing, f"dashboard panel {title!r}: not scraped: {missing}"
            assert {"process_cpu_seconds_total", "refund_build_info"} <= scraped

            async with _prometheus(tmp_path, ingress_port, worker_ports) as (prometheus, _):

                async def all_scraped() -> bool:
                    up = await _query(prometheus, "sum(up)")
                    return bool(up) and float(up[0]["value"][1]) == 3

                await _until("the ingress and workers scraped", all_scraped, DATA_S)
                # More traffic while Prometheus watches: the rates are not all 0.
                for n in range(2, 5):
                    await seed_bet(db, f"bet-{n}")
                    body = scorpio_body(transaction_id=f"c{n}", reference_id=f"bet-{n}")
                    answer = await http.post(
                        f"{ingress_url}/scorpio", content=body, headers=scorpio_headers(body)
                    )
                    assert answer.json()["statusCode"] == "OK", answer.text

                async def all_applied_seen() -> bool:
                    seen = await _query(prometheus, "sum(refund_worker_outcomes_total)")
                    return bool(seen) and float(seen[0]["value"][1]) >= 4

                await _until("the outcomes scraped", all_applied_seen, DATA_S)
                # The dashboard's queries return data from the real Prometheus.
                queries = [
                    (title, expr.replace("$__rate_interval", RATE_WINDOW))
                    for title, expr in dashboard_queries()
                ]
                results: dict[str, list[dict[str, Any]]] = {}

                async def all_return_data() -> bool:
                    for _, expr in queries:
                        if not results.get(expr):
                            results[expr] = await _query(prometheus, expr)
                    return all(results[expr] for _, expr in queries)

                with contextlib.suppress(AssertionError):
                    await _until("dashboard queries return data", all_return_data, DATA_S)
                empty = [(title, expr) for title, expr in queries if not results.get(expr)]
                assert not empty, f"dashboard queries without data: {empty}"
                print("\ndashboard queries on the real Prometheus (the largest series of each):")
                for title, expr in queries:
                    first = max(results[expr], key=_value)
                    print(f"  {title}\n    {expr}\n    -> {json.dumps(first)}")

                rules = (await prometheus.get("/api/v1/rules")).json()["data"]["groups"]
                loaded = [r for g in rules for r in g["rules"]]
                assert len(loaded) == sum(len(g["rules"]) for g in rule_groups())
                assert all(r["health"] == "ok" for r in loaded), [
                    (r["name"], r.get("lastError")) for r in loaded if r["health"] != "ok"
                ]

                async def firing() -> list[dict[str, Any]]:
                    alerts = (await prometheus.get("/api/v1/alerts")).json()["data"]["alerts"]
                    return [
                        a
                        for a in alerts
                        if a["labels"]["alertname"] == "RefundWorkerGroupEmpty"
                        and a["state"] == "firing"
                    ]

                assert not await firing(), "the group has members"
                # One worker leaves: the other owns every partition, and the lag gauges
                # of the one that left are gone with it.
                workers[0].send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(workers[0].wait, 30) == 0

                async def took_over() -> bool:
                    ready = (await http.get(f"{worker_urls[1]}/readyz")).json()
                    return bool(ready["partitions"] == [0, 1, 2, 3])

                await _until("the other worker owns every partition", took_over, 60, logs=logs)

                async def lag_of_all_partitions() -> bool:
                    lag = await _query(prometheus, "refund_worker_consumer_lag")
                    partitions = sorted(s["metric"]["partition"] for s in lag)
                    return partitions == ["0", "1", "2", "3"]

                await _until("lag of every partition, once", lag_of_all_partitions, 30)

                # The last one leaves: no member in the group; the alert fires.
                stopped_at = time.monotonic()
                workers[1].send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(workers[1].wait, 30) == 0
                fired = await _until("RefundWorkerGroupEmpty firing", firing, ALERT_S, 0.5)
                print(
                    f"\nfired {time.monotonic() - stopped_at:.1f} s after the last worker"
                    f" stopped (for: {FOR_IN_TEST} in the test's rules):\n"
                    f"  {json.dumps(fired[0])}"
                )
                assert fired[0]["labels"]["severity"] == "critical"
                # The ingress stays ready: no worker is not the ingress pod's fault.
                assert (await http.get(f"{ingress_url}/readyz")).status_code == 200
    assert RULES.read_text().count(f"for: {FOR_IN_TEST}") == 0, "the shipped rules keep theirs"
