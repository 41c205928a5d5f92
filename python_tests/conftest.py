"""Shared test fixtures and helpers: framework availability, CUDA skip, poisoned output allocation,
threads sharing a kernel, checks under ``python -O``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import cion_fast
from cion_fast import _arrays

try:
    import torch
except ImportError:  # pragma: no cover - torch is part of the test install
    torch = None

try:
    import cupy
except Exception:  # cupy missing or without a usable CUDA runtime
    cupy = None


def cuda_usable() -> bool:
    return cion_fast.cuda_available() and torch is not None and torch.cuda.is_available()


requires_torch = pytest.mark.skipif(torch is None, reason="torch not installed")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are skipped when no GPU can run the CUDA kernels."""
    if cuda_usable():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU and a CUDA build of cion_fast")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def torch_one_thread():
    """One torch intra-op thread for the test: tiny models on a small shared machine only lose to
    thread contention. Training-test modules use it with ``pytest.mark.usefixtures``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def signal_after_step(monkeypatch, run_class: type, sig: int, at_step: int | None = None) -> None:
    """Makes every ``run_class`` (a ``cion_fast.training.TrainingRun``) raise ``sig`` on itself right
    after step ``at_step`` (None: after every step), as a Ctrl-C or a scheduler's SIGTERM would.
    ``monkeypatch.undo()`` restores the class."""
    original = run_class.train_step

    def step_then_signal(self):
        out = original(self)
        if at_step is None or self.step == at_step:
            signal.raise_signal(sig)
        return out

    monkeypatch.setattr(run_class, "train_step", step_then_signal)


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Runs ``torchrun --standalone --nproc_per_node 2 ARGS...`` on the CPU and asserts it succeeded.
    The ranks import cion_fast from where this process does (the installed package in CI, the
    source tree in a developer build), never from the current directory."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=cwd)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def run_in_threads(work: Callable[[int], Any], n: int) -> list:
    """``[work(0), ..., work(n - 1)]``, each call on a thread of its own, all started before any is
    joined: the kernels release the GIL, so concurrent calls must not interfere. The first
    exception a call raised is raised again here, after every thread has ended."""
    results, errors = [None] * n, [None] * n

    def run(i):
        try:
            results[i] = work(i)
        except BaseException as error:  # re-raised in the test's thread below
            errors[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for error in errors:
        if error is not None:
            raise error
    return results


def environment_importing_this_package() -> dict[str, str]:
    """This process's environment with PYTHONPATH set to its sys.path, so that a subprocess started
    in another directory imports cion_fast from where this process imports it (an installed
    package, or a developer build on PYTHONPATH), never from its current directory."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def value_errors_under_python_O(imports: str, *calls: str) -> str:
    """Runs ``imports``, then each of ``calls``, in a fresh ``python -O`` (assert statements
    stripped) started in an empty directory, so the package is imported from where this process
    imports it, never from the current directory. Returns its stdout: a line ``ValueError
    <message>`` for each call that raised one."""
    code = imports + "\n" + "".join(f"try:\n    {call}\nexcept ValueError as e:\n    print('ValueError', e)\n" for call in calls)
    env = environment_importing_this_package()
    with tempfile.TemporaryDirectory() as empty:
        done = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, check=True, cwd=empty, env=env)
    return done.stdout


def run_with_isa_cap(variable: str, cap: str | None, args: list[str], cwd: Path,
                     timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs ``python *args`` in ``cwd`` with the kernel-copy cap ``variable`` set to ``cap`` (None:
    unset), importing this process's cion_fast. The kernels that read such a cap choose their copy
    once per process, so a narrower copy runs in a subprocess. Returns the finished process
    (output captured)."""
    env = environment_importing_this_package()
    env.pop(variable, None)
    if cap is not None:
        env[variable] = cap
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def assert_file_passes_under_isa_cap(variable: str, cap: str, test_file: str, deselect: str, cwd: Path) -> None:
    """Runs ``test_file``'s tests but those matching ``deselect`` (the ones that call this) in a
    subprocess with the kernel-copy cap ``variable`` = ``cap``; they must all pass."""
    done = run_with_isa_cap(variable, cap, ["-m", "pytest", "-q", "-p", "no:cacheprovider", test_file, "-k",
                                            f"not {deselect}"], cwd)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def run_ddp_worker(out: Path, *args: str) -> list[dict]:
    """Runs ``ddp_worker.py ARGS... OUT`` on 2 ranks (:func:`torchrun`) and returns the two ranks'
    saved tensors (see ddp_worker.py)."""
    from safetensors.torch import load_file

    torchrun(str(Path(__file__).resolve().parent / "ddp_worker.py"), *args, str(out), cwd=out)
    return [load_file(out / f"rank{r}.safetensors") for r in range(2)]


def assert_ranks_agree(ranks: list[dict]) -> None:
    """Both ranks end with the same parameters, after batches of different identities."""
    params = [k for k in ranks[0] if not k.startswith("batch.")]
    different = [k for k in params if not torch.equal(ranks[0][k], ranks[1][k])]
    assert params and not different, different[:5]
    first0, first1 = ranks[0]["batch.first"].tolist(), ranks[1]["batch.first"].tolist()
    assert first0 and first1 and not set(first0) & set(first1)  # each rank its own frames


POISON_FLOAT = 1.0e30
POISON_INT = -987654321


@pytest.fixture
def poisoned_outputs(monkeypatch):
    """Every output the ops allocate starts full of a poison value instead of whatever memory held,
    so an element a kernel forgets to write shows up as a wrong result."""
    original = _arrays.Placement.empty

    def poisoned_empty(self, shape, dtype, name="an output"):
        out = original(self, shape, dtype, name)
        if dtype in ("float16", "bfloat16", "float32", "float64"):
            out[...] = POISON_FLOAT if dtype in ("float32", "float64") else 1000.0
        elif dtype in ("int32", "int64"):
            out[...] = POISON_INT if dtype == "int64" else -98765
        elif dtype == "uint8":
            out[...] = 173
        elif dtype == "bool":
            out[...] = True
        return out

    monkeypatch.setattr(_arrays.Placement, "empty", poisoned_empty)
    yield


def to_framework(x: np.ndarray, framework: str):
    """numpy -> the named framework ('numpy', 'torch', 'torch_cuda', 'cupy')."""
    if framework == "numpy":
        return x
    if framework == "torch":
        return torch.from_numpy(np.ascontiguousarray(x))
    if framework == "torch_cuda":
        return torch.from_numpy(np.ascontiguousarray(x)).cuda()
    if framework == "cupy":
        return cupy.asarray(x)
    raise ValueError(framework)
