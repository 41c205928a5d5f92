"""k-reciprocal re-ranking (Zhong et al. 2017): ``k_reciprocal_rerank`` against the plain-PyTorch
reference (dense N x N arrays; run where it fits, N <= 5,000) and the floor, the distance GEMM of
the same features in [1024, 1024] tiles over the symmetric half (each pair of tiles once: what any
exact re-ranking must compute, and what the op computes). The original numpy ``re_ranking``
(torchreid's copy is bit-identical) is the reference's algorithm; its figure at Market size is
quoted from docs/ALGORITHMS.md, "Reference figures not re-run here" (41.7 s + 10.2 s of distances,
8.8 GB).

    pytest benchmarks/bench_k_reciprocal.py --benchmark-only [--full] [--device cuda]
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import bench

from cion_fast._arrays import to_numpy
from cion_fast.ops import k_reciprocal_rerank
from cion_fast._xp import gram
from cion_fast.reference import k_reciprocal as reference

SIZES = {  # (Q, G, D)
    "default": {"small": (100, 500, 128), "medium": (500, 2500, 256)},
    "full": {"compare": (870, 4130, 2048), "market1501": (3368, 15913, 2048), "msmt17": (11659, 82161, 768)},
}
REFERENCE_MAX_ITEMS = 5_000  # the reference holds several dense float32 N x N arrays
GEMM_TILE = 1024  # the fastest tiling of the half GEMM on the 2-core CPU (2048: 8-20 % slower)


def features(num_items: int, dim: int, device: str, seed: int = 0) -> torch.Tensor:
    """ReID-like features: identities of ~13 images each (Market-1501 has 1,501 ids for 19,281
    boxes), a unit-variance spread around each centre; float32, L2-normalised like most models."""
    generator = torch.Generator().manual_seed(seed)
    identities = max(2, num_items // 13)
    centres = torch.randn(identities, dim, generator=generator)
    labels = torch.randint(0, identities, (num_items,), generator=generator)
    x = centres[labels] + 0.8 * torch.randn(num_items, dim, generator=generator)
    return torch.nn.functional.normalize(x, dim=1).to(device)


def symmetric_gemm(x: torch.Tensor) -> None:
    """The dot products of the distance matrix in [tile, tile] GEMM tiles a <= b, discarded."""
    n = x.shape[0]
    for a in range(0, n, GEMM_TILE):
        for b in range(a, n, GEMM_TILE):
            gram(x[a:a + GEMM_TILE], x[b:b + GEMM_TILE])


@pytest.fixture(scope="module")
def problem(size, device):
    """Features on the device, after the correctness check: on N = 400 the op equals the float64
    reference within 1e-5."""
    x = features(400, 32, "cpu", seed=1).double()
    expected = reference.k_reciprocal_rerank(x[:60], x[60:]).numpy()
    got = to_numpy(k_reciprocal_rerank(x[:60].float().to(device), x[60:].float().to(device)))
    error = float(np.abs(got - expected).max())
    assert error < 1e-5, f"k_reciprocal_rerank differs from the float64 reference by {error}"
    q, g, d = size
    x = features(q + g, d, device)
    rounds = 3 if q + g <= 5_000 else 1
    return {"query": x[:q], "gallery": x[q:], "all": x, "rounds": rounds,
            "group": f"k_reciprocal_rerank Q = {q}, G = {g}, D = {d}", "output_mb": q * g * 4 / 2**20}


def test_cion_fast(benchmark, problem, device):
    bench(benchmark, lambda: k_reciprocal_rerank(problem["query"], problem["gallery"]), role="cion_fast",
          group=problem["group"], device=device, rounds=problem["rounds"], warmup=problem["rounds"] > 1,
          output_mb=problem["output_mb"])


def test_reference(benchmark, problem, device):
    if problem["all"].shape[0] > REFERENCE_MAX_ITEMS:
        pytest.skip(f"the dense reference needs several N x N arrays: run where N <= {REFERENCE_MAX_ITEMS}")
    bench(benchmark, lambda: reference.k_reciprocal_rerank(problem["query"], problem["gallery"]), role="reference",
          group=problem["group"], device=device, rounds=1, warmup=False)


def test_floor_distance_gemm(benchmark, problem, device):
    x = problem["all"]
    bench(benchmark, lambda: symmetric_gemm(x), role="floor", group=problem["group"], device=device,
          rounds=problem["rounds"], warmup=problem["rounds"] > 1, note="the distance GEMM, symmetric half",
          tflop=x.shape[0] ** 2 * x.shape[1] / 1e12)
