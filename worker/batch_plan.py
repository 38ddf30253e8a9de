"""Which stored offsets a range of a batch's records advances, per partition: the
compare-and-set each transaction of a batch makes (`ledger.advance_offsets`). Pure."""

from collections.abc import Mapping, Sequence

from aiokafka.structs import ConsumerRecord

from worker.ledger import OffsetAdvance


class BatchPlan:
    """The offsets a range of a batch's records advances, per partition. The records are
    in (partition, offset) order; a range's advance of a partition ends where the next
    record of that partition in the batch begins, so consecutive ranges chain: each
    one's compare-and-set starts where the last one's ended. A partition's first range
    starts at the partition's next expected offset (`expected`, by (topic, partition)),
    not at its first record: a gap at the start of a fetch (transaction markers,
    compaction) must not fence the batch for ever."""

    def __init__(
        self,
        records: Sequence[ConsumerRecord[bytes, bytes]],
        expected: Mapping[tuple[str, int], int] | None = None,
    ) -> None:
        keys = [(r.topic, r.partition, r.offset) for r in records]
        assert keys == sorted(set(keys)), "records in (partition, offset) order, once each"
        self._records = records
        # Where each record's range starts in its partition: its own offset, or for the
        # first of its partition in the batch, the offset the partition is expected at.
        self._start = [r.offset for r in records]
        # The offset after each record in its partition: the next record's in the batch
        # (the same as its own + 1 unless the log has a gap), or its own + 1 for the last.
        self._next = [r.offset + 1 for r in records]
        for i, here in enumerate(records):
            if i == 0 or (records[i - 1].topic, records[i - 1].partition) != (
                here.topic,
                here.partition,
            ):
                start = (expected or {}).get((here.topic, here.partition), here.offset)
                assert start <= here.offset, "no record below the expected offset"
                self._start[i] = start
            if i + 1 < len(records):
                there = records[i + 1]
                if (here.topic, here.partition) == (there.topic, there.partition):
                    self._next[i] = there.offset

    def advances(self, lo: int, hi: int | None = None) -> list[OffsetAdvance]:
        """The advances of records [lo, hi) (hi: the end of the batch)."""
        found: dict[tuple[str, int], OffsetAdvance] = {}
        for i in range(lo, len(self._records) if hi is None else hi):
            r = self._records[i]
            first = found.get((r.topic, r.partition))
            found[(r.topic, r.partition)] = OffsetAdvance(
                r.topic,
                r.partition,
                self._start[i] if first is None else first.first_offset,
                self._next[i],
            )
        return list(found.values())
