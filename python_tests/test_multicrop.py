"""multicrop: geometry against a float64 numpy oracle of torch's antialiased resize, colour ops
against plain PyTorch (cion_fast.reference.multicrop, itself checked against torchvision), the
sampling distribution against torchvision's rules, reproducibility, ragged input and bad input."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from cion_fast.ops import MultiCropConfig, RaggedImages, multicrop
from cion_fast.ops._extension import kernels
from cion_fast.ops.multicrop import MAX_BLUR_SIGMA, PARAM_SPEC

from conftest import (assert_file_passes_under_isa_cap, cupy, requires_torch, run_in_threads, run_with_isa_cap,
                      to_framework, torch, value_errors_under_python_O)

TOLERANCE = 2.0 / 255.0  # the bound of docs/ALGORITHMS.md, before normalisation
# Colour ops off, no normalisation: the views are the resized crops themselves.
GEOMETRY_ONLY = dict(jitter_p=0.0, grayscale_p=0.0, blur_p=(0.0, 0.0, 0.0), solarize_p=(0.0, 0.0, 0.0),
                     mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


# ---- oracles -------------------------------------------------------------------------------------

def resample_matrix(in_size: int, out_size: int, interpolation: str) -> np.ndarray:
    """[out, in] float64 weights of torch's antialiased interpolate (align_corners=False): a
    triangle (or Keys a=-0.5 cubic) filter centred on scale * (i + 0.5), its support widened by the
    downscale factor, normalised per output sample."""
    scale = in_size / out_size
    half_width = 1.0 if interpolation == "bilinear" else 2.0
    support = half_width * max(scale, 1.0)
    inv_scale = 1.0 / scale if scale >= 1.0 else 1.0

    def filt(x):
        x = np.abs(x)
        if interpolation == "bilinear":
            return np.maximum(1.0 - x, 0.0)
        a = -0.5
        return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1, np.where(x < 2, a * (((x - 5) * x + 8) * x - 4), 0.0))

    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        centre = scale * (i + 0.5)
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), in_size)
        w = filt((np.arange(lo, hi) - centre + 0.5) * inv_scale)
        weights[i, lo:hi] = w / w.sum()
    return weights


def oracle_view(image_hwc: np.ndarray, box, flip: bool, size, interpolation="bilinear") -> np.ndarray:
    """[3, h, w] float64 in [0, 1]: crop, separable antialiased resize, optional mirror."""
    top, left, height, width = (int(v) for v in box)
    crop = image_hwc[top : top + height, left : left + width].astype(np.float64) / 255.0
    wy = resample_matrix(height, size[0], interpolation)
    wx = resample_matrix(width, size[1], interpolation)
    view = np.stack([wy @ crop[:, :, c] @ wx.T for c in range(3)])
    if interpolation == "bicubic":
        view = np.clip(view, 0.0, 1.0)
    return view[:, :, ::-1] if flip else view


def all_views(out) -> list[np.ndarray]:
    """The V views as [B, 3, h, w] float64 numpy arrays, globals first."""
    from cion_fast._arrays import to_numpy

    g, l = to_numpy(out.global_views), to_numpy(out.local_views)
    return [g[i].astype(np.float64) for i in range(g.shape[0])] + [l[i].astype(np.float64) for i in range(l.shape[0])]


def host_params(out) -> dict[str, np.ndarray]:
    from cion_fast._arrays import to_numpy

    return {name: np.asarray(to_numpy(value)) for name, value in out.params.items()}


def random_images(shape, seed=0):
    """Smooth-ish random images (random data with structure, so resizing errors show)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, shape, dtype=np.int64)
    return ((base + np.roll(base, 1, axis=-2)) // 2).astype(np.uint8)


# ---- Philox --------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "counter,key,expected",
    [  # Random123's known-answer vectors for Philox4x32-10
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
         (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    ],
)
def test_philox_known_answers(counter, key, expected):
    assert tuple(kernels().philox4x32_10(list(counter), list(key))) == expected


# ---- every copy of the kernel --------------------------------------------------------------------

# The CPU kernel has an AVX-512 copy (planar resampling, 16-pixel colour sweep), an AVX2 one and a
# baseline one, chosen once per process; CION_FAST_MULTICROP_ISA caps the choice, so the tests below
# run the narrower copies in subprocesses (where the CPU lacks a copy, the next narrower one runs).
_ISA_CAP = "CION_FAST_MULTICROP_ISA"


@pytest.mark.parametrize("cap", ["avx2", "baseline"])
def test_every_copy_passes_this_file(cap, tmp_path):
    assert_file_passes_under_isa_cap(_ISA_CAP, cap, __file__, "every_copy", tmp_path)


_COPY_VIEWS_SCRIPT = """
import sys
import numpy as np
import cion_fast
from cion_fast.ops import MultiCropConfig, RaggedImages, multicrop
rng = np.random.default_rng(0)
views = []
for interpolation in ("bilinear", "bicubic"):
    for (gs, ls), (h, w) in zip((((256, 128), (128, 64)), ((37, 29), (13, 7)), ((100, 203), (17, 33))),
                                ((256, 128), (600, 300), (31, 47))):
        config = MultiCropConfig.cion(global_size=gs, local_size=ls, interpolation=interpolation, flip_p=0.5,
                                      solarize_p=(0.5, 0.5, 0.5))
        images = rng.integers(0, 256, (3, h, w, 3), dtype=np.uint8)
        for batch in (images, np.ascontiguousarray(images.transpose(0, 3, 1, 2)),
                      RaggedImages.from_list([images[0], images[1, : h // 2 + 1, : w // 3 + 2]])):
            out = multicrop(batch, config, seed=7, step=1)
            views += [out.global_views, out.local_views]
half = multicrop(rng.integers(0, 256, (2, 64, 48, 3), dtype=np.uint8), MultiCropConfig.cion(out_dtype="float16"), seed=3)
views += [half.global_views, half.local_views]
np.savez(sys.argv[1], *views)
print(cion_fast.build_info()["multicrop_cpu_copy"])
"""
_WIDTH = {"baseline": 0, "avx2": 1, "avx512": 2}


def test_every_copy_gives_the_same_bits(tmp_path):
    """Every copy runs the same operations per output value in the same order (no contraction), so
    up- and downscales, both filters, flips, solarise, HWC / CHW / ragged sources and float16
    outputs agree bit for bit; each capped process must report the copy the cap asks for."""
    outputs, copies = [], []
    for cap in (None, "avx2", "baseline"):
        path = tmp_path / f"{cap}.npz"
        done = run_with_isa_cap(_ISA_CAP, cap, ["-c", _COPY_VIEWS_SCRIPT, str(path)], tmp_path, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append(np.load(path))
        copies.append(done.stdout.split()[-1])
    widest = copies[0]
    if widest == "baseline":
        pytest.skip("this CPU runs the baseline copy only: there is no other copy to compare")
    assert copies[1:] == [min("avx2", widest, key=_WIDTH.get), "baseline"], copies
    for other in outputs[1:]:
        for name in outputs[0].files:
            np.testing.assert_array_equal(other[name], outputs[0][name])


# ---- geometry ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "batch,height,width,global_size,local_size,layout,interpolation",
    [
        (1, 256, 128, (256, 128), (128, 64), "nhwc", "bilinear"),  # the CION recipe
        (3, 37, 23, (17, 9), (3, 2), "nchw", "bilinear"),  # odd sizes, 2-3 px crops and views
        (2, 2, 2, (5, 4), (2, 2), "nhwc", "bilinear"),  # 2 x 2 sources
        (2, 61, 45, (31, 29), (7, 5), "nhwc", "bicubic"),
        (2, 19, 13, (64, 40), (33, 21), "nchw", "bicubic"),  # upscales: Keys' cubic overshoots [0, 1]
        (1, 300, 150, (40, 20), (9, 5), "nchw", "bilinear"),  # strong downscale: wide supports
    ],
)
def test_geometry_matches_antialiased_resize(poisoned_outputs, batch, height, width, global_size, local_size,
                                             layout, interpolation):
    images = random_images((batch, height, width, 3), seed=height)
    config = MultiCropConfig(global_size=global_size, local_size=local_size, n_local=3, flip_p=0.5,
                             interpolation=interpolation, **GEOMETRY_ONLY)
    x = images if layout == "nhwc" else np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    out = multicrop(x, config, seed=height, step=1, return_params=True)
    params = host_params(out)
    assert out.global_views.shape == (2, batch, 3) + global_size and out.global_views.dtype == np.float32
    assert out.local_views.shape == (3, batch, 3) + local_size
    views = all_views(out)
    worst = 0.0
    for v, view in enumerate(views):
        size = global_size if v < 2 else local_size
        for b in range(batch):
            expected = oracle_view(images[b], params["box"][b, v], params["flip"][b, v], size, interpolation)
            worst = max(worst, float(np.abs(view[b] - expected).max()))
    # The bound is 2/255; both sides compute the same weights, so float32 rounding is all there is.
    assert worst < 1e-4


@requires_torch
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_resize_oracle_is_torch_interpolate(interpolation):
    """The numpy oracle above is torch.nn.functional.interpolate(antialias=True) itself."""
    import torch.nn.functional as F

    rng = np.random.default_rng(3)
    for in_h, in_w, out_h, out_w in [(37, 23, 17, 9), (5, 3, 40, 31), (300, 150, 9, 5), (2, 2, 2, 2), (64, 64, 63, 65)]:
        crop = rng.random((3, in_h, in_w))
        expected = F.interpolate(torch.from_numpy(crop)[None], size=(out_h, out_w), mode=interpolation,
                                 antialias=True, align_corners=False)[0].numpy()
        wy, wx = resample_matrix(in_h, out_h, interpolation), resample_matrix(in_w, out_w, interpolation)
        ours = np.stack([wy @ channel @ wx.T for channel in crop])
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)


def test_flip_mirrors_the_view():
    images = random_images((2, 40, 30, 3), seed=4)
    flipped = multicrop(images, MultiCropConfig(flip_p=1.0, **GEOMETRY_ONLY), seed=5, return_params=True)
    straight = multicrop(images, MultiCropConfig(flip_p=0.0, **GEOMETRY_ONLY), seed=5, return_params=True)
    np.testing.assert_array_equal(host_params(flipped)["box"], host_params(straight)["box"])
    assert host_params(flipped)["flip"].all() and not host_params(straight)["flip"].any()
    np.testing.assert_allclose(flipped.local_views, straight.local_views[..., ::-1], rtol=0, atol=1e-6)


# ---- colour ops against plain PyTorch -------------------------------------------------------------

def assert_matches_reference(images_hwc, config, out, tolerance=TOLERANCE):
    from cion_fast.reference import multicrop as reference

    params = host_params(out)
    torch_params = {name: torch.from_numpy(value) for name, value in params.items()}
    std = np.asarray(config.std)[:, None, None]
    views = all_views(out)
    worst = 0.0
    for b, image in enumerate(images_hwc):
        chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        for v, view in enumerate(views):
            size = config.global_size if v < config.n_global else config.local_size
            expected = reference.augment_view(chw, torch_params, b, v, size, config).double().numpy()
            worst = max(worst, float((np.abs(view[b] - expected) * std).max()))  # error in [0, 1] units
    assert worst <= tolerance, worst
    return worst


@requires_torch
@pytest.mark.parametrize("seed", [0, 1])
def test_sampled_views_match_plain_pytorch(poisoned_outputs, seed):
    images = random_images((3, 256, 128, 3), seed=seed)
    config = MultiCropConfig.cion(n_local=4)
    out = multicrop(images, config, seed=seed, step=7, return_params=True)
    worst = assert_matches_reference(images, config, out)
    assert worst < 1e-4  # well inside the 2/255 bound: the same float ops in another order


@requires_torch
def test_every_op_and_order_matches_plain_pytorch(poisoned_outputs):
    """Explicit parameters: all 24 jitter orders, extreme factors, grayscale, blur radii up to and
    beyond the view size (reflect folds again), solarise, on odd sizes."""
    rng = np.random.default_rng(11)
    batch, height, width = 6, 45, 31
    images = random_images((batch, height, width, 3), seed=12)
    config = MultiCropConfig(global_size=(21, 13), local_size=(6, 5), n_global=2, n_local=2,
                             mean=(0.3, 0.5, 0.4), std=(0.2, 0.3, 0.25))
    V = config.num_views
    orders = np.array(list(itertools.permutations(range(4))))
    heights = rng.integers(1, height + 1, (batch, V))
    widths = rng.integers(1, width + 1, (batch, V))
    params = {
        "box": np.stack([rng.integers(0, height - heights + 1), rng.integers(0, width - widths + 1), heights, widths], -1),
        "flip": rng.random((batch, V)) < 0.5,
        "jitter_applied": rng.random((batch, V)) < 0.9,
        "brightness": rng.uniform(0.0, 2.0, (batch, V)).astype(np.float32),
        "contrast": rng.uniform(0.0, 2.0, (batch, V)).astype(np.float32),
        "saturation": rng.uniform(0.0, 2.0, (batch, V)).astype(np.float32),
        "hue": rng.uniform(-0.5, 0.5, (batch, V)).astype(np.float32),
        "jitter_order": orders[np.arange(batch * V) % 24].reshape(batch, V, 4),
        "grayscale": rng.random((batch, V)) < 0.3,
        "blur_sigma": np.where(rng.random((batch, V)) < 0.7, rng.uniform(0.1, 3.0, (batch, V)), 0.0).astype(np.float32),
        "solarize": rng.random((batch, V)) < 0.5,
    }
    params["blur_sigma"][0, 3] = MAX_BLUR_SIGMA  # radius 24 on a 6 x 5 view
    out = multicrop(images, config, seed=0, params=params, return_params=True)
    for name, value in host_params(out).items():
        np.testing.assert_array_equal(value, params[name])
    assert_matches_reference(images, config, out)


@requires_torch
def test_reference_ops_are_torchvision_ops():
    """Ties the reference to torchvision's tensor semantics (where torchvision is importable)."""
    tv = pytest.importorskip("torchvision.transforms.v2.functional")
    from cion_fast.reference import multicrop as reference

    img = torch.rand(3, 23, 17, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for shift in (-0.5, -0.1, 0.03, 0.25, 0.5):
        torch.testing.assert_close(reference.adjust_hue(img, shift), tv.adjust_hue(img, shift), rtol=0, atol=1e-6)
    for factor in (0.0, 0.6, 1.4):
        torch.testing.assert_close(reference.adjust_brightness(img, factor), tv.adjust_brightness(img, factor))
        # torchvision's tensor grayscale uses 0.2989 for red where we (and PIL) use 0.299.
        torch.testing.assert_close(reference.adjust_contrast(img, factor), tv.adjust_contrast(img, factor), rtol=0, atol=2e-4)
        torch.testing.assert_close(reference.adjust_saturation(img, factor), tv.adjust_saturation(img, factor), rtol=0, atol=2e-4)
    for sigma in (0.1, 0.7, 1.3, 2.0):
        radius = reference.blur_radius(sigma)
        expected = tv.gaussian_blur(img, [2 * radius + 1] * 2, [sigma, sigma])
        torch.testing.assert_close(reference.gaussian_blur(img, sigma), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(reference.solarize(img), tv.solarize(img, 0.5))


# ---- sampling ------------------------------------------------------------------------------------

def sample_many(config, batch, height=256, width=128, seed=123):
    """Parameters of `batch` copies of one image (a ragged batch pointing at one buffer: cheap)."""
    image = random_images((height, width, 3), seed=1).reshape(-1)
    ragged = RaggedImages(image, np.zeros(batch, np.int64), np.tile([[height, width]], (batch, 1)))
    return host_params(multicrop(ragged, config.replace(global_size=(2, 2), local_size=(2, 2)), seed=seed,
                                 return_params=True))


def success_probability(height, width, scale, ratio, grid=1500) -> float:
    """P(one RandomResizedCrop try fits), integrating torchvision's rule (with its rounding) over
    a midpoint grid of (scale, log ratio)."""
    s = scale[0] + (scale[1] - scale[0]) * (np.arange(grid) + 0.5) / grid
    t = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * (np.arange(grid) + 0.5) / grid
    area = height * width * s[:, None]
    w = np.round(np.sqrt(area * np.exp(t)[None, :]))
    h = np.round(np.sqrt(area / np.exp(t)[None, :]))
    return float(((w > 0) & (w <= width) & (h > 0) & (h <= height)).mean())


def check_frequency(flags, p, name):
    n = flags.size
    observed = flags.mean()
    sigma = math.sqrt(max(p * (1 - p), 1e-12) / n)
    assert abs(observed - p) <= 5 * sigma + 1e-12, f"{name}: observed {observed:.4f}, expected {p}"


def test_sampling_distribution_dino():
    config = MultiCropConfig.dino()
    batch = 6000
    params = sample_many(config, batch)
    box = params["box"]
    heights, widths = box[..., 2].astype(np.float64), box[..., 3].astype(np.float64)
    area = heights * widths / (256 * 128)
    # Globals: DINO's ratio (3/4, 4/3) rarely fits a 256x128 person crop; after 10 failed tries
    # torchvision falls back to a centre crop clamped to the ratio: 171 x 128 at row 42.
    fallback_box = np.array([42, 0, 171, 128])
    is_fallback = (box == fallback_box).all(-1)
    p_fallback = (1.0 - success_probability(256, 128, config.global_scale, config.ratio)) ** 10
    assert abs(p_fallback - 0.127) < 0.005  # the figure of docs/ALGORITHMS.md
    check_frequency(is_fallback[:, :2], p_fallback, "global fallback")
    assert not is_fallback[:, 2:].any()  # local scales are small enough to fit at the first tries
    ok = ~is_fallback
    # Sides are rounded to whole pixels: allow half a pixel on each.
    slack_area = (heights + widths + 0.25) / (256 * 128)
    lo = np.where(np.arange(config.num_views) < 2, config.global_scale[0], config.local_scale[0])
    hi = np.where(np.arange(config.num_views) < 2, config.global_scale[1], config.local_scale[1])
    assert ((area >= lo - slack_area) & (area <= hi + slack_area))[ok].all()
    ratio = widths / heights
    assert ((ratio >= config.ratio[0] * (1 - 0.5 / widths - 0.5 / heights)) & (ratio <= config.ratio[1] * (1 + 0.5 / widths + 0.5 / heights)))[ok].all()
    assert (box[..., 0] >= 0).all() and (box[..., 0] + box[..., 2] <= 256).all()
    assert (box[..., 1] >= 0).all() and (box[..., 1] + box[..., 3] <= 128).all()
    # Crop positions are uniform: the mean relative offset of local crops is 1/2.
    rel_top = box[:, 2:, 0] / np.maximum(256 - box[:, 2:, 2], 1)
    assert abs(rel_top.mean() - 0.5) < 0.01


def test_sampling_frequencies_and_ranges_cion():
    config = MultiCropConfig.cion()
    batch = 4000
    params = sample_many(config, batch, seed=77)
    check_frequency(params["flip"], config.flip_p, "flip")
    check_frequency(params["jitter_applied"], config.jitter_p, "jitter")
    check_frequency(params["grayscale"], config.grayscale_p, "grayscale")
    blurred = params["blur_sigma"] > 0
    assert blurred[:, 0].all()  # p = 1.0 for global view 1
    check_frequency(blurred[:, 1], config.blur_p[1], "blur view 2")
    check_frequency(blurred[:, 2:], config.blur_p[2], "blur locals")
    assert not params["solarize"][:, 0].any() and not params["solarize"][:, 2:].any()
    check_frequency(params["solarize"][:, 1], config.solarize_p[1], "solarize view 2")
    sigma = params["blur_sigma"][blurred]
    assert sigma.min() >= 0.1 and sigma.max() <= 2.0 and abs(sigma.mean() - 1.05) < 0.02
    for name, (lo, hi) in config.jitter_ranges.items():
        values = params[name].astype(np.float64)
        assert values.min() >= lo - 1e-6 and values.max() <= hi + 1e-6, name
        assert abs(values.mean() - (lo + hi) / 2) < 0.02 * (hi - lo), name
    order = params["jitter_order"].reshape(-1, 4)
    assert (np.sort(order, axis=1) == np.arange(4)).all()
    for position in range(4):  # a uniform permutation: each op first a quarter of the time
        check_frequency(order[:, 0] == position, 0.25, f"op {position} first")
    # CION's ratio (0.4, 0.6) contains the image's 0.5, so its fallback is the whole image.
    box = params["box"]
    area = box[..., 2] * box[..., 3] / (256 * 128)
    is_whole = (box == np.array([0, 0, 256, 128])).all(-1)
    assert (area[:, 2:] <= 0.8 + 0.02).all() and (area[:, 2:] >= 0.05 - 0.01).all()
    assert ((area[:, :2] >= 0.8 - 0.02) | is_whole[:, :2]).all()


# ---- reproducibility -----------------------------------------------------------------------------

def test_same_seed_same_views_new_step_new_views():
    images = random_images((3, 64, 40, 3), seed=2)
    config = MultiCropConfig.cion(global_size=(32, 16), local_size=(16, 8))
    a = multicrop(images, config, seed=5, step=3, return_params=True)
    b = multicrop(images, config, seed=5, step=3, return_params=True)
    np.testing.assert_array_equal(a.global_views, b.global_views)
    np.testing.assert_array_equal(a.local_views, b.local_views)
    for name in PARAM_SPEC:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    for other in (multicrop(images, config, seed=5, step=4, return_params=True),
                  multicrop(images, config, seed=6, step=3, return_params=True),
                  multicrop(images, config, seed=5 + 2**32, step=3, return_params=True),
                  multicrop(images, config, seed=5, step=3 + 2**32, return_params=True)):
        assert (other.params["box"] != a.params["box"]).any(axis=-1).mean() > 0.9
        assert not np.array_equal(other.local_views, a.local_views)
    # Keyed by image index, not by batch: a prefix of the batch draws the same parameters.
    prefix = multicrop(images[:2], config, seed=5, step=3, return_params=True)
    for name in PARAM_SPEC:
        np.testing.assert_array_equal(prefix.params[name], a.params[name][:2])
    np.testing.assert_array_equal(prefix.local_views, a.local_views[:, :2])


def test_params_round_trip_reproduces_views():
    images = random_images((4, 80, 50, 3), seed=6)
    config = MultiCropConfig.cion(global_size=(40, 24), local_size=(12, 8))
    out = multicrop(images, config, seed=9, step=2, return_params=True)
    again = multicrop(images, config, seed=12345, params=out.params)
    assert again.params is None
    np.testing.assert_array_equal(again.global_views, out.global_views)
    np.testing.assert_array_equal(again.local_views, out.local_views)
    if torch is not None:  # parameters from another framework are accepted too
        torch_params = {name: torch.from_numpy(value) for name, value in out.params.items()}
        np.testing.assert_array_equal(multicrop(images, config, 0, params=torch_params).local_views, out.local_views)


def test_threads_share_the_kernel_safely():
    images = random_images((4, 64, 32, 3), seed=7)
    config = MultiCropConfig.cion(global_size=(32, 16), local_size=(16, 8))
    expected = [multicrop(images, config, seed=s).local_views for s in range(6)]
    results = run_in_threads(lambda i: multicrop(images, config, seed=i).local_views, 6)
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


# ---- layouts, frameworks, dtypes, ragged ---------------------------------------------------------

@pytest.mark.parametrize("layout", ["HWC", "CHW"])
def test_ragged_batch_matches_per_image_oracle(poisoned_outputs, layout):
    sizes = [(40, 20), (64, 30), (2, 2), (33, 17), (7, 90)]
    images = [random_images((h, w, 3), seed=i) for i, (h, w) in enumerate(sizes)]
    stored = images if layout == "HWC" else [np.ascontiguousarray(x.transpose(2, 0, 1)) for x in images]
    batch = RaggedImages.from_list(stored, layout=layout)
    config = MultiCropConfig(global_size=(24, 12), local_size=(9, 5), n_local=2, flip_p=0.5, **GEOMETRY_ONLY)
    out = multicrop(batch, config, seed=4, return_params=True)
    params = host_params(out)
    views = all_views(out)
    for b, image in enumerate(images):
        for v, view in enumerate(views):
            size = config.global_size if v < 2 else config.local_size
            expected = oracle_view(image, params["box"][b, v], params["flip"][b, v], size)
            np.testing.assert_allclose(view[b], expected, rtol=0, atol=1e-4)
        assert (params["box"][b, :, 0] + params["box"][b, :, 2] <= sizes[b][0]).all()
        assert (params["box"][b, :, 1] + params["box"][b, :, 3] <= sizes[b][1]).all()
    # The same image alone, with its parameters, renders the same views.
    alone = multicrop(images[1][None], config, 0, params={k: v[1:2] for k, v in params.items()})
    np.testing.assert_array_equal(alone.local_views[:, 0], out.local_views[:, 1])


@requires_torch
def test_torch_inputs_give_torch_outputs_and_layouts_agree():
    images = random_images((2, 48, 32, 3), seed=8)
    config = MultiCropConfig.cion(global_size=(24, 16), local_size=(12, 8), n_local=2)
    reference = multicrop(images, config, seed=1, return_params=True)
    nhwc = torch.from_numpy(images)
    nchw = nhwc.permute(0, 3, 1, 2).contiguous()
    channels_last = nhwc.permute(0, 3, 1, 2)  # NCHW shape, NHWC memory: read in place
    strided = torch.from_numpy(np.ascontiguousarray(np.pad(images, ((0, 0), (0, 0), (0, 5), (0, 0)))))[:, :, :32]
    for x in (nhwc, nchw, channels_last, strided):
        out = multicrop(x, config, seed=1, return_params=True)
        assert isinstance(out.global_views, torch.Tensor) and out.global_views.dtype == torch.float32
        assert isinstance(out.params["box"], torch.Tensor) and out.params["flip"].dtype == torch.bool
        np.testing.assert_array_equal(out.global_views.numpy(), reference.global_views)
        np.testing.assert_array_equal(out.local_views.numpy(), reference.local_views)
    views = multicrop(nhwc, config, seed=1).views
    assert len(views) == 4 and tuple(views[2].shape) == (2, 3, 12, 8)


@requires_torch
@pytest.mark.parametrize("out_dtype", ["float16", "bfloat16"])
def test_low_precision_outputs_round_the_float32_views(out_dtype):
    images = torch.from_numpy(random_images((2, 64, 32, 3), seed=9))
    config = MultiCropConfig.cion(global_size=(32, 16), local_size=(16, 8), n_local=2)
    full = multicrop(images, config, seed=3)
    low = multicrop(images, config.replace(out_dtype=out_dtype), seed=3)
    assert low.local_views.dtype == getattr(torch, out_dtype)
    for a, b in ((full.global_views, low.global_views), (full.local_views, low.local_views)):
        torch.testing.assert_close(b, a.to(getattr(torch, out_dtype)), rtol=0, atol=0)


def test_numpy_float16_output():
    images = random_images((1, 30, 20, 3), seed=10)
    config = MultiCropConfig.cion(global_size=(15, 10), local_size=(6, 4), n_local=1)
    half = multicrop(images, config.replace(out_dtype="float16"), seed=2)
    full = multicrop(images, config, seed=2)
    assert half.global_views.dtype == np.float16
    np.testing.assert_array_equal(half.global_views, full.global_views.astype(np.float16))


def test_empty_batch_and_no_local_views():
    config = MultiCropConfig.cion(n_local=0)
    out = multicrop(np.zeros((0, 20, 10, 3), np.uint8), config, seed=0, return_params=True)
    assert out.global_views.shape == (2, 0, 3, 256, 128) and out.local_views.shape == (0, 0, 3, 128, 64)
    assert out.params["box"].shape == (0, 2, 4)
    one = multicrop(random_images((1, 20, 10, 3)), config.replace(global_size=(4, 2)), seed=0)
    assert one.local_views.shape == (0, 1, 3, 128, 64) and np.isfinite(one.global_views).all()


def test_presets():
    cion, dino = MultiCropConfig.cion(), MultiCropConfig.dino()
    assert (cion.global_size, cion.local_size, cion.ratio, cion.num_views) == ((256, 128), (128, 64), (0.4, 0.6), 10)
    assert (dino.global_size, dino.global_scale, dino.local_size, dino.local_scale) == ((224, 224), (0.4, 1.0), (96, 96), (0.05, 0.4))
    assert dino.ratio == (0.75, 4.0 / 3.0) and dino.blur_p == (1.0, 0.1, 0.5) and dino.solarize_p == (0.0, 0.2, 0.0)
    assert cion.jitter_ranges == {"brightness": (0.6, 1.4), "contrast": (0.6, 1.4), "saturation": (0.8, 1.2), "hue": (-0.1, 0.1)}
    assert MultiCropConfig.dino(n_local=6).n_local == 6
    assert MultiCropConfig(brightness=(0.5, 1.5), hue=(-0.2, 0.3)).jitter_ranges["hue"] == (-0.2, 0.3)
    images = random_images((1, 30, 20, 3))
    np.testing.assert_array_equal(cion.replace(global_size=(8, 4), local_size=(4, 2)).apply(images, 3, step=1).local_views,
                                  multicrop(images, cion.replace(global_size=(8, 4), local_size=(4, 2)), 3, 1).local_views)


# ---- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "fields,match",
    [
        (dict(flip_p=1.5), "flip_p must be a probability"),
        (dict(jitter_p=-0.1), "jitter_p must be a probability"),
        (dict(blur_p=(1.0, 0.1, 2.0)), "blur_p must be a probability"),
        (dict(solarize_p=(0.0, 0.2)), "solarize_p must be 3 numbers"),
        (dict(global_scale=(0.9, 0.5)), "global_scale is an empty range"),
        (dict(local_scale=(0.0, 0.5)), "local_scale must lie in"),
        (dict(ratio=(0.6, 0.4)), "ratio is an empty range"),
        (dict(blur_sigma=(2.0, 0.1)), "blur_sigma is an empty range"),
        (dict(blur_sigma=(0.1, 20.0)), "blur_sigma must lie in"),
        (dict(std=(0.2, 0.0, 0.2)), "std must be positive"),
        (dict(mean=(0.5, float("nan"), 0.5)), "mean must be finite"),
        (dict(global_size=(1, 128)), "global_size must be"),
        (dict(local_size=(64,)), "local_size must be"),
        (dict(n_local=-1), "n_local must be"),
        (dict(n_global=0, n_local=0), "at least one view"),
        (dict(hue=0.7), "hue must be in"),
        (dict(brightness=-0.1), "brightness must be in"),
        (dict(contrast=(1.2, 0.8)), "contrast is an empty range"),
        (dict(interpolation="nearest"), "interpolation must be"),
        (dict(out_dtype="float64"), "out_dtype must be"),
        # configs whose views would hold inf or NaN
        (dict(std=(1e-45, 1.0, 1.0)), "mean/std of channel 0"),
        (dict(mean=(0.5, 1e38, 0.5)), "mean/std of channel 1"),
        (dict(std=(0.2, 0.2, 1e-6), out_dtype="float16"), "beyond float16"),
        (dict(brightness=1e308), "brightness must be in"),
        (dict(saturation=(0.5, 1e300)), "saturation must lie in"),
    ],
)
def test_bad_config_raises_naming_the_field(fields, match):
    with pytest.raises(ValueError, match=match):
        MultiCropConfig(**fields)


def valid_params(batch=2, views=10):
    return {name: np.zeros((batch, views) + trailing, dtype) for name, (dtype, trailing) in PARAM_SPEC.items()} | {
        "box": np.tile(np.array([0, 0, 4, 4]), (batch, views, 1)),
        "jitter_order": np.tile(np.arange(4), (batch, views, 1)),
    }


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda im, c: multicrop(im.astype(np.float32), c, 0), TypeError, "images must have dtype uint8"),
        (lambda im, c: multicrop(im[..., :2], c, 0), ValueError, "3 \\(RGB\\) channels"),
        (lambda im, c: multicrop(np.concatenate([im, im[..., :1]], -1), c, 0), ValueError, "3 \\(RGB\\) channels"),
        (lambda im, c: multicrop(im[0], c, 0), ValueError, "images must be 4-D"),
        (lambda im, c: multicrop(im[:, :1], c, 0), ValueError, "at least 2 x 2"),
        (lambda im, c: multicrop("images", c, 0), TypeError, "images must be a numpy array"),
        (lambda im, c: multicrop(im, {"n_local": 2}, 0), TypeError, "config must be a MultiCropConfig"),
        (lambda im, c: multicrop(im, c, -1), ValueError, r"seed must be in \[0, 2\*\*64 - 1\]"),
        (lambda im, c: multicrop(im, c, 1.5), TypeError, "seed must be an integer"),
        (lambda im, c: multicrop(im, c, 0, step=2**64), ValueError, r"step must be in \[0, 2\*\*64 - 1\]"),
        (lambda im, c: multicrop(im, c, 0, return_params="yes"), TypeError, "return_params must be a bool"),
        (lambda im, c: multicrop(im, c.replace(out_dtype="bfloat16"), 0), TypeError, "bfloat16"),
        (lambda im, c: multicrop(im, c, 0, params=[1, 2]), TypeError, "params must be a dict"),
        (lambda im, c: multicrop(im, c, 0, params={k: v for k, v in valid_params().items() if k != "hue"}), ValueError, "missing \\['hue'\\]"),
        (lambda im, c: multicrop(im, c, 0, params=valid_params() | {"box": np.tile([5, 0, 4, 4], (2, 10, 1))}), ValueError, "params\\['box'\\]\\[0, 0\\]"),
        (lambda im, c: multicrop(im, c, 0, params=valid_params() | {"box": np.tile([0, 0, 0, 4], (2, 10, 1))}), ValueError, "lies outside"),
        (lambda im, c: multicrop(im, c, 0, params=valid_params() | {"jitter_order": np.zeros((2, 10, 4), np.int64)}), ValueError, "permutations"),
        (lambda im, c: multicrop(im, c, 0, params=valid_params() | {"flip": np.zeros((2, 9), bool)}), ValueError, "params\\['flip'\\] must have shape"),
        (lambda im, c: multicrop(im, c, 0, params=valid_params() | {"hue": np.zeros((2, 10), np.int64)}), TypeError, "params\\['hue'\\] must have dtype"),
        (lambda im, c: multicrop(im, c, 0, params=valid_params() | {"hue": np.full((2, 10), 0.7, np.float32)}), ValueError, "hue"),
        (lambda im, c: multicrop(im, c, 0, params=valid_params() | {"blur_sigma": np.full((2, 10), 9.0, np.float32)}), ValueError, "blur_sigma"),
        (lambda im, c: multicrop(im, c, 0, params=valid_params() | {"contrast": np.full((2, 10), -1.0, np.float32)}), ValueError, "contrast"),
        (lambda im, c: multicrop(RaggedImages(im.reshape(-1), [0, 10**6], [[8, 6], [8, 6]]), c, 0), ValueError, "image 1 .* lies outside"),
        (lambda im, c: multicrop(RaggedImages(im.reshape(-1), [0, 0], [[8, 6], [1, 6]]), c, 0), ValueError, "image 1 must be at least 2 x 2"),
        (lambda im, c: multicrop(RaggedImages(im.reshape(-1), [0, 0], [8, 6]), c, 0), ValueError, "sizes must be \\[B, 2\\]"),
        (lambda im, c: multicrop(RaggedImages(im, [0, 0], [[8, 6], [8, 6]]), c, 0), ValueError, "data must be 1-D"),
        (lambda im, c: multicrop(RaggedImages(im.reshape(-1), [0, 0], [[8, 6], [8, 6]], layout="HW"), c, 0), ValueError, "layout"),
    ],
)
def test_bad_input_raises_clear_errors(call, error, match):
    images = random_images((2, 8, 6, 3))
    config = MultiCropConfig.cion(global_size=(4, 2), local_size=(2, 2))
    with pytest.raises(error, match=match):
        call(images, config)


def _views_like(result):
    return np.empty_like(result.global_views), np.empty_like(result.local_views)


def test_out_receives_the_same_views():
    """Views written into the caller's buffers (poisoned first, reused across calls) are the views
    of a fresh call, and the result holds those very arrays."""
    images = random_images((3, 40, 24, 3))
    config = MultiCropConfig.cion(global_size=(16, 8), local_size=(8, 4))
    buffers = None
    for step in range(3):
        fresh = multicrop(images, config, seed=5, step=step)
        buffers = buffers or _views_like(fresh)
        for buffer in buffers:
            buffer[...] = np.nan
        into = multicrop(images, config, seed=5, step=step, out=buffers)
        assert into.global_views is buffers[0] and into.local_views is buffers[1]
        np.testing.assert_array_equal(into.global_views, fresh.global_views)
        np.testing.assert_array_equal(into.local_views, fresh.local_views)


@requires_torch
def test_out_with_torch_tensors():
    images = torch.from_numpy(random_images((2, 20, 12, 3)))
    config = MultiCropConfig.cion(global_size=(8, 4), local_size=(4, 4))
    fresh = multicrop(images, config, seed=1)
    buffers = (torch.full_like(fresh.global_views, float("nan")), torch.full_like(fresh.local_views, float("nan")))
    into = multicrop(images, config, seed=1, out=buffers)
    assert torch.equal(into.global_views, fresh.global_views) and torch.equal(into.local_views, fresh.local_views)
    with pytest.raises(ValueError, match=r"out\[0\] \(global_views\) requires grad"):
        multicrop(images, config, seed=1, out=(buffers[0].clone().requires_grad_(), buffers[1]))
    with pytest.raises(TypeError, match=r"out\[1\] \(local_views\) must be an array of the op's inputs' kind, torch on cpu"):
        multicrop(images, config, seed=1, out=(buffers[0], buffers[1].numpy()))


def _overlapping_pair(g, l):
    backing = np.empty(max(g.size, l.size), np.float32)
    return backing[:g.size].reshape(g.shape), backing[:l.size].reshape(l.shape)


@pytest.mark.parametrize(
    "make_out,error,match",
    [
        (lambda g, l, backing: [g], TypeError, "out must be a pair"),
        (lambda g, l, backing: "views", TypeError, "out must be a pair"),
        (lambda g, l, backing: (g[:, :1], l), ValueError, r"out\[0\] \(global_views\) must have shape \(2, 2, 3, 4, 2\)"),
        (lambda g, l, backing: (g, l.astype(np.float64)), TypeError, r"out\[1\] \(local_views\) must have dtype float32"),
        (lambda g, l, backing: (np.asfortranarray(g), l), ValueError, "must be C-contiguous"),
        (lambda g, l, backing: (g, np.lib.stride_tricks.as_strided(l, writeable=False)), ValueError, "read-only"),
        (lambda g, l, backing: ([[0.0]], l), TypeError, r"out\[0\] \(global_views\) must be a numpy array"),
        (lambda g, l, backing: (backing[:g.size].reshape(g.shape), l), ValueError,
         r"out\[0\] \(global_views\) shares memory with images"),
        (lambda g, l, backing: _overlapping_pair(g, l), ValueError,
         r"out\[1\] \(local_views\) shares memory with out\[0\] \(global_views\)"),
    ],
)
def test_bad_out_raises_naming_it(make_out, error, match):
    backing = np.zeros(1000, np.float32)  # the images live in its first bytes
    images = backing.view(np.uint8)[:2 * 8 * 6 * 3].reshape(2, 8, 6, 3)
    images[...] = random_images((2, 8, 6, 3))
    config = MultiCropConfig.cion(global_size=(4, 2), local_size=(2, 2))
    global_views, local_views = _views_like(multicrop(images, config, 0))
    with pytest.raises(error, match=match):
        multicrop(images, config, 0, out=make_out(global_views, local_views, backing))


def test_checks_survive_python_O():
    out = value_errors_under_python_O("import numpy as np\nfrom cion_fast.ops import MultiCropConfig, multicrop",
                                      "MultiCropConfig(flip_p=2.0)",
                                      "multicrop(np.zeros((1, 1, 5, 3), np.uint8), MultiCropConfig(), 0)")
    assert "ValueError MultiCropConfig.flip_p must be a probability" in out
    assert "ValueError images must be at least 2 x 2" in out


# ---- CUDA ----------------------------------------------------------------------------------------

def _cuda_images(images, framework):
    if framework == "cupy" and cupy is None:
        pytest.skip("cupy not installed")
    return to_framework(images, framework)


@pytest.mark.cuda
@pytest.mark.parametrize("framework", ["torch_cuda", "cupy"])
@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
@pytest.mark.parametrize(
    "config",
    [MultiCropConfig.cion(), MultiCropConfig.dino(n_local=3, interpolation="bicubic"),
     MultiCropConfig(global_size=(17, 9), local_size=(3, 2), blur_p=(1.0, 1.0, 1.0), blur_sigma=(0.5, MAX_BLUR_SIGMA))],
)
def test_cuda_matches_cpu(framework, layout, config):
    """Same seed: bit-identical parameters and pixels equal to float rounding."""
    images = random_images((5, 256, 128, 3), seed=21)
    x = images if layout == "nhwc" else np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    cpu = multicrop(x, config, seed=17, step=3, return_params=True)
    gpu = multicrop(_cuda_images(x, framework), config, seed=17, step=3, return_params=True)
    for name in PARAM_SPEC:
        np.testing.assert_array_equal(host_params(gpu)[name], host_params(cpu)[name], err_msg=name)
    for got, want in zip(all_views(gpu), all_views(cpu)):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-4)  # normalised units: ~5e-5 in [0, 1]


@pytest.mark.cuda
def test_cuda_ragged_explicit_params_and_low_precision():
    sizes = [(40, 20), (64, 30), (2, 2), (33, 17)]
    images = [random_images((h, w, 3), seed=i) for i, (h, w) in enumerate(sizes)]
    ragged = RaggedImages.from_list(images)
    config = MultiCropConfig.cion(global_size=(24, 12), local_size=(9, 5), n_local=3)
    cpu = multicrop(ragged, config, seed=2, return_params=True)
    gpu_ragged = RaggedImages(torch.from_numpy(ragged.data).cuda(), ragged.offsets, ragged.sizes)
    gpu = multicrop(gpu_ragged, config, seed=2, return_params=True)
    for name in PARAM_SPEC:
        np.testing.assert_array_equal(host_params(gpu)[name], host_params(cpu)[name])
    np.testing.assert_allclose(gpu.local_views.cpu().numpy(), cpu.local_views, rtol=0, atol=2e-4)
    replay = multicrop(gpu_ragged, config, seed=0, params=cpu.params)
    np.testing.assert_allclose(replay.global_views.cpu().numpy(), cpu.global_views, rtol=0, atol=2e-4)
    for out_dtype in ("float16", "bfloat16"):
        low = multicrop(gpu_ragged, config.replace(out_dtype=out_dtype), seed=2)
        torch.testing.assert_close(low.local_views.float().cpu(), torch.from_numpy(cpu.local_views), rtol=1e-2, atol=2e-2)


@pytest.mark.cuda
def test_cuda_runs_on_the_callers_stream():
    images = torch.from_numpy(random_images((8, 256, 128, 3), seed=22)).cuda()
    config = MultiCropConfig.cion()
    expected = multicrop(images, config, seed=4).local_views
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        got = multicrop(images, config, seed=4).local_views
    stream.synchronize()
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_offsets_sizes_and_boxes_that_wrap_around_in_int64_are_refused():
    # issue 14: each of these passed a check written as a sum or product and crashed the process
    cfg = MultiCropConfig.cion(global_size=(16, 8), local_size=(8, 4), n_local=2)
    data = np.zeros(768, np.uint8)
    for offsets, sizes in (([2**63 - 10, 384], [[2, 2], [16, 8]]), ([0, 384], [[2**40, 2**40], [16, 8]]),
                           ([0, 384], [[2**62, 4], [16, 8]])):
        with pytest.raises(ValueError, match="lies outside data"):
            multicrop(RaggedImages(data, offsets, sizes), cfg, 0)
    images = np.zeros((2, 16, 8, 3), np.uint8)
    params = multicrop(images, cfg, seed=0, return_params=True).params
    for box in ([5, 0, 2**63 - 1, 4], [2**63 - 1, 0, 2, 4], [0, -(2**63), 2, 4]):
        bad = {k: np.array(v, copy=True) for k, v in params.items()}
        bad["box"][0, 0] = box
        with pytest.raises(ValueError, match="lies outside image 0"):
            multicrop(images, cfg, seed=0, params=bad)
