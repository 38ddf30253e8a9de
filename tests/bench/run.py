"""The refund service's benchmark: `make bench` (= `python -m tests.bench.run`).

Starts a fresh PostgreSQL (embedded) and, per part, a fresh broker (`--broker kafka`,
Apache Kafka, the default; or `--broker tansu`) and a fresh copy of a seeded database,
then runs in one invocation:

1. e2e: the real pipeline over HTTP: `refundctl ingress` and `refundctl worker`
   processes, loaded by a separate client process with signed requests of all four
   providers (mixed, 5% retries, 2% unknown bets), closed loop;
2. direct: the same load against the baseline without Kafka (`tests.bench.direct`);
3. worker: `--worker-events` events published first, then the workers started: events
   applied per second until all are;
4. burst: `--burst` HPGames cancels at once (bulks of 1,000 and single requests): the
   share answered, correctly, within 3.5 s of the burst's start;
5. soak (`--soak-minutes N`, off by default): the e2e load for N minutes, with the
   resident memory of the ingress and the workers sampled; growth after warm-up.

With `--connections auto` (the default), short probes first choose the client's
connection count: for e2e the most requests/s with p99 within 100 ms (on a stack of its
own, as Tansu slows as it fills), for direct the most requests/s.

One line per part, then `bench: broker=… e2e_rps=… … burst_in_deadline_pct=…`. Every wait is
bounded; all traffic goes to 127.0.0.1.
"""

import argparse
import asyncio
import contextlib
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
from aiokafka import AIOKafkaProducer

from adapters.bus import event_key
from refundctl import config, devstack
from schemas import ReplyTo
from schemas.transport import HEADER_CORRELATION_ID, HEADER_SCHEMA, SCHEMA_CANCEL_REQUESTED, encode
from tests.bench import stack, workload
from tests.bench.stack import Processes

REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO / ".refund-dev" / "bench-cache"  # git-ignored: the Naga key, signatures
TEMPLATE_DB = "bench_template"
PARTITIONS = 12  # KAFKA_REQUEST_PARTITIONS default
BURST_WARM = 20
DEADLINE_MS = 3500
PARTS = ("e2e", "direct", "worker", "burst")
PROBE_CONNECTIONS = (16, 32, 64, 128, 256)
PROBE_WARMUP_S = 2.0
PROBE_SECONDS = 5.0
P99_TARGET_MS = 100


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.run", description=__doc__.split("\n\n")[0]
    )
    add = parser.add_argument
    add("--e2e-seconds", type=float, default=30, help="measured seconds of e2e and direct")
    add("--warmup-seconds", type=float, default=5, help="load before measuring (not counted)")
    add("--worker-events", type=int, default=200_000, help="events for the worker part")
    add("--burst", type=int, default=20_000, help="cancels in the burst")
    add("--burst-bulk", type=int, default=1000, help="items per HPGames bulk in the burst")
    add("--burst-connections", type=int, default=1000, help="client connections in the burst")
    add("--soak-minutes", type=float, default=0, help="also run the memory soak (0: off)")
    add("--ingress", type=int, default=1, help="ingress processes")
    add("--workers", type=int, default=1, help="worker processes (e2e, burst, soak)")
    add("--drain-workers", type=int, default=2, help="worker processes (worker part)")
    add(
        "--connections",
        default="auto",
        help="client connections for e2e and direct, or 'auto': short probes at"
        f" {'/'.join(map(str, PROBE_CONNECTIONS))} connections pick, for e2e, the most"
        f" requests/s with p99 <= {P99_TARGET_MS} ms and, for direct, the most requests/s",
    )
    add("--direct-processes", type=int, default=2, help="processes of the direct baseline")
    add("--direct-pool", type=int, default=8, help="database connections per direct process")
    add("--direct-loop", choices=("asyncio", "uvloop"), default="asyncio", help="its loop")
    add("--batch", type=int, default=0, help="WORKER_BATCH_RECORDS_MAX (0: product default)")
    add("--broker", choices=("kafka", "tansu"), default="kafka", help="the broker (default kafka)")
    add(
        "--fetch-max-wait-ms",
        type=int,
        default=10,
        help="KAFKA_FETCH_MAX_WAIT_MS on Tansu (5-20); Apache Kafka long-polls (product default)",
    )
    add("--players", type=int, default=workload.PLAYERS_DEFAULT, help="accounts")
    add("--rate-cap", type=int, default=6000, help="requests/s the plan is sized for")
    add("--client", choices=("raw", "httpx"), default="raw", help="load client's HTTP stack")
    add("--parts", default=",".join(PARTS), help="parts to run (comma-separated)")
    add("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    args.parts = [p for p in args.parts.split(",") if p]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {sorted(unknown)}")
    if args.connections != "auto" and not args.connections.isdigit():
        parser.error("--connections must be a number or 'auto'")
    if not 5 <= args.fetch_max_wait_ms <= 20:
        parser.error("--fetch-max-wait-ms must be 5..20 for Tansu")
    return args


def say(text: str) -> None:
    print(text, flush=True)


def note(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


class CpuMeter:
    """CPU seconds used by groups of processes between `start` and `stop`."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self._groups = groups
        self._before: dict[int, float] = {}
        self._started = 0.0
        self.shares: dict[str, float] = {}
        self.elapsed = math.nan

    @staticmethod
    def _cpu(pid: int) -> float:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            return math.nan
        return float(times.user + times.system)

    def start(self) -> None:
        self._started = time.monotonic()
        self._before = {pid: self._cpu(pid) for get in self._groups.values() for pid in get()}

    def stop(self) -> None:
        elapsed = self.elapsed = max(1e-9, time.monotonic() - self._started)
        for name, get in self._groups.items():
            used = 0.0
            for pid in get():
                now = self._cpu(pid)
                if not math.isnan(now):
                    used += now - self._before.get(pid, 0.0)
            self.shares[name] = 100 * used / elapsed

    def text(self, requests: int = 0) -> str:
        """CPU share of each group (100% = one core); with `requests`, also the CPU
        milliseconds each group spent per request."""
        text = " ".join(f"{name}={share:.0f}%" for name, share in self.shares.items())
        if requests:
            per = self.elapsed * 10 / requests  # share% * elapsed s * 1000 / 100 / requests
            text += " cpu_ms_per_request: " + " ".join(
                f"{name}={share * per:.2f}" for name, share in self.shares.items()
            )
        return text


def postgres_pids(pg_dir: Path) -> list[int]:
    """The postmaster and its children (backends come and go: errors are skipped)."""
    try:
        postmaster = int((pg_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    pids = [postmaster]
    for process in psutil.process_iter(["ppid"]):
        if process.info.get("ppid") == postmaster:
            pids.append(process.pid)
    return pids


class Bench:
    def __init__(self, args: argparse.Namespace, work_dir: Path, pg_url: str) -> None:
        self.args = args
        self.work_dir = work_dir
        self.pg_url = pg_url
        self.naga_public = Path()
        self.signatures_file = work_dir / "naga-signatures.txt"
        self.results: dict[str, float] = {}
        self.mix_size = 0
        self.plan = workload.Plan([], {}, {})

    # --- preparation -------------------------------------------------------------------

    async def prepare(self) -> None:
        args = self.args
        probes_s = len(PROBE_CONNECTIONS) * (PROBE_WARMUP_S + PROBE_SECONDS)
        seconds = args.warmup_seconds + args.e2e_seconds
        seconds += probes_s if args.connections == "auto" else 0
        self.mix_size = math.ceil(seconds * args.rate_cap)
        self.chosen_connections = 0 if args.connections == "auto" else int(args.connections)
        started = time.monotonic()
        self.plan = workload.make_plan(max(self.mix_size, args.worker_events))
        await self._seed(self.plan, TEMPLATE_DB)
        note(f"prepared {len(self.plan.entries)} cancels in {time.monotonic() - started:.1f} s")

    async def _seed(self, plan: workload.Plan, template: str) -> None:
        known = dict(plan.known)
        known["h"] = max(known["h"], self.args.burst + BURST_WARM)
        public, signatures = await asyncio.to_thread(workload.naga_signatures, CACHE_DIR, plan)
        workload.check_signature_roundtrip(public, signatures)
        self.naga_public = public
        with self.signatures_file.open("w") as out:
            out.writelines(f"{tx} {signature}\n" for tx, signature in signatures.items())
        await stack.create_template(self.pg_url, template, known, self.args.players)

    def env(self, broker: stack.Broker, database_url: str) -> dict[str, str]:
        env = stack.stack_env(broker, database_url, self.naga_public)
        if self.args.batch:
            env["WORKER_BATCH_RECORDS_MAX"] = str(self.args.batch)
        return env

    def new_broker(self, part: str):  # type: ignore[no-untyped-def]
        return stack.broker(self.args.broker, self.work_dir, part, self.args.fetch_max_wait_ms)

    def cpu_meter(self, processes: Processes, broker: stack.Broker | None) -> CpuMeter:
        groups: dict[str, Callable[[], list[int]]] = {}
        for role in ("ingress", "worker", "direct"):
            pids = [p.pid for name, p in processes.started if f"-{role}" in f"-{name}"]
            if pids:
                groups[role] = lambda pids=pids: pids  # type: ignore[misc]
        groups["postgres"] = lambda: postgres_pids(self.work_dir / "pg")
        if broker is not None:
            groups[broker.kind] = broker.pids
        return CpuMeter(groups)

    async def run_load(self, spec: dict[str, Any], name: str, meter: CpuMeter) -> dict[str, Any]:
        """The load generator as a separate process; bounded by the spec's own times."""
        spec_path = self.work_dir / f"{name}-spec.json"
        out_path = self.work_dir / f"{name}-result.json"
        spec_path.write_text(json.dumps(spec))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.bench.load", str(spec_path), str(out_path), cwd=REPO
        )
        meter.start()
        limit_s = spec.get("warmup_s", 0) + spec.get("seconds", 0) + spec["timeout_s"] + 120
        try:
            await asyncio.wait_for(process.wait(), limit_s)
        finally:
            meter.stop()
            if process.returncode is None:
                process.kill()
                await process.wait()
        if process.returncode != 0:
            raise RuntimeError(f"load generator {name} exited with {process.returncode}")
        result: dict[str, Any] = json.loads(out_path.read_text())
        meter.shares["client"] = 100 * result["cpu_s"] / meter.elapsed
        return result

    def mix_spec(
        self,
        urls: list[str],
        seconds: float,
        size: int,
        seed: int,
        connections: int,
        start: int = 0,
        warmup_s: float | None = None,
    ) -> dict[str, Any]:
        return {
            "mode": "mix",
            "urls": urls,
            "connections": connections,
            "plan_start": start,
            "warmup_s": self.args.warmup_seconds if warmup_s is None else warmup_s,
            "seconds": seconds,
            "plan_size": size,
            "plan_seed": seed,
            "players": self.args.players,
            "naga_signatures": str(self.signatures_file),
            "timeout_s": 10.0,
            "client": self.args.client,
        }

    @contextlib.asynccontextmanager
    async def pipeline(self, part: str, database: str, template: str = TEMPLATE_DB):  # type: ignore[no-untyped-def]
        """Fresh broker, fresh database, workers and ingress processes, all ready."""
        with self.new_broker(part) as broker:
            url = await stack.clone_database(self.pg_url, template, database)
            env = self.env(broker, url)
            await stack.create_stack_topics(env)
            processes = Processes(self.work_dir)
            try:
                workers = [f"{part}-worker-{i}" for i in range(self.args.workers)]
                for name in workers:
                    processes.refundctl(name, "worker", env)
                urls = []
                for i in range(self.args.ingress):
                    port = devstack.free_port()
                    processes.refundctl(
                        f"{part}-ingress-{i}", "ingress", {**env, "HTTP_PORT": str(port)}
                    )
                    urls.append(f"http://127.0.0.1:{port}")
                for url_ in urls:
                    await processes.wait_http(url_, "/readyz")
                joined_s = await processes.wait_assigned(workers, PARTITIONS)
                note(f"{part}: stack ready, workers assigned after {joined_s:.1f} s")
                yield urls, processes, broker
            finally:
                processes.stop_all()
            counts = await stack.assert_conservation(url)
            note(f"{part}: ledger conserved, {counts}")

    async def sweep(
        self, name: str, urls: list[str], processes: Processes, latency_bound: bool
    ) -> tuple[int, int, str]:
        """Short probes at growing connection counts; returns (connections, plan entries
        used, a summary). With `latency_bound`, the best requests/s whose p99 is within
        the target (the smallest count if none is); otherwise simply the best."""
        used = 0
        best: tuple[float, int] | None = None
        seen: list[str] = []
        for connections in PROBE_CONNECTIONS:
            spec = self.mix_spec(
                urls, PROBE_SECONDS, self.mix_size, 7, connections, used, PROBE_WARMUP_S
            )
            meter = self.cpu_meter(processes, None)
            result = await self.run_load(spec, f"{name}-probe-{connections}", meter)
            used += result["sent"]
            rps, p99 = result["rps"], result["p99_ms"]
            seen.append(f"{connections}:{rps:.0f}rps/p99={p99:.0f}ms")
            within = p99 <= P99_TARGET_MS or not latency_bound
            gained = best is None or rps >= best[0] * 1.03
            if within and (best is None or rps > best[0]):
                best = (rps, connections)
            if not within or not gained:
                break  # past the latency bound, or no more throughput to gain
        chosen = best[1] if best is not None else PROBE_CONNECTIONS[0]
        return chosen, used, ",".join(seen)

    # --- the parts -------------------------------------------------------------------------

    async def e2e(self) -> None:
        args = self.args
        connections, used, probes = self.chosen_connections, 0, "off"
        if not connections:  # probes on a stack of their own: Tansu slows as it fills
            async with self.pipeline("e2e-probe", "bench_e2e_probe") as (urls, processes, _):
                connections, used, probes = await self.sweep("e2e", urls, processes, True)
            self.chosen_connections = connections
        async with self.pipeline("e2e", "bench_e2e") as (urls, processes, broker):
            meter = self.cpu_meter(processes, broker)
            spec = self.mix_spec(urls, args.e2e_seconds, self.mix_size, 7, connections, used)
            result = await self.run_load(spec, "e2e", meter)
        self.results |= {
            "e2e_rps": result["rps"],
            "e2e_p50_ms": result["p50_ms"],
            "e2e_p99_ms": result["p99_ms"],
        }
        say(
            f"e2e: ingress={args.ingress} workers={args.workers} connections={connections}"
            f" seconds={args.e2e_seconds:g} requests={result['requests']}"
            f" rps={result['rps']:.0f} p50_ms={result['p50_ms']:.1f}"
            f" p99_ms={result['p99_ms']:.1f} max_ms={result['max_ms']:.0f}"
            f" bad={result['bad']} plan_exhausted={result['plan_exhausted']}"
            f" probes={probes} cpu: {meter.text(result['sent'])}"
        )
        self._show_bad(result)

    async def direct(self) -> None:
        args = self.args
        url = await stack.clone_database(self.pg_url, TEMPLATE_DB, "bench_direct")
        env = {
            **config.DEV_SECRETS,
            "NAGA_PUBLIC_KEY_FILE": str(self.naga_public),
            "DATABASE_URL": url,
        }
        port = devstack.free_port()
        base = f"http://127.0.0.1:{port}"
        processes = Processes(self.work_dir)
        try:
            for i in range(args.direct_processes):
                command = [sys.executable, "-m", "tests.bench.direct", "--port", str(port)]
                command += ["--pool", str(args.direct_pool), "--loop", args.direct_loop]
                processes.spawn(f"direct-{i}", command, env, cwd=REPO)
            await processes.wait_http(base, "/healthz")
            await asyncio.sleep(2)  # the other processes' pools (they share the port)
            processes.check_alive()
            connections, used, probes = 0, 0, "off"
            if args.connections == "auto":
                connections, used, probes = await self.sweep("direct", [base], processes, False)
            else:
                connections = int(args.connections)
            meter = self.cpu_meter(processes, None)
            spec = self.mix_spec([base], args.e2e_seconds, self.mix_size, 7, connections, used)
            result = await self.run_load(spec, "direct", meter)
        finally:
            processes.stop_all()
        counts = await stack.assert_conservation(url)
        note(f"direct: ledger conserved, {counts}")
        self.results["direct_rps"] = result["rps"]
        say(
            f"direct: processes={args.direct_processes} pool={args.direct_pool}"
            f" connections={connections} seconds={args.e2e_seconds:g}"
            f" requests={result['requests']} rps={result['rps']:.0f}"
            f" p50_ms={result['p50_ms']:.1f} p99_ms={result['p99_ms']:.1f}"
            f" max_ms={result['max_ms']:.0f} bad={result['bad']}"
            f" plan_exhausted={result['plan_exhausted']} probes={probes}"
            f" cpu: {meter.text(result['sent'])}"
        )
        self._show_bad(result)

    async def worker(self) -> None:
        args = self.args
        total = args.worker_events
        with self.new_broker("worker") as broker:
            url = await stack.clone_database(self.pg_url, TEMPLATE_DB, "bench_worker")
            env = self.env(broker, url)
            await stack.create_stack_topics(env)
            kafka = config.kafka_settings(env)
            published_s = await self._publish(kafka, self.plan.entries[:total])
            processes = Processes(self.work_dir)
            try:
                for i in range(args.drain_workers):
                    processes.refundctl(f"worker-worker-{i}", "worker", env)
                meter = self.cpu_meter(processes, broker)
                meter.start()
                first, last, at_first = await self._drain(processes, url, kafka, total)
                meter.stop()
            finally:
                processes.stop_all()
            counts = await stack.assert_conservation(url)
        rate = (total - at_first) / max(1e-9, last - first)
        self.results["worker_refunds_per_s"] = rate
        say(
            f"worker: workers={args.drain_workers} events={total}"
            f" batch={args.batch or 'default'} published_in_s={published_s:.1f}"
            f" first_batch_after_s={first:.1f} drained_in_s={last - first:.2f}"
            f" refunds_per_s={rate:.0f} refunded={counts['refunds']}"
            f" outcomes={counts['outcomes']} cpu: {meter.text(total)}"
        )

    async def _publish(self, kafka: Any, entries: list[workload.Entry]) -> float:
        started = time.monotonic()
        reply_to = ReplyTo(topic=kafka.topics.replies, partition=0)
        options = kafka.producer_options() | {"linger_ms": 20, "max_batch_size": 512 * 1024}
        producer = AIOKafkaProducer(**options)
        await producer.start()
        try:
            now_ms = time.time_ns() // 1_000_000
            for start in range(0, len(entries), 5000):
                sends = []
                for entry in entries[start : start + 5000]:
                    event = workload.event_for(entry, self.args.players, reply_to, now_ms)
                    sends.append(
                        await producer.send(
                            kafka.topics.requests,
                            encode(event),
                            key=event_key(event),
                            headers=[
                                (HEADER_SCHEMA, SCHEMA_CANCEL_REQUESTED),
                                (HEADER_CORRELATION_ID, event.correlation_id.encode()),
                            ],
                        )
                    )
                await asyncio.wait_for(asyncio.gather(*sends), 60)
        finally:
            await producer.stop()
        return time.monotonic() - started

    async def _drain(
        self, processes: Processes, url: str, kafka: Any, total: int
    ) -> tuple[float, float, int]:
        """Poll the stored offsets until every event is applied; returns (seconds to the
        first applied batch, seconds to the last, events applied at the first sample)."""
        started = time.monotonic()
        limit_s = 120 + total / 1000
        first: float | None = None
        at_first = 0
        conn = await stack.connect(url)
        try:
            while True:
                processes.check_alive()
                applied = await conn.fetchval(
                    "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets"
                    " WHERE consumer_group = $1 AND topic = $2",
                    kafka.consumer_group,
                    kafka.topics.requests,
                )
                now = time.monotonic() - started
                applied = int(applied)
                if applied and first is None:
                    first, at_first = now, applied
                if applied >= total:
                    assert first is not None
                    return first, now, at_first
                if now > limit_s:
                    raise RuntimeError(f"worker part: {applied}/{total} applied in {limit_s} s")
                await asyncio.sleep(0.05)
        finally:
            await conn.close()

    async def burst(self) -> None:
        args = self.args
        async with self.pipeline("burst", "bench_burst") as (urls, processes, broker):
            meter = self.cpu_meter(processes, broker)
            spec = {
                "mode": "burst",
                "urls": urls,
                "connections": args.burst_connections,
                "burst": args.burst,
                "bulk_items": min(args.burst_bulk, max(1, args.burst // 2)),
                "players": args.players,
                "deadline_ms": DEADLINE_MS,
                "warm": BURST_WARM,
                "timeout_s": 10.0,
            }
            result = await self.run_load(spec, "burst", meter)
        self.results["burst_in_deadline_pct"] = result["in_deadline_pct"]
        say(
            f"burst: cancels={result['cancels']} bulks={result['bulks']}x{result['bulk_items']}"
            f" singles={result['singles']} connections={args.burst_connections}"
            f" in_deadline={result['in_deadline']} pct={result['in_deadline_pct']:.2f}"
            f" p50_ms={result['p50_ms']:.0f} p99_ms={result['p99_ms']:.0f}"
            f" max_ms={result['max_ms']:.0f} bad={result['bad']}"
            f" cpu: {meter.text(result['cancels'] + BURST_WARM)}"
        )
        for failure in result["failures"]:
            note(f"burst failure: {failure}")

    async def soak(self) -> None:
        args = self.args
        seconds = args.soak_minutes * 60
        rate = self.results.get("e2e_rps") or args.rate_cap
        size = math.ceil((seconds + args.warmup_seconds) * max(rate * 1.3, 200))
        plan = workload.make_plan(size, seed=11)
        await self._seed(plan, "bench_soak_template")
        async with self.pipeline("soak", "bench_soak", "bench_soak_template") as (
            urls,
            processes,
            broker,
        ):
            meter = self.cpu_meter(processes, broker)
            pids = {name: p.pid for name, p in processes.started}
            samples: dict[str, list[tuple[float, int]]] = {name: [] for name in pids}
            connections = self.chosen_connections or 64
            spec = self.mix_spec(urls, seconds, size, 11, connections)
            load = asyncio.create_task(self.run_load(spec, "soak", meter))
            started = time.monotonic()
            while not load.done():
                for name, pid in pids.items():
                    with contextlib.suppress(psutil.Error):
                        rss = psutil.Process(pid).memory_info().rss
                        samples[name].append((time.monotonic() - started, rss))
                await asyncio.wait({load}, timeout=5)
            result = await load
        warm_s = args.warmup_seconds + min(60.0, 0.2 * seconds)
        growths = {name: rss_growth(points, warm_s) for name, points in samples.items()}
        text = " ".join(
            f"{name}={growth:+.1f}%({samples[name][-1][1] / 2**20:.0f}MiB)"
            for name, growth in growths.items()
        )
        worst = max(growths.values(), default=math.nan)
        say(
            f"soak: minutes={args.soak_minutes:g} requests={result['requests']}"
            f" rps={result['rps']:.0f} p99_ms={result['p99_ms']:.1f} bad={result['bad']}"
            f" rss_growth_after_{warm_s:.0f}s: {text} max_growth_pct={worst:.1f}"
        )

    def _show_bad(self, result: dict[str, Any]) -> None:
        for sample in result["bad_samples"]:
            note(f"unexpected answer: {sample}")

    def summary(self) -> str:
        r = self.results
        ratio = r.get("e2e_rps", math.nan) / r.get("direct_rps", math.nan)
        return (
            f"bench: broker={self.args.broker} e2e_rps={r.get('e2e_rps', math.nan):.0f}"
            f" e2e_p50_ms={r.get('e2e_p50_ms', math.nan):.1f}"
            f" e2e_p99_ms={r.get('e2e_p99_ms', math.nan):.1f}"
            f" direct_rps={r.get('direct_rps', math.nan):.0f}"
            f" ratio_e2e_direct={ratio:.2f}"
            f" worker_refunds_per_s={r.get('worker_refunds_per_s', math.nan):.0f}"
            f" burst_in_deadline_pct={r.get('burst_in_deadline_pct', math.nan):.2f}"
        )


def rss_growth(points: list[tuple[float, int]], warm_s: float) -> float:
    """Growth in % from the median RSS of the first 15 s after warm-up to the median of
    the last three samples."""
    baseline = [rss for at, rss in points if warm_s <= at <= warm_s + 15]
    final = [rss for _, rss in points[-3:]]
    if not baseline or not final:
        return math.nan
    start = statistics.median(baseline)
    return 100 * (statistics.median(final) - start) / start


@contextlib.contextmanager
def work_directory(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="refund-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"bench: logs kept in {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


async def main_async(args: argparse.Namespace) -> str:
    with work_directory(args.keep) as work_dir, devstack.postgres(work_dir / "pg") as pg_url:
        bench = Bench(args, work_dir, pg_url)
        await bench.prepare()
        for part in args.parts:
            await getattr(bench, part)()
        if args.soak_minutes > 0:
            await bench.soak()
        return bench.summary()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    summary = asyncio.run(main_async(args))
    note(f"benchmark took {time.monotonic() - started:.0f} s")
    say(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
