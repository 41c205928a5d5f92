"""Benchmark: ReID ranking metrics (CMC / mAP / mINP) at Market-1501 and MSMT17 sizes.

Compares, in one run and on the same synthetic distance matrix:
  * cion_fast.ops.evaluate_rank (this package),
  * a bare ``np.argsort`` of the matrix: what torchreid's / fast-reid's Cython evaluators pay
    before anything else (fast-reid's takes 1.2 s at Market size on the 2-core dev machine,
    about one argsort),
  * the plain-PyTorch reference (cion_fast.reference.rank_metrics), a full stable sort per row,
and, at MSMT17 size, evaluate_rank_from_features (distance tiles, never the full matrix).

The physical floor is one read of the distance matrix (214 MB at Market size, 3.8 GB at MSMT).

    python benchmarks/bench_rank_metrics.py            # Market + MSMT sizes
    python benchmarks/bench_rank_metrics.py --quick    # a few seconds
"""

from __future__ import annotations

import time

import numpy as np

from _common import measure, parser, print_header, print_row, write_json

from cion_fast.ops import evaluate_rank, evaluate_rank_from_features


def synthetic_problem(num_query: int, num_gallery: int, num_pids: int, seed: int = 0):
    """Distances in [0, 1.6) with true matches pulled closer (a realistic mAP, not 0 or 1)."""
    rng = np.random.default_rng(seed)
    g_pids = rng.integers(0, num_pids, num_gallery)
    q_pids = g_pids[rng.integers(0, num_gallery, num_query)]
    q_camids = rng.integers(0, 6, num_query)
    g_camids = rng.integers(0, 6, num_gallery)
    distmat = rng.random((num_query, num_gallery), dtype=np.float32)
    distmat += np.float32(0.6) * (q_pids[:, None] != g_pids[None, :])
    return distmat, q_pids, g_pids, q_camids, g_camids


def check_correctness(problem, rows: int = 300) -> float:
    """Our per-query AP equals the plain-PyTorch reference on the first rows (float32 input)."""
    import torch

    from cion_fast.reference.rank_metrics import evaluate_rank as reference

    distmat, q_pids, g_pids, q_camids, g_camids = problem
    sub = (distmat[:rows], q_pids[:rows], g_pids, q_camids[:rows], g_camids)
    ours = evaluate_rank(*sub, return_per_query=True)
    ref = reference(*(torch.from_numpy(np.ascontiguousarray(a)) for a in sub))
    error = float(np.nanmax(np.abs(ours.average_precision - ref.average_precision)))
    assert error < 1e-9 and np.array_equal(ours.first_match, ref.first_match), error
    return error


def main() -> None:
    args = parser(__doc__.split("\n")[1]).parse_args()
    env = print_header("rank_metrics: CMC / mAP / mINP")
    sizes = {"quick": (500, 4000, 300)} if args.quick else {"market1501": (3368, 15913, 751), "msmt17": (11659, 82161, 3060)}
    results = {"environment": env, "cases": {}}
    for name, (num_query, num_gallery, num_pids) in sizes.items():
        t0 = time.perf_counter()
        problem = synthetic_problem(num_query, num_gallery, num_pids)
        matrix_mb = problem[0].nbytes / 2**20
        print(f"-- {name}: Q={num_query}, G={num_gallery}, distmat {matrix_mb:.0f} MB (made in {time.perf_counter() - t0:.1f} s)")
        error = check_correctness(problem)
        print(f"   correctness vs plain-PyTorch reference (300 queries): max |dAP| = {error:.1e}")
        case = {"num_query": num_query, "num_gallery": num_gallery, "matrix_mb": matrix_mb}

        ours = measure(lambda: evaluate_rank(*problem), repeat=args.repeat)
        case["cion_fast"] = ours
        result = evaluate_rank(*problem)
        case["mAP"] = result.mAP
        if name != "msmt17" or args.quick:
            argsort = measure(lambda: np.argsort(problem[0], axis=1), repeat=args.repeat)
            case["np_argsort"] = argsort
            print_row("np.argsort of the matrix (Cython evaluators' floor)", argsort)
            print_row("cion_fast.evaluate_rank", ours, argsort, f"(extra memory {ours['peak_mb'] / matrix_mb:.1%} of the matrix)")
            import torch

            from cion_fast.reference.rank_metrics import evaluate_rank as reference

            tensors = [torch.from_numpy(a) for a in problem]
            ref = measure(lambda: reference(*tensors), repeat=1)
            case["torch_reference"] = ref
            print_row("plain-PyTorch reference (stable sort per row)", ref, argsort)
            print(f"   -> cion_fast is {ref['seconds'] / ours['seconds']:.1f}x faster than the PyTorch reference, "
                  f"{argsort['seconds'] / ours['seconds']:.1f}x faster than a bare argsort")
        else:
            print_row("cion_fast.evaluate_rank", ours, None, f"(extra memory {ours['peak_mb'] / matrix_mb:.1%} of the matrix)")
        if name == "msmt17" or args.quick:
            rng = np.random.default_rng(1)
            dim = 768 if not args.quick else 64
            centres = rng.normal(size=(num_pids, dim)).astype(np.float32)
            _, q_pids, g_pids, q_camids, g_camids = problem
            del problem
            query = centres[q_pids] + rng.normal(size=(num_query, dim)).astype(np.float32)
            gallery = centres[g_pids] + rng.normal(size=(num_gallery, dim)).astype(np.float32)
            features = measure(
                lambda: evaluate_rank_from_features(query, gallery, q_pids, g_pids, q_camids, g_camids),
                repeat=1,
            )
            case["from_features"] = features
            gemm_flops = 2.0 * num_query * num_gallery * dim
            print_row(f"evaluate_rank_from_features (D={dim}, tiled GEMM)", features, None,
                      f"(GEMM {gemm_flops / 1e12:.2f} TFLOP -> {gemm_flops / features['seconds'] / 1e9:.0f} GFLOP/s)")
        results["cases"][name] = case
    write_json("bench_rank_metrics", results, args.json)


if __name__ == "__main__":
    main()
