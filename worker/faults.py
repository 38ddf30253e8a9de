"""Named fault points for the fault harness (`make faults`); inert unless configured.

`WORKER_FAULT_POINTS="before_commit:0.02,after_commit:0.02,after_publish:0.02,
serialization:0.05"` with `WORKER_FAULT_SEED=N`: at each point, with that probability
per batch, the worker kills itself with SIGKILL (or, for `serialization`, fails the
transaction with a serialization error), so a run is replayable from its seed.
"""

import os
import random
import signal
from collections.abc import Mapping
from types import MappingProxyType

import asyncpg
import structlog

log = structlog.get_logger("worker.faults")

POINTS = frozenset({"before_commit", "after_commit", "after_publish", "serialization"})


def parse_fault_points(spec: str) -> Mapping[str, float]:
    """'name:probability,…' -> {name: probability}; raises ValueError on anything else."""
    points: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, probability = part.partition(":")
        if name not in POINTS:
            raise ValueError(f"unknown fault point {name!r}; known: {', '.join(sorted(POINTS))}")
        value = float(probability)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"fault probability must be within 0..1, got {value}")
        points[name] = value
    return MappingProxyType(points)


class FaultInjector:
    def __init__(self, points: Mapping[str, float], seed: int) -> None:
        self._points = points
        self._random = random.Random(seed)

    def _hit(self, point: str) -> bool:
        probability = self._points.get(point, 0.0)
        return probability > 0 and self._random.random() < probability

    def crash_at(self, point: str) -> None:
        """SIGKILL this process at `point` if the dice say so (no cleanup, like a crash)."""
        assert point in POINTS
        if self._hit(point):
            log.warning("fault_injected", point=point)
            os.kill(os.getpid(), signal.SIGKILL)

    def before_commit(self) -> None:
        """Inside the batch transaction, after the writes, before the commit."""
        if self._hit("serialization"):
            log.warning("fault_injected", point="serialization")
            raise asyncpg.exceptions.SerializationError("injected serialization failure")
        self.crash_at("before_commit")
