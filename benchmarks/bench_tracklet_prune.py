"""Benchmark: tracklet_prune (level-1 denoising) against the plain-PyTorch padded reference.

Issue target: 1M frames in 100k tracklets (D = 256) in under 2 s on this machine.

    python benchmarks/bench_tracklet_prune.py [--quick] [--device cuda]
"""

from __future__ import annotations

import numpy as np

from _common import measure, parser, print_header, print_row, write_json  # noqa: E402  (sets sys.path)
from _tools import floor_seconds, gemm_gflops, stream_gbps, timed_once

import torch  # noqa: E402

from cion_fast.ops import tracklet_prune  # noqa: E402
from cion_fast.reference import tracklet_prune as reference  # noqa: E402


def make_problem(num_tracklets: int, dim: int, outlier_rate: float = 0.15, seed: int = 0):
    """Tracklets of 2-18 frames (10 on average) around their own centre; a share of frames
    belong to someone else (identity switches, contamination)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 19, num_tracklets)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    owner = np.repeat(np.arange(num_tracklets), lengths)
    switched = rng.random(len(owner)) < outlier_rate
    owner[switched] = rng.integers(0, num_tracklets, int(switched.sum()))
    features = rng.standard_normal((num_tracklets, dim), dtype=np.float32)[owner]
    features += 0.8 * rng.standard_normal(features.shape, dtype=np.float32)
    return features, offsets


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    env = print_header("tracklet_prune")
    print("   note: a shared 2-core machine; timings move with the other users' load")
    cuda = args.device == "cuda"
    num_tracklets, dim = (2_000, 256) if args.quick else (100_000, 256)
    features, offsets = make_problem(num_tracklets, dim)
    frames = features.shape[0]
    device = "cuda" if cuda else "cpu"
    tf, to = torch.from_numpy(features).to(device), torch.from_numpy(offsets).to(device)
    ours_in = (tf, to) if cuda else (features, offsets)

    keep = tracklet_prune(*ours_in)
    keep = keep.cpu().numpy() if cuda else keep
    # The reference is slow at full size: its one run is both the correctness check and its timing.
    expected, t_ref = timed_once(lambda: reference.tracklet_prune(tf, to), cuda=cuda)
    expected = expected.cpu().numpy()
    np.testing.assert_array_equal(keep, expected)  # correctness first
    gflops, gbps = gemm_gflops(device), stream_gbps(device)
    # Each frame is read once; the work is ~3 dot products of D per frame plus one per drop and kept frame.
    dropped = int((~keep).sum())
    flops = 2 * dim * (3 * frames + dropped * 10)
    floor = floor_seconds(flops, features.nbytes + frames, gflops, gbps)
    print(f"   {frames} frames in {num_tracklets} tracklets, D={dim}; kept {keep.mean():.1%}; machine now: "
          f"GEMM {gflops:.0f} GFLOP/s, copy {gbps:.1f} GB/s; floor {floor * 1e3:.0f} ms (one read of the features)")

    timing = dict(repeat=1, warmup=0) if args.quick else dict(repeat=args.repeat)
    t_ours = measure(lambda: tracklet_prune(*ours_in), cuda=cuda, **timing)
    print_row("reference (padded, batched torch)", t_ref)
    print_row("cion_fast tracklet_prune", t_ours, t_ref,
              f"speed-up {t_ref['seconds'] / t_ours['seconds']:.1f}x, {t_ours['seconds'] / floor:.1f}x the floor")
    if not args.quick:
        met = t_ours["seconds"] < 2.0
        print(f"   target (1M frames in < 2 s): {t_ours['seconds']:.2f} s -> {'met' if met else 'NOT met'}")
    write_json("tracklet_prune" + ("_quick" if args.quick else "") + ("_cuda" if cuda else ""),
               dict(environment=env, frames=frames, tracklets=num_tracklets, dim=dim, kept=float(keep.mean()),
                    gemm_gflops=gflops, copy_gbps=gbps, floor_seconds=floor, reference=t_ref, ours=t_ours),
               args.json)


if __name__ == "__main__":
    main()
