"""``multicrop``: all CION views (2 x 256x128 + 8 x 128x64, DINO's recipe at ReID sizes) of a batch
of 256x128 person images, against the same ops per image in plain PyTorch (``cion_fast.reference``,
with the parameters the op drew), DINO's PIL/torchvision ``DataAugmentationDINO`` per image (what
ReID pre-training runs today, in DataLoader workers: single-threaded each, so W workers run W at
once), and the floor, writing the views' bytes once. A second group times the op writing into the
same buffers every call (``out=``), a training loop's steady state: no fresh pages to zero.

Correctness first: the op's views equal the plain-PyTorch reference with the returned parameters
within 2/255, else nothing is timed.

    pytest benchmarks/bench_multicrop.py --benchmark-only [--full] [--device cuda]
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from conftest import bench

from cion_fast.ops import MultiCropConfig, multicrop
from cion_fast.reference import multicrop as reference

SIZES = {"default": {"batch16": 16}, "full": {"batch64": 64}}  # source images per call (x 8 on a GPU)


def make_images(batch: int, seed: int = 0) -> np.ndarray:
    """Smooth random person-sized images (structure, not noise, so the ops have work to show)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (batch, 32, 16, 3)).astype(np.float32)
    big = torch.nn.functional.interpolate(torch.from_numpy(base).permute(0, 3, 1, 2), size=(256, 128), mode="bilinear")
    noise = rng.normal(0, 12, (batch, 3, 256, 128))
    return np.clip(big.numpy() + noise, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1).copy()


def pil_pipeline(config: MultiCropConfig):
    """DINO's DataAugmentationDINO (PIL + torchvision.transforms), with the config's sizes/ranges."""
    from PIL import ImageFilter, ImageOps
    from torchvision import transforms as T

    class GaussianBlur:
        def __init__(self, p):
            self.p = p

        def __call__(self, img):
            if random.random() >= self.p:
                return img
            return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*config.blur_sigma)))

    class Solarization:
        def __init__(self, p):
            self.p = p

        def __call__(self, img):
            return ImageOps.solarize(img) if random.random() < self.p else img

    flip_and_jitter = T.Compose([
        T.RandomHorizontalFlip(config.flip_p),
        T.RandomApply([T.ColorJitter(config.brightness, config.contrast, config.saturation, config.hue)], p=config.jitter_p),
        T.RandomGrayscale(config.grayscale_p),
    ])
    normalize = T.Compose([T.ToTensor(), T.Normalize(config.mean, config.std)])
    bilinear = T.InterpolationMode.BILINEAR

    def view(size, scale, blur_p, solarize_p):
        return T.Compose([T.RandomResizedCrop(size, scale=scale, ratio=config.ratio, interpolation=bilinear),
                          flip_and_jitter, GaussianBlur(blur_p), Solarization(solarize_p), normalize])

    globals_ = [view(config.global_size, config.global_scale, config.blur_p[min(i, 1)], config.solarize_p[min(i, 1)])
                for i in range(config.n_global)]
    local = view(config.local_size, config.local_scale, config.blur_p[2], config.solarize_p[2])
    return lambda img: [t(img) for t in globals_] + [local(img) for _ in range(config.n_local)]


@pytest.fixture(scope="module")
def problem(size, device):
    config = MultiCropConfig.cion()
    check = make_images(4, seed=1)
    out = multicrop(torch.from_numpy(check).to(device), config, seed=3, step=1, return_params=True)
    params = {name: value.cpu() for name, value in out.params.items()}
    expected_global, expected_local = reference.multicrop([torch.from_numpy(i).permute(2, 0, 1) for i in check], config, params)
    std = torch.tensor(config.std)[:, None, None]
    worst = max(float(((got.cpu().float() - want).abs() * std).max())
                for got, want in zip(list(out.global_views) + list(out.local_views), expected_global + expected_local))
    assert worst <= 2.0 / 255.0, f"multicrop differs from the plain-PyTorch reference by {worst:.3g} > 2/255"
    batch = size * (8 if device == "cuda" else 1)
    images = make_images(batch)
    view_bytes = batch * (config.n_global * 3 * 256 * 128 + config.n_local * 3 * 128 * 64) * 4
    return {"config": config, "images": images, "batch": batch, "view_bytes": view_bytes,
            "group": f"multicrop {batch} images 256x128 -> 2 x 256x128 + {config.n_local} x 128x64 views"}


REUSED = " into the caller's buffers (out=)"  # the group of the steady state of a training loop


@pytest.mark.parametrize("reuse", [False, True], ids=["new outputs", "out"])
def test_cion_fast(benchmark, problem, device, reuse):
    x = torch.from_numpy(problem["images"]).to(device)
    steps = iter(range(1, 10**9))
    first = multicrop(x, problem["config"], seed=0)
    out = (first.global_views, first.local_views) if reuse else None
    bench(benchmark, lambda: multicrop(x, problem["config"], seed=0, step=next(steps), out=out), role="cion_fast",
          group=problem["group"] + (REUSED if reuse else ""), device=device, items=problem["batch"])


def test_reference(benchmark, problem, device):
    config, batch = problem["config"], problem["batch"]
    chw = [t.permute(2, 0, 1) for t in torch.from_numpy(problem["images"]).to(device)]
    generator = torch.Generator().manual_seed(0)

    def per_image():
        reference.multicrop(chw, config, reference.sample_params(config, [(256, 128)] * batch, generator))
    bench(benchmark, per_image, role="reference", group=problem["group"], device=device, rounds=1, items=batch)


def test_pil_torchvision_baseline(benchmark, problem, device):
    pytest.importorskip("torchvision")
    from PIL import Image

    pipeline = pil_pipeline(problem["config"])
    images = [Image.fromarray(image) for image in problem["images"]]
    random.seed(0)
    bench(benchmark, lambda: [pipeline(img) for img in images], role="baseline", group=problem["group"], device="cpu",
          rounds=1, items=problem["batch"], note="DINO's PIL/torchvision pipeline, one image at a time (a DataLoader worker)")


@pytest.mark.parametrize("reuse", [False, True], ids=["new outputs", "out"])
def test_floor_write_the_views(benchmark, problem, device, reuse):
    scratch = torch.empty(problem["view_bytes"] // 4, dtype=torch.float32, device=device)
    bench(benchmark, lambda: scratch.fill_(1.0), role="floor", group=problem["group"] + (REUSED if reuse else ""),
          device=device, note=f"writing the views once ({problem['view_bytes'] / 2**20:.0f} MiB)")
