"""Benchmark of k-reciprocal re-ranking (issue 3): correctness first, then time and peak memory.

Rows:
* ``compare``: our op against the plain-PyTorch reference (dense, cion_fast/reference) at a size
  where the reference fits (N = 5,000), same features, same run.
* ``market``: Market-1501 size (Q = 3,368, G = 15,913, D = 2,048) against the physical floor, the
  distance GEMM of the same features measured in the same run: the full N x N GEMM (what any exact
  re-ranking must compute) and its symmetric half (what we compute: each pair of tiles once).
* ``msmt``: MSMT17 size (Q = 11,659, G = 82,161, D = 768): time and peak memory (the reference
  would need 35 GB per dense N x N array). Minutes on a 2-core machine: run it explicitly.

    python benchmarks/bench_k_reciprocal.py --quick                 # seconds
    python benchmarks/bench_k_reciprocal.py                         # compare + market
    python benchmarks/bench_k_reciprocal.py --sizes msmt            # MSMT17 size
    python benchmarks/bench_k_reciprocal.py --device cuda --sizes compare market msmt
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import torch

from _common import PeakMemory, measure, parser, print_header, print_row, write_json

from cion_fast.ops import k_reciprocal_rerank
from cion_fast.ops._distance import tile_distances
from cion_fast.reference import k_reciprocal as reference

SIZES = {  # name: (Q, G, D)
    "compare": (870, 4130, 2048),
    "market": (3368, 15913, 2048),
    "msmt": (11659, 82161, 768),
}
QUICK_SIZES = {"compare": (100, 500, 128), "market": (500, 2500, 256), "msmt": (1000, 7000, 128)}
GEMM_TILE = 2048


def features(num_items: int, dim: int, device: str, seed: int = 0) -> torch.Tensor:
    """ReID-like features: identities of ~13 images each (Market-1501 has 1,501 ids for 19,281
    boxes), a unit-variance spread around each centre; float32, L2-normalised like most models."""
    generator = torch.Generator().manual_seed(seed)
    identities = max(2, num_items // 13)
    centres = torch.randn(identities, dim, generator=generator)
    labels = torch.randint(0, identities, (num_items,), generator=generator)
    x = centres[labels] + 0.8 * torch.randn(num_items, dim, generator=generator)
    return torch.nn.functional.normalize(x, dim=1).to(device)


def bare_gemm(x: torch.Tensor, symmetric_half: bool) -> None:
    """All N x N squared distances in [tile, tile] GEMM tiles, discarded: the floor. With
    symmetric_half only the tiles a <= b (what the op computes)."""
    n = x.shape[0]
    squared = (x * x).sum(1)
    for a in range(0, n, GEMM_TILE):
        for b in range(a if symmetric_half else 0, n, GEMM_TILE):
            tile_distances("torch", x[a:a + GEMM_TILE], x[b:b + GEMM_TILE], squared[b:b + GEMM_TILE], "sqeuclidean")


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def once(fn, device: str) -> dict[str, float]:
    """One run timed with its peak memory (for sizes where a second run costs minutes)."""
    synchronize(device)
    with PeakMemory(cuda=device == "cuda") as memory:
        start = time.perf_counter()
        fn()
        synchronize(device)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "seconds_min": seconds, "peak_mb": memory.peak_bytes / 2**20,
            "cuda_peak_mb": memory.cuda_peak_bytes / 2**20}


def check_correctness(device: str) -> float:
    """Largest difference to the float64 plain-PyTorch reference on a small problem; exits on failure."""
    x = features(400, 32, "cpu", seed=1).double()
    expected = reference.k_reciprocal_rerank(x[:60], x[60:]).numpy()
    got = k_reciprocal_rerank(x[:60].float().to(device), x[60:].float().to(device))
    error = float(np.abs(got.cpu().numpy() - expected).max())
    print(f"   correctness: max |ours - reference (float64)| = {error:.2e} on N = 400")
    if not error < 1e-5:
        print("   FAILED: the op disagrees with the reference")
        sys.exit(1)
    return error


def run_compare(q: int, g: int, d: int, device: str, repeat: int, results: dict[str, Any]) -> None:
    x = features(q + g, d, device)
    query, gallery = x[:q], x[q:]
    ours = measure(lambda: k_reciprocal_rerank(query, gallery), repeat=repeat, cuda=device == "cuda")
    ref = measure(lambda: reference.k_reciprocal_rerank(query, gallery), repeat=1, warmup=0, cuda=device == "cuda")
    error = float((k_reciprocal_rerank(query, gallery) - reference.k_reciprocal_rerank(query, gallery)).abs().max())
    print(f"-- N = {q + g} (Q = {q}, G = {g}, D = {d}): ours vs plain-PyTorch reference (max |diff| {error:.1e})")
    print_row("plain-PyTorch reference (dense)", ref)
    print_row("cion_fast k_reciprocal_rerank", ours, ref, "(ratio to the reference)")
    results["compare"] = {"Q": q, "G": g, "D": d, "reference": ref, "ours": ours, "max_abs_diff": error,
                          "speedup": ref["seconds"] / ours["seconds"]}


def run_floor(name: str, q: int, g: int, d: int, device: str, repeat: int, big: bool, results: dict[str, Any]) -> None:
    x = features(q + g, d, device)
    query, gallery = x[:q], x[q:]
    n = q + g
    timer = (lambda fn: once(fn, device)) if big else (lambda fn: measure(fn, repeat=repeat, cuda=device == "cuda"))
    ours = timer(lambda: k_reciprocal_rerank(query, gallery))
    half = timer(lambda: bare_gemm(x, symmetric_half=True))
    full = None if name == "msmt" else timer(lambda: bare_gemm(x, symmetric_half=False))
    flops = 2.0 * n * n * d
    output_mb = q * g * 4 / 2**20
    print(f"-- {name}: N = {n} (Q = {q}, G = {g}, D = {d}); output {output_mb:.0f} MB; "
          f"full GEMM {flops / 1e12:.2f} TFLOP")
    if full is not None:
        print_row("bare distance GEMM, full N x N (floor)", full, extra=f"{flops / full['seconds'] / 1e9:.0f} GFLOP/s")
    print_row("bare distance GEMM, symmetric half", half, full, f"{flops / 2 / half['seconds'] / 1e9:.0f} GFLOP/s")
    print_row("cion_fast k_reciprocal_rerank", ours, full or half,
              "(ratio to the full GEMM)" if full else "(ratio to the half GEMM)")
    if full is not None:
        print(f"   ours / half GEMM = {ours['seconds'] / half['seconds']:.3f}x; "
              f"ours / full GEMM = {ours['seconds'] / full['seconds']:.3f}x (target <= 1.3x)")
    results[name] = {"Q": q, "G": g, "D": d, "ours": ours, "gemm_half": half, "gemm_full": full,
                     "ratio_to_full_gemm": ours["seconds"] / full["seconds"] if full else None,
                     "ratio_to_half_gemm": ours["seconds"] / half["seconds"], "output_mb": output_mb}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["compare", "market"])
    args = p.parse_args()
    env = print_header("k_reciprocal: re-ranking vs plain-PyTorch reference and the GEMM floor")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda needs a GPU")
    sizes = QUICK_SIZES if args.quick else SIZES
    results: dict[str, Any] = {"environment": env, "device": args.device, "quick": args.quick,
                               "correctness_max_abs_diff": check_correctness(args.device)}
    for name in args.sizes:
        q, g, d = sizes[name]
        if name == "compare":
            run_compare(q, g, d, args.device, args.repeat, results)
        else:
            run_floor(name, q, g, d, args.device, args.repeat, big=not args.quick, results=results)
    write_json("k_reciprocal" + ("_quick" if args.quick else ""), results, args.json)


if __name__ == "__main__":
    main()
