"""Plain-PyTorch multi-crop augmentation, one image and one view at a time.

The same maths as :func:`cion_fast.ops.multicrop` written with ordinary torch ops on float CHW
tensors, following torchvision's tensor functional ops (``resized_crop``, ``adjust_*``,
``rgb_to_grayscale``, ``gaussian_blur``). It is the oracle of the tests (given the parameters the
op returned) and the baseline of ``benchmarks/bench_multicrop.py`` (with :func:`sample_params`,
torchvision-style sampling on a ``torch.Generator``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from cion_fast.ops.multicrop import PARAM_SPEC, MultiCropConfig

GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def grayscale(img: torch.Tensor) -> torch.Tensor:
    """[3, H, W] -> [1, H, W] ITU-R 601 luma."""
    r, g, b = img.unbind(0)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(0)


def _blend(img: torch.Tensor, other: torch.Tensor, factor: float) -> torch.Tensor:
    return (factor * img + (1.0 - factor) * other).clamp(0.0, 1.0)


def adjust_brightness(img: torch.Tensor, factor: float) -> torch.Tensor:
    return _blend(img, torch.zeros_like(img), factor)


def adjust_contrast(img: torch.Tensor, factor: float) -> torch.Tensor:
    return _blend(img, grayscale(img).mean(), factor)


def adjust_saturation(img: torch.Tensor, factor: float) -> torch.Tensor:
    return _blend(img, grayscale(img), factor)


def adjust_hue(img: torch.Tensor, shift: float) -> torch.Tensor:
    """torchvision's _rgb2hsv / _hsv2rgb with h <- (h + shift) mod 1."""
    if shift == 0.0:
        return img
    r, g, b = img.unbind(0)
    maxc, minc = img.max(0).values, img.min(0).values
    flat = maxc == minc
    chroma = maxc - minc
    ones = torch.ones_like(maxc)
    s = chroma / torch.where(flat, ones, maxc)
    divisor = torch.where(flat, ones, chroma)
    rc, gc, bc = (maxc - r) / divisor, (maxc - g) / divisor, (maxc - b) / divisor
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    h = (h + shift) % 1.0
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    v = maxc
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    table = torch.stack(
        [torch.stack(c) for c in ((v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q))]
    )  # [3 channels, 6 sectors, H, W]
    return table.gather(1, i[None, None].expand(3, 1, *i.shape)).squeeze(1)


def _reflect(n_out: int, n: int, radius: int, device: torch.device) -> torch.Tensor:
    """Indices of a reflect padding by `radius` (torch.nn.functional.pad semantics, folded again
    when radius >= n)."""
    i = torch.arange(-radius, n_out + radius, device=device)
    period = 2 * (n - 1)
    i = i % period
    return torch.where(i < n, i, period - i)


def blur_radius(sigma: float) -> int:
    """Kernel radius ceil(3 sigma) (sigma is a float32 value; 3 * sigma is exact in float64)."""
    return math.ceil(3.0 * float(sigma)) if sigma > 0 else 0


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """torchvision gaussian_blur with kernel size 2 ceil(3 sigma) + 1: the reflect-padded image
    convolved with a Gaussian, done as two 1-D convolutions (torchvision convolves once with the
    outer product; the result is the same to float rounding)."""
    radius = blur_radius(sigma)
    if radius == 0:
        return img
    d = torch.arange(-radius, radius + 1, dtype=img.dtype, device=img.device)
    k = torch.exp(-(d * d) / (2.0 * float(sigma) ** 2))
    k = k / k.sum()
    _, H, W = img.shape
    padded = img[:, _reflect(H, H, radius, img.device)][:, :, _reflect(W, W, radius, img.device)]
    vertical = F.conv2d(padded[None], k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    return F.conv2d(vertical, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)[0]


def solarize(img: torch.Tensor) -> torch.Tensor:
    return torch.where(img >= 0.5, 1.0 - img, img)


def resized_crop(image: torch.Tensor, box, size: tuple[int, int], interpolation: str = "bilinear") -> torch.Tensor:
    """uint8 [3, H, W] -> float [3, h, w] in [0, 1]: crop then antialiased resize."""
    top, left, height, width = (int(v) for v in box)
    crop = image[:, top : top + height, left : left + width].to(torch.float32) / 255.0
    out = F.interpolate(crop[None], size=size, mode=interpolation, antialias=True, align_corners=False)[0]
    return out.clamp(0.0, 1.0) if interpolation == "bicubic" else out


def augment_view(image: torch.Tensor, params: dict[str, Any], b: int, v: int, size: tuple[int, int],
                 config: MultiCropConfig) -> torch.Tensor:
    """One view of one uint8 [3, H, W] image with the parameters of entry (b, v): float [3, h, w],
    normalised."""
    img = resized_crop(image, params["box"][b, v], size, config.interpolation)
    if bool(params["flip"][b, v]):
        img = img.flip(-1)
    if bool(params["jitter_applied"][b, v]):
        ops = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
        factors = [float(params[name][b, v]) for name in ("brightness", "contrast", "saturation", "hue")]
        for op in params["jitter_order"][b, v].tolist():
            img = ops[op](img, factors[op])
    if bool(params["grayscale"][b, v]):
        img = grayscale(img).expand(3, -1, -1)
    img = gaussian_blur(img, float(params["blur_sigma"][b, v]))
    if bool(params["solarize"][b, v]):
        img = solarize(img)
    mean = torch.tensor(config.mean, dtype=img.dtype, device=img.device)[:, None, None]
    std = torch.tensor(config.std, dtype=img.dtype, device=img.device)[:, None, None]
    return (img - mean) / std


def multicrop(images: list[torch.Tensor], config: MultiCropConfig, params: dict[str, Any]) -> tuple[list, list]:
    """The per-image loop: ``images`` is a list of uint8 [3, H, W] tensors (any sizes), ``params``
    a dict of [B, V, ...] tensors or arrays (see :data:`cion_fast.ops.multicrop.PARAM_SPEC`).
    Returns (global views, local views) as lists over views of [B, 3, h, w] float32 tensors.

    Example:
        >>> import torch
        >>> from cion_fast.ops import MultiCropConfig
        >>> config = MultiCropConfig.cion(n_local=2)
        >>> images = [torch.randint(0, 256, (3, 64, 32), dtype=torch.uint8)]
        >>> params = sample_params(config, [(64, 32)], torch.Generator().manual_seed(0))
        >>> global_views, local_views = multicrop(images, config, params)
        >>> len(global_views), tuple(local_views[0].shape)
        (2, (1, 3, 128, 64))
    """
    params = {name: torch.as_tensor(value) for name, value in params.items()}
    out_global = [[] for _ in range(config.n_global)]
    out_local = [[] for _ in range(config.n_local)]
    for b, image in enumerate(images):
        for v in range(config.num_views):
            if v < config.n_global:
                out_global[v].append(augment_view(image, params, b, v, config.global_size, config))
            else:
                out_local[v - config.n_global].append(augment_view(image, params, b, v, config.local_size, config))
    return [torch.stack(views) for views in out_global], [torch.stack(views) for views in out_local]


def random_resized_crop_params(height: int, width: int, scale, ratio, generator: torch.Generator) -> list[int]:
    """torchvision RandomResizedCrop.get_params with an explicit generator: (top, left, h, w)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator).item())
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return [top, left, h, w]
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return [(height - h) // 2, (width - w) // 2, h, w]


def sample_params(config: MultiCropConfig, sizes: list[tuple[int, int]], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """torchvision-style per-view sampling on a torch generator (the benchmark baseline's sampler;
    the op itself samples with Philox). ``sizes``: (height, width) of each image."""
    B, V = len(sizes), config.num_views
    out = {name: torch.zeros((B, V) + trailing, dtype=getattr(torch, dtype)) for name, (dtype, trailing) in PARAM_SPEC.items()}
    ranges = config.jitter_ranges
    rand = lambda: torch.rand(1, generator=generator).item()  # noqa: E731 - local shorthand
    for b, (height, width) in enumerate(sizes):
        for v in range(V):
            is_global = v < config.n_global
            group = 2 if not is_global else (0 if v == 0 else 1)
            scale = config.global_scale if is_global else config.local_scale
            out["box"][b, v] = torch.tensor(random_resized_crop_params(height, width, scale, config.ratio, generator))
            out["flip"][b, v] = rand() < config.flip_p
            out["jitter_applied"][b, v] = rand() < config.jitter_p
            out["jitter_order"][b, v] = torch.randperm(4, generator=generator)
            for name in ("brightness", "contrast", "saturation", "hue"):
                lo, hi = ranges[name]
                out[name][b, v] = lo + (hi - lo) * rand()
            out["grayscale"][b, v] = rand() < config.grayscale_p
            if rand() < config.blur_p[group]:
                lo, hi = config.blur_sigma
                out["blur_sigma"][b, v] = lo + (hi - lo) * rand()
            out["solarize"][b, v] = rand() < config.solarize_p[group]
    return out
