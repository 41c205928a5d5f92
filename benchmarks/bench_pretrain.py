"""Pre-training throughput through the real trainer (sampler, uint8 batch -> device, fused
multicrop, student on every view + EMA teacher on the global ones, AdamW, AMP on GPUs): images/s
of whole training steps and the share of step time spent producing the views, per backbone.

Correctness first: the identity-guided loss with K = 1 equals DINO's loss (float64), and the
timed steps give a finite loss. Each round is ``STEPS`` training steps after one warm-up step;
the figure people quote, images/s of step time (checkpoint writes excluded), is in the notes.

    pytest benchmarks/bench_pretrain.py --benchmark-only [--full] [--device cuda]
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import bench

from cion_fast.pretrain import IdentityDINOLoss, PretrainConfig, Trainer

DEMO_VIEWS = {"global_size": (128, 64), "local_size": (64, 32), "n_local": 2}
SIZES = {  # (arch, options, per-process batch, multicrop overrides); the CION views unless overridden
    "default": {"test_vit 2x64x32+2x32x16": ("test_vit", {}, 8, {"global_size": (64, 32), "local_size": (32, 16), "n_local": 2})},
    "full": {"resnet18 demo views": ("resnet18", {}, 24, DEMO_VIEWS), "resnet18 CION views": ("resnet18", {}, 24, {}),
             "vit_tiny_patch16 CION views": ("vit_tiny_patch16_224", {}, 24, {})},
}
GPU_SIZES = {"resnet50-IBN-a ls1 CION views": ("resnet50", {"ibn": True, "last_stride": 1}, 96, {}),
             "vit_small_patch16 CION views": ("vit_small_patch16_224", {}, 96, {})}
STEPS, ROUNDS = 2, 3


@pytest.fixture(scope="module")
def loss_checked():
    """Correctness first: IdentityDINOLoss(K=1) == DINO's loss on random logits (float64)."""
    gen = torch.Generator().manual_seed(0)
    crops, batch, dim = 10, 6, 64
    student = torch.randn(crops * batch, dim, dtype=torch.float64, generator=gen)
    teacher = torch.randn(2 * batch, dim, dtype=torch.float64, generator=gen)
    ours = IdentityDINOLoss(dim, crops)(student, teacher, k=1)
    s = (student / 0.1).chunk(crops)
    t = F.softmax(teacher / 0.04, dim=-1).chunk(2)
    terms = [torch.sum(-q * F.log_softmax(s[v], dim=-1), dim=-1).mean() for iq, q in enumerate(t) for v in range(crops) if v != iq]
    torch.testing.assert_close(ours, sum(terms) / len(terms), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", list(GPU_SIZES), ids=list(GPU_SIZES))
def test_gpu_throughput(benchmark, loss_checked, device, case, tmp_path):
    if device != "cuda":
        pytest.skip("the GPU recipe's backbones (ResNet50-IBN-a, ViT-S/16 at batch 96): --device cuda")
    _throughput(benchmark, device, GPU_SIZES[case], tmp_path, case)


def test_throughput(benchmark, loss_checked, device, size, tmp_path, request):
    _throughput(benchmark, device, size, tmp_path, request.node.callspec.id)


def _throughput(benchmark, device, size, tmp_path, name):
    arch, options, batch, views = size
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (max(8 * batch, 256), 256, 128, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(frames.shape[0] // 8), 8)
    cion_k = batch % 24 == 0
    cfg = PretrainConfig(method="cion", arch=arch, steps=1 + STEPS * ROUNDS, batch_size=batch,
                         k_values=(2, 4, 6, 8) if cion_k else (2, 4), k_boundaries=(0.4, 0.6, 0.8) if cion_k else (0.5,),
                         device=device, progress=False, checkpoint_every=10**9, log_every=10**9, multicrop=views, **options)
    trainer = Trainer(cfg, frames, labels, tmp_path)
    summaries = []
    try:
        trainer.fit(until_step=1)  # warm-up: first-call allocations, autotuning
        bench(benchmark, lambda: summaries.append(trainer.fit(until_step=trainer.step + STEPS)), role="cion_fast",
              group=f"pretrain {name}, batch {batch}", device=device, rounds=ROUNDS, warmup=False, steps_per_round=STEPS)
    finally:
        trainer.close()
    assert all(np.isfinite(s["loss"]) for s in summaries)
    benchmark.extra_info.update(images_per_s=float(np.median([s["images_per_s"] for s in summaries])),
                                view_share=float(np.median([s["view_share"] for s in summaries])), amp=trainer.amp)
