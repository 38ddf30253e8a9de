"""`refundctl`: the command line of the refund service (see the README and SPEC)."""

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg

from refundctl import config, devstack, logs
from refundctl.config import ConfigError
from refundctl.services import install_stop_signals, run_ingress, run_until_stopped
from refundctl.topics import create_topics
from schemas import Provider
from worker import ledger
from worker.consumer import run_worker
from worker.ledger import LedgerRefusal
from worker.migrate import migrate

EXIT_REFUSED = 1
EXIT_USAGE = 2


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise argparse.ArgumentTypeError(f"not a decimal number: {text!r}") from exc
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refundctl", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("dev", help="the whole stack on this machine (Ctrl-C stops it)")
    dev.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    commands.add_parser("ingress", help="the HTTP ingress (production process)")
    commands.add_parser("worker", help="one refund worker (production process)")
    commands.add_parser("migrate", help="apply database migrations (idempotent)")
    topics = commands.add_parser("topics", help="topic setup")
    topics.add_subparsers(dest="topics_command", required=True).add_parser(
        "create", help="create the topics (idempotent)"
    )

    ledger_parser = commands.add_parser("ledger", help="inspect and seed the ledger")
    ledger_commands = ledger_parser.add_subparsers(dest="ledger_command", required=True)
    open_account = ledger_commands.add_parser("open-account", help="create an account")
    open_account.add_argument("--player", required=True)
    open_account.add_argument("--currency", required=True)
    open_account.add_argument("--balance", required=True, type=_decimal)
    debit = ledger_commands.add_parser("debit", help="record an accepted bet or tip")
    debit.add_argument("--provider", required=True, choices=[p.value for p in Provider])
    debit.add_argument("--player", required=True)
    debit.add_argument("--currency", required=True)
    debit.add_argument("--amount", required=True, type=_decimal)
    debit.add_argument("--tx", required=True, help="the id the provider's cancel references")
    debit.add_argument("--bet-id")
    debit.add_argument("--round")
    settle = ledger_commands.add_parser("settle", help="mark a bet settled")
    settle.add_argument("--provider", required=True, choices=[p.value for p in Provider])
    settle.add_argument("--tx", required=True)
    show = ledger_commands.add_parser("show", help="an account with its entries")
    show.add_argument("--player", required=True)
    show.add_argument("--currency", required=True)
    show.add_argument("--json", action="store_true", help="print JSON")
    return parser


async def _connect(env: Mapping[str, str]) -> asyncpg.Connection:
    return await asyncpg.connect(config.require(env, "DATABASE_URL"), timeout=10)


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
    conn = await _connect(env)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    await create_topics(config.kafka_settings(env))


async def _dev(args: argparse.Namespace, env: dict[str, str]) -> None:
    """Broker and database (embedded unless given), migrations, topics, workers, ingress."""
    dev_dir = Path.cwd() / config.DEV_DIR
    dev_dir.mkdir(exist_ok=True)
    stop = asyncio.Event()
    install_stop_signals(stop)
    with contextlib.ExitStack() as stack:
        if not env.get("KAFKA_BOOTSTRAP_SERVERS"):
            env["KAFKA_BOOTSTRAP_SERVERS"] = stack.enter_context(
                devstack.tansu(dev_dir / "tansu.log")
            )
            env = {**devstack.TANSU_KAFKA_ENV, **env}
        if not env.get("DATABASE_URL"):
            env["DATABASE_URL"] = stack.enter_context(devstack.postgres(dev_dir / "pg"))
        env = {**config.DEV_SECRETS, **env}
        env.setdefault("NAGA_PUBLIC_KEY_FILE", str(devstack.naga_dev_key(dev_dir)))
        await _setup(env)
        stack_file = dev_dir / config.STACK_FILE
        shared = {k: v for k, v in env.items() if k.startswith(("KAFKA_", "DATABASE_URL"))}
        stack_file.write_text(json.dumps(shared, indent=2))
        stack.callback(stack_file.unlink, missing_ok=True)
        ingress = config.ingress_settings(env)
        worker = config.worker_settings(env)
        print(
            f"refundctl dev: ingress on http://127.0.0.1:{ingress.http_port}, "
            f"{args.workers} worker(s), broker {env['KAFKA_BOOTSTRAP_SERVERS']}, "
            f"data in {config.DEV_DIR}/ (Ctrl-C stops)",
            file=sys.stderr,
            flush=True,
        )
        jobs = [partial(run_worker, worker) for _ in range(args.workers)]
        await run_until_stopped([partial(run_ingress, ingress), *jobs], stop)
    print("refundctl dev: stopped", file=sys.stderr)


async def _serve(kind: str, env: Mapping[str, str]) -> None:
    stop = asyncio.Event()
    install_stop_signals(stop)
    if kind == "ingress":
        await run_until_stopped([partial(run_ingress, config.ingress_settings(env))], stop)
    else:
        await run_until_stopped([partial(run_worker, config.worker_settings(env))], stop)


async def _run(args: argparse.Namespace, env: dict[str, str]) -> int:
    if args.command == "dev":
        await _dev(args, env)
        return 0
    env = config.with_dev_stack(env, Path.cwd())
    if args.command in ("ingress", "worker"):
        await _serve(args.command, env)
    elif args.command == "migrate":
        conn = await _connect(env)
        try:
            applied = await migrate(conn)
        finally:
            await conn.close()
        print(json.dumps({"applied": applied}))
    elif args.command == "topics":
        print(json.dumps(await create_topics(config.kafka_settings(env))))
    elif args.command == "ledger":
        result = await _ledger_command(args, env)
        if args.ledger_command == "show" and not args.json:
            _print_account(result)
        else:
            print(json.dumps(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = dict(os.environ)
    logs.configure(config.secret_values(env))
    try:
        return asyncio.run(_run(args, env))
    except LedgerRefusal as exc:
        print(f"refundctl: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except ConfigError as exc:
        print(f"refundctl: configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"refundctl: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
