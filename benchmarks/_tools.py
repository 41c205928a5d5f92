"""Helpers of the tracklet benchmarks: physical floors measured on the spot, one-shot timing.

``gemm_gflops`` times a large float32 matrix product with torch (MKL/oneDNN or cuBLAS, near the
hardware's peak) and ``stream_gbps`` a large memory copy: a kernel's floor is then
max(FLOPs / gemm rate, bytes / copy rate). On a shared machine both move with the load, like the
timings they are compared with.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from _common import PeakMemory


def gemm_gflops(device: str = "cpu", n: int = 2048, repeat: int = 3) -> float:
    """Best float32 GEMM throughput in GFLOP/s (n x n x n product)."""
    import torch

    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(repeat + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def stream_gbps(device: str = "cpu", megabytes: int = 512, repeat: int = 3) -> float:
    """Best copy bandwidth in GB/s (bytes read + bytes written)."""
    if device == "cuda":
        import torch

        src = torch.empty(megabytes * 2**20 // 4, device="cuda")
        dst = torch.empty_like(src)
        copy = lambda: dst.copy_(src)  # noqa: E731
        sync = torch.cuda.synchronize
    else:
        src = np.ones(megabytes * 2**20 // 8)
        dst = np.empty_like(src)
        copy = lambda: np.copyto(dst, src)  # noqa: E731
        sync = lambda: None  # noqa: E731
    best = float("inf")
    for _ in range(repeat + 1):
        sync()
        start = time.perf_counter()
        copy()
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best / 1e9


def floor_seconds(flops: float, bytes_moved: float, gflops: float, gbps: float) -> float:
    return max(flops / (gflops * 1e9), bytes_moved / (gbps * 1e9))


def timed_once(fn: Callable[[], Any], cuda: bool = False) -> tuple[Any, dict[str, float]]:
    """Runs ``fn`` once (for baselines too slow to repeat) and returns its result with the same
    statistics as :func:`_common.measure`."""
    with PeakMemory(cuda=cuda) as memory:
        if cuda:
            import torch

            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return result, {"seconds": seconds, "seconds_min": seconds, "peak_mb": memory.peak_bytes / 2**20,
                    "cuda_peak_mb": memory.cuda_peak_bytes / 2**20}
