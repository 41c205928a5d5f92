"""Reading ahead: the next batches of image files decoded by a pool of threads while the current
one is used (Pillow releases the GIL while it decodes, so threads run in parallel), with a bounded
number in flight, so memory holds at most ``depth`` batches whatever the dataset's size."""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

__all__ = ["prefetch"]

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
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an int >= 1, got {depth!r}")
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
