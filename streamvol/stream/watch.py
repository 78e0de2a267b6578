"""Where each loader worker is, in memory the main process can read: so a loader that waits too
long for a batch can say which worker it waits for and what that worker was doing."""

from __future__ import annotations

import multiprocessing
import time

import numpy as np

from streamvol.stream.slots import MAX_WORKERS

STAGES = ("not started", "started", "reading", "preparing", "collating", "sent a batch")


class Progress:
    """Per worker: the last stage it reached, when, and the shard it was reading."""

    def __init__(self) -> None:
        self.table = multiprocessing.RawArray("d", MAX_WORKERS * 3)

    def _row(self, worker: int) -> np.ndarray:
        return np.frombuffer(self.table, dtype=np.float64)[3 * worker : 3 * worker + 3]

    def mark(self, worker: int, stage: str, shard: int = -1) -> None:
        """Record that ``worker`` reached ``stage`` (one of ``STAGES``) now."""
        if worker < MAX_WORKERS:
            self._row(worker)[:] = (STAGES.index(stage), time.time(), shard)

    def reset(self, workers: int) -> None:
        for w in range(min(workers, MAX_WORKERS)):
            self._row(w)[:] = (0, time.time(), -1)

    def last(self, worker: int) -> tuple[str, float, int]:
        """(stage, seconds since, shard index or -1) of ``worker``."""
        if worker >= MAX_WORKERS:
            return STAGES[0], 0.0, -1
        stage, when, shard = self._row(worker)
        return STAGES[int(stage)], time.time() - when, int(shard)
