"""One table for a GPU check: every op on one device, against its plain-PyTorch reference on the same
device and against the op's physical floor, with the correctness check first.

    python benchmarks/gpu_summary.py --device cuda --out DIR     # what tools/gpu_check.sh runs
    python benchmarks/gpu_summary.py --device cpu --small        # the CPU rehearsal (seconds)

The floor of each op is the least work any implementation must do: the distance GEMM (cuBLAS via
torch.mm) for re-ranking and tracklet similarity, one read of the matrix for the ranking metrics,
the bytes of the output views written once for multicrop, one read of the features for pruning
and linking. The sizes are meant to keep the table to about a minute on an H100/H200 (an
estimate: not yet run on a GPU). Writes
``DIR/gpu_summary.json`` and ``DIR/gpu_summary.md`` (the table, with the device named).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, measure  # noqa: E402

from cion_fast import ops  # noqa: E402
from cion_fast.ops import MultiCropConfig  # noqa: E402
from cion_fast.reference import k_reciprocal as ref_k_reciprocal  # noqa: E402
from cion_fast.reference import multicrop as reference_multicrop  # noqa: E402
from cion_fast.reference import rank_metrics as ref_rank_metrics  # noqa: E402
from cion_fast.reference import sliding_range_link as ref_sliding_range_link  # noqa: E402
from cion_fast.reference import tracklet_prune as ref_tracklet_prune  # noqa: E402
from cion_fast.reference import tracklet_similarity as ref_tracklet_similarity  # noqa: E402

SIZES = {  # (large = GPU check, small = CPU rehearsal)
    "evaluate_rank": {"large": (3368, 15913, 751), "small": (100, 400, 30)},
    "k_reciprocal_rerank": {"large": (3368, 15913, 2048), "small": (60, 240, 64)},
    "tracklet_similarity": {"large": (4000, 30, 256), "small": (80, 6, 32)},
    "tracklet_prune": {"large": (200_000, 10, 256), "small": (400, 6, 32)},
    "sliding_range_link": {"large": (400_000, 20_000, 256), "small": (800, 40, 32)},
    "multicrop": {"large": (64, 256, 128), "small": (4, 64, 32)},
}


def timed(fn, device: str, repeat: int) -> float:
    """Median seconds of ``fn`` (the benchmarks' one timer, :func:`_common.measure`: CUDA events on
    the GPU, the first run as warm-up)."""
    return measure(fn, repeat=repeat, cuda=device == "cuda")["seconds"]


def _ragged(num: int, length: int, dim: int, device: str, seed: int):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 2 * length, (num,), generator=generator)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    features = torch.randn(int(offsets[-1]), dim, generator=generator)
    return features.to(device), offsets.to(device)


def cases(device: str, size: str):
    """(op, size text, ours, reference or None, floor, floor name, check) for every op."""
    generator = torch.Generator().manual_seed(0)

    num_query, num_gallery, num_pids = SIZES["evaluate_rank"][size]
    distmat = torch.rand(num_query, num_gallery, generator=generator).to(device)
    ids = [torch.randint(0, n, (m,), generator=generator).to(device) for n, m in
           ((num_pids, num_query), (num_pids, num_gallery), (6, num_query), (6, num_gallery))]

    def check_rank():
        ours, ref = ops.evaluate_rank(distmat, *ids), ref_rank_metrics.evaluate_rank(distmat, *ids)
        return abs(ours.mAP - ref.mAP)
    yield ("evaluate_rank", f"{num_query} x {num_gallery}", lambda: ops.evaluate_rank(distmat, *ids),
           lambda: ref_rank_metrics.evaluate_rank(distmat, *ids), lambda: distmat.sum(), "one read of distmat", check_rank)

    num_query, num_gallery, dim = SIZES["k_reciprocal_rerank"][size]
    features = torch.nn.functional.normalize(torch.randn(num_query + num_gallery, dim, generator=generator), dim=1).to(device)
    query, gallery = features[:num_query], features[num_query:]

    def check_rerank():
        small_q, small_g = query[:50], gallery[:200]
        return float((ops.k_reciprocal_rerank(small_q, small_g) - ref_k_reciprocal.k_reciprocal_rerank(small_q, small_g)).abs().max())
    yield ("k_reciprocal_rerank", f"N = {num_query + num_gallery}, D = {dim}", lambda: ops.k_reciprocal_rerank(query, gallery),
           None, lambda: features @ features.T, "N x N distance GEMM", check_rerank)

    num, length, dim = SIZES["tracklet_similarity"][size]
    frames, offsets = _ragged(num, length, dim, device, 1)
    yield ("tracklet_similarity (max)", f"{num} tracklets, {frames.shape[0]} frames, D = {dim}",
           lambda: ops.tracklet_similarity(frames, offsets, mode="max"),
           lambda: ref_tracklet_similarity.tracklet_similarity(frames, offsets, mode="max"), lambda: frames @ frames.T,
           "M x M frame GEMM",
           lambda: float((ops.tracklet_similarity(frames, offsets, mode="max")
                          - ref_tracklet_similarity.tracklet_similarity(frames, offsets, mode="max")).abs().max()))

    num, length, dim = SIZES["tracklet_prune"][size]
    frames_p, offsets_p = _ragged(num // length, length, dim, device, 2)
    yield ("tracklet_prune", f"{frames_p.shape[0]} frames, D = {dim}", lambda: ops.tracklet_prune(frames_p, offsets_p),
           lambda: ref_tracklet_prune.tracklet_prune(frames_p, offsets_p), lambda: frames_p.sum(), "one read of the features",
           lambda: float((ops.tracklet_prune(frames_p, offsets_p) != ref_tracklet_prune.tracklet_prune(frames_p, offsets_p)).float().mean()))

    num, videos, dim = SIZES["sliding_range_link"][size]
    centroids = torch.nn.functional.normalize(torch.randn(num, dim, generator=generator), dim=1).to(device)
    video_ids = torch.sort(torch.randint(0, videos, (num,), generator=generator))[0].to(device)

    def check_link():
        ours = ops.sliding_range_link(centroids[:2000], video_ids[:2000], threshold=0.3)[0]
        ref = ref_sliding_range_link.sliding_range_link(centroids[:2000], video_ids[:2000], threshold=0.3)[0]
        return float((ours != ref).float().mean())
    yield ("sliding_range_link", f"{num} identities, {videos} videos, D = {dim}",
           lambda: ops.sliding_range_link(centroids, video_ids, threshold=0.3),
           lambda: ref_sliding_range_link.sliding_range_link(centroids, video_ids, threshold=0.3), lambda: centroids.sum(),
           "one read of the features", check_link)

    batch, height, width = SIZES["multicrop"][size]
    images = torch.randint(0, 256, (batch, height, width, 3), dtype=torch.uint8, generator=generator).to(device)
    config = MultiCropConfig.cion(global_size=(height, width), local_size=(height // 2, width // 2))
    result = ops.multicrop(images, config, seed=0, return_params=True)
    out_bytes = sum(v.numel() * v.element_size() for v in (result.global_views, result.local_views))
    scratch = torch.empty(out_bytes // 4, dtype=torch.float32, device=device)
    chw = [img.permute(2, 0, 1).contiguous() for img in images]

    def check_multicrop():
        ref_global, _ = reference_multicrop.multicrop(chw, config, result.params)
        return float((result.global_views[0] - ref_global[0]).abs().max())
    yield ("multicrop", f"{batch} images {height}x{width}, 2 global + {config.n_local} local views",
           lambda: ops.multicrop(images, config, seed=0), lambda: reference_multicrop.multicrop(chw, config, result.params),
           lambda: scratch.fill_(1.0), f"writing the views once ({out_bytes / 2**20:.0f} MB)", check_multicrop)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--small", action="store_true", help="rehearsal sizes (seconds on a CPU)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_summary: --device cuda but torch sees no GPU", file=sys.stderr)
        return 2
    env = environment()
    where = env.get("gpu", "none") if args.device == "cuda" else f"{env['cpu']} ({env['cores']} cores)"
    print(f"== gpu_summary on {args.device}: {where}")
    rows = []
    for op, size, ours, ref, floor, floor_name, check in cases(args.device, "small" if args.small else "large"):
        row = {"op": op, "size": size, "floor": floor_name}
        try:
            row["check"] = check()
            row["seconds"] = timed(ours, args.device, args.repeat)
            row["reference_seconds"] = timed(ref, args.device, 1) if ref is not None else None
            row["floor_seconds"] = timed(floor, args.device, args.repeat)
        except Exception as error:  # noqa: BLE001 - one failing op must not hide the others' figures
            row["error"] = f"{type(error).__name__}: {error}"
        rows.append(row)
        print(json.dumps(row), flush=True)
    lines = [f"Device: {where} (torch {env.get('torch')}, {time.strftime('%Y-%m-%d')})", "",
             "| op | size | cion_fast | vs reference | vs floor | floor | check |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['op']} | {r['size']} | failed: {r['error'][:80]} | | | {r['floor']} | |")
            continue
        vs_ref = f"{r['reference_seconds'] / r['seconds']:.1f}x faster" if r["reference_seconds"] else "not timed (per-row Python loop)"
        lines.append(f"| {r['op']} | {r['size']} | {r['seconds'] * 1e3:.2f} ms | {vs_ref} | "
                     f"{r['seconds'] / r['floor_seconds']:.1f}x the floor | {r['floor']} | {r['check']:.1e} |")
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_summary.json").write_text(json.dumps({"environment": env, "device": args.device, "rows": rows}, indent=2, default=str))
    (args.out / "gpu_summary.md").write_text(table + "\n")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
