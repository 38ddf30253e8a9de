"""Publishing a batch's dead letters, inside its transaction: they must land before the
offsets move past them, or the batch fails and is retried."""

import asyncio
from collections.abc import Sequence

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError

from worker.records import DeadLetter, letter_of, source

log = structlog.get_logger("worker")


def _too_large(answer: object) -> bool:
    return isinstance(answer, MessageSizeTooLargeError | RecordTooLargeError)


async def publish_dead_letters(
    producer: AIOKafkaProducer, topic: str, dead: Sequence[DeadLetter], timeout_ms: int
) -> None:
    """Publish `dead` to `topic` and wait for the broker's acknowledgements, at most
    `timeout_ms` per round; raises the first failure (the transaction rolls back).

    A record as large as the request topic takes may not fit the dead-letter topic
    once the reason and source headers are added: its dead letter then carries them
    without its key, value and headers (the record stays at its source, for the
    request topic's retention), so that it cannot stop the partition either."""
    timeout_s = timeout_ms / 1000
    results = await asyncio.wait_for(_send(producer, topic, dead, whole=True), timeout_s)
    failed = [r for r in results if isinstance(r, BaseException) and not _too_large(r)]
    if failed:
        raise failed[0]
    too_large = [d for d, r in zip(dead, results, strict=True) if _too_large(r)]
    if too_large:
        log.warning("dead_letters_too_large", sources=[source(d.record) for d in too_large])
        results = await asyncio.wait_for(_send(producer, topic, too_large, whole=False), timeout_s)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
    log.warning(
        "dead_lettered",
        count=len(dead),
        reasons=[f"{source(d.record)} {d.cause}: {d.reason}" for d in dead[:5]],
    )


async def _send(
    producer: AIOKafkaProducer, topic: str, dead: Sequence[DeadLetter], *, whole: bool
) -> list[object | BaseException]:
    """Send each dead letter (`whole`: with the record's key, value and headers; else
    only the reason and source); the broker's answers, failures as values."""
    answers: list[asyncio.Future[object] | BaseException] = []
    for letter in dead:
        sent = letter_of(letter, whole=whole)
        try:
            answers.append(
                await producer.send(topic, sent.value, key=sent.key, headers=sent.headers)
            )
        except KafkaError as exc:  # refused before sending (over the client's limit)
            answers.append(exc)
    pending = [answer for answer in answers if isinstance(answer, asyncio.Future)]
    landed = iter(await asyncio.gather(*pending, return_exceptions=True))
    return [next(landed) if isinstance(a, asyncio.Future) else a for a in answers]
