"""Shared test fixtures: framework availability, CUDA skip, poisoned output allocation."""

from __future__ import annotations

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


POISON_FLOAT = 1.0e30
POISON_INT = -987654321


@pytest.fixture
def poisoned_outputs(monkeypatch):
    """Every output the ops allocate starts full of a poison value instead of whatever memory held,
    so an element a kernel forgets to write shows up as a wrong result."""
    original = _arrays.Placement.empty

    def poisoned_empty(self, shape, dtype):
        out = original(self, shape, dtype)
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
