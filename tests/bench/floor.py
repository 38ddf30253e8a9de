"""The two helpers of the benchmark's `floor` part (`ingress_vs_floor`):

- `python -m tests.bench.floor serve --port P`: the floor, a trivial handler on the
  ingress's own HTTP server (`adapters.http_server`, the ingress's limits): every POST
  is answered 200 with a small fixed JSON body; GET /healthz answers 200. What any
  handler on that server costs at least.
- `python -m tests.bench.floor stub` (the stack's environment: broker, topics): a stub
  for the workers that answers every request event at once, so the ingress can be
  measured with the broker answering instantly. It reads every partition of the
  request topic (assigned, no group), decodes each event as the worker is to
  (`schemas.fast_codec.decode_cancel_requested`: the schema's refusals, its events)
  and publishes an outcome to the event's reply partition
  (`schemas.fast_codec.encode_outcome`), one producer batch per reply partition, like
  the worker. The outcome follows the workload's naming (`tests.bench.workload`): an
  unknown bet ("<letter>x<n>") is `bet_unknown`, every other bet is `refunded`, so the
  load generator's checks of each provider's answer still hold. No database.

Both stop by themselves after `--max-seconds` (and on SIGTERM).
"""

import argparse
import asyncio
import json
import os
import time
from collections.abc import Sequence
from decimal import Decimal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from adapters.http_server import (
    Handler,
    HttpRequest,
    HttpResponse,
    HttpServer,
    event_loop_factory,
)
from adapters.settings import HttpLimits
from refundctl import config
from schemas import CancelOutcome, CancelRequested
from schemas.events import ItemResult, Outcome
from schemas.fast_codec import decode_cancel_requested, encode_outcome
from schemas.transport import outcome_headers

ANSWER = HttpResponse(200, b'{"status":"ok","errorCode":0}', {"content-type": "application/json"})
NOT_FOUND = HttpResponse(404, b"Not Found")
BALANCE_BEFORE = Decimal("1000.00")
PARTITIONS_WAIT_S = 30.0

# ------------------------------------------------------------------ the floor's server


class FloorApp:
    """`adapters.http_server.HttpApp`: any POST is answered at once."""

    async def answer(self, request: HttpRequest) -> HttpResponse:
        return ANSWER

    def route(self, method: str, path: str) -> Handler | HttpResponse:
        if method == "POST" or (method == "GET" and path == "/healthz"):
            return self.answer
        return NOT_FOUND


async def serve(port: int, max_seconds: float) -> None:
    server = HttpServer(FloorApp(), HttpLimits())
    await server.start("127.0.0.1", port)
    try:
        await asyncio.sleep(max_seconds)
    finally:
        await server.stop(grace_s=1)


# ------------------------------------------------------------------ the stub worker


def stub_outcome(event: CancelRequested, now_ms: int) -> CancelOutcome:
    unknown = [item.bet_tx[1:2] == "x" for item in event.items]
    outcome = Outcome.BET_UNKNOWN if all(unknown) else Outcome.REFUNDED
    refunded = sum(
        (item.amount or Decimal(0) for item, u in zip(event.items, unknown, strict=True) if not u),
        Decimal(0),
    )
    return CancelOutcome(
        correlation_id=event.correlation_id,
        provider=event.provider,
        cancel_id=event.cancel_id,
        outcome=outcome,
        items=[
            ItemResult(
                bet_tx=item.bet_tx,
                outcome=Outcome.BET_UNKNOWN if u else Outcome.REFUNDED,
                amount=item.amount,
            )
            for item, u in zip(event.items, unknown, strict=True)
        ],
        player=event.player,
        currency=event.currency or "EUR",
        balance_before=BALANCE_BEFORE,
        balance_after=BALANCE_BEFORE + refunded,
        ledger_tx=f"stub-{event.cancel_id}",
        decided_at_ms=now_ms,
    )


async def _publish(producer: AIOKafkaProducer, events: Sequence[CancelRequested]) -> None:
    """One producer batch per reply partition (as the worker sends), acknowledged."""
    now_ms = time.time_ns() // 1_000_000
    by_partition: dict[tuple[str, int], list[CancelOutcome]] = {}
    for event in events:
        key = (event.reply_to.topic, event.reply_to.partition)
        by_partition.setdefault(key, []).append(stub_outcome(event, now_ms))
    sends = []
    for (topic, partition), outcomes in by_partition.items():
        batch = producer.create_batch()
        for outcome in outcomes:
            record = {
                "key": outcome.correlation_id.encode(),
                "value": encode_outcome(outcome),
                "timestamp": None,
                "headers": outcome_headers(outcome),
            }
            if batch.append(**record) is None:
                sends.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                appended = batch.append(**record)
                assert appended is not None, "an outcome fits an empty batch"
        sends.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.wait_for(asyncio.gather(*sends), 30)


async def stub(max_seconds: float) -> None:
    kafka = config.kafka_settings(dict(os.environ))
    options = kafka.consumer_options() | {"auto_offset_reset": "earliest"}
    consumer = AIOKafkaConsumer(**options)
    producer = AIOKafkaProducer(**kafka.producer_options())
    await consumer.start()
    await producer.start()
    try:
        partitions = await asyncio.wait_for(
            producer.partitions_for(kafka.topics.requests), PARTITIONS_WAIT_S
        )
        consumer.assign([TopicPartition(kafka.topics.requests, p) for p in sorted(partitions)])
        print(json.dumps({"event": "stub_assigned", "partitions": len(partitions)}), flush=True)
        until = time.monotonic() + max_seconds
        while time.monotonic() < until:
            batch = await consumer.getmany(timeout_ms=200, max_records=1000)
            events = [
                decode_cancel_requested(record.value or b"")
                for records in batch.values()
                for record in records
            ]
            if events:
                await _publish(producer, events)
    finally:
        await consumer.stop()
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=("serve", "stub"))
    parser.add_argument("--port", type=int, default=0, help="the floor's port (serve)")
    parser.add_argument("--max-seconds", type=float, default=3600, help="stop after this")
    args = parser.parse_args()
    if args.role == "serve":
        assert args.port > 0, "--port"
        # On the ingress's own loop (uvloop where installed): the floor of the same server.
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(serve(args.port, args.max_seconds))
    else:
        asyncio.run(stub(args.max_seconds))


if __name__ == "__main__":
    main()
