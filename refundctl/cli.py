"""`refundctl`: the command line of the refund service (see the README and SPEC)."""

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import partial
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg

from adapters.http_server import event_loop_factory
from refundctl import apache_kafka, config, devstack, failures, logs
from refundctl.services import (
    install_stop_signals,
    run_ingress,
    run_ingress_once_assigned,
    run_until_stopped,
)
from refundctl.supervise import RestartPolicy, supervise
from refundctl.topics import create_topics
from schemas import Provider, TextError, validate_text
from schemas.failures import Misconfigured
from schemas.setting import as_json
from worker import cancels, dead_letters, ledger, replay, status
from worker.consumer import run_worker
from worker.dead_letters import DeadLetterId
from worker.ledger import LedgerRefusal
from worker.migrate import LOCK_TIMEOUT_MS_DEFAULT, migrate
from worker.migrate import status as migration_status

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
DEV_BROKERS = ("tansu", "kafka")
# A new group's first join is held by the broker for seconds (Tansu: 5 s).
DEV_WORKERS_ASSIGNED_TIMEOUT_S = 60


def _workers(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= count <= 64:
        raise argparse.ArgumentTypeError(f"between 1 and 64: {count}")
    return count


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise argparse.ArgumentTypeError(f"not a decimal number: {text!r}") from exc
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def _id(text: str) -> str:
    """An id or player as the ledger stores it and a cancel can name it: 1 to 256
    characters, no control characters (`schemas.validate_text`, the ingress's rule)."""
    try:
        return validate_text(text, "value")
    except TextError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _instant(text: str) -> int:
    """An ISO-8601 time (UTC unless it says otherwise) as epoch milliseconds."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _lock_timeout_ms(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 600_000:
        raise argparse.ArgumentTypeError(f"between 1 and 600000 ms: {value}")
    return value


def package_version() -> str:
    try:
        return importlib.metadata.version("refund-worker")
    except importlib.metadata.PackageNotFoundError:  # run from a tree that is not installed
        return "unknown"


def _dead_letter_id(text: str) -> DeadLetterId:
    try:
        return DeadLetterId.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


REPLAY_HELP = """\
Re-run request events through the worker's apply path (the same transaction), reading
every partition of the request topic with a standalone consumer (not the worker group,
nothing committed) up to the end offsets taken at start. Idempotent: a cancel applied
before gets its stored outcome back and moves no money. Replies are NOT published
(nobody waits for them), and the worker's stored offsets are not touched. Counts:
applied (a new outcome stored now), already_applied (the stored outcome was replayed),
failed (undecodable records, or a cancel id reused for other content). --since/--until
select, per partition, from the first record stamped at or after --since to the first
stamped at or after --until (Kafka's offsets_for_times); where the broker cannot look
offsets up by time (Tansu, the dev broker) the partitions are read from their beginning
and the records' timestamps decide, with the same result."""


# The subcommands of `refundctl`, to which each group below adds its own.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one builder per command group, in the help's order."""
    parser = argparse.ArgumentParser(prog="refundctl", description=__doc__)
    parser.add_argument("--version", action="version", version=f"refundctl {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    for add_group in (
        _add_dev,
        _add_processes,
        _add_ledger,
        _add_replay,
        _add_dlq,
        _add_lookups,
        _add_settings,
    ):
        add_group(commands)
    return parser


def _add_dev(commands: Commands) -> None:
    """`dev`: the whole stack on this machine."""
    dev = commands.add_parser("dev", help="the whole stack on this machine (Ctrl-C stops it)")
    dev.add_argument(
        "--workers", type=_workers, default=2, help="in-process workers, 1-64 (default 2)"
    )
    dev.add_argument(
        "--broker",
        choices=DEV_BROKERS,
        default="tansu",
        help="the embedded broker: tansu (default, no JVM) or kafka (Apache Kafka "
        f"{apache_kafka.KAFKA_VERSION}, needs java and mvn); "
        "KAFKA_BOOTSTRAP_SERVERS overrides both",
    )


def _add_processes(commands: Commands) -> None:
    """The production processes and the one-shot set-up jobs."""
    commands.add_parser("ingress", help="the HTTP ingress (production process)")
    commands.add_parser("worker", help="one refund worker (production process)")
    migrate_parser = commands.add_parser("migrate", help="apply database migrations (idempotent)")
    migrate_parser.add_argument(
        "--status",
        action="store_true",
        help="print applied and pending migrations and their checksums as JSON; apply nothing",
    )
    migrate_parser.add_argument(
        "--lock-timeout-ms",
        type=_lock_timeout_ms,
        default=LOCK_TIMEOUT_MS_DEFAULT,
        help="PostgreSQL lock_timeout of each migration statement "
        f"(default {LOCK_TIMEOUT_MS_DEFAULT})",
    )
    topics = commands.add_parser("topics", help="topic setup")
    topics.add_subparsers(dest="topics_command", required=True).add_parser(
        "create", help="create the topics (idempotent)"
    )


def _add_ledger(commands: Commands) -> None:
    """`ledger …`: seed and inspect accounts and bets."""
    ledger_parser = commands.add_parser("ledger", help="inspect and seed the ledger")
    ledger_commands = ledger_parser.add_subparsers(dest="ledger_command", required=True)
    open_account = ledger_commands.add_parser("open-account", help="create an account")
    open_account.add_argument("--player", required=True, type=_id)
    open_account.add_argument("--currency", required=True)
    open_account.add_argument("--balance", required=True, type=_decimal)
    debit = ledger_commands.add_parser("debit", help="record an accepted bet or tip")
    debit.add_argument("--provider", required=True, choices=[p.value for p in Provider])
    debit.add_argument("--player", required=True, type=_id)
    debit.add_argument("--currency", required=True)
    debit.add_argument("--amount", required=True, type=_decimal)
    debit.add_argument(
        "--tx", required=True, type=_id, help="the id the provider's cancel references"
    )
    debit.add_argument("--bet-id", type=_id)
    debit.add_argument("--round", type=_id)
    settle = ledger_commands.add_parser("settle", help="mark a bet settled")
    settle.add_argument("--provider", required=True, choices=[p.value for p in Provider])
    settle.add_argument("--tx", required=True)
    show = ledger_commands.add_parser("show", help="an account with its entries")
    show.add_argument("--player", required=True)
    show.add_argument("--currency", required=True)
    show.add_argument("--json", action="store_true", help="print JSON")


def _add_replay(commands: Commands) -> None:
    """`replay`: the request topic through the apply path again."""
    replay_parser = commands.add_parser(
        "replay",
        help="re-run request events through the worker path (idempotent; replies not published)",
        description=REPLAY_HELP,
    )
    start = replay_parser.add_mutually_exclusive_group(required=True)
    start.add_argument(
        "--from-beginning", action="store_true", help="from the beginning of each partition"
    )
    start.add_argument(
        "--since",
        type=_instant,
        metavar="ISO-8601",
        help="records stamped at or after this time (UTC unless it carries an offset)",
    )
    replay_parser.add_argument(
        "--until",
        type=_instant,
        metavar="ISO-8601",
        help="records stamped before this time (UTC unless it carries an offset)",
    )
    replay_parser.add_argument(
        "--dry-run",
        action="store_true",
        help="decide in a transaction that is rolled back: report, write nothing",
    )
    replay_parser.add_argument("--json", action="store_true", help="print the counts as JSON")


def _add_dlq(commands: Commands) -> None:
    """`dlq list`, `dlq redrive`."""
    dlq = commands.add_parser("dlq", help="inspect and re-drive dead letters")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_commands.add_parser(
        "list", help="the dead letters, up to the end offsets at start"
    )
    dlq_list.add_argument("--json", action="store_true", help="print JSON")
    redrive = dlq_commands.add_parser(
        "redrive",
        help="republish dead letters to the request topic, each at most once; prints JSON",
    )
    which = redrive.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--id",
        dest="ids",
        action="append",
        type=_dead_letter_id,
        metavar="PARTITION:OFFSET",
        help="a dead letter (as `dlq list` names it); repeatable",
    )
    which.add_argument("--all", action="store_true", help="every dead letter not redriven yet")


def _add_lookups(commands: Commands) -> None:
    """`status` and `cancel show`: read-only views of a running system."""
    status_parser = commands.add_parser(
        "status", help="lag per request partition, tombstones, last applied, dead letters"
    )
    status_parser.add_argument("--json", action="store_true", help="print JSON")

    cancel = commands.add_parser("cancel", help="look a cancel up")
    cancel_commands = cancel.add_subparsers(dest="cancel_command", required=True)
    cancel_show = cancel_commands.add_parser(
        "show",
        help="its stored outcome, when applied, balances, source offset, dead letters, tombstones",
    )
    cancel_show.add_argument("--provider", required=True, choices=[p.value for p in Provider])
    cancel_show.add_argument("--id", required=True, type=_id, help="the provider's cancel id")
    cancel_show.add_argument("--json", action="store_true", help="print JSON")


def _add_settings(commands: Commands) -> None:
    """`settings`: every setting's variable, default, bounds and help (the README's table)."""
    settings = commands.add_parser(
        "settings", help="the environment variables read, with defaults and bounds"
    )
    settings.add_argument("--json", action="store_true", help="print JSON")


async def _connect(env: Mapping[str, str], *, limits: bool = True) -> asyncpg.Connection:
    """A connection of a command (`schemas.database`: TLS, and the server-side limits
    unless `limits=False`, the migrator's: a migration may outlast any statement)."""
    options = config.database_settings(env).connect_options("refundctl", limits=limits)
    return await asyncpg.connect(**options, timeout=10)


async def _ledger_command(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    conn = await _connect(env)
    try:
        if args.ledger_command == "open-account":
            await ledger.open_account(conn, args.player, args.currency, args.balance)
            return await ledger.show(conn, args.player, args.currency)
        if args.ledger_command == "debit":
            await ledger.debit(
                conn,
                provider=args.provider,
                player=args.player,
                currency=args.currency,
                amount=args.amount,
                tx=args.tx,
                bet_id=args.bet_id,
                round_id=args.round,
            )
            return await ledger.show(conn, args.player, args.currency)
        if args.ledger_command == "settle":
            await ledger.settle(conn, provider=args.provider, tx=args.tx)
            return {"provider": args.provider, "tx": args.tx, "state": "settled"}
        assert args.ledger_command == "show"
        return await ledger.show(conn, args.player, args.currency)
    finally:
        await conn.close()


def _print_account(account: Mapping[str, Any]) -> None:
    print(f"{account['player']} {account['currency']} balance {account['balance']}")
    for entry in account["entries"]:
        where = f"{entry['provider']} {entry['tx']}" if entry["provider"] else ""
        print(f"  {entry['kind']:<8} {entry['amount']:>16}  {where}")


async def _setup(env: Mapping[str, str]) -> None:
    conn = await _connect(env, limits=False)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    await create_topics(config.kafka_settings(env, role="dev"))


@contextlib.contextmanager
def _dev_broker(kind: str, dev_dir: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The dev stack's embedded broker: its address and the settings it needs."""
    if kind == "kafka":
        with apache_kafka.apache_kafka(dev_dir / "kafka") as broker:
            print(
                f"refundctl dev: Apache Kafka {apache_kafka.KAFKA_VERSION} started in "
                f"{broker.started_in_s:.1f} s ({broker.resident_mb():.0f} MB resident)",
                file=sys.stderr,
                flush=True,
            )
            yield broker.bootstrap_servers, {}
        return
    assert kind == "tansu"
    with devstack.tansu(dev_dir / "tansu.log") as bootstrap:
        yield bootstrap, dict(devstack.TANSU_KAFKA_ENV)


async def _dev(args: argparse.Namespace, env: dict[str, str]) -> None:
    """Broker and database (embedded unless given), migrations, topics, supervised
    workers, ingress."""
    dev_dir = Path.cwd() / config.DEV_DIR
    dev_dir.mkdir(exist_ok=True)
    stop = asyncio.Event()
    install_stop_signals(stop)
    with contextlib.ExitStack() as stack:
        if env.get("KAFKA_BOOTSTRAP_SERVERS"):
            broker_name = f"{env['KAFKA_BOOTSTRAP_SERVERS']} (KAFKA_BOOTSTRAP_SERVERS)"
        else:
            bootstrap, broker_env = stack.enter_context(_dev_broker(args.broker, dev_dir))
            env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
            env = {**broker_env, **env}
            broker_name = f"{args.broker} {bootstrap}"
        if not env.get("DATABASE_URL"):
            env["DATABASE_URL"] = stack.enter_context(devstack.postgres(dev_dir / "pg"))
        env = {**config.DEV_SECRETS, **env}
        env.setdefault("NAGA_PUBLIC_KEY_FILE", str(devstack.naga_dev_key(dev_dir)))
        await _setup(env)
        stack_file = dev_dir / config.STACK_FILE
        shared = {  # never the Kafka password: a file in the working directory
            k: v
            for k, v in env.items()
            if k.startswith(("KAFKA_", "DATABASE_URL")) and k != "KAFKA_SASL_PASSWORD"
        }
        stack_file.write_text(json.dumps(shared, indent=2))
        stack.callback(stack_file.unlink, missing_ok=True)
        ingress = config.ingress_settings(env)
        worker = config.worker_settings(env)
        print(
            f"refundctl dev: ingress on http://127.0.0.1:{ingress.http_port}, "
            f"{args.workers} worker(s), broker {broker_name}, "
            f"data in {config.DEV_DIR}/ (Ctrl-C stops)",
            file=sys.stderr,
            flush=True,
        )
        assigned = [asyncio.Event() for _ in range(args.workers)]
        policy = RestartPolicy()
        jobs = [
            partial(
                supervise,
                f"worker-{index}",
                partial(run_worker, worker, assigned=event),
                policy=policy,
            )
            for index, event in enumerate(assigned)
        ]
        ingress_job = partial(
            run_ingress_once_assigned, ingress, assigned, DEV_WORKERS_ASSIGNED_TIMEOUT_S
        )
        await run_until_stopped([ingress_job, *jobs], stop)
    print("refundctl dev: stopped", file=sys.stderr)


async def _serve(kind: str, env: Mapping[str, str]) -> None:
    stop = asyncio.Event()
    install_stop_signals(stop)
    if kind == "ingress":
        await run_until_stopped([partial(run_ingress, config.ingress_settings(env))], stop)
    else:
        await run_until_stopped([partial(run_worker, config.worker_settings(env))], stop)


@contextlib.contextmanager
def _progress_bar(description: str) -> Iterator[replay.Progress | None]:
    """A progress bar on stderr when it is a terminal; otherwise JSON lines."""
    if not sys.stderr.isatty():
        lines = logs.ProgressLog(description)
        yield lines
        lines.finish()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    class _Bar:
        def __init__(self, progress: Progress) -> None:
            self._progress = progress
            self._task = progress.add_task(description, total=None)

        def start(self, total: int) -> None:
            self._progress.update(self._task, total=total)

        def advance(self, count: int) -> None:
            self._progress.advance(self._task, count)

    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        yield _Bar(progress)


@contextlib.contextmanager
def _quiet_kafka_client() -> Iterator[None]:
    """The operations commands report a Kafka failure in one line of their own: the
    client library's own error log (stderr, through logging's last resort) is muted."""
    logger = logging.getLogger("aiokafka")
    muted = logging.NullHandler()
    propagate = logger.propagate
    logger.addHandler(muted)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(muted)
        logger.propagate = propagate


async def _replay(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    window = replay.Window(since_ms=args.since, until_ms=args.until)
    with _progress_bar("replay") as progress:
        report = await replay.replay(
            config.worker_settings(env), window, dry_run=args.dry_run, progress=progress
        )
    if args.json:
        print(json.dumps(report.counts.as_json()))
    else:
        print(report.summary())
    return 0


def _print_dead_letters(entries: Sequence[Mapping[str, Any]]) -> None:
    columns = ("id", "timestamp", "size", "key", "source", "redriven_at", "reason")
    rows = [[("-" if e[c] is None else str(e[c])) for c in columns] for e in entries]
    widths = [max([len(c), *(len(row[i]) for row in rows)]) for i, c in enumerate(columns)]
    for row in [[c.upper() for c in columns], *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    print(f"{len(entries)} dead letter(s)")


async def _dlq(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    kafka = config.kafka_settings(env, role="dlq")
    database = config.database_settings(env)
    if args.dlq_command == "list":
        entries = await dead_letters.list_dead_letters(kafka, database)
        if args.json:
            print(json.dumps(entries))
        else:
            _print_dead_letters(entries)
        return 0
    assert args.dlq_command == "redrive"
    report = await dead_letters.redrive(kafka, database, None if args.all else args.ids)
    print(json.dumps(report.as_json()))
    if args.all:
        return 0
    refused = [*report.ids("already_redriven"), *report.ids("not_found")]
    if refused:
        print(
            f"refundctl: refused: not redriven (already redriven or not found): "
            f"{', '.join(refused)}",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    return 0


async def _cancel(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    assert args.cancel_command == "show"
    cancel = await cancels.show_cancel(
        config.kafka_settings(env),
        config.database_settings(env),
        Provider(args.provider),
        args.id,
    )
    print(json.dumps(cancel) if args.json else cancels.render(cancel))
    return 0


async def _migrate(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    conn = await _connect(env, limits=False)
    try:
        if not args.status:
            applied = await migrate(conn, lock_timeout_ms=args.lock_timeout_ms)
            print(json.dumps({"applied": applied}))
            return 0
        report = await migration_status(conn)
    finally:
        await conn.close()
    print(json.dumps(report))
    mismatch = report["checksums"]["mismatch"]
    if mismatch:
        print(
            f"refundctl: refused: migration {mismatch[0]} was changed after it was applied",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    return 0


async def _status(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    report = await status.status(
        config.kafka_settings(env, role="status"), config.database_settings(env)
    )
    print(json.dumps(report) if args.json else status.render_status(report))
    return 0


def _print_settings(*, json_output: bool) -> None:
    """The declared settings (`refundctl.config.SETTINGS`), as the README shows them."""
    if json_output:
        print(json.dumps([as_json(setting) for setting in config.SETTINGS]))
    else:
        print(config.settings_markdown())


async def _run(args: argparse.Namespace, env: dict[str, str]) -> int:
    if args.command == "dev":
        await _dev(args, env)
        return 0
    if args.command == "settings":
        _print_settings(json_output=args.json)
        return 0
    env = config.with_dev_stack(env, Path.cwd())
    if args.command in ("ingress", "worker"):
        await _serve(args.command, env)
    elif args.command == "migrate":
        return await _migrate(args, env)
    elif args.command == "topics":
        print(json.dumps(await create_topics(config.kafka_settings(env, role="topics"))))
    elif args.command == "ledger":
        result = await _ledger_command(args, env)
        if args.ledger_command == "show" and not args.json:
            _print_account(result)
        else:
            print(json.dumps(result))
    elif args.command in ("replay", "dlq", "status", "cancel"):
        operation = {"replay": _replay, "dlq": _dlq, "status": _status, "cancel": _cancel}[
            args.command
        ]
        with _quiet_kafka_client():
            return await operation(args, env)
    return 0


# The long-lived processes: their error line is JSON, like the rest of their output, and
# they run on `adapters.http_server.event_loop_factory`'s loop (uvloop where installed);
# the other commands on asyncio's own.
SERVING_COMMANDS = ("ingress", "worker")


class _BootstrapFailures(logging.Filter):
    """aiokafka's record of a bootstrap connection that failed: a process that cannot
    start says it in its own exit line (with the reason a probe finds)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Unable connect to")


@contextlib.contextmanager
def _one_line_on_failure() -> Iterator[None]:
    """For the long-lived processes: no library record repeats why they stop."""
    logger = logging.getLogger("aiokafka")  # aiokafka's client logs under this name
    records = _BootstrapFailures()
    logger.addFilter(records)
    try:
        yield
    finally:
        logger.removeFilter(records)


def _silence_logging() -> None:
    """After a long-lived process's exit line, nothing more: what a library may still
    log as the objects of a failed start are collected is noise after it."""
    logging.getLogger().handlers[:] = [logging.NullHandler()]


def _report_failure(
    classified: failures.Classified, args: argparse.Namespace, given_env: Mapping[str, str]
) -> int:
    """Print the one error line of a failure (`refundctl.failures`); return its exit code.
    When Kafka could not be reached, one bounded probe connection finds out why."""
    cwd = Path.cwd()
    env: Mapping[str, str] = given_env
    # A stack.json that does not read (OSError) or parse (ValueError: JSON, UTF-8): the
    # line names the environment as given.
    with contextlib.suppress(OSError, ValueError):
        env = config.with_dev_stack(given_env, cwd)
    if classified.probe_kafka and env.get("KAFKA_BOOTSTRAP_SERVERS"):
        # Settings that do not read leave the original reason (the probe finds its own
        # failures and returns them as its answer).
        with contextlib.suppress(Misconfigured), _quiet_kafka_client():
            reason = asyncio.run(failures.probe_kafka(config.kafka_settings(env)))
            if reason is not None:
                classified = dataclasses.replace(classified, reason=reason)
    fields = failures.describe(classified, given_env, env, cwd, dev=args.command == "dev")
    fields = failures.scrubbed(fields, config.secret_values(env))
    if args.command in SERVING_COMMANDS:
        now = datetime.now(UTC).isoformat()
        record = {"event": "exiting", "level": "error", "timestamp": now, **fields}
        print(json.dumps(record), file=sys.stderr, flush=True)
    else:
        print(failures.line(fields), file=sys.stderr, flush=True)
    return classified.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Every failure ends here, as one line and an exit code (SPEC):
    0 ok, 1 refused, 2 usage or configuration, 3 a dependency unreachable or refusing
    us; a JSON line for the long-lived processes. Anything else is a bug: a traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    since, until = getattr(args, "since", None), getattr(args, "until", None)
    if since is not None and until is not None and until <= since:
        parser.error("--until must be later than --since")
    given_env = dict(os.environ)
    env = dict(given_env)
    serving = args.command in SERVING_COMMANDS
    quiet = not serving and args.command != "dev"
    try:
        logs.configure(config.secret_values(env), library_level=config.library_log_level(env))
        # The commands report a Kafka failure in one line of their own.
        with (
            _quiet_kafka_client() if quiet else contextlib.nullcontext(),
            _one_line_on_failure() if serving else contextlib.nullcontext(),
        ):
            factory = event_loop_factory() if serving else None
            with asyncio.Runner(loop_factory=factory) as runner:
                return runner.run(_run(args, env))
    except LedgerRefusal as exc:
        print(f"refundctl: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the boundary: our failures and the libraries' (SPEC exit codes)
        if serving:
            _silence_logging()
        classified = failures.classify(exc)
        if classified is None:
            raise  # a bug: its traceback shows
        return _report_failure(classified, args, given_env)


if __name__ == "__main__":
    sys.exit(main())
