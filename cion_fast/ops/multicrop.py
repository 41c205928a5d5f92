"""Fused multi-crop augmentation: every DINO / CION view of a uint8 batch in one call.

Defined in ``docs/ALGORITHMS.md``, "Multi-crop augmentation". Per view, in order: random resized
crop (torchvision's sampling; antialiased bilinear or bicubic resize with torch
``interpolate(antialias=True)`` semantics), horizontal flip, colour jitter in a random order
(brightness, contrast, saturation, hue; torchvision tensor semantics, clamped to [0, 1] after each
op), grayscale, Gaussian blur (radius ``ceil(3 sigma)``, reflect padding), solarise, normalise.

Randomness is counter-based (Philox4x32-10 keyed by seed, step, image index and view index), so
the CPU and CUDA kernels draw identical parameters and a run is reproducible from its seed. The
drawn parameters can be returned and passed back in, which reproduces the same views (that is how
the tests compare against plain PyTorch, and how UP-ReID reads the crop boxes).

Departures from torchvision, on purpose:

* grayscale weights are ITU-R 601 (0.299, 0.587, 0.114) as in PIL; torchvision's
  tensor path uses 0.2989 for red (a difference below 1e-4);
* bicubic resizes are clamped to [0, 1], as PIL does for uint8 images;
* reflect padding folds again when the blur radius reaches the view size (torch's ``pad`` would
  raise); the blur sigma is capped at :data:`MAX_BLUR_SIGMA` output pixels;
* ``int(round(.))`` of the crop sides uses the same half-to-even rounding as Python, but the
  uniform and log-uniform draws come from Philox instead of torch's generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from cion_fast import _arrays, _checks
from cion_fast.ops._extension import check_device_supported, kernels

#: Largest blur sigma, in output pixels (radius 24: the CUDA kernel keeps a tile plus this halo in
#: shared memory). DINO and CION use at most 2.
MAX_BLUR_SIGMA = 8.0

#: Largest view side in pixels (the kernels index within a view in 32 bits).
MAX_VIEW_SIDE = 4096

_OUT_DTYPES = ("float32", "float16", "bfloat16")
_INTERPOLATIONS = ("bilinear", "bicubic")
# Colour-jitter factors above this saturate every pixel already (the kernel clamps to [0, 1]);
# larger ones (1e308) become inf in float32 and inf * 0 = NaN in a view.
MAX_JITTER_FACTOR = 1e4
#: The normalisation every network input gets (RGB in [0, 1]): the one definition, passed to the
#: multicrop kernel through its params struct and used by feature extraction and fine-tuning.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Parameter arrays: name -> (dtype, trailing dims after [B, V]).
PARAM_SPEC: dict[str, tuple[str, tuple[int, ...]]] = {
    "box": ("int64", (4,)),
    "flip": ("bool", ()),
    "jitter_applied": ("bool", ()),
    "brightness": ("float32", ()),
    "contrast": ("float32", ()),
    "saturation": ("float32", ()),
    "hue": ("float32", ()),
    "jitter_order": ("int64", (4,)),
    "grayscale": ("bool", ()),
    "blur_sigma": ("float32", ()),
    "solarize": ("bool", ()),
}


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _numbers(value: Any, name: str, count: int) -> tuple[float, ...]:
    if not isinstance(value, (tuple, list)) or len(value) != count or not all(_is_number(v) for v in value):
        raise ValueError(f"MultiCropConfig.{name} must be {count} numbers, got {value!r}")
    values = tuple(float(v) for v in value)
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"MultiCropConfig.{name} must be finite, got {value!r}")
    return values


def _range(value: Any, name: str, low: float, high: float, low_open: bool = False) -> tuple[float, float]:
    lo, hi = _numbers(value, name, 2)
    if lo > hi:
        raise ValueError(f"MultiCropConfig.{name} is an empty range: lo {lo} > hi {hi}")
    if lo < low or (low_open and lo <= low) or hi > high:
        bracket = "(" if low_open else "["
        raise ValueError(f"MultiCropConfig.{name} must lie in {bracket}{low}, {high}], got {value!r}")
    return lo, hi


def _probability(value: Any, name: str) -> float:
    if not _is_number(value) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"MultiCropConfig.{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _size(value: Any, name: str) -> tuple[int, int]:
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
        or min(value) < 2
        or max(value) > MAX_VIEW_SIDE
    ):
        raise ValueError(f"MultiCropConfig.{name} must be (height, width) integers in [2, {MAX_VIEW_SIDE}], got {value!r}")
    return int(value[0]), int(value[1])


def _check_normalisation(mean: tuple, std: tuple, out_dtype: str) -> None:
    """Every normalised pixel (x - mean) / std, x in [0, 1], must be finite in ``out_dtype``
    (std = 1e-45 or mean = 1e38 made views of inf and NaN)."""
    limit = float(np.finfo(np.float16).max) if out_dtype == "float16" else float(np.finfo(np.float32).max)
    for channel, (m, s) in enumerate(zip(mean, std)):
        largest = max(abs(m), abs(1.0 - m)) / s
        if not largest <= limit:  # (also catches inf)
            raise ValueError(f"MultiCropConfig mean/std of channel {channel} ({m!r}, {s!r}) make normalised pixels of "
                             f"up to {largest:.3g}, beyond {out_dtype}'s {limit:.3g}")


def _jitter(value: Any, name: str, centre: float, bound: float) -> tuple[float, float]:
    """torchvision ColorJitter's rule: a number x means [max(0, centre - x), centre + x]."""
    if _is_number(value):
        x = float(value)
        if not 0.0 <= x <= bound:
            raise ValueError(f"MultiCropConfig.{name} must be in [0, {bound}], got {value!r}")
        return (max(0.0, centre - x) if centre else -x, centre + x)
    low = -0.5 if centre == 0.0 else 0.0
    return _range(value, name, low, bound)


@dataclass(frozen=True)
class MultiCropConfig:
    """Every probability, range, size and count of the multi-crop recipe (validated on creation).

    The defaults are the CION / SOLIDER person-ReID recipe (:meth:`cion`); :meth:`dino` gives
    DINO's ImageNet recipe. Sizes are (height, width) in output pixels; ``ratio`` is width /
    height. Per-view probabilities ``blur_p`` and ``solarize_p`` are (global view 1, other global
    views, local views). Colour-jitter strengths follow torchvision's ``ColorJitter``: a number
    ``x`` means factors in ``[max(0, 1 - x), 1 + x]`` (hue: ``[-x, x]``, ``x <= 0.5``); a
    (lo, hi) pair gives the range directly.

    Example:
        >>> from cion_fast.ops import MultiCropConfig
        >>> MultiCropConfig.cion().num_views, MultiCropConfig.dino().global_size
        (10, (224, 224))
        >>> MultiCropConfig(flip_p=1.5)
        Traceback (most recent call last):
        ...
        ValueError: MultiCropConfig.flip_p must be a probability in [0, 1], got 1.5
    """

    global_size: tuple[int, int] = (256, 128)
    n_global: int = 2
    global_scale: tuple[float, float] = (0.8, 1.0)
    local_size: tuple[int, int] = (128, 64)
    n_local: int = 8
    local_scale: tuple[float, float] = (0.05, 0.8)
    ratio: tuple[float, float] = (0.4, 0.6)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: Any = 0.4
    contrast: Any = 0.4
    saturation: Any = 0.2
    hue: Any = 0.1
    grayscale_p: float = 0.2
    blur_p: tuple[float, float, float] = (1.0, 0.1, 0.5)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: tuple[float, float, float] = (0.0, 0.2, 0.0)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    out_dtype: str = "float32"
    _settings: dict = field(default=None, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen
        set_("global_size", _size(self.global_size, "global_size"))
        set_("local_size", _size(self.local_size, "local_size"))
        for name in ("n_global", "n_local"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 0 <= value < 32768:
                raise ValueError(f"MultiCropConfig.{name} must be an integer in [0, 32768), got {value!r}")
            set_(name, int(value))
        if self.n_global + self.n_local == 0:
            raise ValueError("MultiCropConfig needs at least one view (n_global + n_local >= 1)")
        set_("global_scale", _range(self.global_scale, "global_scale", 0.0, 1.0, low_open=True))
        set_("local_scale", _range(self.local_scale, "local_scale", 0.0, 1.0, low_open=True))
        set_("ratio", _range(self.ratio, "ratio", 0.0, math.inf, low_open=True))
        for name in ("flip_p", "jitter_p", "grayscale_p"):
            set_(name, _probability(getattr(self, name), name))
        for name in ("blur_p", "solarize_p"):
            values = _numbers(getattr(self, name), name, 3)
            set_(name, tuple(_probability(v, name) for v in values))
        set_("blur_sigma", _range(self.blur_sigma, "blur_sigma", 0.0, MAX_BLUR_SIGMA, low_open=True))
        set_("mean", _numbers(self.mean, "mean", 3))
        set_("std", _numbers(self.std, "std", 3))
        if min(self.std) <= 0.0:
            raise ValueError(f"MultiCropConfig.std must be positive, got {self.std!r}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"MultiCropConfig.interpolation must be one of {_INTERPOLATIONS}, got {self.interpolation!r}")
        if self.out_dtype not in _OUT_DTYPES:
            raise ValueError(f"MultiCropConfig.out_dtype must be one of {_OUT_DTYPES}, got {self.out_dtype!r}")
        _check_normalisation(self.mean, self.std, self.out_dtype)
        ranges = {
            "brightness": _jitter(self.brightness, "brightness", 1.0, MAX_JITTER_FACTOR),
            "contrast": _jitter(self.contrast, "contrast", 1.0, MAX_JITTER_FACTOR),
            "saturation": _jitter(self.saturation, "saturation", 1.0, MAX_JITTER_FACTOR),
            "hue": _jitter(self.hue, "hue", 0.0, 0.5),
        }
        for name in ranges:  # a (lo, hi) list becomes a tuple: the config stays hashable
            value = getattr(self, name)
            set_(name, float(value) if _is_number(value) else tuple(float(v) for v in value))
        # What the kernels read, built once per config (the trainer calls every step).
        settings = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        settings.update(ranges)
        set_("_settings", settings)

    @property
    def num_views(self) -> int:
        """n_global + n_local."""
        return self.n_global + self.n_local

    @property
    def jitter_ranges(self) -> dict[str, tuple[float, float]]:
        """The factor range of each colour op: brightness, contrast, saturation, hue."""
        return {name: self._settings[name] for name in ("brightness", "contrast", "saturation", "hue")}

    @classmethod
    def cion(cls, **overrides: Any) -> "MultiCropConfig":
        """CION / SOLIDER person-ReID views: 2 x 256x128 (scale 0.8-1) + 8 x 128x64 (0.05-0.8),
        ratio (0.4, 0.6). Keyword arguments override fields."""
        return cls(**overrides)

    @classmethod
    def dino(cls, **overrides: Any) -> "MultiCropConfig":
        """DINO's ImageNet views: 2 x 224x224 (scale 0.4-1) + 8 x 96x96 (0.05-0.4), ratio (3/4, 4/3)."""
        values = dict(
            global_size=(224, 224), global_scale=(0.4, 1.0), local_size=(96, 96), local_scale=(0.05, 0.4),
            ratio=(3.0 / 4.0, 4.0 / 3.0),
        )
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> "MultiCropConfig":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def apply(self, images: Any, seed: int, step: int = 0, **kwargs: Any) -> "MultiCropResult":
        """``multicrop(images, self, seed, step, **kwargs)``: the trainer's per-step call."""
        return multicrop(images, self, seed, step, **kwargs)


@dataclass(frozen=True)
class RaggedImages:
    """A batch of RGB uint8 images of different sizes in one flat buffer (no resize pass needed).

    Attributes:
        data: 1-D uint8 buffer (numpy, torch CPU/CUDA or cupy); the views come back on its device.
        offsets: [B] integers: image b starts at element ``offsets[b]`` of ``data``. Read on the host.
        sizes: [B, 2] integers: (height, width) of each image, both >= 2. Read on the host.
        layout: ``"HWC"`` (interleaved, as decoded by PIL / OpenCV) or ``"CHW"`` (planar, as
            ``torchvision.io.decode_jpeg`` returns).

    Example:
        >>> import numpy as np
        >>> a, b = np.zeros((40, 20, 3), np.uint8), np.zeros((64, 30, 3), np.uint8)
        >>> batch = RaggedImages.from_list([a, b])
        >>> batch.offsets.tolist(), batch.sizes.tolist()
        ([0, 2400], [[40, 20], [64, 30]])
    """

    data: Any
    offsets: Any
    sizes: Any
    layout: str = "HWC"

    @classmethod
    def from_list(cls, images: list, layout: str = "HWC") -> "RaggedImages":
        """Packs a list of [H, W, 3] (``"HWC"``) or [3, H, W] (``"CHW"``) uint8 numpy arrays."""
        if layout not in ("HWC", "CHW"):
            raise ValueError(f"layout must be 'HWC' or 'CHW', got {layout!r}")
        arrays = [np.ascontiguousarray(_arrays.to_numpy(_arrays.as_array(x, "images"))) for x in images]
        for i, x in enumerate(arrays):
            if x.ndim != 3 or x.shape[2 if layout == "HWC" else 0] != 3:
                raise ValueError(f"images[{i}] must be {'[H, W, 3]' if layout == 'HWC' else '[3, H, W]'}, got {x.shape}")
        sizes = np.array([x.shape[:2] if layout == "HWC" else x.shape[1:] for x in arrays], dtype=np.int64).reshape(-1, 2)
        lengths = np.array([x.size for x in arrays], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if arrays else np.zeros(0, np.int64)
        data = np.concatenate([x.reshape(-1) for x in arrays]) if arrays else np.zeros(0, np.uint8)
        return cls(data, offsets, sizes, layout)


@dataclass
class MultiCropResult:
    """Views of one :func:`multicrop` call, in the caller's framework and device.

    Attributes:
        global_views: [n_global, B, 3, H, W] of the config's ``out_dtype``.
        local_views: [n_local, B, 3, h, w].
        params: with ``return_params=True``, a dict of arrays with leading dims [B, V] (globals
            first, then locals): ``box`` int64 [B, V, 4] (top, left, height, width) in source
            pixels; ``flip``, ``jitter_applied``, ``grayscale``, ``solarize`` bool; ``brightness``,
            ``contrast``, ``saturation``, ``hue`` float32 (used where ``jitter_applied``);
            ``jitter_order`` int64 [B, V, 4] (a permutation of 0 brightness, 1 contrast,
            2 saturation, 3 hue); ``blur_sigma`` float32 (0 = no blur). Else None.
    """

    global_views: Any
    local_views: Any
    params: dict[str, Any] | None = None

    @property
    def views(self) -> list:
        """The V views as a list of [B, 3, ., .] arrays, globals first (what DINO heads take)."""
        return [self.global_views[i] for i in range(self.global_views.shape[0])] + [
            self.local_views[i] for i in range(self.local_views.shape[0])
        ]


def _c_contiguous(x: Any) -> bool:
    if _arrays.framework_of(x) == "torch":
        return x.is_contiguous()
    return bool(x.flags.c_contiguous)


def _permute(x: Any, axes: tuple[int, ...]) -> Any:
    return x.permute(*axes) if _arrays.framework_of(x) == "torch" else x.transpose(axes)


@dataclass
class _Source:
    data: Any
    placement: _arrays.Placement
    batch: int
    height: int  # uniform size (dense) or 0 (ragged)
    width: int
    max_height: int
    max_width: int
    channels_last: bool
    sizes: np.ndarray  # [B, 2] host
    offsets: Any = None  # device arrays for ragged input, else None
    device_sizes: Any = None


def _dense_source(images: Any) -> _Source:
    x = _arrays.as_array(images, "images")
    _arrays.require_dtype(x, "images", ("uint8",))
    if x.ndim != 4:
        raise ValueError(f"images must be 4-D [B, H, W, 3] or [B, 3, H, W] (or RaggedImages), got shape {tuple(x.shape)}")
    placement = _arrays.placement_of(x, "images")
    if x.shape[-1] == 3:
        channels_last = True
    elif x.shape[1] == 3:
        nhwc = _permute(x, (0, 2, 3, 1))
        channels_last = _c_contiguous(nhwc)  # e.g. torch channels_last memory: read in place
        x = nhwc if channels_last else x
    else:
        raise ValueError(f"images must have 3 (RGB) channels, [B, H, W, 3] or [B, 3, H, W], got shape {tuple(x.shape)}")
    x = _arrays.contiguous(x)
    batch = int(x.shape[0])
    height, width = (int(x.shape[1]), int(x.shape[2])) if channels_last else (int(x.shape[2]), int(x.shape[3]))
    if height < 2 or width < 2:
        raise ValueError(f"images must be at least 2 x 2 pixels, got {height} x {width}")
    sizes = np.tile(np.array([[height, width]], dtype=np.int64), (batch, 1))
    return _Source(x, placement, batch, height, width, height, width, channels_last, sizes)


def _ragged_source(images: RaggedImages) -> _Source:
    if images.layout not in ("HWC", "CHW"):
        raise ValueError(f"RaggedImages.layout must be 'HWC' or 'CHW', got {images.layout!r}")
    data = _arrays.as_array(images.data, "RaggedImages.data")
    _arrays.require_dtype(data, "RaggedImages.data", ("uint8",))
    _arrays.require_ndim(data, "RaggedImages.data", 1, "[N] (a flat buffer)")
    placement = _arrays.placement_of(data, "RaggedImages.data")
    data = _arrays.contiguous(data)
    offsets = _arrays.as_index_array(images.offsets, "RaggedImages.offsets")
    sizes = _arrays.as_array(images.sizes, "RaggedImages.sizes")
    _arrays.require_dtype(sizes, "RaggedImages.sizes", ("int32", "int64"))
    sizes = np.ascontiguousarray(_arrays.to_numpy(sizes), dtype=np.int64)
    batch = offsets.shape[0]
    if sizes.shape != (batch, 2):
        raise ValueError(f"RaggedImages.sizes must be [B, 2] = [{batch}, 2] (height, width), got {sizes.shape}")
    if batch and sizes.min() < 2:
        bad = int(np.argmin(sizes.min(axis=1)))
        raise ValueError(f"RaggedImages image {bad} must be at least 2 x 2 pixels, got {tuple(sizes[bad])}")
    # Overflow-safe: each factor is bounded before the product, each end compared as offset <= L - area
    # (3 * h * w or offset + area could wrap around in int64 and pass the check).
    length = data.shape[0]
    fits = sizes[:, 1] <= (length // 3) // np.maximum(sizes[:, 0], 1)
    area = np.where(fits, 3 * np.where(fits, sizes[:, 0], 0) * np.where(fits, sizes[:, 1], 0), 0)
    outside = ~fits | (offsets < 0) | (offsets > length - area)
    if batch and outside.any():
        bad = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"RaggedImages image {bad} (offset {int(offsets[bad])}, size {tuple(int(v) for v in sizes[bad])}) lies outside "
            f"data of length {data.shape[0]}"
        )
    max_h, max_w = (int(sizes[:, 0].max()), int(sizes[:, 1].max())) if batch else (2, 2)
    return _Source(
        data, placement, batch, 0, 0, max_h, max_w, images.layout == "HWC", sizes,
        offsets=placement.from_numpy(offsets), device_sizes=placement.from_numpy(sizes),
    )


def _check_params(params: Any, source: _Source, config: MultiCropConfig) -> tuple[dict[str, Any], float]:
    """Validates explicit parameters on the host; returns them on the images' placement and the
    largest blur sigma."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict of arrays (as returned with return_params=True), got {type(params).__name__}")
    unknown = sorted(set(params) - set(PARAM_SPEC))
    missing = [name for name in PARAM_SPEC if name not in params]
    if unknown or missing:
        raise ValueError(f"params must have exactly the keys {list(PARAM_SPEC)}; missing {missing}, unknown {unknown}")
    B, V = source.batch, config.num_views
    host: dict[str, np.ndarray] = {}
    for name, (dtype, trailing) in PARAM_SPEC.items():
        x = _arrays.as_array(params[name], f"params['{name}']")
        kind = _arrays.dtype_name(x)
        allowed = {"int64": ("int32", "int64"), "bool": ("bool",), "float32": ("float32", "float64")}[dtype]
        if kind not in allowed:
            raise TypeError(f"params['{name}'] must have dtype {' or '.join(allowed)}, got {kind}")
        value = np.ascontiguousarray(_arrays.to_numpy(x), dtype=dtype)
        if value.shape != (B, V) + trailing:
            raise ValueError(f"params['{name}'] must have shape {(B, V) + trailing}, got {value.shape}")
        host[name] = value
    box = host["box"]
    h_img, w_img = source.sizes[:, None, 0], source.sizes[:, None, 1]
    inside = (box[..., 0] >= 0) & (box[..., 1] >= 0) & (box[..., 2] >= 1) & (box[..., 3] >= 1)
    # compared as top <= H - height (never top + height, which can wrap around in int64)
    inside &= (box[..., 2] <= h_img) & (box[..., 3] <= w_img)
    inside &= (box[..., 0] <= h_img - np.minimum(box[..., 2], h_img)) & (box[..., 1] <= w_img - np.minimum(box[..., 3], w_img))
    if not inside.all():
        b, v = np.argwhere(~inside)[0]
        raise ValueError(f"params['box'][{b}, {v}] = {box[b, v].tolist()} lies outside image {b} of size {tuple(int(v) for v in source.sizes[b])}")
    if not (np.sort(host["jitter_order"], axis=-1) == np.arange(4)).all():
        raise ValueError("params['jitter_order'] rows must be permutations of 0, 1, 2, 3")
    for name in ("brightness", "contrast", "saturation"):
        if not (np.isfinite(host[name]).all() and (host[name] >= 0).all()):
            raise ValueError(f"params['{name}'] factors must be finite and >= 0")
    if not (np.abs(host["hue"]) <= 0.5).all():
        raise ValueError("params['hue'] must lie in [-0.5, 0.5]")
    sigma = host["blur_sigma"]
    if not ((sigma >= 0) & (sigma <= MAX_BLUR_SIGMA)).all():
        raise ValueError(f"params['blur_sigma'] must lie in [0, {MAX_BLUR_SIGMA}] (0 = no blur)")
    views = {name: source.placement.from_numpy(value) for name, value in host.items()}
    return views, float(sigma.max()) if sigma.size else 0.0


def _views_out(out: tuple[Any, Any] | None, source: Any, config: MultiCropConfig) -> tuple[Any, Any]:
    """The (global, local) view arrays: new ones, or the caller's ``out`` once checked."""
    (gh, gw), (lh, lw) = config.global_size, config.local_size
    B, placement = source.batch, source.placement
    shapes = {"global_views": (config.n_global, B, 3, gh, gw), "local_views": (config.n_local, B, 3, lh, lw)}
    if out is None:
        return tuple(placement.empty(shape, config.out_dtype, "images") for shape in shapes.values())
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(f"out must be a pair (global_views, local_views), got {type(out).__name__}")
    reads = {"images": source.data}  # and the first output, when checking the second
    for index, ((name, shape), array) in enumerate(zip(shapes.items(), out)):
        label = f"out[{index}] ({name})"
        reads[label] = _arrays.check_output(array, label, placement, shape, config.out_dtype, reads)
    return tuple(out)


def multicrop(
    images: Any,
    config: MultiCropConfig,
    seed: int,
    step: int = 0,
    return_params: bool = False,
    params: dict[str, Any] | None = None,
    out: tuple[Any, Any] | None = None,
) -> MultiCropResult:
    """All global and local views of a batch of uint8 RGB images, in one kernel call.

    Args:
        images: uint8 [B, H, W, 3] (NHWC, as decoded) or [B, 3, H, W] (a last dim of 3 means
            NHWC), numpy / torch (CPU or CUDA) / cupy; or a :class:`RaggedImages` batch of
            different sizes. Images must be at least 2 x 2.
        config: a :class:`MultiCropConfig` (``MultiCropConfig.cion()``, ``.dino()``, ...).
        seed: integer in [0, 2**64); with ``step``, the image index and the view index it keys
            the Philox generator, so the same (seed, step) gives the same views on CPU and CUDA.
        step: integer in [0, 2**64), e.g. the training step: a new step draws new views.
        return_params: also return the drawn parameters (``result.params``).
        params: parameters to use instead of sampling (a dict as returned in ``result.params``,
            any framework; validated on the host). Reproduces those views exactly.
        out: ``(global_views, local_views)`` to write the views into instead of new arrays:
            C-contiguous, of the shapes, dtype, framework and device the call returns (e.g. the
            previous call's, once consumed), sharing no memory with ``images``. On the CPU, fresh
            output pages cost the kernel's zeroing of them at first touch: a quarter of a call at
            batch 64 (benchmarks/NOTES.md); reused buffers skip it. Buffers starting on a 64-byte
            line (torch's CPU tensors, the arrays this op returns) are written ~15 % faster than
            numpy's own 16-byte-aligned ``np.empty``.

    Returns:
        :class:`MultiCropResult` with ``global_views`` [n_global, B, 3, H, W] and ``local_views``
        [n_local, B, 3, h, w] of ``config.out_dtype``, normalised with ``config.mean``/``std``, in
        the framework and on the device of ``images`` (CUDA work runs on the caller's current
        stream), and ``params`` when asked.

    Raises:
        TypeError: non-uint8 images, unsupported array types, CUDA input without a CUDA build.
        ValueError: wrong shapes or channel counts, images smaller than 2 x 2, bad seed/step,
            invalid explicit parameters; ``out`` of the wrong shape, not C-contiguous, read-only
            or overlapping ``images`` (TypeError for another dtype, framework or device).

    Speed: the floor is writing the views once. The CPU kernel stays 2.5-4x above it by its
    pixel work, about 5 ns per output pixel of three channels on one core: the output's stores,
    the blur (its multiplies and adds), hue rotation (RGB -> HSV -> RGB, two divisions and a dozen
    selects per pixel) and the two resampling passes; 2,850-3,090 images/s for the CION recipe at
    batch 64 on 2 Intel Xeon cores with ``out`` given, 1,200-1,850 with new outputs, whose pages
    the OS zeroes first (benchmarks/NOTES.md, issue 27).

    Example:
        >>> import numpy as np
        >>> from cion_fast.ops import MultiCropConfig, multicrop
        >>> images = np.random.default_rng(0).integers(0, 256, (4, 256, 128, 3), dtype=np.uint8)
        >>> out = multicrop(images, MultiCropConfig.cion(), seed=0, step=0, return_params=True)
        >>> out.global_views.shape, out.local_views.shape, out.params["box"].shape
        ((2, 4, 3, 256, 128), (8, 4, 3, 128, 64), (4, 10, 4))
        >>> again = multicrop(images, MultiCropConfig.cion(), seed=0, params=out.params)
        >>> bool((again.local_views == out.local_views).all())
        True
        >>> into = multicrop(images, MultiCropConfig.cion(), seed=0, params=out.params,
        ...                  out=(again.global_views, again.local_views))
        >>> into.local_views is again.local_views
        True
    """
    if not isinstance(config, MultiCropConfig):
        raise TypeError(f"config must be a MultiCropConfig, got {type(config).__name__}")
    seed = _checks.check_int(seed, "seed", 0, _checks.UINT64_MAX)  # Philox counters
    step = _checks.check_int(step, "step", 0, _checks.UINT64_MAX)
    if not isinstance(return_params, (bool, np.bool_)):
        raise TypeError(f"return_params must be a bool, got {type(return_params).__name__}")
    source = _ragged_source(images) if isinstance(images, RaggedImages) else _dense_source(images)
    placement = source.placement
    check_device_supported(placement, "images")
    if config.out_dtype == "bfloat16" and placement.framework != "torch":
        raise TypeError(f"out_dtype='bfloat16' needs torch tensors as images ({placement.framework} has no bfloat16)")
    B, V = source.batch, config.num_views

    settings = config._settings
    if params is None:
        views = {name: placement.empty((B, V) + trailing, dtype) for name, (dtype, trailing) in PARAM_SPEC.items()}
        max_blur_sigma = config.blur_sigma[1] if max(config.blur_p) > 0 else 0.0
    else:
        views, max_blur_sigma = _check_params(params, source, config)
    global_views, local_views = _views_out(out, source, config)

    if B > 0:
        dl = lambda x: _arrays.to_dlpack(x, placement)  # noqa: E731 - local shorthand
        kernels().multicrop(
            images=dl(source.data),
            image_offsets=dl(source.offsets) if source.offsets is not None else None,
            image_sizes=dl(source.device_sizes) if source.device_sizes is not None else None,
            batch=B,
            height=source.height,
            width=source.width,
            max_height=source.max_height,
            max_width=source.max_width,
            channels_last=source.channels_last,
            settings=settings,
            seed=seed,
            step=step,
            sample=params is None,
            max_blur_sigma=max_blur_sigma,
            global_views=dl(global_views),
            local_views=dl(local_views),
            stream=placement.stream(),
            **{name: dl(value) for name, value in views.items()},
        )
    return MultiCropResult(global_views, local_views, views if return_params else None)
