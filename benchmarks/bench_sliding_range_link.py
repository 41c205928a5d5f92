"""Benchmark: sliding_range_link (level-3 linking + connected components) against the plain-PyTorch
reference (a dense similarity matrix per range, torch.unique, label propagation).

Issue target: 400k identities over 20k videos (D = 256, window 8) in under 5 s on this machine,
with memory O(identities * D).

    python benchmarks/bench_sliding_range_link.py [--quick] [--device cuda]
"""

from __future__ import annotations

import numpy as np

from _common import measure, parser, print_header, print_row, write_json  # noqa: E402  (sets sys.path)
from _tools import floor_seconds, gemm_gflops, stream_gbps, timed_once

import torch  # noqa: E402

from cion_fast.ops import sliding_range_link  # noqa: E402
from cion_fast.reference import sliding_range_link as reference  # noqa: E402


def make_problem(num_identities: int, num_videos: int, dim: int, seed: int = 0):
    """Identities sorted by video (~20 per video). People recur in nearby videos: the identity of
    video v shows person 5 v + U[0, 40), so a person spans ~8 consecutive videos."""
    rng = np.random.default_rng(seed)
    video_ids = np.sort(rng.integers(0, num_videos, num_identities))
    person = 5 * video_ids + rng.integers(0, 40, num_identities)
    centres = rng.standard_normal((int(person.max()) + 1, dim), dtype=np.float32)
    features = centres[person] + 0.5 * rng.standard_normal((num_identities, dim), dtype=np.float32)
    return features, video_ids, person


def distinct_pairs(video_ids: np.ndarray, window: int, stride: int) -> float:
    """Cross-video pairs sharing at least one range, each counted once: the similarities any
    method has to compute (range r adds the pairs whose later video is past range r - 1)."""
    _, counts = np.unique(video_ids, return_counts=True)
    before = np.concatenate([[0], np.cumsum(counts)]).astype(np.float64)  # identities before each video
    total, start, previous_end = 0.0, 0, 0
    while True:
        end = min(start + window, len(counts))
        for v in range(max(start + 1, previous_end), end):
            total += counts[v] * (before[v] - before[start])
        if end == len(counts):
            return total
        previous_end, start = end, start + stride


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    env = print_header("sliding_range_link")
    print("   note: a shared 2-core machine; timings move with the other users' load")
    cuda = args.device == "cuda"
    num_identities, num_videos, dim = (20_000, 1_000, 256) if args.quick else (400_000, 20_000, 256)
    window, stride, threshold = 8, 4, 0.7
    features, video_ids, person = make_problem(num_identities, num_videos, dim)
    device = "cuda" if cuda else "cpu"
    tf, tv = torch.from_numpy(features).to(device), torch.from_numpy(video_ids).to(device)
    ours_in = (tf, tv) if cuda else (features, video_ids)
    gflops, gbps = gemm_gflops(device), stream_gbps(device)
    pairs = distinct_pairs(video_ids, window, stride)
    print(f"   {num_identities} identities over {num_videos} videos, D={dim}, window {window}, stride {stride}, "
          f"threshold {threshold}; {pairs / 1e6:.1f}M distinct cross-video pairs in ranges; features "
          f"{features.nbytes / 2**20:.0f} MB; machine now: GEMM {gflops:.0f} GFLOP/s, copy {gbps:.1f} GB/s")

    timing = dict(repeat=1, warmup=0) if args.quick else dict(repeat=args.repeat)
    rows = []
    for mutual_k in (None, 5):
        ours = lambda: sliding_range_link(*ours_in, window, stride, threshold, mutual_k)  # noqa: E731
        # Correctness first, in float64 on both sides so that no similarity sits within rounding of
        # a threshold or of a mutual-k boundary: the same links (as a set: the reference sorts
        # them) and the same partition.
        labels, links = sliding_range_link(tf.double(), tv, window, stride, threshold, mutual_k)
        labels, links = (labels.cpu().numpy(), links.cpu().numpy()) if cuda else (labels.numpy(), links.numpy())
        ref_labels, ref_links = reference.sliding_range_link(tf.cpu().double(), tv.cpu(), window, stride, threshold, mutual_k)
        np.testing.assert_array_equal(np.array(sorted(map(tuple, links.tolist()))).reshape(-1, 2), ref_links.numpy())
        np.testing.assert_array_equal(labels, ref_labels.numpy())
        same_person = float(np.mean(person[links[:, 0]] == person[links[:, 1]])) if len(links) else 1.0
        # Timing in float32 (the reference once: it is slow at full size).
        _, t_ref = timed_once(lambda: reference.sliding_range_link(tf.cpu(), tv.cpu(), window, stride, threshold, mutual_k))
        t_ours = measure(ours, cuda=cuda, **timing)
        links32 = ours()[1]
        links32 = links32.cpu().numpy() if cuda else links32
        borderline = len(set(map(tuple, links32.tolist())) ^ set(map(tuple, links.tolist())))
        # Floor: one dot product per distinct pair (similarities do not depend on the range) and one
        # read of the features. (The CPU kernel computes the pairs once without mutual_k; with it,
        # once for the thresholds and once more for the links.)
        floor = floor_seconds(2 * dim * pairs, features.nbytes, gflops, gbps)
        name = f"mutual_k={mutual_k}"
        print(f"   {name}: {len(links)} links ({same_person:.1%} join the same person), {int(labels.max()) + 1} "
              f"identities; float32 vs float64 links differ in {borderline} borderline pairs")
        print_row(f"reference {name}", t_ref)
        print_row(f"cion_fast {name}", t_ours, t_ref,
                  f"speed-up {t_ref['seconds'] / t_ours['seconds']:.1f}x, {t_ours['seconds'] / floor:.1f}x the floor, "
                  f"peak {t_ours['peak_mb'] / (features.nbytes / 2**20):.2f}x the features")
        rows.append(dict(mutual_k=mutual_k, links=int(len(links)), identities=int(labels.max()) + 1,
                         borderline_float32=borderline, reference=t_ref, ours=t_ours, floor_seconds=floor,
                         speedup=t_ref["seconds"] / t_ours["seconds"]))
        if not args.quick:
            met = t_ours["seconds"] < 5.0
            print(f"   target (400k identities in < 5 s): {t_ours['seconds']:.2f} s -> {'met' if met else 'NOT met'}")
    write_json("sliding_range_link" + ("_quick" if args.quick else "") + ("_cuda" if cuda else ""),
               dict(environment=env, identities=num_identities, videos=num_videos, dim=dim, window=window,
                    stride=stride, threshold=threshold, pairs=pairs, gemm_gflops=gflops, copy_gbps=gbps, rows=rows),
               args.json)


if __name__ == "__main__":
    main()
