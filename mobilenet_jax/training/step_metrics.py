"""The train step's metrics, read without making the device wait for the host.

Each step returns its metrics as device arrays. Reading one makes the host wait for that step,
so they are read `lag` steps late, `lag` at a time: the host dispatches up to 2 * lag steps
ahead (`core.parallel.run_ahead` chooses `lag` by backend). Only the epoch's first step is
read at once, to time the epoch from the end of it (the first step of a run compiles).
"""
import collections
import time
from typing import Callable, Optional

import jax
import numpy as np

from mobilenet_jax.core.metrics import add_sums, summarize_metrics


class TrainingStopped(Exception):
    """Training cannot go on (e.g. a NaN loss); nothing bad was saved."""


class StepMetrics:
    """Sums one epoch's step metrics and checks every loss is finite (before anything that
    saves the state: call `read_all` first)."""

    def __init__(self, batch_size: int, last_checkpoint: Callable[[], Optional[int]],
                 lag: int = 1, on_read: Callable[[dict], None] = lambda sums: None):
        self.batch_size, self.last_checkpoint, self.lag = batch_size, last_checkpoint, lag
        self.on_read = on_read
        self.start_epoch()

    def start_epoch(self) -> None:
        self.pending = collections.deque()  # (step, metrics on the device)
        self.sums, self.last, self.steps_read, self.t_first = None, None, 0, None

    def add(self, step: int, metrics: dict) -> None:
        """The metrics of `step`, just dispatched."""
        self.pending.append((step, metrics))
        if self.t_first is None:
            self.read_all()
            self.t_first = time.perf_counter()
        elif len(self.pending) >= 2 * self.lag:
            self._read(self.lag)

    def read_all(self) -> None:
        self._read(len(self.pending))

    def _read(self, n: int) -> None:
        taken = [self.pending.popleft() for _ in range(n)]
        for (step, _), metrics in zip(taken, jax.device_get([m for _, m in taken])):
            if not np.isfinite(metrics["loss"]):
                last = self.last_checkpoint()
                kept = (f"the last good checkpoint (step {last}) is intact" if last is not None
                        else "no checkpoint had been saved yet")
                raise TrainingStopped(f"the loss became {float(metrics['loss'])} at step {step}; "
                                      f"{kept}. Lower --lr or raise --warmup-epochs, then rerun")
            self.sums = add_sums(self.sums, {k: v for k, v in metrics.items() if k != "lr"})
            self.last = metrics
        self.steps_read += n
        if n:
            self.on_read(self.sums)

    def images_per_s(self) -> float:
        """Of the steps read after the epoch's first, since the end of that one."""
        elapsed = time.perf_counter() - self.t_first if self.t_first else 0.0
        return (self.steps_read - 1) * self.batch_size / elapsed if elapsed > 0 else 0.0

    def summary(self) -> dict:
        """The epoch so far: mean loss, top-1, top-5, the last learning rate, images/s."""
        self.read_all()
        return {**summarize_metrics(self.sums, "train"), "lr": float(self.last["lr"]),
                "images_per_s": self.images_per_s()}
