"""Private: the procedural pedestrian renderer behind :mod:`cion_fast.data.synth`.

Everything here is vectorised numpy over a batch of frames: a frame is described by a row of a
:class:`FrameSpec` (who, which camera, viewpoint, walking phase, detector jitter, occluder, background
offset, noise pick), and :func:`render` turns a batch of rows into uint8 crops. Rendering is a pure
function of the spec row and the identity/camera tables, so the same frame renders to the same
bytes whatever batch it is in.

The pipeline per batch (one camera per call):

1. a *part label map* ``uint8 [B, H, W]`` is painted back to front (background 0, skin, hair,
   shoes, trousers, bag, straps, logo, belt, occluder, sleeves, and 24 top labels = stripe bit x
   texture cell). On every image row a part covers one interval of columns, so its mask is one
   gather from a table of column spans, computed only on the band of rows the part can reach;
2. colours come from a per-frame palette (identity palette x camera colour x frame light, at
   three cylindrical shading levels) by one gather per pixel;
3. background pixels come from the camera's scene texture at the frame's offset, in the same gather
   (colours are packed RGBA uint32, one 4-byte gather per pixel);
4. camera effects: optics blur (2 x 2 box passes on packed pixels, four channels per operation),
   sensor noise from a fixed noise bank, rounding to uint8, and for low-resolution cameras a
   nearest-neighbour upsampling smoothed by box passes (a frame of such a camera is rendered at
   1/2 or 1/4 of the crop size).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

# ---- part labels -------------------------------------------------------------------------------
BG, SKIN, HAIR, SHOE, BOTTOM, BAG, STRAP, LOGO, BELT, OCC, ARM_TOP, BOTTOM_DARK = range(12)
TOP0 = 16  # 16 + 8 * stripe_sum(0..2) + 2 * cell_row(0..3) + cell_col(0..1)
NUM_LABELS = 40

# ---- attribute codes ---------------------------------------------------------------------------
VIEW_FRONT, VIEW_BACK, VIEW_SIDE = 0, 1, 2
PATTERNS = ("solid", "h_stripes", "v_stripes", "checks", "logo")
BOTTOM_TYPES = ("trousers", "shorts", "skirt")
BAGS = ("none", "backpack", "shoulder")
HAIR_LENGTHS = ("short", "medium", "long")
SLEEVES = ("short", "long")

# Small palettes on purpose: many identities share coarse colours, fine detail tells them apart.
TOP_PALETTE = np.array(
    [[30, 30, 32], [235, 235, 230], [128, 128, 130], [35, 45, 95], [180, 35, 40],
     [50, 95, 175], [45, 120, 60], [205, 185, 140], [110, 70, 45], [225, 190, 50],
     [200, 110, 150], [95, 175, 190]], dtype=np.float32)
BOTTOM_PALETTE = np.array(
    [[25, 25, 28], [55, 80, 130], [110, 110, 115], [190, 170, 130], [30, 40, 75], [95, 65, 45]],
    dtype=np.float32)
HAIR_PALETTE = np.array(
    [[20, 18, 16], [60, 40, 25], [110, 75, 45], [200, 170, 110], [150, 150, 150]], dtype=np.float32)
SKIN_PALETTE = np.array(
    [[245, 215, 190], [225, 185, 150], [195, 150, 110], [150, 105, 75], [95, 65, 45]],
    dtype=np.float32)
SHOE_PALETTE = np.array(
    [[20, 20, 20], [240, 240, 240], [100, 65, 40], [120, 120, 125], [170, 40, 40], [40, 60, 140]],
    dtype=np.float32)
ACCENT_PALETTE = np.array(
    [[20, 20, 20], [240, 240, 235], [200, 40, 40], [40, 90, 190], [240, 200, 40], [60, 150, 70],
     [235, 120, 30], [130, 60, 150], [120, 85, 55], [140, 140, 145]], dtype=np.float32)

NOISE_BANK_SIZE = 64


def child_rng(seed: int, *key: int) -> np.random.Generator:
    """A PCG64 generator for one stream of the world (identity i, video v, ...): independent of
    the order in which streams are used."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=tuple(key))))


# ---- identities --------------------------------------------------------------------------------
@dataclass
class IdentityTable:
    """Struct of arrays, one row per identity (row ``n`` is a blank used by background frames)."""

    palette: np.ndarray  # float32 [n + 1, NUM_LABELS, 3], 0..255
    pattern: np.ndarray  # int8 [n + 1]
    stripe_period: np.ndarray  # float32, in body heights
    stripe_phase: np.ndarray  # float32
    hair_length: np.ndarray  # int8
    sleeve: np.ndarray  # int8
    bottom_type: np.ndarray  # int8
    bag: np.ndarray  # int8
    bag_side: np.ndarray  # float32, +1 / -1
    belt: np.ndarray  # bool
    height: np.ndarray  # float32 scale
    width: np.ndarray  # float32 scale
    logo_y: np.ndarray  # float32, top of the logo in body heights
    logo_w: np.ndarray  # float32, half-width of the logo
    stride: np.ndarray  # float32, frames per walking cycle

    def __len__(self) -> int:
        return len(self.pattern) - 1

    def attributes(self, i: int) -> dict:
        """Readable attributes of identity ``i`` (for reports and tests)."""
        return {
            "pattern": PATTERNS[self.pattern[i]],
            "hair_length": HAIR_LENGTHS[self.hair_length[i]],
            "sleeve": SLEEVES[self.sleeve[i]],
            "bottom_type": BOTTOM_TYPES[self.bottom_type[i]],
            "bag": BAGS[self.bag[i]],
            "belt": bool(self.belt[i]),
            "height": float(self.height[i]),
            "width": float(self.width[i]),
            "top_color": self.palette[i, TOP0].round().astype(int).tolist(),
            "bottom_color": self.palette[i, BOTTOM].round().astype(int).tolist(),
        }


def make_identities(seed: int, stream: int, count: int) -> IdentityTable:
    """``count`` identities, identity ``i`` drawn from its own child stream ``(stream, i)``."""
    rows = [_one_identity(child_rng(seed, stream, i)) for i in range(count)]
    rows.append(_blank_identity())
    return IdentityTable(**{f.name: np.stack([r[f.name] for r in rows]) for f in fields(IdentityTable)})


def _jitter(rng: np.random.Generator, color: np.ndarray, amount: float) -> np.ndarray:
    return np.clip(color * (1.0 + amount * rng.standard_normal(3)), 0, 255)


def _one_identity(rng: np.random.Generator) -> dict:
    pal = np.zeros((NUM_LABELS, 3), dtype=np.float64)
    skin = _jitter(rng, SKIN_PALETTE[rng.integers(len(SKIN_PALETTE))], 0.04)
    hair = _jitter(rng, HAIR_PALETTE[rng.choice(len(HAIR_PALETTE), p=[0.4, 0.25, 0.15, 0.1, 0.1])], 0.06)
    top_a = _jitter(rng, TOP_PALETTE[rng.integers(len(TOP_PALETTE))], 0.05)
    top_b = _jitter(rng, ACCENT_PALETTE[rng.integers(len(ACCENT_PALETTE))], 0.05)
    if np.abs(top_a - top_b).sum() < 90:  # stripes must be visible
        top_b = 255.0 - top_b
    pattern = int(rng.choice(len(PATTERNS), p=[0.42, 0.16, 0.12, 0.1, 0.2]))
    if pattern in (0, 4):
        top_b = top_a
    bottom = _jitter(rng, BOTTOM_PALETTE[rng.integers(len(BOTTOM_PALETTE))], 0.05)
    shoe = _jitter(rng, SHOE_PALETTE[rng.integers(len(SHOE_PALETTE))], 0.05)
    bag_color = _jitter(rng, ACCENT_PALETTE[rng.integers(len(ACCENT_PALETTE))], 0.06)
    logo = _jitter(rng, ACCENT_PALETTE[rng.integers(len(ACCENT_PALETTE))], 0.05)
    if np.abs(logo - top_a).sum() < 90:
        logo = 255.0 - logo
    belt_color = _jitter(rng, ACCENT_PALETTE[rng.integers(len(ACCENT_PALETTE))], 0.05)
    # Fine detail: the per-identity texture, a 4 x 2 grid of small colour variations on the top.
    texture = 1.0 + 0.09 * rng.standard_normal((4, 2, 3))

    pal[SKIN], pal[HAIR], pal[SHOE], pal[BOTTOM] = skin, hair, shoe, bottom
    pal[BAG], pal[STRAP], pal[LOGO], pal[BELT] = bag_color, bag_color * 0.7, logo, belt_color
    pal[ARM_TOP], pal[BOTTOM_DARK] = top_a * 0.88, bottom * 0.78
    for s, color in enumerate((top_a, top_b, top_a)):
        for r in range(4):
            for c in range(2):
                pal[TOP0 + 8 * s + 2 * r + c] = color * texture[r, c]
    return {
        "palette": np.clip(pal, 0, 255).astype(np.float32),
        "pattern": np.int8(pattern),
        "stripe_period": np.float32(rng.uniform(0.035, 0.07)),
        "stripe_phase": np.float32(rng.uniform(0, 2)),
        "hair_length": np.int8(rng.choice(3, p=[0.55, 0.2, 0.25])),
        "sleeve": np.int8(rng.integers(2)),
        "bottom_type": np.int8(rng.choice(3, p=[0.65, 0.2, 0.15])),
        "bag": np.int8(rng.choice(3, p=[0.5, 0.3, 0.2])),
        "bag_side": np.float32(rng.choice([-1.0, 1.0])),
        "belt": np.bool_(rng.random() < 0.3),
        "height": np.float32(rng.uniform(0.9, 1.06)),
        "width": np.float32(rng.uniform(0.85, 1.2)),
        "logo_y": np.float32(rng.uniform(0.2, 0.27)),
        "logo_w": np.float32(rng.uniform(0.025, 0.055)),
        "stride": np.float32(rng.uniform(9.0, 14.0)),
    }


def _blank_identity() -> dict:
    return {
        "palette": np.zeros((NUM_LABELS, 3), np.float32), "pattern": np.int8(0),
        "stripe_period": np.float32(0.05), "stripe_phase": np.float32(0), "hair_length": np.int8(0),
        "sleeve": np.int8(0), "bottom_type": np.int8(0), "bag": np.int8(0),
        "bag_side": np.float32(1), "belt": np.bool_(False), "height": np.float32(1),
        "width": np.float32(1), "logo_y": np.float32(0.22), "logo_w": np.float32(0.04),
        "stride": np.float32(10),
    }


# ---- cameras -----------------------------------------------------------------------------------
@dataclass
class CameraTable:
    """One row per camera, plus its background scene rendered at the camera's own resolution."""

    color: np.ndarray  # float32 [C, 3]: illumination gain x colour cast
    scenes: list  # C x uint32 [Hs, Ws] packed RGBA scene at the camera's resolution
    blur: np.ndarray  # int64 [C]: number of 2 x 2 box-blur passes (at the camera's resolution)
    lowres: np.ndarray  # int64 [C]: 1, 2 or 4 (block size at 128 x 64)
    noise: np.ndarray  # float32 [C]: noise std (0..255 scale)
    view_probs: np.ndarray  # float64 [C, 3]: front, back, side
    occlusion: np.ndarray  # float64 [C]: probability that an appearance is partly occluded

    def __len__(self) -> int:
        return len(self.color)

    def factor(self, c: int, size: tuple[int, int]) -> int:
        """Downsampling factor of camera ``c`` for crops of ``size``."""
        return int(self.lowres[c]) * max(1, size[0] // 128)

    def describe(self, c: int) -> dict:
        """Readable parameters of camera ``c``."""
        return {
            "gain": round(float(self.color[c].mean()), 3),
            "cast": [round(float(v), 3) for v in self.color[c] / self.color[c].mean()],
            "blur_passes": int(self.blur[c]),
            "lowres_factor": int(self.lowres[c]),
            "noise_std": round(float(self.noise[c]), 2),
            "view_probs": [round(float(v), 3) for v in self.view_probs[c]],
            "occlusion": round(float(self.occlusion[c]), 3),
        }


@dataclass(frozen=True)
class CameraEffects:
    """How strongly the cameras differ (see ``WorldConfig``): each deviation from a neutral camera
    is multiplied by ``strength``. At strength 0 every camera has gain 1, no cast, the same
    background scene, no blur, no noise and full resolution; at 1 the effects are the given ones.

    Attributes:
        strength: overall multiplier of every effect below (>= 0).
        gain: (min, max) illumination gain; applied as ``gain ** strength``.
        cast: std of the log colour cast per channel.
        background: 1 = every camera has its own scene, 0 = one scene shared by all cameras
            (each camera's scene is blended with the shared one by ``min(1, background * strength)``).
        blur: multiplier of the blur passes (blurry cameras 2-3, others 0-1).
        noise: multiplier of the sensor noise std (2.5-8 on the 0..255 scale).
        lowres: probability that a low-resolution camera is really low resolution.
    """

    strength: float = 1.0
    gain: tuple = (0.65, 1.2)
    cast: float = 0.08
    background: float = 1.0
    blur: float = 1.0
    noise: float = 1.0
    lowres: float = 1.0


# The shared background scene's stream key (cameras use 0 .. count-1).
_SHARED_SCENE = 1 << 20


def make_cameras(seed: int, stream: int, count: int, size: tuple[int, int],
                 effects: CameraEffects = CameraEffects()) -> CameraTable:
    """``count`` cameras; camera ``c`` from child stream ``(stream, c)``. Cameras cycle through
    clean / low-res / blurry / noisy settings so every world has some of each; ``effects`` scales
    how different they are."""
    s = float(effects.strength)
    rows = []
    for c in range(count):
        rng = child_rng(seed, stream, c)
        gain = rng.uniform(*effects.gain) ** s
        cast = np.exp(s * effects.cast * rng.standard_normal(3))
        cast /= cast.mean()
        color = (gain * cast).astype(np.float32)
        kind = c % 4  # 0 clean, 1 low-res, 2 blurry, 3 noisy
        lowres = (4 if rng.random() < 0.3 else 2) if kind == 1 else 1
        if rng.random() >= effects.lowres * s:
            lowres = 1
        blur = int(round(s * effects.blur * ([0, 0, 2, 0][kind] + int(rng.random() < 0.3))))  # 2 x 2 box passes
        noise = s * effects.noise * [2.5, 3.0, 3.0, 8.0][kind] * rng.uniform(0.7, 1.3)
        view_probs = rng.dirichlet([1.0, 1.0, 1.0]) * 0.8 + 0.2 / 3
        occlusion = rng.uniform(0.08, 0.3)
        f = lowres * max(1, size[0] // 128)
        scene = _make_scene(rng, size[0] // f, size[1] // f)
        own = min(1.0, effects.background * s)
        if own < 1.0:
            shared = _make_scene(child_rng(seed, stream, _SHARED_SCENE), size[0] // f, size[1] // f)
            scene = own * scene + (1.0 - own) * shared
        rows.append((color, _pack(scene * color), blur, lowres, noise, view_probs, occlusion))
    return CameraTable(
        color=np.stack([r[0] for r in rows]).astype(np.float32),
        scenes=[r[1] for r in rows],
        blur=np.array([r[2] for r in rows], np.int64),
        lowres=np.array([r[3] for r in rows], np.int64),
        noise=np.array([r[4] for r in rows], np.float32),
        view_probs=np.stack([r[5] for r in rows]),
        occlusion=np.array([r[6] for r in rows]),
    )


def _pack(rgb: np.ndarray) -> np.ndarray:
    """float [..., 3] in 0..255 -> uint32 [...] (RGBA bytes, A = 0), for one-gather compositing."""
    out = np.zeros(rgb.shape[:-1] + (4,), np.uint8)
    out[..., :3] = np.clip(rgb + 0.5, 0, 255)
    return out.view(np.uint32)[..., 0]


def scene_shape(h: int, w: int) -> tuple[int, int]:
    """Size of a camera's background scene for crops of ``h x w``."""
    return h + h // 4, 4 * w


def _make_scene(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A background texture: a wall with panels/windows above a tiled floor, low-frequency
    blotches and a few clutter objects. float64 [h + h/4, 4 w, 3] in 0..255."""
    hs, ws = scene_shape(h, w)
    yy = np.arange(hs)[:, None] / h
    xx = np.arange(ws)[None, :] / h
    horizon = rng.uniform(0.4, 0.7)
    wall = rng.uniform(80, 200) * np.exp(0.12 * rng.standard_normal(3))
    floor = rng.uniform(60, 160) * np.exp(0.08 * rng.standard_normal(3))
    panel = rng.uniform(0.15, 0.45)
    pos = (xx / panel) % 1.0
    panel_mod = 1.0 - 0.15 * (pos < rng.uniform(0.06, 0.25))
    window = (pos > 0.35) & (pos < 0.8) & (yy > 0.06) & (yy < horizon - 0.1) & (rng.random() < 0.6)
    window_color = rng.uniform(70, 170) * np.array([0.9, 1.0, 1.12])
    tile = rng.uniform(0.06, 0.16)
    tiles = 1.0 + 0.07 * ((np.floor(xx / tile) + np.floor((yy - horizon) / (tile * 0.5))) % 2 - 0.5)
    img = np.where((yy < horizon)[..., None], wall * panel_mod[..., None], floor * tiles[..., None])
    img = np.where(window[..., None], window_color, img)
    coarse = rng.standard_normal((6, 12, 3)) * 0.6 + rng.standard_normal((6, 12, 1))
    gy, gx = np.linspace(0, 5, hs), np.linspace(0, 11, ws)
    y0, x0 = np.floor(gy).astype(int).clip(0, 4), np.floor(gx).astype(int).clip(0, 10)
    fy, fx = (gy - y0)[:, None, None], (gx - x0)[None, :, None]
    blotch = ((1 - fy) * (1 - fx) * coarse[y0][:, x0] + fy * (1 - fx) * coarse[y0 + 1][:, x0]
              + (1 - fy) * fx * coarse[y0][:, x0 + 1] + fy * fx * coarse[y0 + 1][:, x0 + 1])
    img = img * (1.0 + 0.08 * blotch) + 3.0 * rng.standard_normal((hs, ws, 3))
    for _ in range(rng.integers(2, 6)):  # clutter: poles, bins, signs, plants
        x0c = int(rng.integers(0, ws))
        wc = max(1, int(rng.uniform(0.03, 0.18) * h))
        y1c = int(rng.uniform(horizon + 0.05, 1.2) * h)
        y0c = max(0, y1c - int(rng.uniform(0.1, 0.9) * h))
        muted = rng.uniform(40, 200) * np.exp(0.25 * rng.standard_normal(3))
        img[y0c:y1c, x0c:x0c + wc] = muted if rng.random() < 0.85 else rng.uniform(40, 230, 3)
    return np.clip(img, 0, 255)


def make_noise_bank(seed: int, stream: int, size: tuple[int, int]) -> np.ndarray:
    """Unit-variance Gaussian noise frames, float32 [NOISE_BANK_SIZE, H, W, 3]."""
    rng = child_rng(seed, stream)
    return rng.standard_normal((NOISE_BANK_SIZE, size[0], size[1], 3), dtype=np.float32)


# ---- frame specs -------------------------------------------------------------------------------
@dataclass
class FrameSpec:
    """One row per frame to render (struct of arrays, all of length M)."""

    ident: np.ndarray  # int64: row of the identity table, -1 for background only
    cam: np.ndarray  # int64
    view: np.ndarray  # int8: 0 front, 1 back, 2 side
    flip: np.ndarray  # float32: +1 / -1 (facing direction; mirrors asymmetric parts)
    phase: np.ndarray  # float32: walking phase in radians
    dx: np.ndarray  # float32: box shift, fraction of W
    dy: np.ndarray  # float32: box shift, fraction of H
    scale: np.ndarray  # float32: box scale jitter (person height factor)
    light: np.ndarray  # float32: per-frame brightness factor
    occ: np.ndarray  # float32 [M, 4]: occluder rectangle y0, y1, x0, x1 as fractions (none: y0 >= y1)
    occ_color: np.ndarray  # float32 [M, 3]
    bg_y: np.ndarray  # float32 in [0, 1): background offset, fraction of the free range
    bg_x: np.ndarray  # float32 in [0, 1)
    noise_k: np.ndarray  # int64: noise bank index

    def __len__(self) -> int:
        return len(self.ident)

    def take(self, index) -> "FrameSpec":
        return FrameSpec(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(specs: list) -> "FrameSpec":
        return FrameSpec(**{f.name: np.concatenate([getattr(s, f.name) for s in specs]) for f in fields(FrameSpec)})


# ---- the renderer ------------------------------------------------------------------------------
def render(spec: FrameSpec, ids: IdentityTable, cams: CameraTable, noise_bank: np.ndarray,
           size: tuple[int, int], out: np.ndarray | None = None, batch: int = 16,
           progress=None) -> np.ndarray:
    """Renders every row of ``spec`` to uint8 [M, H, W, 3] (into ``out`` when given).

    Frames are grouped by camera (effects are per camera), then by viewpoint, and rendered in
    batches of ``batch``; ``progress(n)`` is called after each batch with its size. The result
    does not depend on ``batch`` or on the order of the rows.
    """
    m = len(spec)
    h, w = size
    if out is None:
        out = np.empty((m, h, w, 3), np.uint8)
    order = np.lexsort((np.arange(m), spec.view, spec.cam))
    bounds = np.flatnonzero(np.diff(spec.cam[order])) + 1
    for group in np.split(order, bounds):
        if len(group) == 0:
            continue
        renderer = _CameraRenderer(ids, cams, int(spec.cam[group[0]]), noise_bank, size, batch)
        for start in range(0, len(group), batch):
            idx = group[start:start + batch]
            out[idx] = renderer(spec.take(idx))
            if progress is not None:
                progress(len(idx))
    return out


class _CameraRenderer:
    """Renders batches of frames of one camera: labels and colours at the camera's resolution,
    effects, and for low-resolution cameras the upsampling to the crop size."""

    def __init__(self, ids: IdentityTable, cams: CameraTable, cam: int, noise_bank: np.ndarray,
                 size: tuple[int, int], batch: int):
        self.f = cams.factor(cam, size)
        h, w = size[0] // self.f, size[1] // self.f
        self.ids, self.cam, self.h, self.w, self.size = ids, cam, h, w, size
        self.color = cams.color[cam]
        self.blur = int(cams.blur[cam])
        # 4-channel noise (alpha stays 0) with the +0.5 of rounding folded in
        noise = np.zeros((len(noise_bank), h, w, 4), np.float32)
        noise[..., :3] = noise_bank[:, :h, :w] * cams.noise[cam]
        noise[..., :3] += np.float32(0.5)
        self.noise = noise
        scene = cams.scenes[cam]
        self.hs, self.ws = scene.shape
        self.scene_size = scene.size
        self.table = np.empty(scene.size + batch * 3 * NUM_LABELS, np.uint32)
        self.table[: scene.size] = scene.ravel()
        self.ys = np.arange(h, dtype=np.float32) + np.float32(0.5)
        self.xs = np.arange(w, dtype=np.float32) + np.float32(0.5)

    def __call__(self, s: FrameSpec) -> np.ndarray:
        label, xn, tw = _paint_labels(s, self.ids, self.h, self.w, self.ys, self.xs)
        packed = self._colour(s, label, xn, tw)  # uint32 [B, h, w]: RGBA bytes, alpha 0
        for k in range(self.blur):  # optics ...
            packed = _box_packed(packed, ceil=k % 2 == 0)
        img = packed.view(np.uint8).reshape(packed.shape + (4,)).astype(np.float32)
        img += np.take(self.noise, s.noise_k, axis=0)  # ... then sensor noise (+0.5: rounding)
        np.clip(img, 0, 255, out=img)
        packed = img.astype(np.uint8).view(np.uint32)[..., 0]
        if self.f > 1:  # ... then the resize of a low-resolution crop to the crop size
            b, h, w = packed.shape
            up = np.empty((b, h, self.f, w, self.f), np.uint32)
            up[...] = packed[:, :, None, :, None]
            packed = up.reshape(b, h * self.f, w * self.f)
            for k in range(self.f - 1):  # box passes: x2 -> linear interpolation
                packed = _box_packed(packed, ceil=k % 2 == 0)
        return _rgba_to_rgb(packed)

    def _colour(self, s: FrameSpec, label: np.ndarray, xn: np.ndarray, tw: np.ndarray) -> np.ndarray:
        b, h, w = label.shape
        f32 = np.float32
        ident = np.where(s.ident < 0, len(self.ids), s.ident)
        # per-frame palette at three shading levels (cylindrical body shading), packed as uint32
        pal = self.ids.palette[ident] * (self.color * s.light[:, None])[:, None, :]
        pal[:, OCC] = s.occ_color * self.color
        shaded = pal[:, None] * np.array([1.0, 0.87, 0.74], f32)[None, :, None, None]
        n_pal = b * 3 * NUM_LABELS
        self.table[self.scene_size: self.scene_size + n_pal] = _pack(shaded).ravel()
        axn = np.abs(xn)
        level = (axn > tw * f32(0.5)).astype(np.intp) + (axn > tw * f32(0.85))
        lab_off = self.scene_size + (np.arange(b)[:, None, None] * 3 + level) * NUM_LABELS
        gidx = label + lab_off  # intp [B, H, W]
        oy = np.floor(s.bg_y * (self.hs - h + 1)).astype(np.intp)
        ox = np.floor(s.bg_x * (self.ws - w + 1)).astype(np.intp)
        sidx = ((oy[:, None] + np.arange(h)) * self.ws)[:, :, None] + (ox[:, None] + np.arange(w))[:, None, :]
        np.copyto(gidx, sidx, where=label == BG)
        return np.take(self.table, gidx)


def _rgba_to_rgb(packed: np.ndarray) -> np.ndarray:
    """Packed uint32 RGBA [B, H, W] (alpha 0) -> uint8 [B, H, W, 3], by 32-bit word shuffles (a
    strided channel slice is many times slower)."""
    b, h, w = packed.shape
    out = np.empty((b, h, w, 3), np.uint8)
    if (h * w) % 4 or not np.little_endian:
        out[...] = packed.view(np.uint8).reshape(b, h, w, 4)[..., :3]
        return out
    q = packed.reshape(-1, 4)
    words = out.reshape(-1).view(np.uint32).reshape(-1, 3)
    np.bitwise_or(q[:, 0], q[:, 1] << np.uint32(24), out=words[:, 0])
    np.bitwise_or(q[:, 1] >> np.uint32(8), q[:, 2] << np.uint32(16), out=words[:, 1])
    np.bitwise_or(q[:, 2] >> np.uint32(16), q[:, 3] << np.uint32(8), out=words[:, 2])
    return out


_TROUSER_END = np.array([2.0, 0.69, 0.0], np.float32)  # trousers, shorts, skirt (legs bare)
_HAIR_END = np.array([0.0, 0.16, 0.25], np.float32)  # short, medium, long
_LOW7 = np.uint32(0x7F7F7F7F)
_ONE = np.uint32(1)


def _avg_into(out: np.ndarray, a: np.ndarray, b: np.ndarray, ceil: bool, tmp: np.ndarray) -> None:
    """out = per-byte average of packed uint32 RGBA ``a`` and ``b`` (SWAR: four channels per
    operation), rounded up (``ceil``) or down; ``tmp`` is scratch of the same shape."""
    np.bitwise_xor(a, b, out=tmp)
    tmp >>= _ONE
    tmp &= _LOW7
    if ceil:
        np.bitwise_or(a, b, out=out)
        out -= tmp
    else:
        np.bitwise_and(a, b, out=out)
        out += tmp


def _box_packed(p: np.ndarray, ceil: bool) -> np.ndarray:
    """2 x 2 box blur of packed uint32 RGBA [B, H, W] (the last row/column is kept). Rows and
    columns are shifts of the flat per-frame array, so every operation is one long contiguous loop.
    Two passes make a [1, 2, 1] x [1, 2, 1] blur; alternating ``ceil`` cancels the rounding bias."""
    b, h, w = p.shape
    x = p.reshape(b, h * w)
    tmp = np.empty_like(x)
    y = np.empty_like(x)
    _avg_into(y[:, :-w], x[:, :-w], x[:, w:], ceil, tmp[:, :-w])
    y[:, -w:] = x[:, -w:]
    z = np.empty_like(x)
    _avg_into(z[:, :-1], y[:, :-1], y[:, 1:], not ceil, tmp[:, :-1])
    z = z.reshape(b, h, w)
    z[:, :, -1] = y.reshape(b, h, w)[:, :, -1]
    return z


_SPAN_TABLES: dict = {}


def _span_table(w: int) -> np.ndarray:
    """bool [(w + 1)^2, w]: row ``lo * (w + 1) + hi`` is True on columns lo..hi-1."""
    table = _SPAN_TABLES.get(w)
    if table is None:
        x = np.arange(w)
        lo = np.arange(w + 1)[:, None, None]
        hi = np.arange(w + 1)[None, :, None]
        table = ((x >= lo) & (x < hi)).reshape((w + 1) * (w + 1), w)
        _SPAN_TABLES[w] = table
    return table


def _paint_labels(s: FrameSpec, ids: IdentityTable, h: int, w: int, ys: np.ndarray, xs: np.ndarray):
    """The part label map uint8 [B, H, W], the body x-coordinate [B, 1, W] and torso half-width.

    Body coordinates: ``yn`` is 0 at the top of the head and 1 at the soles; ``xn`` is the offset
    from the body axis in body heights, mirrored by ``flip`` (positive = the way the person faces
    in a side view). Every part is, on each row, one interval of columns: its mask is gathered
    from a table of column spans (one row copy per image row), and it is painted only inside the
    band of rows it can occupy. Each mask bounds its own rows, so the result does not depend on
    the other frames of the batch.
    """
    f32 = np.float32
    b = len(s)
    person = s.ident >= 0
    ident = np.where(person, s.ident, len(ids))

    body_h = (f32(0.86 * h) * ids.height[ident] * s.scale).astype(f32)
    bob = f32(0.012) * np.abs(np.sin(s.phase)).astype(f32) * body_h
    foot = f32(0.965 * h) + s.dy * f32(h) - bob
    top = foot - body_h
    top = np.where(person, top, f32(-1e4))  # background-only frames: the body is far away
    cx = f32(w / 2) + s.dx * f32(w)
    inv = (f32(1) / body_h)[:, None]
    yn_all = ((ys[None, :] - top[:, None]) * inv)[:, :, None]  # [B, H, 1]
    xn = ((xs[None, :] - cx[:, None]) * inv * s.flip[:, None])[:, None, :]  # [B, 1, W]

    def col(a):
        return a[:, None, None]

    view = col(s.view)
    front, back, side = view == VIEW_FRONT, view == VIEW_BACK, view == VIEW_SIDE
    wscale = col(ids.width[ident])
    tw = np.where(side, f32(0.072), f32(0.11)) * wscale  # torso half-width [B, 1, 1]
    pattern, bag = col(ids.pattern[ident]), col(ids.bag[ident])
    bottom_type = col(ids.bottom_type[ident])
    sin_p = col(np.sin(s.phase).astype(f32))
    bag_side = col(ids.bag_side[ident])

    label = np.zeros((b, h, w), np.uint8)
    table = _span_table(w)
    w1 = np.intp(w + 1)
    cx3, bh3, forward = col(cx), col(body_h), col(s.flip) > 0
    lim_lo, lim_hi, zero, wmax = f32(-1.0), f32(w + 1.0), np.intp(0), np.intp(w)
    any_person = bool(person.any())
    if any_person:
        t_lo, t_hi = float(top[person].min()), float(top[person].max())
        h_lo, h_hi = float(body_h[person].min()), float(body_h[person].max())

    def band(y0: float, y1: float):
        """A row slice holding every pixel with yn in [y0, y1) of every frame of the batch (a
        conservative bound), and yn there."""
        if not any_person:
            return None, None
        lo = int(np.floor(t_lo + y0 * h_lo)) - 1
        hi = int(np.ceil(t_hi + y1 * h_hi)) + 1
        lo, hi = max(lo, 0), min(hi, h)
        if lo >= hi:
            return None, None
        return slice(lo, hi), yn_all[:, lo:hi]

    def span_px(lo, hi, ok, rows: int):
        """bool [B, rows, W]: columns whose pixel centre lies in (lo, hi) (pixel coordinates,
        arrays broadcastable to [B, rows, 1]) on the rows where ``ok``."""
        lo = np.minimum(np.maximum(lo, lim_lo), lim_hi)
        hi = np.minimum(np.maximum(hi, lim_lo), lim_hi)
        first = (lo + f32(0.5)).astype(np.intp)
        end = (hi + f32(0.5)).astype(np.intp)
        np.maximum(first, zero, out=first)
        np.minimum(first, wmax, out=first)
        np.minimum(end, wmax, out=end)
        np.maximum(end, first, out=end)
        idx = np.where(ok, first * w1 + end, zero)
        if idx.shape != (b, rows, 1):
            idx = np.broadcast_to(idx, (b, rows, 1))
        return table.take(idx[..., 0], axis=0)

    def span(a, c, ok, rows: int):
        """bool [B, rows, W]: pixels with body coordinate a < xn < c on the rows where ``ok``."""
        lo = cx3 + bh3 * np.where(forward, a, -c)
        hi = cx3 + bh3 * np.where(forward, c, -a)
        return span_px(lo, hi, ok, rows)

    def paint(sl, value, mask):
        """label[:, sl] = where(mask, value, label) via wrap-around uint8 arithmetic (fast)."""
        dst = label[:, sl]
        diff = np.subtract(value, dst, dtype=np.uint8)
        diff *= mask
        dst += diff

    def any_of(flag) -> bool:
        return bool(np.any(flag & col(person)))

    def rows_in(yn, y0, y1):
        return (yn >= f32(y0)) & (yn < f32(y1))

    # backpack seen from the side: behind the torso
    if any_of(side & (bag == 1)):
        sl, yn = band(0.17, 0.42)
        if sl is not None:
            ok = rows_in(yn, 0.17, 0.42) & side & (bag == 1)
            paint(sl, BAG, span(-tw - f32(0.075), -tw + f32(0.02), ok, yn.shape[1]))

    # legs: front/back views hang straight (the swinging foot lifts), side views swing
    leg_w = f32(0.043) * wscale
    cut = _TROUSER_END[bottom_type]  # where the legs stop being covered
    sl, yn = band(0.48, 1.0)
    if sl is not None:
        for sign in (1.0, -1.0):
            swing = f32(sign) * sin_p
            bottom_y = np.where(side, f32(1.0), f32(1.0) - f32(0.03) * np.maximum(swing, f32(0)))
            cloth = np.where(side, np.uint8(BOTTOM_DARK if sign > 0 else BOTTOM), np.uint8(BOTTOM))
            lab_row = np.where(yn >= bottom_y - f32(0.05), np.uint8(SHOE),
                               np.where(yn < cut, cloth, np.uint8(SKIN))).astype(np.uint8)
            centre = np.where(side, f32(0), f32(sign * 0.05) * wscale) + np.where(
                side, swing * f32(0.32), f32(0)) * (yn - f32(0.5))
            ok = (yn >= f32(0.48)) & (yn < bottom_y)
            paint(sl, lab_row, span(centre - leg_w, centre + leg_w, ok, yn.shape[1]))

    # skirt (a trapezoid over the thighs) or the waist of trousers / shorts
    sl, yn = band(0.48, 0.73)
    if sl is not None:
        skirt_hw = tw * (f32(1.0) + f32(1.6) * np.maximum(yn - f32(0.48), f32(0)))
        skirt = (bottom_type == 2) & (yn < f32(0.73))
        waist = (bottom_type != 2) & (yn < f32(0.56))
        hw = np.where(skirt, skirt_hw, tw * f32(0.98))
        paint(sl, BOTTOM, span(-hw, hw, (skirt | waist) & (yn >= f32(0.48)), yn.shape[1]))

    # torso: pattern (stripes, checks) x per-identity texture cells
    sl, yn = band(0.145, 0.5)
    if sl is not None:
        period = col(ids.stripe_period[ident])
        sphase = col(ids.stripe_phase[ident])
        h_on = (pattern == 1) | (pattern == 3)
        v_on = (pattern == 2) | (pattern == 3)
        bit_h = (np.floor((yn - f32(0.15)) / period + sphase).astype(np.int16) & 1) * h_on
        bit_v = (np.floor(xn / (period * f32(0.8)) + f32(64)).astype(np.int16) & 1) * v_on
        cell_r = np.minimum(np.maximum(np.floor((yn - f32(0.15)) * f32(11.5)), f32(0)), f32(3)).astype(np.int16)
        row_part = (TOP0 + 8 * bit_h + 2 * cell_r).astype(np.uint8)
        col_part = (8 * bit_v + (xn > 0)).astype(np.uint8)
        taper = tw * (f32(1.05) - f32(0.25) * np.minimum(np.maximum(yn - f32(0.15), f32(0)), f32(0.36)))
        paint(sl, row_part + col_part, span(-taper, taper, rows_in(yn, 0.145, 0.5), yn.shape[1]))
    belt = col(ids.belt[ident])
    if any_of(belt):
        sl, yn = band(0.475, 0.5)
        if sl is not None:
            paint(sl, BELT, span(-tw * f32(0.9), tw * f32(0.9), rows_in(yn, 0.475, 0.5) & belt, yn.shape[1]))

    # logo: front only
    if any_of(front & (pattern == 4)):
        sl, yn = band(0.2, 0.35)
        if sl is not None:
            logo_y, logo_w = col(ids.logo_y[ident]), col(ids.logo_w[ident])
            ok = (yn >= logo_y) & (yn < logo_y + f32(0.075)) & front & (pattern == 4)
            paint(sl, LOGO, span(-logo_w, logo_w, ok, yn.shape[1]))

    # arms: hang at the torso sides (front/back); one swinging arm over the torso (side)
    sl, yn = band(0.16, 0.47)
    if sl is not None:
        arm_w = f32(0.03) * wscale
        sleeve_cut = np.where(col(ids.sleeve[ident]) == 1, f32(0.43), f32(0.25))
        arm_row = np.where(yn < sleeve_cut, np.uint8(ARM_TOP), np.uint8(SKIN)).astype(np.uint8)
        ok = rows_in(yn, 0.16, 0.47)
        centre = np.where(side, f32(0), tw + arm_w) + np.where(side, -sin_p * f32(0.35), f32(0)) * (yn - f32(0.16))
        paint(sl, arm_row, span(centre - arm_w, centre + arm_w, ok, yn.shape[1]))
        if not bool(np.all(side)):
            paint(sl, arm_row, span(-tw - arm_w - arm_w, -tw, ok & ~side, yn.shape[1]))

    # backpack from the back (over the torso), its straps from the front
    if any_of(bag == 1):
        sl, yn = band(0.15, 0.42)
        if sl is not None:
            rows = yn.shape[1]
            paint(sl, BAG, span(-tw * f32(0.85), tw * f32(0.85), rows_in(yn, 0.17, 0.42) & back & (bag == 1), rows))
            ok = rows_in(yn, 0.15, 0.34) & front & (bag == 1)
            strap = tw * f32(0.55)
            for c in (strap, -strap):
                paint(sl, STRAP, span(c - f32(0.014), c + f32(0.014), ok, rows))
    # shoulder bag: a strap across the torso, the bag at the hip
    if any_of(bag == 2):
        bs = bag_side * np.where(back, f32(-1), f32(1))
        sl, yn = band(0.16, 0.42)
        if sl is not None:
            strap_c = np.where(side, f32(0), bs * (-tw * f32(0.8) + (yn - f32(0.16)) * (tw * f32(6.9))))
            ok = rows_in(yn, 0.16, 0.42) & (bag == 2)
            paint(sl, STRAP, span(strap_c - f32(0.013), strap_c + f32(0.013), ok, yn.shape[1]))
        sl, yn = band(0.40, 0.55)
        if sl is not None:
            bag_x0 = np.where(side, f32(-0.05), bs * tw)
            bag_x1 = bag_x0 + np.where(side, f32(0.11), bs * f32(0.085))
            ok = rows_in(yn, 0.40, 0.55) & (bag == 2)
            paint(sl, BAG, span(np.minimum(bag_x0, bag_x1), np.maximum(bag_x0, bag_x1), ok, yn.shape[1]))

    # neck, head (face / hair cap by viewpoint) and longer hair
    sl, yn = band(0.0, 0.27)
    if sl is not None:
        rows = yn.shape[1]
        paint(sl, SKIN, span(f32(-0.026), f32(0.026), rows_in(yn, 0.12, 0.16), rows))
        hx = np.where(side, f32(0.012), f32(0))
        hy, ry = f32(0.075), f32(0.068)
        rx = np.where(side, f32(0.053), f32(0.05))
        dy = (yn - hy) / ry
        in_head = np.abs(dy) < f32(1)
        half = rx * np.sqrt(np.maximum(f32(1) - dy * dy, f32(0)))  # the ellipse, row by row
        paint(sl, SKIN, span(hx - half, hx + half, in_head, rows))
        # hair: the whole head from the back, a cap from the front, cap + back half from the side
        cap = (yn < hy - f32(0.25) * ry) | back
        hair_end_x = np.where(cap, hx + half, np.where(side, np.minimum(hx + half, hx - f32(0.2) * rx), hx - half))
        paint(sl, HAIR, span(hx - half, hair_end_x, in_head, rows))
        hair_end = _HAIR_END[col(ids.hair_length[ident])]
        long_rows = (yn >= hy - f32(0.02)) & (yn < hair_end)
        a = np.where(back, -rx * f32(1.05), np.where(side, hx - rx * f32(1.1), rx * f32(0.62)))
        c = np.where(back, rx * f32(1.05), np.where(side, hx - rx * f32(0.1), rx * f32(1.12)))
        paint(sl, HAIR, span(a, c, long_rows, rows))
        paint(sl, HAIR, span(-rx * f32(1.12), -rx * f32(0.62), long_rows & front, rows))  # the other strand

    # occluder / clutter: a rectangle in crop coordinates
    o = s.occ
    has = o[:, 0] < o[:, 1]
    if has.any():
        y0 = int(np.floor(np.min(o[has, 0]) * h))
        y1 = min(h, int(np.ceil(np.max(o[has, 1]) * h)))
        if y0 < y1:
            oy = (ys[y0:y1] / f32(h))[None, :, None]
            oc = o[:, :, None, None]
            ok = (oy >= oc[:, 0]) & (oy < oc[:, 1])
            paint(slice(y0, y1), OCC, span_px(oc[:, 2] * f32(w), oc[:, 3] * f32(w), ok, y1 - y0))
    return label, xn, tw
