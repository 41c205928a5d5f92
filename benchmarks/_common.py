"""Shared benchmark plumbing: environment header, timing, peak memory, JSON output.

Every ``bench_<op>.py`` checks correctness first, then times with :func:`measure`, prints rows with
:func:`print_row` and writes :func:`write_json`. Speed is asserted here, never in unit tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cion_fast  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent / "out"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run in seconds")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--repeat", type=int, default=3, help="timed repetitions (median reported)")
    p.add_argument("--json", type=Path, default=None, help="where to write results (default benchmarks/out/)")
    return p


def environment() -> dict[str, Any]:
    """Machine and library versions, printed at the top of every benchmark."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    env: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cion_fast": cion_fast.build_info(),
        "cuda_available": cion_fast.cuda_available(),
    }
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        env["torch"] = None
    return env


def print_header(title: str) -> dict[str, Any]:
    env = environment()
    print(f"== {title}")
    print(f"   cpu: {env['cpu']} ({env['cores']} cores), gpu: {env.get('gpu', 'none')}")
    print(
        f"   python {env['python']}, numpy {env['numpy']}, torch {env.get('torch')}, "
        f"cion_fast {env['cion_fast']['version']} (openmp={env['cion_fast']['openmp']}, cuda={env['cion_fast']['cuda']})"
    )
    return env


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak resident memory above the starting point while the block runs (sampled every 2 ms),
    plus the CUDA caching allocator's peak when ``cuda`` is set."""

    def __init__(self, cuda: bool = False):
        self.cuda = cuda
        self.peak_bytes = 0
        self.cuda_peak_bytes = 0

    def __enter__(self):
        self._start = _rss_bytes()
        self._peak = self._start
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
            self._peak = max(self._peak, _rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, _rss_bytes())
        self.peak_bytes = self._peak - self._start
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.cuda_peak_bytes = torch.cuda.max_memory_allocated() - self._cuda_start
        return False


def measure(fn: Callable[[], Any], repeat: int = 3, warmup: int = 1, cuda: bool = False) -> dict[str, float]:
    """Median wall time of ``fn`` over ``repeat`` runs, and the peak memory of its first run.

    The first run (memory sampled) doubles as warm-up, so its allocations are cold ones: once the
    allocator keeps freed pages, later runs would hide them. ``warmup`` - 1 further untimed runs
    follow. On CUDA the time is taken with CUDA events around the call.
    """
    with PeakMemory(cuda=cuda) as memory:
        fn()
    for _ in range(warmup - 1):
        fn()
    times = []
    for _ in range(repeat):
        if cuda:
            import torch

            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return {
        "seconds": statistics.median(times),
        "seconds_min": min(times),
        "peak_mb": memory.peak_bytes / 2**20,
        "cuda_peak_mb": memory.cuda_peak_bytes / 2**20,
    }


def print_row(name: str, stats: dict[str, float], baseline: dict[str, float] | None = None, extra: str = "") -> None:
    ratio = f"{stats['seconds'] / baseline['seconds']:7.3f}x" if baseline else "        "
    memory = f"{stats['peak_mb']:9.1f} MB" + (f" (gpu {stats['cuda_peak_mb']:.1f} MB)" if stats.get("cuda_peak_mb") else "")
    print(f"   {name:<44s} {stats['seconds'] * 1e3:11.2f} ms  {ratio}  peak {memory}  {extra}")


def write_json(name: str, payload: dict[str, Any], path: Path | None = None) -> Path:
    path = path or OUT_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=float))
    print(f"   results written to {path}")
    return path
