"""The benchmarks' one harness, on pytest-benchmark.

    pytest benchmarks --benchmark-only                         # small sizes, a few minutes on 2 cores
    pytest benchmarks --benchmark-only --full                  # Market-1501 / MSMT17 / LUPerson-NL sizes
    pytest benchmarks --benchmark-only --device cuda           # on a GPU (tools/gpu_check.sh)
    pytest benchmarks --benchmark-only --benchmark-json out.json && python benchmarks/report.py out.json

Every ``bench_<op>.py`` builds its problem in a module-scoped fixture that **checks correctness
first** (the op against its plain-PyTorch reference, or a float64 oracle), then times each
implementation in its own test with :func:`bench`. The tests of one problem share a
pytest-benchmark group, so the table compares them in the same run; each records its ``role``
(``cion_fast``, ``reference`` = the plain-PyTorch reference, ``baseline`` = the code people use
today, ``floor`` = the least work any implementation must do) and its peak memory, which
``report.py`` turns into ratios. Speed is measured here, never asserted in unit tests.
"""

from __future__ import annotations

import os
import platform
from typing import Any, Callable

import numpy as np
import pytest

import cion_fast
from cion_fast._memory import PeakMemory


def pytest_addoption(parser):
    group = parser.getgroup("cion_fast benchmarks")
    group.addoption("--full", action="store_true", help="the datasets' real sizes (Market-1501, MSMT17, LUPerson-NL): tens of minutes on 2 cores")
    group.addoption("--device", choices=("cpu", "cuda"), default="cpu", help="where the ops run (default cpu)")
    group.addoption("--denoise-fraction", type=float, default=None,
                    help="bench_denoise: this fraction of LUPerson-NL instead of the size list (1 = 10.7M frames: about 4 min on 2 cores, 11 GB of disk, 3 GB of RAM)")


def pytest_generate_tests(metafunc):
    """A module's ``SIZES = {"default": {name: size}, "full": {name: size}}`` parametrises its
    ``size`` fixture with the sizes of the chosen mode (``--full``)."""
    if "size" in metafunc.fixturenames:
        sizes = getattr(metafunc.module, "SIZES")["full" if metafunc.config.getoption("--full") else "default"]
        metafunc.parametrize("size", list(sizes.values()), ids=list(sizes), scope="module")


@pytest.fixture(scope="session")
def device(request) -> str:
    """The device the ops run on; ``cuda`` needs a GPU and a CUDA build (else every test is skipped)."""
    name = request.config.getoption("--device")
    if name == "cuda":
        import torch

        if not (torch.cuda.is_available() and cion_fast.cuda_available()):
            pytest.skip("--device cuda needs a GPU and cion_fast built with CUDA")
    return name


@pytest.fixture(scope="session")
def full(request) -> bool:
    return bool(request.config.getoption("--full"))


def pytest_benchmark_update_machine_info(config, machine_info):
    """The machine named in every JSON: CPU model, cores, load, GPU, library versions, build."""
    cpu = platform.processor() or "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu_model": cpu, "cores": os.cpu_count(), "load_average": list(os.getloadavg()),
                            "numpy": np.__version__, "cion_fast": cion_fast.build_info(),
                            "device": config.getoption("--device"), "full": bool(config.getoption("--full")),
                            "denoise_fraction": config.getoption("--denoise-fraction")}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        info["torch"] = None
    machine_info["cion_fast_bench"] = info


ROLES = ("cion_fast", "reference", "baseline", "floor")


def bench(benchmark, fn: Callable[[], Any], *, role: str, group: str, device: str = "cpu", rounds: int = 3,
          warmup: bool = True, items: int | None = None, **info: Any) -> Any:
    """Times ``fn`` with pytest-benchmark and records what report.py needs.

    Args:
        benchmark: the pytest-benchmark fixture.
        fn: the call to time (no arguments). On CUDA the device is synchronised after each call,
            so the time is the kernels', not the launch's.
        role: one of :data:`ROLES`.
        group: the comparison this row belongs to (op and size): rows of a group are compared.
        rounds: timed calls (the median is the figure). warmup: one untimed call first (off for
            references that take minutes).
        items: images (or other units) one call processes: ``images_per_s`` is recorded.
        info: more JSON-able facts for the report (sizes, floors, notes).

    Returns:
        ``fn``'s result of the last call.

    The peak memory recorded (resident ``peak_mb`` and heap ``heap_peak_mb`` above the start;
    ``process_heap_peak_mb``, the whole process's heap at its peak) is over the whole
    measurement; its first call is a cold one (the allocator has not yet kept freed pages), so it
    is the peak of one cold call.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    cuda = device == "cuda"
    if cuda:
        import torch

        def call():
            out = fn()
            torch.cuda.synchronize()
            return out
    else:
        call = fn
    benchmark.group = group
    with PeakMemory(cuda=cuda) as memory:
        result = benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=1 if warmup else 0)
    benchmark.extra_info.update(role=role, device=device, peak_mb=memory.peak_bytes / 2**20,
                                heap_peak_mb=memory.anon_peak_bytes / 2**20,
                                process_heap_peak_mb=memory.process_anon_peak_bytes / 2**20, cuda_peak_mb=memory.cuda_peak_bytes / 2**20, **info)
    if items is not None and benchmark.stats is not None:  # no stats under --benchmark-disable
        benchmark.extra_info["images_per_s"] = items / benchmark.stats.stats.median
    return result


def on_device(array: np.ndarray, device: str):
    """The op's input as a user would hand it: the numpy array on the CPU, a torch tensor on the GPU."""
    if device == "cpu":
        return array
    import torch

    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


def as_torch(array: Any, device: str):
    """A torch tensor on ``device`` (the references' input)."""
    import torch

    return torch.as_tensor(np.ascontiguousarray(array) if isinstance(array, np.ndarray) else array).to(device)


def equivalent_gemm(flops: float, device: str, dim: int = 256) -> Callable[[], Any]:
    """Float32 matrix products worth ``flops`` ([8192, dim] @ [dim, 1024] tiles, results overwritten):
    the floor of an op whose unavoidable work is that many dot-product FLOPs, at this machine's
    GEMM rate (MKL/oneDNN or cuBLAS, near the hardware's peak). Every tile is written into one
    buffer: a fresh [8192, 1024] output is 32 MiB of new pages (8,192 page faults on a CPU without
    huge pages), which made this floor 1.3-1.55x slower than the GEMM on the 2-core Xeon, by an
    amount that changed from run to run (benchmarks/NOTES.md)."""
    import torch

    columns, tile = 1024, 8192
    rows = max(1, int(round(flops / (2.0 * dim * columns))))
    a = torch.randn(min(rows, tile), dim, device=device)
    b = torch.randn(dim, columns, device=device)
    out = torch.empty(min(rows, tile), columns, device=device)
    repeats, rest = divmod(rows, tile) if rows > tile else (1, 0)
    tail, tail_out = a[:rest], out[:rest]

    def run():
        for _ in range(repeats):
            torch.matmul(a, b, out=out)
        if rest:
            torch.matmul(tail, b, out=tail_out)
    return run
