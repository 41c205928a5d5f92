"""Pre-training throughput: images/s of the whole training step and the share of step time spent
producing views (gather uint8 batch -> device -> fused multicrop op), per backbone.

Correctness first: the identity-guided loss with K = 1 must equal DINO's loss, and a short run must
give a finite loss. Then each case warms up and times whole training steps through the real
trainer (sampler, multicrop, student + EMA teacher, AdamW, AMP on GPUs).

    python benchmarks/bench_pretrain.py                  # CPU: small backbones, CION recipe
    python benchmarks/bench_pretrain.py --device cuda    # GPU: ResNet50-IBN-a (last stride 1), ViT-S/16 at 256x128
    python benchmarks/bench_pretrain.py --quick          # a smoke run in seconds
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

from _common import parser, print_header, write_json

from cion_fast.pretrain import IdentityDINOLoss, PretrainConfig, Trainer

CPU_CASES = [
    # (name, arch, options, per-process batch, multicrop)
    ("resnet18 demo views 2x128x64 + 2x64x32", "resnet18", {}, 24, {"global_size": (128, 64), "local_size": (64, 32), "n_local": 2}),
    ("resnet18 CION views 2x256x128 + 8x128x64", "resnet18", {}, 24, {}),
    ("vit_tiny_patch16 CION views 2x256x128 + 8x128x64", "vit_tiny_patch16_224", {}, 24, {}),
]
GPU_CASES = [
    ("resnet50-IBN-a last stride 1, 256x128", "resnet50", {"ibn": True, "last_stride": 1}, 96, {}),
    ("vit_small_patch16 (ViT-S/16), 256x128", "vit_small_patch16_224", {}, 96, {}),
]
QUICK_CASES = [("test_vit 2x64x32 + 2x32x16", "test_vit", {}, 8, {"global_size": (64, 32), "local_size": (32, 16), "n_local": 2})]


def check_correctness() -> None:
    """IdentityDINOLoss(K=1) == DINO's loss on random logits (float64)."""
    gen = torch.Generator().manual_seed(0)
    crops, batch, dim = 10, 6, 64
    student = torch.randn(crops * batch, dim, dtype=torch.float64, generator=gen)
    teacher = torch.randn(2 * batch, dim, dtype=torch.float64, generator=gen)
    ours = IdentityDINOLoss(dim, crops)(student, teacher, k=1)
    s = (student / 0.1).chunk(crops)
    t = F.softmax(teacher / 0.04, dim=-1).chunk(2)
    terms = [torch.sum(-q * F.log_softmax(s[v], dim=-1), dim=-1).mean() for iq, q in enumerate(t) for v in range(crops) if v != iq]
    reference = sum(terms) / len(terms)
    if not torch.allclose(ours, reference, rtol=1e-10, atol=1e-12):
        raise SystemExit(f"correctness check failed: {ours.item()} != {reference.item()}")
    print("   correctness: IdentityDINOLoss(K=1) == DINO's loss (float64)")


def run_case(name, arch, options, batch, multicrop, device, steps, warmup, source_size):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (max(8 * batch, 256), *source_size, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(frames.shape[0] // 8), 8)
    steps_total = warmup + steps
    cfg = PretrainConfig(method="cion", arch=arch, steps=steps_total, batch_size=batch, k_values=(2, 4, 6, 8) if batch % 24 == 0 else (2, 4),
                         k_boundaries=(0.4, 0.6, 0.8) if batch % 24 == 0 else (0.5,), device=device, progress=False,
                         checkpoint_every=10**9, log_every=10**9, multicrop=multicrop, **options)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(cfg, frames, labels, out)
        trainer.fit(until_step=warmup)
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        summary = trainer.fit()
        peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
        trainer.close()
    if not np.isfinite(summary["loss"]):
        raise SystemExit(f"{name}: non-finite loss")
    row = {"case": name, "arch": arch, "options": options, "batch": batch, "steps": steps, "images_per_s": summary["images_per_s"],
           "view_share": summary["view_share"], "loss": summary["loss"], "amp": trainer.amp, "gpu_peak_gib": peak,
           "views": {k: getattr(trainer.multicrop_config, k) for k in ("global_size", "n_global", "local_size", "n_local")}}
    print(f"   {name:<52s} batch {batch:4d}  {summary['images_per_s']:9.1f} images/s  views {100 * summary['view_share']:5.1f}% of step time"
          + (f"  peak {peak:.1f} GiB" if device == "cuda" else ""))
    return row


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="timed steps per case (default 3 on CPU, 20 on GPU)")
    p.add_argument("--batch-size", type=int, default=None, help="override every case's per-process batch")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    env = print_header("pre-training throughput (CION: student all views, EMA teacher global views)")
    check_correctness()
    if args.quick:
        cases, steps, warmup = QUICK_CASES, 2, 1
    elif args.device == "cuda":
        cases, steps, warmup = GPU_CASES, args.steps or 20, 3
    else:
        cases, steps, warmup = CPU_CASES, args.steps or 3, 1
    rows = []
    start = time.perf_counter()
    for name, arch, options, batch, multicrop in cases:
        rows.append(run_case(name, arch, options, args.batch_size or batch, multicrop, args.device, steps, warmup, (256, 128)))
    print(f"   total {time.perf_counter() - start:.1f} s")
    write_json("bench_pretrain" + ("_quick" if args.quick else f"_{args.device}"), {"environment": env, "results": rows}, args.json)


if __name__ == "__main__":
    main()
