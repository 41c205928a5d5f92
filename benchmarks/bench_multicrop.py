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

import os
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


def cpu_seconds(fn, repeat: int) -> float:
    """Least CPU time of one call, summed over the process's threads: the call's cost in
    core-seconds, which time-slicing on a shared machine does not inflate (wall time does)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    env = print_header("multicrop: CION views (2 x 256x128 + 8 x 128x64) of 256x128 uint8 images")
    device = args.device
    cuda = device == "cuda"
    cores = os.cpu_count() or 1
    config = MultiCropConfig.cion()
    batch = (8 if args.quick else 64) * (8 if cuda else 1)
    baseline_batch = 2 if args.quick else (16 if not cuda else 8)
    repeat = 1 if args.quick else args.repeat

    worst = check_correctness(config, device)
    print(f"   correctness: views equal the plain-PyTorch reference within {worst:.2e} (<= 2/255 required)")

    images = make_images(batch)
    x = torch.from_numpy(images).to(device)
    steps = iter(range(1, 10**9))
    ours_call = lambda: multicrop(x, config, seed=0, step=next(steps))  # noqa: E731
    # name -> (wall-clock stats of one call, images per call, CPU seconds per image or None)
    rows: dict[str, tuple[dict, int, float | None]] = {
        "cion_fast.ops.multicrop": (measure(ours_call, repeat=repeat, cuda=cuda), batch,
                                    None if cuda else cpu_seconds(ours_call, repeat) / batch),
    }

    # Per-image baselines run with one torch thread, as DataLoader workers do (one process per core).
    threads = torch.get_num_threads()
    if not cuda:
        torch.set_num_threads(1)
    chw = [t.permute(2, 0, 1) for t in torch.from_numpy(images[:baseline_batch]).to(device)]
    generator = torch.Generator().manual_seed(0)

    def baseline():
        params = reference.sample_params(config, [(256, 128)] * baseline_batch, generator)
        reference.multicrop(chw, config, params)

    base_repeat = max(1, repeat - 1)
    rows["per-image plain PyTorch (reference)"] = (measure(baseline, repeat=base_repeat, cuda=cuda), baseline_batch,
                                                   None if cuda else cpu_seconds(baseline, base_repeat) / baseline_batch)
    if not cuda:
        try:
            from PIL import Image

            pipeline = pil_pipeline(config)
            pil_images = [Image.fromarray(image) for image in images[:baseline_batch]]
            random.seed(0)
            pil_call = lambda: [pipeline(img) for img in pil_images]  # noqa: E731
            rows["PIL/torchvision per-image pipeline"] = (measure(pil_call, repeat=base_repeat), baseline_batch,
                                                          cpu_seconds(pil_call, base_repeat) / baseline_batch)
        except ImportError as error:
            print(f"   PIL/torchvision pipeline skipped: {error}")
    torch.set_num_threads(threads)

    per_image = {name: dict(stats, seconds=stats["seconds"] / n) for name, (stats, n, _) in rows.items()}
    ours_img = per_image["cion_fast.ops.multicrop"]
    print(f"   {'wall clock, per source image (10 views)':<44s} {'time':>14s}  {'vs ours':>8s}  peak memory (whole call)")
    for name, (stats, n, core) in rows.items():
        extra = f"batch {n}" + ("" if core is None else f", CPU {core * 1e3:.2f} ms/image")
        print_row(name, per_image[name], None if name == "cion_fast.ops.multicrop" else ours_img, extra=extra)

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
    # Throughput of the whole machine: ours as called (all cores), a per-image pipeline as one
    # single-threaded worker per core. From wall time, and from CPU time (shared-machine proof).
    wall_rate = {name: 1.0 / stats["seconds"] * (1 if name == "cion_fast.ops.multicrop" or cuda else cores)
                 for name, stats in per_image.items()}
    cpu_rate = {name: cores / core for name, (_, _, core) in rows.items() if core is not None}
    print(f"   images/s on this machine ({cores} cores; per-image pipelines as {cores} single-threaded workers):")
    for name in rows:
        from_cpu = f", {cpu_rate[name]:,.0f} from CPU time" if name in cpu_rate else ""
        print(f"     {name:<44s} {wall_rate[name]:10,.0f} from wall time{from_cpu}")
    ours_rate = wall_rate["cion_fast.ops.multicrop"]
    best_rate = max(ours_rate, cpu_rate.get("cion_fast.ops.multicrop", 0.0))
    print(f"   physical floor: {bytes_per_image / 2**20:.2f} MiB of views per image at {bandwidth / 1e9:.1f} GB/s of writes "
          f"= {floor_images_per_s:,.0f} images/s; ours {best_rate:,.0f} images/s = {100 * best_rate / floor_images_per_s:.1f}% "
          f"of it (the views are computed, not copied: arithmetic bound)")
    print(f"   memory: the call allocates its outputs, {batch * bytes_per_image / 2**20:.0f} MiB for {batch} images, plus "
          f"{batch * config.num_views * PARAM_BYTES_PER_VIEW / 2**10:.0f} KiB of parameters; CPU scratch is per thread "
          f"(about 0.5 MiB each for 256x128 views, reused across calls); CUDA needs no scratch")
    base_name = "per-image plain PyTorch (reference)"
    speedups = {}
    for name in rows:
        if name == "cion_fast.ops.multicrop":
            continue
        speedups[name] = {"wall": ours_rate / wall_rate[name]}
        if name in cpu_rate:
            speedups[name]["cpu"] = cpu_rate["cion_fast.ops.multicrop"] / cpu_rate[name]
        print(f"   speed-up over {name}: " + ", ".join(f"{v:.1f}x ({k} time)" for k, v in speedups[name].items()))
    if cuda:
        verdict = "met" if ours_rate >= TARGET_GPU_IMAGES_PER_S else "NOT met"
        print(f"   target >= {TARGET_GPU_IMAGES_PER_S:,} images/s (H100): {verdict} ({ours_rate:,.0f} on {env.get('gpu')})")
    else:
        # Judged on CPU time: on a shared machine wall time measures the scheduler as much as the
        # code (our CPU time counts all our threads, so poor parallel scaling would still show).
        ratio = speedups[base_name]["cpu"]
        verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
        print(f"   target >= {TARGET_RATIO:.0f}x the per-image plain-PyTorch loop: {verdict} ({ratio:.1f}x from CPU time, "
              f"{speedups[base_name]['wall']:.1f}x from wall time)")

    write_json(
        f"multicrop_{device}",
        {
            "environment": env,
            "config": "cion (2 x 256x128 + 8 x 128x64 views, 256x128 sources)",
            "quick": args.quick,
            "batch": batch,
            "max_error_vs_reference": worst,
            "images_per_s_wall": wall_rate,
            "images_per_s_cpu_time": cpu_rate,
            "cpu_ms_per_image": {name: core * 1e3 for name, (_, _, core) in rows.items() if core is not None},
            "peak_mb": {name: stats["peak_mb"] for name, (stats, _, _) in rows.items()},
            "cuda_peak_mb": rows["cion_fast.ops.multicrop"][0].get("cuda_peak_mb", 0.0),
            "speedups": speedups,
            "floor_images_per_s": floor_images_per_s,
            "write_bandwidth_gb_s": bandwidth / 1e9,
            "target_met": verdict == "met",
        },
        args.json,
    )


if __name__ == "__main__":
    main()
