"""Benchmark of cion_fast.ops.multicrop: all CION views (2 x 256x128 + 8 x 128x64) of 256x128
person images, against the same ops done per image in plain PyTorch (cion_fast.reference) and a
PIL/torchvision per-image pipeline (DINO's DataAugmentationDINO with the CION sizes).

    python benchmarks/bench_multicrop.py            # CPU, full sizes
    python benchmarks/bench_multicrop.py --quick    # a smoke run in seconds
    python benchmarks/bench_multicrop.py --device cuda

Correctness first: the op's views must equal the plain-PyTorch reference with the returned
parameters within 2/255, else nothing is timed. Throughput is source images per second (10 views
each). The physical floor is the bytes the views occupy (1.57 MB of float32 per image) written at
this machine's measured memory write bandwidth.
"""

from __future__ import annotations

import random
import time

import numpy as np
import torch

from _common import measure, parser, print_header, print_row, write_json

from cion_fast.ops import MultiCropConfig, multicrop
from cion_fast.ops.multicrop import PARAM_SPEC
from cion_fast.reference import multicrop as reference

TARGET_RATIO = 5.0  # issue 5: at least 5x the per-image plain-PyTorch loop on CPU
TARGET_GPU_IMAGES_PER_S = 20_000  # issue 5: on an H100
PARAM_BYTES_PER_VIEW = sum(np.dtype(dtype).itemsize * int(np.prod(trailing)) for dtype, trailing in PARAM_SPEC.values())


def make_images(batch: int, seed: int = 0) -> np.ndarray:
    """Smooth random person-sized images (structure, not noise, so the ops have work to show)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (batch, 32, 16, 3)).astype(np.float32)
    big = torch.nn.functional.interpolate(torch.from_numpy(base).permute(0, 3, 1, 2), size=(256, 128), mode="bilinear")
    noise = rng.normal(0, 12, (batch, 3, 256, 128))
    return np.clip(big.numpy() + noise, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1).copy()


def check_correctness(config: MultiCropConfig, device: str) -> float:
    images = make_images(4, seed=1)
    x = torch.from_numpy(images).to(device)
    out = multicrop(x, config, seed=3, step=1, return_params=True)
    params = {name: value.cpu() for name, value in out.params.items()}
    chw = [torch.from_numpy(image).permute(2, 0, 1) for image in images]
    expected_global, expected_local = reference.multicrop(chw, config, params)
    std = torch.tensor(config.std)[:, None, None]
    worst = 0.0
    for got, want in zip(list(out.global_views) + list(out.local_views), expected_global + expected_local):
        worst = max(worst, float(((got.cpu().float() - want).abs() * std).max()))
    if worst > 2.0 / 255.0:
        raise SystemExit(f"multicrop disagrees with the plain-PyTorch reference: max error {worst:.3g} > 2/255")
    return worst


def write_bandwidth_bytes_per_s() -> float:
    """Sustained store bandwidth of this machine (all threads torch uses), filling 256 MB."""
    buffer = torch.empty(64 * 2**20, dtype=torch.float32)
    buffer.fill_(1.0)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        buffer.fill_(2.0)
        best = min(best, time.perf_counter() - t0)
    return buffer.numel() * 4 / best


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


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    env = print_header("multicrop: CION views (2 x 256x128 + 8 x 128x64) of 256x128 uint8 images")
    device = args.device
    cuda = device == "cuda"
    config = MultiCropConfig.cion()
    batch = (8 if args.quick else 64) * (8 if cuda else 1)
    baseline_batch = 2 if args.quick else (16 if not cuda else 8)
    repeat = 1 if args.quick else args.repeat

    worst = check_correctness(config, device)
    print(f"   correctness: views equal the plain-PyTorch reference within {worst:.2e} (<= 2/255 required)")

    images = make_images(batch)
    x = torch.from_numpy(images).to(device)
    steps = iter(range(1, 10**9))
    ours = measure(lambda: multicrop(x, config, seed=0, step=next(steps)), repeat=repeat, cuda=cuda)

    chw = [t.permute(2, 0, 1) for t in torch.from_numpy(images[:baseline_batch]).to(device)]
    generator = torch.Generator().manual_seed(0)

    def baseline():
        params = reference.sample_params(config, [(256, 128)] * baseline_batch, generator)
        reference.multicrop(chw, config, params)

    base = measure(baseline, repeat=max(1, repeat - 1), cuda=cuda)

    per_image = lambda stats, n: dict(stats, seconds=stats["seconds"] / n)  # noqa: E731
    ours_img, base_img = per_image(ours, batch), per_image(base, baseline_batch)
    rows = {"cion_fast.ops.multicrop": (ours_img, batch), "per-image plain PyTorch (reference)": (base_img, baseline_batch)}

    pil_img = None
    if not cuda:
        try:
            from PIL import Image

            pipeline = pil_pipeline(config)
            pil_images = [Image.fromarray(image) for image in images[:baseline_batch]]
            random.seed(0)
            pil = measure(lambda: [pipeline(img) for img in pil_images], repeat=max(1, repeat - 1))
            pil_img = per_image(pil, baseline_batch)
            rows["PIL/torchvision per-image pipeline (1 process)"] = (pil_img, baseline_batch)
        except ImportError as error:
            print(f"   PIL/torchvision pipeline skipped: {error}")

    print(f"   {'per source image (10 views)':<44s} {'time':>14s}  {'vs ours':>8s}  peak memory (whole call)   images/s")
    for name, (stats, n) in rows.items():
        print_row(name, stats, ours_img if stats is not ours_img else None, extra=f"{1.0 / stats['seconds']:10.0f}  (batch {n})")

    bytes_per_image = (config.n_global * 3 * 256 * 128 + config.n_local * 3 * 128 * 64) * 4
    if cuda:
        total = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        total.fill_(1)
        end.record()
        end.synchronize()
        bandwidth = total.numel() / (start.elapsed_time(end) / 1e3)
    else:
        bandwidth = write_bandwidth_bytes_per_s()
    floor_images_per_s = bandwidth / bytes_per_image
    ours_rate, base_rate = 1.0 / ours_img["seconds"], 1.0 / base_img["seconds"]
    ratio = ours_rate / base_rate
    print(f"   physical floor: {bytes_per_image / 2**20:.2f} MiB of views per image at {bandwidth / 1e9:.1f} GB/s of writes "
          f"= {floor_images_per_s:,.0f} images/s; ours {ours_rate:,.0f} images/s = {100 * ours_rate / floor_images_per_s:.1f}% of it")
    print(f"   memory: the call allocates its outputs, {batch * bytes_per_image / 2**20:.0f} MiB for {batch} images, plus "
          f"{batch * config.num_views * PARAM_BYTES_PER_VIEW / 2**10:.0f} KiB of parameters; CPU scratch is per thread "
          f"(about 0.5 MiB each for 256x128 views, reused across calls); CUDA needs no scratch")
    print(f"   speed-up over the per-image plain-PyTorch loop: {ratio:.1f}x")
    if pil_img is not None:
        print(f"   speed-up over PIL/torchvision (1 process): {ours_rate * pil_img['seconds']:.1f}x")
    if cuda:
        verdict = "met" if ours_rate >= TARGET_GPU_IMAGES_PER_S else "NOT met"
        print(f"   target >= {TARGET_GPU_IMAGES_PER_S:,} images/s (H100): {verdict} on {env.get('gpu')}")
    else:
        verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
        print(f"   target >= {TARGET_RATIO:.0f}x the per-image plain-PyTorch loop: {verdict} ({ratio:.1f}x)")

    write_json(
        f"multicrop_{device}",
        {
            "environment": env,
            "config": "cion (2 x 256x128 + 8 x 128x64 views, 256x128 sources)",
            "quick": args.quick,
            "batch": batch,
            "max_error_vs_reference": worst,
            "images_per_s": {name: 1.0 / stats["seconds"] for name, (stats, _) in rows.items()},
            "peak_mb": {name: stats["peak_mb"] for name, (stats, _) in rows.items()},
            "cuda_peak_mb": ours.get("cuda_peak_mb", 0.0),
            "speedup_vs_reference": ratio,
            "floor_images_per_s": floor_images_per_s,
            "write_bandwidth_gb_s": bandwidth / 1e9,
            "target_met": verdict == "met",
        },
        args.json,
    )


if __name__ == "__main__":
    main()
