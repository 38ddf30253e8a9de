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
5. e2e_open and direct_open: open-loop capacity. Arrivals at a fixed rate (Poisson by
   default, `--open-arrival`), independent of the answers; a bounded search (doubling,
   then bisection; `--open-steps` steps of `--open-step-seconds`) for the highest rate
   whose p99 stays within 100 ms with every answer right and every arrival sent. A
   fresh stack (database, broker) for each search; between steps the stack settles.
6. floor: the ingress's open-loop capacity with the broker answering instantly (a stub
   in place of the workers, `tests.bench.floor stub`) over that of a trivial handler on
   the same HTTP server (`tests.bench.floor serve`): `ingress_vs_floor`.
7. worker_vs_sql (in the worker part): the drain rate over the same events applied by
   the worker's own transaction alone (`tests.bench.apply_sql.apply_events`, in this
   process, against the same PostgreSQL) at the workers' mean batch size, with as many
   connections as workers.
8. burst_x2: a burst of twice what the e2e open-loop capacity answers in 3.5 s.
9. soak (`--soak-minutes N`, off by default): open-loop arrivals at 70% of the e2e
   open-loop capacity (or `--soak-rate`) for N minutes on one stack, a `soak_minute:`
   line per minute (p50, p99, resident memory of ingress, workers and broker), then
   `soak:` (memory growth after the first minute, p99's range).

With `--connections auto` (the default), short probes first choose the client's
connection count of the closed-loop parts: for e2e the most requests/s with p99 within
100 ms (on a stack of its own, as Tansu slows as it fills), for direct the most
requests/s.

One line per part, then `bench_closed: …` (the closed-loop figures) and, last,
`bench: broker=… e2e_rps=… … burst_in_deadline_pct=… e2e_open_rps=… … ` (see
`Bench.summary`). The results (every open-loop step) go to a JSON file beside a PNG of
p50 and p99 against offered rate (`--plot PATH`; `tests.bench.plot` overlays several
runs). Every wait is bounded; all traffic goes to 127.0.0.1.
"""

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import shutil
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
from schemas.transport import encode, request_headers
from tests.bench import plot, stack, workload
from tests.bench.apply_sql import apply_events
from tests.bench.stack import Processes
from tests.infra import with_database

REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO / ".refund-dev" / "bench-cache"  # git-ignored: the Naga key, signatures
TEMPLATE_DB = "bench_template"
PARTITIONS = 12  # KAFKA_REQUEST_PARTITIONS default
BURST_WARM = 20
DEADLINE_MS = 3500
PARTS = ("e2e", "direct", "e2e_open", "direct_open", "floor", "worker", "burst", "burst_x2")
PROBE_CONNECTIONS = (16, 32, 64, 128, 256)
PROBE_WARMUP_S = 2.0
PROBE_SECONDS = 5.0
P99_TARGET_MS = 100
SOAK_SHARE = 0.7  # of the e2e open-loop capacity: the soak's arrival rate
SOAK_SAMPLE_S = 5.0  # between the soak's samples of resident memory
OPEN_RATE_MIN = 5.0  # requests/s: the search does not go below it
SETTLE_TIMEOUT_S = 60.0
STUB_READY_TIMEOUT_S = 60.0
PLOTS_DIR = REPO / ".refund-dev" / "bench"  # git-ignored


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
    add(
        "--soak-rate",
        type=float,
        default=0,
        help=f"the soak's arrivals/s (0: {SOAK_SHARE:g} x this run's e2e open-loop capacity)",
    )
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
    add(
        "--direct-loop",
        choices=("asyncio", "uvloop"),
        default="uvloop",
        help="its loop (uvloop: the ingress's, adapters.http_server.event_loop_factory)",
    )
    add("--batch", type=int, default=0, help="WORKER_BATCH_RECORDS_MAX (0: product default)")
    add("--broker", choices=("kafka", "tansu"), default="kafka", help="the broker (default kafka)")
    add(
        "--fetch-max-wait-ms",
        type=int,
        default=10,
        help="KAFKA_FETCH_MAX_WAIT_MS on Tansu (5-20); Apache Kafka long-polls (product default)",
    )
    add(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for every process of the stack (repeatable)",
    )
    add(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the workers only, over --env (repeatable)",
    )
    add("--players", type=int, default=workload.PLAYERS_DEFAULT, help="accounts")
    add("--rate-cap", type=int, default=6000, help="requests/s the plan is sized for")
    add("--client", choices=("raw", "httpx"), default="raw", help="load client's HTTP stack")
    add("--open-arrival", choices=("poisson", "even"), default="poisson", help="arrivals")
    add("--open-steps", type=int, default=10, help="steps of each open-loop search (max)")
    add(
        "--open-rates",
        default="",
        help="instead of the search, steps at these rates (comma-separated arrivals/s),"
        " each run whole (no early stop): a latency and CPU curve to compare settings on",
    )
    add("--open-step-seconds", type=float, default=5, help="measured seconds of a step")
    add("--open-step-warmup", type=float, default=1, help="seconds before a step's window")
    add(
        "--open-start-rate",
        type=float,
        default=0,
        help="first rate of every search (0: from earlier parts: e2e and direct half their"
        " closed-loop rate, the stubbed ingress the e2e capacity, the floor the stubbed one)",
    )
    add(
        "--open-precision",
        type=float,
        default=0.1,
        help="the bisection stops when the failing rate is within this share of the passing",
    )
    add(
        "--open-outstanding",
        type=int,
        default=1024,
        help="unanswered requests the open-loop client allows (then arrivals are unsent)",
    )
    add(
        "--floor-rate-max",
        type=float,
        default=50_000,
        help="highest rate of the floor part's searches (no database: the plan wraps)",
    )
    add("--shared-broker", action="store_true", help="one broker for all parts (faster)")
    add("--plot", type=Path, default=None, help="the PNG (default .refund-dev/bench/…)")
    add("--parts", default=",".join(PARTS), help="parts to run (comma-separated)")
    add("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    args.parts = [p for p in args.parts.split(",") if p]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {sorted(unknown)}")
    if args.connections != "auto" and not args.connections.isdigit():
        parser.error("--connections must be a number or 'auto'")
    for option in ("env", "worker_env"):
        pairs = [item.partition("=") for item in getattr(args, option)]
        if any(not name or not eq for name, eq, _ in pairs):
            parser.error(f"--{option.replace('_', '-')} takes NAME=VALUE")
        setattr(args, option, {name: value for name, _, value in pairs})
    if not 5 <= args.fetch_max_wait_ms <= 20:
        parser.error("--fetch-max-wait-ms must be 5..20 for Tansu")
    try:
        args.open_rates = [float(r) for r in args.open_rates.split(",") if r]
    except ValueError:
        parser.error("--open-rates takes numbers, comma-separated")
    if len(args.open_rates) > 30 or any(not 1 <= r <= 100_000 for r in args.open_rates):
        parser.error("--open-rates takes at most 30 rates, each 1..100000")
    if not 1 <= args.open_steps <= 30:
        parser.error("--open-steps must be 1..30")
    if not 0.01 <= args.open_precision <= 1:
        parser.error("--open-precision must be 0.01..1")
    if not 1 <= args.open_outstanding <= 10_000:
        parser.error("--open-outstanding must be 1..10000")
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
        self.searches: dict[str, list[dict[str, Any]]] = {}  # open-loop steps by name
        self.lines: list[str] = []
        self.shared_broker: stack.Broker | None = None

    # --- preparation -------------------------------------------------------------------

    async def prepare(self) -> None:
        args = self.args
        probes_s = len(PROBE_CONNECTIONS) * (PROBE_WARMUP_S + PROBE_SECONDS)
        seconds = args.warmup_seconds + args.e2e_seconds
        seconds += probes_s if args.connections == "auto" else 0
        # An open-loop search doubles up to the rate cap (less than twice the cap in
        # all), then bisects below it: the plan covers its worst case.
        step_s = args.open_step_warmup + args.open_step_seconds
        open_s = (2 + args.open_steps) * step_s
        self.mix_size = math.ceil(max(seconds, open_s) * args.rate_cap)
        self.chosen_connections = 0 if args.connections == "auto" else int(args.connections)
        started = time.monotonic()
        self.plan = workload.make_plan(max(self.mix_size, args.worker_events))
        await self._seed(self.plan, TEMPLATE_DB)
        note(f"prepared {len(self.plan.entries)} cancels in {time.monotonic() - started:.1f} s")

    async def _seed(self, plan: workload.Plan, template: str) -> None:
        known = dict(plan.known)
        known["h"] = max(known["h"], self.args.burst + BURST_WARM, self.burst_x2_max() + BURST_WARM)
        public, signatures = await asyncio.to_thread(workload.naga_signatures, CACHE_DIR, plan)
        workload.check_signature_roundtrip(public, signatures)
        self.naga_public = public
        with self.signatures_file.open("w") as out:
            out.writelines(f"{tx} {signature}\n" for tx, signature in signatures.items())
        await stack.create_template(self.pg_url, template, known, self.args.players)

    def burst_x2_max(self) -> int:
        """The largest `burst_x2` the seeded ledger allows: twice the rate cap's 3.5 s."""
        rate_cap: int = self.args.rate_cap
        return math.ceil(2 * rate_cap * DEADLINE_MS / 1000)

    def env(self, broker: stack.Broker, database_url: str, part: str) -> dict[str, str]:
        env = {**stack.stack_env(broker, database_url, self.naga_public), **self.args.env}
        if self.args.batch:
            env["WORKER_BATCH_RECORDS_MAX"] = str(self.args.batch)
        if self.args.shared_broker:  # topics and group of its own per part
            env["KAFKA_TOPIC_PREFIX"] = f"bench.{part}."
            env["KAFKA_CONSUMER_GROUP"] = f"refund-worker-{part}"
        return env

    @contextlib.contextmanager
    def new_broker(self, part: str) -> Iterator[stack.Broker]:
        """A fresh broker for the part, or the run's one broker (`--shared-broker`)."""
        if self.shared_broker is not None:
            yield self.shared_broker
            return
        args = self.args
        with stack.broker(args.broker, self.work_dir, part, args.fetch_max_wait_ms) as broker:
            yield broker

    def cpu_meter(self, processes: Processes, broker: stack.Broker | None) -> CpuMeter:
        groups: dict[str, Callable[[], list[int]]] = {}
        for role in ("ingress", "worker", "direct", "stub", "server"):
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
    async def pipeline(  # type: ignore[no-untyped-def]
        self, part: str, database: str, template: str = TEMPLATE_DB, stub: bool = False
    ):
        """Fresh broker, fresh database, workers (or, with `stub`, the stub that answers
        every event at once) and ingress processes, all ready."""
        with self.new_broker(part) as broker:
            url = await stack.clone_database(self.pg_url, template, database)
            env = self.env(broker, url, part)
            await stack.create_stack_topics(env)
            processes = Processes(self.work_dir)
            try:
                workers = [] if stub else [f"{part}-worker-{i}" for i in range(self.args.workers)]
                for name in workers:
                    processes.refundctl(name, "worker", {**env, **self.args.worker_env})
                if stub:
                    command = [sys.executable, "-m", "tests.bench.floor", "stub"]
                    processes.spawn(f"{part}-stub", command, env, cwd=REPO)
                    await wait_for_line(processes, f"{part}-stub", "stub_assigned")
                urls = []
                for i in range(self.args.ingress):
                    port = devstack.free_port()
                    processes.refundctl(
                        f"{part}-ingress-{i}", "ingress", {**env, "HTTP_PORT": str(port)}
                    )
                    urls.append(f"http://127.0.0.1:{port}")
                for url_ in urls:
                    await processes.wait_http(url_, "/readyz")
                if workers:
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

    @contextlib.asynccontextmanager
    async def direct_servers(self, database: str):  # type: ignore[no-untyped-def]
        """The baseline's processes on a fresh database, each on a port of its own;
        yields (urls, processes); checks the ledger after they stop."""
        args = self.args
        url = await stack.clone_database(self.pg_url, TEMPLATE_DB, database)
        env = {
            **config.DEV_SECRETS,
            "NAGA_PUBLIC_KEY_FILE": str(self.naga_public),
            "DATABASE_URL": url,
        }
        processes = Processes(self.work_dir)
        urls = []
        try:
            for i in range(args.direct_processes):
                port = devstack.free_port()
                command = [sys.executable, "-m", "tests.bench.direct", "--port", str(port)]
                command += ["--pool", str(args.direct_pool), "--loop", args.direct_loop]
                processes.spawn(f"{database}-direct-{i}", command, env, cwd=REPO)
                urls.append(f"http://127.0.0.1:{port}")
            for base in urls:
                await processes.wait_http(base, "/healthz")
            yield urls, processes
        finally:
            processes.stop_all()
        counts = await stack.assert_conservation(url)
        note(f"{database}: ledger conserved, {counts}")

    async def direct(self) -> None:
        args = self.args
        async with self.direct_servers("bench_direct") as (urls, processes):
            connections, used, probes = 0, 0, "off"
            if args.connections == "auto":
                connections, used, probes = await self.sweep("direct", urls, processes, False)
            else:
                connections = int(args.connections)
            meter = self.cpu_meter(processes, None)
            spec = self.mix_spec(urls, args.e2e_seconds, self.mix_size, 7, connections, used)
            result = await self.run_load(spec, "direct", meter)
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

    # --- open loop -------------------------------------------------------------------------

    def open_spec(
        self, urls: list[str], rate: float, start: int, wrap: bool, check: str
    ) -> dict[str, Any]:
        args = self.args
        need = math.ceil(rate * (args.open_step_warmup + args.open_step_seconds)) + 16
        return {
            "mode": "open",
            "urls": urls,
            "rate": rate,
            "arrival": args.open_arrival,
            "outstanding_max": args.open_outstanding,
            "p99_target_ms": P99_TARGET_MS,
            "abort": not args.open_rates,  # a fixed step runs whole
            "check": check,
            "plan_wrap": wrap,
            # A plan's prefix does not depend on its size: the step builds what it uses.
            "plan_start": 0 if wrap else start,
            "plan_size": need if wrap else min(self.mix_size, start + need),
            "plan_seed": 7,
            "warmup_s": args.open_step_warmup,
            "seconds": args.open_step_seconds,
            "players": args.players,
            "naga_signatures": str(self.signatures_file),
            "timeout_s": 10.0,
        }

    async def open_search(
        self,
        name: str,
        urls: list[str],
        processes: Processes,
        broker: stack.Broker | None,
        settle: Callable[[], Any],
        rate_max: float,
        start: float,
        wrap: bool = False,
        check: str = "answer",
    ) -> dict[str, Any]:
        """The highest arrival rate whose step passes (p99 within the target, every
        answer right, every arrival sent): doubling from the start rate until a step
        fails (or `rate_max`), then bisection until the failing rate is within
        `--open-precision` of the passing one; at most `--open-steps` steps. A first
        step that fails halves the rate instead (down to OPEN_RATE_MIN). The start rate
        is `--open-start-rate` when given, else `start` (a hint from an earlier part)."""
        args = self.args
        rate = min(rate_max, max(OPEN_RATE_MIN, float(round(args.open_start_rate or start))))
        best: dict[str, Any] | None = None
        failed_at: float | None = None
        used = 0
        steps: list[dict[str, Any]] = []
        # One uncounted step at a quarter of the start rate first: a fresh stack's first
        # seconds (connections, the JVM's warm-up, first metadata) failed the first step
        # of the search on a cold Kafka stack and capped it far below its capacity.
        warm = self.open_spec(urls, max(OPEN_RATE_MIN, rate / 4), used, wrap, check)
        warmed = await self.run_load(warm, f"{name}-open-warmup", self.cpu_meter(processes, broker))
        used += warmed["sent"]
        note(
            f"{name} open warm-up {warm['rate']:.0f}/s: p99={warmed['p99_ms']:.1f} ms (not counted)"
        )
        await settle()
        fixed = list(args.open_rates)
        for index in range(len(fixed) or args.open_steps):
            rate = fixed[index] if fixed else rate
            meter = self.cpu_meter(processes, broker)
            spec = self.open_spec(urls, rate, used, wrap, check)
            result = await self.run_load(spec, f"{name}-open-{index}", meter)
            used += result["sent"]
            passed = (
                result["requests"] > 0
                and result["bad"] == 0
                and result["unsent"] == 0
                and result["p99_ms"] <= P99_TARGET_MS
            )
            step = {
                key: result[key]
                for key in ("rate", "requests", "answered", "bad", "errors", "unsent", "late")
            }
            step |= {
                "p50_ms": result["p50_ms"],
                "p99_ms": result["p99_ms"],
                "aborted": result["aborted"],
                "passed": passed,
                "cpu": meter.text(result["sent"]),
            }
            steps.append(step)
            note(
                f"{name} open {rate:.0f}/s: p50={result['p50_ms']:.1f} ms"
                f" p99={result['p99_ms']:.1f} ms bad={result['bad']} unsent={result['unsent']}"
                f" late={result['late']} -> {'pass' if passed else 'fail'}"
                + (f" max_ms={result['max_ms']:.0f} cpu: {step['cpu']}" if fixed else "")
            )
            for sample in result["bad_samples"][:2]:
                note(f"{name} unexpected answer: {sample}")
            if passed:
                best = step
            else:
                failed_at = rate
            await settle()
            if fixed:
                continue
            if failed_at is None:  # still doubling
                if rate >= rate_max:
                    break
                proposal = min(rate_max, rate * 2)
            elif best is None:  # even the first rate failed: go down
                if rate <= OPEN_RATE_MIN:
                    break
                proposal = max(OPEN_RATE_MIN, rate / 2)
            else:
                low = best["rate"]
                if failed_at <= low * (1 + args.open_precision):
                    break
                proposal = round((low + failed_at) / 2)
                if not low < proposal < failed_at:
                    break
            rate = float(proposal)
        self.searches[name] = steps
        return {
            "rate": best["rate"] if best else 0.0,
            "best": best,
            "capped": failed_at is None,
            "steps": steps,
            "trail": ",".join(
                f"{st['rate']:.0f}:{'ok' if st['passed'] else 'FAIL'}(p99={st['p99_ms']:.0f})"
                for st in steps
            ),
        }

    def _open_line(self, part: str, search: dict[str, Any], extra: str = "") -> str:
        best = search["best"] or {"p50_ms": math.nan, "p99_ms": math.nan, "cpu": "-"}
        return (
            f"{part}: arrival={self.args.open_arrival} rate={search['rate']:.0f}"
            f" p50_ms={best['p50_ms']:.1f} p99_ms={best['p99_ms']:.1f}"
            f" capped={search['capped']} steps={len(search['steps'])}{extra}"
            f" trail={search['trail']} cpu@rate: {best['cpu']}"
        )

    async def settle_worker(self, url: str) -> None:
        """Until the workers' stored offsets stop moving (what the step left queued is
        applied), bounded."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        conn = await stack.connect(url)
        try:
            last = -1
            while time.monotonic() < deadline:
                applied = await conn.fetchval(
                    "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets"
                )
                if applied == last:
                    return
                last = applied
                await asyncio.sleep(1.0)
            note(f"settle: offsets still moving after {SETTLE_TIMEOUT_S:.0f} s")
        finally:
            await conn.close()

    async def e2e_open(self) -> None:
        args = self.args
        async with self.pipeline("e2e-open", "bench_e2e_open") as (urls, processes, broker):
            url = with_database(self.pg_url, "bench_e2e_open")
            search = await self.open_search(
                "e2e",
                urls,
                processes,
                broker,
                lambda: self.settle_worker(url),
                args.rate_cap,
                self.results.get("e2e_rps", 200.0) / 2,
            )
        best = search["best"] or {}
        self.results |= {
            "e2e_open_rps": search["rate"],
            "e2e_open_p50_ms": best.get("p50_ms", math.nan),
            "e2e_open_p99_ms": best.get("p99_ms", math.nan),
        }
        extra = f" ingress={args.ingress} workers={args.workers}"
        say(self._open_line("e2e_open", search, extra))

    async def direct_open(self) -> None:
        args = self.args
        async with self.direct_servers("bench_direct_open") as (urls, processes):
            search = await self.open_search(
                "direct",
                urls,
                processes,
                None,
                lambda: asyncio.sleep(1.0),
                args.rate_cap,
                self.results.get("direct_rps", 200.0) / 2,
            )
        best = search["best"] or {}
        self.results |= {
            "direct_open_rps": search["rate"],
            "direct_open_p50_ms": best.get("p50_ms", math.nan),
            "direct_open_p99_ms": best.get("p99_ms", math.nan),
        }
        extra = f" processes={args.direct_processes} pool={args.direct_pool}"
        say(self._open_line("direct_open", search, extra))

    async def floor(self) -> None:
        """The ingress with the stub answering every event at once, then the trivial
        handler on the same HTTP server; both searched open-loop on the same plan."""
        args = self.args
        pause = lambda: asyncio.sleep(1.0)  # noqa: E731
        async with self.pipeline("floor", "bench_floor", stub=True) as (urls, processes, broker):
            stubbed = await self.open_search(
                "ingress_stub",
                urls,
                processes,
                broker,
                pause,
                args.floor_rate_max,
                self.results.get("e2e_open_rps") or 200.0,
                wrap=True,
            )
        say(self._open_line("ingress_stub", stubbed, f" ingress={args.ingress}"))
        processes = Processes(self.work_dir)
        try:
            port = devstack.free_port()
            base = f"http://127.0.0.1:{port}"
            command = [sys.executable, "-m", "tests.bench.floor", "serve", "--port", str(port)]
            processes.spawn("floor-server", command, {}, cwd=REPO)
            await processes.wait_http(base, "/healthz")
            floor = await self.open_search(
                "floor",
                [base],
                processes,
                None,
                pause,
                args.floor_rate_max,
                stubbed["rate"] or 400.0,  # the floor is at least the ingress
                wrap=True,
                check="status200",
            )
        finally:
            processes.stop_all()
        say(self._open_line("floor", floor))
        self.results |= {"ingress_stub_rps": stubbed["rate"], "floor_rps": floor["rate"]}

    async def worker(self) -> None:
        args = self.args
        total = args.worker_events
        with self.new_broker("worker") as broker:
            url = await stack.clone_database(self.pg_url, TEMPLATE_DB, "bench_worker")
            env = self.env(broker, url, "worker")
            await stack.create_stack_topics(env)
            kafka = config.kafka_settings(env)
            published_s = await self._publish(kafka, self.plan.entries[:total])
            processes = Processes(self.work_dir)
            try:
                for i in range(args.drain_workers):
                    processes.refundctl(f"worker-worker-{i}", "worker", {**env, **args.worker_env})
                meter = self.cpu_meter(processes, broker)
                meter.start()
                first, last, at_first = await self._drain(processes, url, kafka, total)
                meter.stop()
            finally:
                processes.stop_all()
            counts = await stack.assert_conservation(url)
        rate = (total - at_first) / max(1e-9, last - first)
        self.results["worker_refunds_per_s"] = rate
        batches = worker_batches(
            processes, [f"worker-worker-{i}" for i in range(args.drain_workers)]
        )
        mean_batch = total / batches if batches else float(args.batch or 500)
        sql = await self.apply_sql_alone(total, max(1, round(mean_batch)), args.drain_workers)
        self.results["sql_events_per_s"] = sql["events_per_s"]
        self.results["worker_vs_sql"] = rate / sql["events_per_s"]
        say(
            f"worker: workers={args.drain_workers} events={total}"
            f" batch={args.batch or 'default'} published_in_s={published_s:.1f}"
            f" first_batch_after_s={first:.1f} drained_in_s={last - first:.2f}"
            f" refunds_per_s={rate:.0f} refunded={counts['refunds']}"
            f" outcomes={counts['outcomes']} mean_batch={mean_batch:.1f}"
            f" sql_alone: lanes={args.drain_workers} batch={max(1, round(mean_batch))}"
            f" events_per_s={sql['events_per_s']:.0f} batch_p50_ms={sql['batch_p50_ms']:.2f}"
            f" worker_vs_sql={rate / sql['events_per_s']:.2f} cpu: {meter.text(total)}"
        )

    async def apply_sql_alone(self, total: int, batch: int, lanes: int) -> dict[str, float]:
        """The same events through the worker's transaction alone (no Kafka, no
        decoding), in this process, on a fresh copy of the same database."""
        url = await stack.clone_database(self.pg_url, TEMPLATE_DB, "bench_worker_sql")
        now_ms = time.time_ns() // 1_000_000
        reply_to = ReplyTo(topic="bench-replies", partition=0)
        events = [
            workload.event_for(entry, self.args.players, reply_to, now_ms)
            for entry in self.plan.entries[:total]
        ]
        result = await apply_events(url, events, batch, lanes, now_ms)
        counts = await stack.assert_conservation(url)
        note(f"worker sql alone: ledger conserved, {counts}")
        return result

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
                            headers=request_headers(event),
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
        result = await self._burst("burst", self.args.burst)
        self.results["burst_in_deadline_pct"] = result["in_deadline_pct"]

    async def burst_x2(self) -> None:
        """A burst of twice what the e2e open-loop capacity answers within the deadline."""
        rate = self.results.get("e2e_open_rps", 0.0)
        if not rate:
            note("burst_x2: skipped, no e2e open-loop capacity (run the e2e_open part)")
            return
        size = math.ceil(2 * rate * DEADLINE_MS / 1000)
        if size > self.burst_x2_max():
            note(f"burst_x2: {size} cancels capped at {self.burst_x2_max()} (--rate-cap)")
            size = self.burst_x2_max()
        result = await self._burst("burst_x2", size)
        self.results["burst_x2_in_deadline_pct"] = result["in_deadline_pct"]

    async def _burst(self, part: str, size: int) -> dict[str, Any]:
        args = self.args
        async with self.pipeline(part, f"bench_{part}") as (urls, processes, broker):
            meter = self.cpu_meter(processes, broker)
            spec = {
                "mode": "burst",
                "urls": urls,
                "connections": args.burst_connections,
                "burst": size,
                "bulk_items": min(args.burst_bulk, max(1, size // 2)),
                "players": args.players,
                "deadline_ms": DEADLINE_MS,
                "warm": BURST_WARM,
                "timeout_s": 10.0,
            }
            result = await self.run_load(spec, part, meter)
        say(
            f"{part}: cancels={result['cancels']} bulks={result['bulks']}x{result['bulk_items']}"
            f" singles={result['singles']} connections={args.burst_connections}"
            f" in_deadline={result['in_deadline']} pct={result['in_deadline_pct']:.2f}"
            f" p50_ms={result['p50_ms']:.0f} p99_ms={result['p99_ms']:.0f}"
            f" max_ms={result['max_ms']:.0f} bad={result['bad']}"
            f" cpu: {meter.text(result['cancels'] + BURST_WARM)}"
        )
        for failure in result["failures"]:
            note(f"{part} failure: {failure}")
        return result

    async def soak(self) -> None:
        """Open-loop arrivals at `SOAK_SHARE` of the e2e open-loop capacity (or
        `--soak-rate`) for `--soak-minutes`, one step per minute on one stack; per minute
        a line with p50, p99 and the resident memory of the ingress, the workers and the
        broker (sampled every `SOAK_SAMPLE_S`), then the growth after the first minute
        (the warm-up) and how far p99 moved."""
        args = self.args
        minutes = math.ceil(args.soak_minutes)
        rate = args.soak_rate or SOAK_SHARE * self.results.get("e2e_open_rps", math.nan)
        if not rate > 0:
            note("soak: no rate (no e2e open-loop capacity in this run: give --soak-rate)")
            return
        size = math.ceil(minutes * 60 * rate * 1.1) + 1000
        plan = workload.make_plan(size, seed=11)
        await self._seed(plan, "bench_soak_template")
        async with self.pipeline("soak", "bench_soak", "bench_soak_template") as (
            urls,
            processes,
            broker,
        ):
            roles = {"ingress": "-ingress-", "worker": "-worker-"}
            groups = {
                role: [p.pid for name, p in processes.started if part in name]
                for role, part in roles.items()
            }
            groups[broker.kind] = broker.pids()
            minutes_seen: list[dict[str, Any]] = []
            used = 0
            for minute in range(1, minutes + 1):
                spec = self.open_spec(urls, rate, used, wrap=False, check="answer")
                spec |= {"abort": False, "warmup_s": 0.0, "seconds": 60.0, "plan_seed": 11}
                spec["plan_size"] = size
                meter = self.cpu_meter(processes, broker)
                load = asyncio.create_task(self.run_load(spec, f"soak-{minute}", meter))
                peaks = {role: 0 for role in groups}
                while not load.done():
                    for role, pids in groups.items():
                        peaks[role] = max(peaks[role], _rss(pids))
                    await asyncio.wait({load}, timeout=SOAK_SAMPLE_S)
                result = await load
                used += result["sent"]
                rss = {role: _rss(pids) for role, pids in groups.items()}
                minutes_seen.append(result | {"rss": rss})
                memory = " ".join(f"{role}_rss_mib={v / 2**20:.0f}" for role, v in rss.items())
                say(
                    f"soak_minute: minute={minute} rate={rate:.0f} answered={result['answered']}"
                    f" p50_ms={result['p50_ms']:.1f} p99_ms={result['p99_ms']:.1f}"
                    f" bad={result['bad']} unsent={result['unsent']}"
                    f" stale_retries={result['stale_retries']} {memory}"
                    f" cpu: {meter.text(result['sent'])}"
                )
                self._show_bad(result)
        say(soak_summary(args.soak_minutes, rate, minutes_seen))

    def _show_bad(self, result: dict[str, Any]) -> None:
        for sample in result["bad_samples"]:
            note(f"unexpected answer: {sample}")

    def summary(self) -> list[str]:
        """`bench_closed: …` (the closed-loop figures, their ratio included), then
        `bench: …`: the same first fields (e2e_rps, e2e_p50_ms, e2e_p99_ms and direct_rps
        still closed-loop; ratio_e2e_direct now the open-loop capacities' ratio), then
        the open-loop capacities and the same-run ratios."""
        r = self.results

        def get(key: str) -> float:
            return r.get(key, math.nan)

        def ratio(a: str, b: str) -> float:
            return get(a) / get(b) if get(b) else math.nan

        broker = self.args.broker
        closed = (
            f"bench_closed: broker={broker} e2e_rps={get('e2e_rps'):.0f}"
            f" e2e_p50_ms={get('e2e_p50_ms'):.1f} e2e_p99_ms={get('e2e_p99_ms'):.1f}"
            f" direct_rps={get('direct_rps'):.0f}"
            f" ratio_e2e_direct={ratio('e2e_rps', 'direct_rps'):.2f}"
        )
        line = (
            f"bench: broker={broker} e2e_rps={get('e2e_rps'):.0f}"
            f" e2e_p50_ms={get('e2e_p50_ms'):.1f}"
            f" e2e_p99_ms={get('e2e_p99_ms'):.1f}"
            f" direct_rps={get('direct_rps'):.0f}"
            f" ratio_e2e_direct={ratio('e2e_open_rps', 'direct_open_rps'):.2f}"
            f" worker_refunds_per_s={get('worker_refunds_per_s'):.0f}"
            f" burst_in_deadline_pct={get('burst_in_deadline_pct'):.2f}"
            f" e2e_open_rps={get('e2e_open_rps'):.0f}"
            f" e2e_open_p50_ms={get('e2e_open_p50_ms'):.1f}"
            f" e2e_open_p99_ms={get('e2e_open_p99_ms'):.1f}"
            f" direct_open_rps={get('direct_open_rps'):.0f}"
            f" direct_open_p99_ms={get('direct_open_p99_ms'):.1f}"
            f" worker_vs_sql={get('worker_vs_sql'):.2f}"
            f" ingress_vs_floor={ratio('ingress_stub_rps', 'floor_rps'):.2f}"
            f" burst_x2_in_deadline_pct={get('burst_x2_in_deadline_pct'):.2f}"
        )
        return [closed, line]

    def write_results(self, lines: list[str]) -> Path:
        """The results as JSON and the PNG, in the work directory and at `--plot`
        (default .refund-dev/bench/bench-<broker>-<time>.png, the JSON beside it)."""
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        document = {
            "broker": self.args.broker,
            "started": stamp,
            "arguments": {k: str(v) for k, v in vars(self.args).items()},
            "results": self.results,
            "open_loop": self.searches,
            "lines": lines,
        }
        target = self.args.plot or PLOTS_DIR / f"bench-{self.args.broker}-{stamp}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        for png in (self.work_dir / "bench.png", target):
            json_path = png.with_suffix(".json")
            json_path.write_text(json.dumps(document, indent=1))
            plot.plot([json_path], png)
        return target


def _rss(pids: list[int]) -> int:
    """The resident memory of `pids` together, in bytes (a process gone counts 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total


def soak_summary(minutes: float, rate: float, seen: list[dict[str, Any]]) -> str:
    """`soak: …`: each role's RSS growth from the end of the first minute (warm-up) to
    the end of the last, and p99's range over the minutes after the first."""
    if len(seen) < 2:
        return f"soak: minutes={minutes:g} rate={rate:.0f} too short (2 minutes at least)"
    after = seen[1:]
    growth = " ".join(
        f"{role}={100 * (seen[-1]['rss'][role] - first) / first:+.1f}%" if first else f"{role}=nan"
        for role, first in seen[0]["rss"].items()
    )
    p99s = [m["p99_ms"] for m in after]
    return (
        f"soak: minutes={minutes:g} rate={rate:.0f} requests={sum(m['requests'] for m in seen)}"
        f" bad={sum(m['bad'] for m in seen)} unsent={sum(m['unsent'] for m in seen)}"
        f" p99_ms_after_warmup=[{min(p99s):.1f}..{max(p99s):.1f}]"
        f" p50_ms_after_warmup=[{min(m['p50_ms'] for m in after):.1f}"
        f"..{max(m['p50_ms'] for m in after):.1f}]"
        f" rss_growth_after_minute_1: {growth}"
    )


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


async def wait_for_line(processes: Processes, name: str, text: str) -> None:
    """Until the process's log holds `text` (bounded)."""
    deadline = time.monotonic() + STUB_READY_TIMEOUT_S
    while True:
        processes.check_alive()
        path = processes.log_of(name)
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: no {text!r} in {STUB_READY_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.1)


def worker_batches(processes: Processes, names: list[str]) -> int:
    """Batches the workers applied, from their `worker_stopped` lines (0 if unknown)."""
    total = 0
    for name in names:
        path = processes.log_of(name)
        text = path.read_text(errors="replace") if path.exists() else ""
        for line in text.splitlines():
            if '"worker_stopped"' in line:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    total += int(json.loads(line)["batches_applied"])
    return total


async def main_async(args: argparse.Namespace) -> list[str]:
    with (
        work_directory(args.keep) as work_dir,
        devstack.postgres(work_dir / "pg") as pg_url,
        contextlib.ExitStack() as brokers,
    ):
        bench = Bench(args, work_dir, pg_url)
        if args.shared_broker:
            bench.shared_broker = brokers.enter_context(
                stack.broker(args.broker, work_dir, "shared", args.fetch_max_wait_ms)
            )
        await bench.prepare()
        for part in args.parts:
            await getattr(bench, part)()
        if args.soak_minutes > 0:
            await bench.soak()
        lines = bench.summary()
        target = bench.write_results(lines)
        print(
            f"bench: plot {target} (results {target.with_suffix('.json')})",
            file=sys.stderr,
            flush=True,
        )
        return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    lines = asyncio.run(main_async(args))
    note(f"benchmark took {time.monotonic() - started:.0f} s")
    for line in lines:
        say(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
