"""Peak memory of a block of code, for the benchmarks and the large-world tests (Linux: read
from ``/proc/self/status``).

Two figures, because they answer different questions: the resident set (what ``top`` shows,
including the page cache of memory-mapped files, which the kernel reclaims under pressure) and the
anonymous resident memory, the heap: what the process itself holds, and what a copy of a
memory-mapped array would add to.

Example:
    >>> import gc, mmap, numpy as np
    >>> _ = gc.collect()                          # no collection of earlier garbage inside the block
    >>> with PeakMemory() as memory:
    ...     block = mmap.mmap(-1, 64 << 20, flags=mmap.MAP_PRIVATE)  # 64 MiB of fresh anonymous pages
    ...     np.frombuffer(block, np.uint8)[:] = 1  # touched (a heap block could reuse resident pages)
    >>> memory.anon_peak_bytes >= 48 << 20
    True
"""

from __future__ import annotations

import threading
import time

__all__ = ["PeakMemory"]


def _resident_bytes() -> tuple[int, int]:
    """(resident, anonymous resident) bytes of this process. Anonymous memory is the heap: what
    the process itself holds; the rest of the resident set is mapped files (page cache, which the
    kernel reclaims under pressure)."""
    rss = anon = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("RssAnon:"):
                anon = int(line.split()[1]) * 1024
    return rss, anon


class PeakMemory:
    """Peak resident and peak anonymous (heap) memory while the block runs (sampled every 2 ms),
    plus the CUDA caching allocator's peak when ``cuda`` is set.

    Attributes (after the block): ``peak_bytes`` and ``anon_peak_bytes`` (growth above the start),
    ``process_anon_peak_bytes`` (the whole process's heap at its peak), ``cuda_peak_bytes``.
    """

    def __init__(self, cuda: bool = False):
        self.cuda = cuda
        self.peak_bytes = self.anon_peak_bytes = self.process_anon_peak_bytes = self.cuda_peak_bytes = 0

    def __enter__(self):
        self._start = self._peak = _resident_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._cuda_start = torch.cuda.memory_allocated()
        return self

    def _sample(self):
        while not self._stop.is_set():
            now = _resident_bytes()
            self._peak = (max(self._peak[0], now[0]), max(self._peak[1], now[1]))
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        now = _resident_bytes()
        self.peak_bytes = max(self._peak[0], now[0]) - self._start[0]
        self.anon_peak_bytes = max(self._peak[1], now[1]) - self._start[1]
        self.process_anon_peak_bytes = max(self._peak[1], now[1])
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.cuda_peak_bytes = torch.cuda.max_memory_allocated() - self._cuda_start
        return False
