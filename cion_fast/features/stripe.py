"""A training-free, LOMO-like person descriptor: colour and texture histograms over horizontal stripes.

Pedestrian crops are roughly aligned vertically (head at the top, feet at the bottom), so the
crop is cut into horizontal stripes and each stripe is described by

* a joint HSV colour histogram (hue x saturation x value bins), and
* a histogram of gradient orientations weighted by gradient magnitude (simple texture: stripes,
  checks and edges of clothes),

each L1-normalised and square-rooted (the Hellinger kernel), concatenated and L2-normalised, so a
dot product is a cosine similarity. Pixels are weighted by a horizontal Gaussian centred on the
crop (the person is in the middle, background at the sides), as in SDALF/ELF descriptors.

Everything is vectorised numpy over batches of images: colours and gradients are looked up in
precomputed tables and one ``np.bincount`` per batch builds all histograms; no model, no training, no download. Used to bootstrap denoising before any network
is trained.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from cion_fast import _arrays


def _hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float RGB in [0, 1] [..., 3] -> hue [0, 1), saturation [0, 1], value [0, 1]."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = rgb.max(axis=-1)
    chroma = value - rgb.min(axis=-1)
    safe = np.where(chroma > 0, chroma, 1.0)
    hue = np.where(value == r, (g - b) / safe, np.where(value == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    hue = np.where(chroma > 0, (hue / 6.0) % 1.0, 0.0)
    saturation = np.where(value > 0, chroma / np.where(value > 0, value, 1.0), 0.0)
    return hue, saturation, value


def _quantise(x: np.ndarray, bins: int) -> np.ndarray:
    return np.minimum((x * bins).astype(np.int64), bins - 1)


# Colours are looked up with 6 bits per channel (a 2**18-entry table), gradients with the two
# central differences of an 8-bit grey image (a 511 x 511 table): no per-pixel float maths.
_COLOUR_BITS = 6
_GRADIENT_RANGE = 255


@functools.lru_cache(maxsize=8)
def _colour_table(bins: tuple[int, int, int]) -> np.ndarray:
    """int32 [2**18]: joint HSV bin of every 6-bit RGB cell (evaluated at the cell centre)."""
    levels = 1 << _COLOUR_BITS
    centre = (np.arange(levels) * (256 // levels) + (256 // levels - 1) / 2.0) / 255.0
    r, g, b = np.meshgrid(centre, centre, centre, indexing="ij")
    hue, saturation, value = _hsv(np.stack([r, g, b], axis=-1))
    joint = (_quantise(hue, bins[0]) * bins[1] + _quantise(saturation, bins[1])) * bins[2] + _quantise(value, bins[2])
    return joint.astype(np.int32).ravel()


@functools.lru_cache(maxsize=8)
def _gradient_tables(orientations: int) -> tuple[np.ndarray, np.ndarray]:
    """(orientation bin int32, magnitude float32) for every (dx, dy) in [-255, 255]^2, flattened."""
    d = np.arange(-_GRADIENT_RANGE, _GRADIENT_RANGE + 1, dtype=np.float64)
    dx, dy = np.meshgrid(d, d, indexing="ij")
    angle = np.mod(np.arctan2(dy, dx), np.pi) / np.pi
    return _quantise(angle, orientations).astype(np.int32).ravel(), (np.hypot(dx, dy) / 255.0).astype(np.float32).ravel()


def stripe_histogram(
    images: Any,
    stripes: int = 6,
    bins: tuple[int, int, int] = (8, 4, 4),
    orientations: int = 8,
    center_sigma: float | None = 0.4,
    batch_size: int = 512,
) -> np.ndarray:
    """Training-free stripe descriptor of person crops (see the module docstring).

    Args:
        images: uint8 [M, H, W, 3] RGB crops (numpy, torch or cupy; processed on the host).
        stripes: number of horizontal stripes (1 <= stripes <= H; W >= 1).
        bins: (hue, saturation, value) bins of the joint colour histogram of each stripe.
        orientations: bins of the unsigned gradient-orientation histogram of each stripe
            (0 = no texture part).
        center_sigma: standard deviation, as a fraction of the width, of the horizontal Gaussian
            that weights pixels (None = uniform weights).
        batch_size: images per vectorised batch (bounds temporary memory, ~70 bytes per pixel).

    Returns:
        float32 [M, stripes * (bins[0] * bins[1] * bins[2] + orientations)], rows of unit L2 norm.

    Raises:
        TypeError: images not uint8. ValueError: wrong shape or parameter.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> crops = rng.integers(0, 256, size=(4, 32, 16, 3), dtype=np.uint8)
        >>> f = stripe_histogram(crops)
        >>> f.shape, f.dtype, bool(np.allclose(np.linalg.norm(f, axis=1), 1))
        ((4, 816), dtype('float32'), True)
        >>> bool((f @ f.T)[0, 0] > (f @ f.T)[0, 1])
        True
    """
    images = _arrays.as_array(images, "images")
    _arrays.require_dtype(images, "images", ("uint8",))
    _arrays.require_ndim(images, "images", 4, "[M, H, W, 3]")
    images = _arrays.to_numpy(images)
    num, height, width, channels = images.shape
    if channels != 3:
        raise ValueError(f"images must be [M, H, W, 3] RGB, got shape {images.shape}")
    if isinstance(stripes, bool) or not isinstance(stripes, int) or stripes < 1:
        raise ValueError(f"stripes must be an int >= 1, got {stripes!r}")
    if height < stripes or width < 1:  # the images' fault, not the stripes': say which size they have
        raise ValueError(f"images of {height}x{width} pixels are too small for the stripe descriptor: {stripes} stripes "
                         f"need at least {stripes}x1")
    if len(bins) != 3 or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in bins):
        raise ValueError(f"bins must be three positive ints (hue, saturation, value), got {bins!r}")
    if isinstance(orientations, bool) or not isinstance(orientations, int) or orientations < 0:
        raise ValueError(f"orientations must be an int >= 0, got {orientations!r}")
    if center_sigma is not None and not center_sigma > 0:
        raise ValueError(f"center_sigma must be > 0 or None, got {center_sigma!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")

    colour_bins = bins[0] * bins[1] * bins[2]
    block = colour_bins + orientations
    out = np.empty((num, stripes * block), dtype=np.float32)
    if num == 0:
        return out
    stripe_of_row = (np.arange(height) * stripes // height).astype(np.int32)
    column_weight = np.ones(width, dtype=np.float32)
    if center_sigma is not None:
        x = (np.arange(width, dtype=np.float32) + 0.5) / width - 0.5
        column_weight = np.exp(-0.5 * (x / center_sigma) ** 2).astype(np.float32)
    pixel_weight = np.broadcast_to(column_weight, (height, width))

    shift = 8 - _COLOUR_BITS
    colour_table = _colour_table(tuple(bins))
    span = 2 * _GRADIENT_RANGE + 1
    for start in range(0, num, batch_size):
        batch = images[start : start + batch_size]
        count = batch.shape[0]
        weight = np.broadcast_to(pixel_weight, (count, height, width)).ravel()
        cells = (np.arange(count, dtype=np.int32) * stripes)[:, None, None] + stripe_of_row[:, None]
        quantised = (batch >> shift).astype(np.int32)
        colour = (quantised[..., 0] << (2 * _COLOUR_BITS)) | (quantised[..., 1] << _COLOUR_BITS) | quantised[..., 2]
        histogram = np.empty((count, stripes, block), dtype=np.float64)
        histogram[..., :colour_bins] = np.bincount(
            (cells * colour_bins + colour_table[colour]).ravel(), weights=weight, minlength=count * stripes * colour_bins
        ).reshape(count, stripes, colour_bins)
        if orientations:
            orientation_table, magnitude_table = _gradient_tables(orientations)
            rgb = batch.astype(np.int32)
            grey = np.pad((rgb[..., 0] + 2 * rgb[..., 1] + rgb[..., 2]) >> 2, ((0, 0), (1, 1), (1, 1)), mode="edge")
            dx = (grey[:, 1:-1, 2:] - grey[:, 1:-1, :-2]) >> 1
            dy = (grey[:, 2:, 1:-1] - grey[:, :-2, 1:-1]) >> 1
            gradient = ((dx + _GRADIENT_RANGE) * span + (dy + _GRADIENT_RANGE)).ravel()
            histogram[..., colour_bins:] = np.bincount(
                (cells * orientations + orientation_table[gradient].reshape(cells.shape[0], height, width)).ravel(),
                weights=magnitude_table[gradient] * weight,
                minlength=count * stripes * orientations,
            ).reshape(count, stripes, orientations)
        parts = [histogram[..., :colour_bins]]
        if orientations:
            parts.append(histogram[..., colour_bins:])
        for part in parts:
            total = part.sum(axis=-1, keepdims=True)
            np.divide(part, np.where(total > 0, total, 1.0), out=part)
        features = np.sqrt(histogram.reshape(count, -1))
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        out[start : start + count] = features / np.where(norms > 0, norms, 1.0)
    return out
