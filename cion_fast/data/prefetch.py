"""Reading ahead: the next batches (of image files, of a memory-mapped array) read by a pool of
threads while the current one is used (Pillow releases the GIL while it decodes, so threads run in parallel), with a bounded
number in flight, so memory holds at most ``depth`` batches whatever the dataset's size."""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

from cion_fast._checks import check_int

__all__ = ["StepReader", "prefetch"]

Key = TypeVar("Key")
Value = TypeVar("Value")


def prefetch(load: Callable[[Key], Value], keys: Iterable[Key], workers: int = 4, depth: int = 2) -> Iterator[Value]:
    """``load(key)`` for every key, in order, computed ``depth`` keys ahead by ``workers`` threads.

    Args:
        load: the work for one key (a batch of file reads); it must be thread-safe.
        keys: what to load, in the order the results are wanted (consumed lazily).
        workers: threads (>= 1). depth: results in flight or waiting (>= 1): the memory bound.

    Yields:
        ``load(key)`` of each key, in the order of ``keys``. An exception raised by ``load`` is
        raised here, at its key's turn; the loads in flight are then dropped.

    Example:
        >>> list(prefetch(lambda k: k * k, range(5), workers=2, depth=2))
        [0, 1, 4, 9, 16]
    """
    workers, depth = check_int(workers, "workers", 1), check_int(depth, "depth", 1)
    pending: deque = deque()
    keys = iter(keys)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cion_fast-prefetch") as pool:
        try:
            for key in keys:
                pending.append(pool.submit(load, key))
                if len(pending) >= depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


class StepReader:
    """Batches keyed by training step, read ``depth`` steps ahead by a thread pool: a run's plan
    says which frames every step takes, so the reads of the next steps overlap the current one.

    Args:
        load: ``load(step)`` -> the batch of that step (thread-safe, a pure function of the step).
        num_steps: steps of the plan (nothing is read at or past it).
        workers, depth: as :func:`prefetch`.

    ``get(step)`` returns the batch of ``step`` (read now when it was not ahead) and schedules the
    next ``depth`` steps; steps asked out of order are simply read again. ``close()`` stops the
    threads.

    Example:
        >>> reader = StepReader(lambda s: s * 2, num_steps=5, depth=2)
        >>> [reader.get(s) for s in (0, 1, 2, 4)], sorted(reader.pending)
        ([0, 2, 4, 8], [])
        >>> reader.close()
    """

    def __init__(self, load: Callable[[int], Value], num_steps: int, workers: int = 4, depth: int = 2):
        workers, depth = check_int(workers, "workers", 1), check_int(depth, "depth", 1)
        self.load, self.num_steps, self.depth = load, int(num_steps), depth
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cion_fast-steps")
        self.pending: dict = {}

    def get(self, step: int) -> Value:
        future = self.pending.pop(step, None)
        for stale in [s for s in self.pending if s < step or s > step + self.depth]:
            self.pending.pop(stale).cancel()
        for ahead in range(step + 1, min(step + 1 + self.depth, self.num_steps)):
            if ahead not in self.pending:
                self.pending[ahead] = self.pool.submit(self.load, ahead)
        return future.result() if future is not None else self.load(step)

    def close(self) -> None:
        for future in self.pending.values():
            future.cancel()
        self.pending.clear()
        self.pool.shutdown(wait=True)
