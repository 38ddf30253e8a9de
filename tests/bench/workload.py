"""The benchmark's workload: a deterministic plan of cancels, the signed HTTP requests of
all four providers' protocols, the ledger rows they refer to, and the Kafka events the
worker part publishes.

A plan is a list of `(provider, kind, n)`: `kind` is NEW (cancel bet `n`), RETRY (the
same cancel as an earlier NEW, sent again with a fresh timestamp and signature) or
UNKNOWN (a cancel of a bet the ledger does not know). Shares: 5% retries, 2% unknown
bets, the rest new cancels; providers 30% Scorpio, 30% HPGames, 20% AMB, 20% Naga.
Everything derives from `n`: bet tx, cancel id, player, amount.
"""

import base64
import hashlib
import json
import random
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from adapters import amb, hpgames, naga, scorpio
from adapters.contract import Envelope
from adapters.jsonbody import Number
from refundctl import config
from schemas import CancelRequested, ReplyTo

NEW, RETRY, UNKNOWN = 0, 1, 2
RETRY_SHARE = 0.05
UNKNOWN_SHARE = 0.02
RETRY_WINDOW = 1000  # a retry repeats one of the last this many new cancels
# Provider letters, weighted: Scorpio 3, HPGames 3, AMB 2, Naga 2.
WEIGHTED = "ssshhhaann"
PROVIDER_NAMES = {"s": "scorpio", "h": "hpgames", "n": "naga", "a": "amb"}
CURRENCY = "EUR"
OPENING_BALANCE = Decimal("10000000.00")
PLAYERS_DEFAULT = 5000

SECRETS = config.DEV_SECRETS
SCORPIO_TOKEN = SECRETS["SCORPIO_API_TOKEN"].encode()
HPGAMES_MERCHANT = SECRETS["HPGAMES_MERCHANT_ID"]
HPGAMES_SECRET = SECRETS["HPGAMES_SECRET_KEY"].encode()
AMB_AUTHORIZATION = amb.basic_auth_header(SECRETS["AMB_AGENT_USERNAME"], SECRETS["AMB_API_KEY"])

Entry = tuple[str, int, int]  # (provider letter, kind, n)


@dataclass(frozen=True)
class Plan:
    entries: list[Entry]
    known: dict[str, int]  # provider letter -> bets 0..count-1 the ledger must hold
    unknown: dict[str, int]  # provider letter -> unknown bets x0..x(count-1) used


def make_plan(size: int, seed: int = 7) -> Plan:
    rng = random.Random(seed)
    known = dict.fromkeys(PROVIDER_NAMES, 0)
    unknown = dict.fromkeys(PROVIDER_NAMES, 0)
    originals: list[tuple[str, int]] = []
    entries: list[Entry] = []
    for _ in range(size):
        roll = rng.random()
        if roll < RETRY_SHARE and originals:
            letter, n = rng.choice(originals[-RETRY_WINDOW:])
            entries.append((letter, RETRY, n))
        elif roll < RETRY_SHARE + UNKNOWN_SHARE:
            letter = rng.choice(WEIGHTED)
            entries.append((letter, UNKNOWN, unknown[letter]))
            unknown[letter] += 1
        else:
            letter = rng.choice(WEIGHTED)
            entries.append((letter, NEW, known[letter]))
            originals.append((letter, known[letter]))
            known[letter] += 1
    return Plan(entries, known, unknown)


def bet_tx(letter: str, kind: int, n: int) -> str:
    return f"{letter}x{n}" if kind == UNKNOWN else f"{letter}{n}"


def cancel_id(letter: str, kind: int, n: int) -> str:
    return f"{letter}cx{n}" if kind == UNKNOWN else f"{letter}c{n}"


def player(n: int, players: int) -> str:
    return f"p{n % players}"


def amount_literal(n: int) -> str:
    return f"{1 + n % 97}.25"


def amount_sql(n_column: str) -> str:
    """The same amount as `amount_literal`, in SQL over a bet number column."""
    return f"(1 + {n_column} % 97 + 0.25)::numeric"


# --- HTTP requests ---------------------------------------------------------------------


@dataclass(frozen=True)
class HttpRequest:
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


def _json_object(fields: Mapping[str, Any]) -> str:
    """Compact JSON; `Number` values written as their literal."""
    parts = []
    for key, value in fields.items():
        text = value.literal if isinstance(value, Number) else json.dumps(value)
        parts.append(f"{json.dumps(key)}:{text}")
    return "{" + ",".join(parts) + "}"


def scorpio_request(letter_entry: Entry, players: int, now_s: int) -> HttpRequest:
    _, kind, n = letter_entry
    fields: dict[str, Any] = {
        "command": "cancel",
        "transactionId": cancel_id("s", kind, n),
        "referenceId": bet_tx("s", kind, n),
        "playerId": player(n, players),
        "roundId": f"r{n}",
        "providerId": Number("7"),
        "providerName": "Scorpio Play",
        "gameCode": "sp-1",
        "gameName": "Scorpio Slots",
        "currency": CURRENCY,
        "amount": Number(amount_literal(n)),
        "timestamp": Number(str(now_s)),
    }
    signature = scorpio.sign(fields, SCORPIO_TOKEN)
    return HttpRequest(
        "/scorpio", (("X-Request-Signature", signature),), _json_object(fields).encode()
    )


def hpgames_item(kind: int, n: int, players: int, now_ms: int) -> str:
    tx = bet_tx("h", kind, n)
    timestamp = str(now_ms)
    fields: dict[str, Any] = {
        "merchantId": HPGAMES_MERCHANT,
        "betIdToCancel": f"hb{n}" if kind != UNKNOWN else f"hbx{n}",
        "transactionIdToCancel": tx,
        "transactionId": cancel_id("h", kind, n),
        "hash": hpgames.hash_for(HPGAMES_MERCHANT, tx, timestamp, HPGAMES_SECRET),
        "playerId": player(n, players),
        "authToken": "session-token",
        "currency": CURRENCY,
        "timestamp": Number(timestamp),
        "amount": Number(amount_literal(n)),
        "gameId": Number("11"),
    }
    return _json_object(fields)


def hpgames_request(entry: Entry, players: int, now_ms: int) -> HttpRequest:
    _, kind, n = entry
    body = hpgames_item(kind, n, players, now_ms).encode()
    return HttpRequest(hpgames.PATH_CANCEL, (), body)


def hpgames_bulk(numbers: Iterable[int], players: int, now_ms: int) -> HttpRequest:
    items = ",".join(hpgames_item(NEW, n, players, now_ms) for n in numbers)
    body = ('{"cancelDebitRequests":[' + items + "]}").encode()
    return HttpRequest(hpgames.PATH_BULK_CANCEL, (), body)


def naga_request(entry: Entry, signatures: Mapping[str, str]) -> HttpRequest:
    _, kind, n = entry
    tx = bet_tx("n", kind, n)
    data = {"betId": tx}
    body = json.dumps({"data": data, "dataHash": naga.data_hash(data)}, separators=(",", ":"))
    return HttpRequest(naga.PATH, (("X-Signature", signatures[tx]),), body.encode())


def amb_request(entry: Entry, players: int, now_ms: int) -> HttpRequest:
    _, kind, n = entry
    txn = {
        "id": bet_tx("a", kind, n),
        "status": "REFUND",
        "roundId": f"r{n}",
        "betAmount": Number(amount_literal(n)),
    }
    fields = {
        "id": cancel_id("a", kind, n),
        "timestampMillis": Number(str(now_ms)),
        "productId": "amb-slots",
        "currency": CURRENCY,
        "username": player(n, players),
    }
    body = _json_object(fields)[:-1] + ',"txns":[' + _json_object(txn) + "]}"
    return HttpRequest(amb.PATH, (("Authorization", AMB_AUTHORIZATION),), body.encode())


def build_request(entry: Entry, players: int, signatures: Mapping[str, str]) -> HttpRequest:
    """The signed request for one plan entry, stamped with the current time."""
    letter = entry[0]
    now_ns = time.time_ns()
    if letter == "s":
        return scorpio_request(entry, players, now_ns // 1_000_000_000)
    if letter == "h":
        return hpgames_request(entry, players, now_ns // 1_000_000)
    if letter == "a":
        return amb_request(entry, players, now_ns // 1_000_000)
    return naga_request(entry, signatures)


def answer_good(letter: str, kind: int, status: int, body: bytes) -> bool:
    """Whether an answer is the one this cancel should get (not a timeout, not an error):
    refunded (or its replay) for known bets, 'transaction not found' for unknown ones."""
    try:
        if letter == "n":
            return status == (404 if kind == UNKNOWN else 200)
        answer = json.loads(body)
        if letter == "s":
            expected = "ERR_TRANSACTION_DOES_NOT_EXIST" if kind == UNKNOWN else "OK"
            return bool(status == 200 and answer["statusCode"] == expected)
        if letter == "h":
            return bool(status == 200 and answer["errorCode"] == 0)
        expected_code = amb.STATUS_TRANSACTION_NOT_FOUND if kind == UNKNOWN else 0
        return bool(status == 200 and answer["statusCode"] == expected_code)
    except (ValueError, KeyError, TypeError):
        return False


# --- Naga signatures (RSA signing is slow: computed once, cached on disk) --------------


def naga_key(cache_dir: Path) -> Path:
    """The bench's Naga key pair (kept in the cache dir); returns the public key path."""
    from refundctl import devstack

    cache_dir.mkdir(parents=True, exist_ok=True)
    return devstack.naga_dev_key(cache_dir)


def _sign_chunk(private_pem: bytes, txs: list[str]) -> list[tuple[str, str]]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = serialization.load_pem_private_key(private_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return [(tx, naga.sign(naga.data_hash({"betId": tx}), key)) for tx in txs]


def naga_signatures(cache_dir: Path, plan: Plan) -> tuple[Path, dict[str, str]]:
    """Signatures of every Naga bet the plan uses; the cache file grows as needed."""
    public_path = naga_key(cache_dir)
    private_pem = (cache_dir / "naga-dev-private.pem").read_bytes()
    fingerprint = hashlib.sha256(public_path.read_bytes()).hexdigest()[:16]
    cache_file = cache_dir / f"naga-signatures-{fingerprint}.txt"
    signatures: dict[str, str] = {}
    if cache_file.exists():
        for line in cache_file.read_text().splitlines():
            tx, _, signature = line.partition(" ")
            if signature:
                signatures[tx] = signature
    wanted = [bet_tx("n", NEW, n) for n in range(plan.known["n"])]
    wanted += [bet_tx("n", UNKNOWN, n) for n in range(plan.unknown["n"])]
    missing = [tx for tx in wanted if tx not in signatures]
    if missing:
        chunks = [missing[i : i + 2000] for i in range(0, len(missing), 2000)]
        with ProcessPoolExecutor(max_workers=2) as pool, cache_file.open("a") as out:
            for signed in pool.map(_sign_chunk, [private_pem] * len(chunks), chunks):
                out.writelines(f"{tx} {signature}\n" for tx, signature in signed)
                signatures.update(signed)
    return public_path, {tx: signatures[tx] for tx in wanted}


# --- ledger rows -------------------------------------------------------------------------


def seed_sql(known: Mapping[str, int], players: int) -> list[str]:
    """Statements that open `players` accounts and record the known bets with their
    debits; every balance equals the sum of its entries."""
    statements = [  # numbers and constants only: nothing from outside
        f"""INSERT INTO accounts (player, currency, balance)
            SELECT 'p' || j, '{CURRENCY}', 0 FROM generate_series(0, {players - 1}) AS j""",  # noqa: S608
        f"""INSERT INTO ledger_entries (account_id, kind, amount)
            SELECT id, 'opening', {OPENING_BALANCE} FROM accounts""",  # noqa: S608
    ]
    for letter, count in known.items():
        if count == 0:
            continue
        name = PROVIDER_NAMES[letter]
        statements.append(
            f"""INSERT INTO bets (provider, tx, account_id, amount, round_id, state)
                SELECT '{name}', '{letter}' || n, a.id, {amount_sql("n")}, 'r' || n, 'open'
                FROM generate_series(0, {count - 1}) AS n
                JOIN accounts a
                  ON a.player = 'p' || (n % {players}) AND a.currency = '{CURRENCY}'"""  # noqa: S608
        )
        statements.append(
            f"""INSERT INTO ledger_entries (account_id, kind, amount, provider, tx)
                SELECT account_id, 'debit', -amount, provider, tx FROM bets
                WHERE provider = '{name}'"""  # noqa: S608
        )
    statements.append(
        """UPDATE accounts a SET balance = s.total
           FROM (SELECT account_id, sum(amount) AS total FROM ledger_entries
                 GROUP BY account_id) AS s
           WHERE a.id = s.account_id"""
    )
    # Not the empty tables: a plan cached while they are empty would scan them for good.
    statements.append("ANALYZE accounts, bets, ledger_entries")
    return statements


# --- events for the worker part ------------------------------------------------------------


def event_for(entry: Entry, players: int, reply_to: ReplyTo, now_ms: int) -> CancelRequested:
    """The `CancelRequested` the ingress would publish for this entry (same adapter code)."""
    letter, kind, n = entry
    envelope = Envelope(uuid.uuid4().hex, reply_to, now_ms + 3_500, now_ms)
    amount = Decimal(amount_literal(n))
    if letter == "s":
        cancel = scorpio.ScorpioCancel(
            transaction_id=cancel_id(letter, kind, n),
            reference_id=bet_tx(letter, kind, n),
            player_id=player(n, players),
            round_id=f"r{n}",
            currency=CURRENCY,
            amount=amount,
            timestamp_ms=now_ms,
        )
        return envelope.stamp((scorpio.to_fields(cancel),))[0]
    if letter == "h":
        hp_cancel = hpgames.HPGamesCancel(
            transaction_id=cancel_id(letter, kind, n),
            transaction_id_to_cancel=bet_tx(letter, kind, n),
            bet_id_to_cancel=f"hb{n}",
            player_id=player(n, players),
            currency=CURRENCY,
            amount=amount,
            timestamp_ms=now_ms,
            game_id=11,
        )
        return envelope.stamp((hpgames.to_fields(hp_cancel),))[0]
    if letter == "a":
        amb_cancel = amb.AmbCancel(
            request_id=cancel_id(letter, kind, n),
            product_id="amb-slots",
            currency=CURRENCY,
            username=player(n, players),
            timestamp_ms=now_ms,
            txns=(amb.AmbTxn(id=bet_tx(letter, kind, n), round_id=f"r{n}", bet_amount=amount),),
            received_at_ms=now_ms,
        )
        return envelope.stamp((amb.to_fields(amb_cancel),))[0]
    naga_cancel = naga.NagaCancel(bet_tx(letter, kind, n), None)
    return envelope.stamp((naga.to_fields(naga_cancel),))[0]


def check_signature_roundtrip(public_path: Path, signatures: Mapping[str, str]) -> None:
    """Fail early if the cached signatures do not match the key (a stale cache)."""
    from cryptography.hazmat.primitives import serialization

    if not signatures:
        return
    tx, signature = next(iter(signatures.items()))
    key = serialization.load_pem_public_key(public_path.read_bytes())
    given = naga.data_hash({"betId": tx})
    assert naga.verify_signature(given, signature, key), "stale Naga signature cache"  # type: ignore[arg-type]
    assert base64.b64decode(signature)
