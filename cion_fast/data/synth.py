"""The synthetic pedestrian world: procedural person crops, videos over time, noisy tracker output,
and a labelled evaluation split, all from one seed.

Why: real ReID data cannot be downloaded here (and is licence-gated); the synthetic world makes the
package run end to end on a fresh machine, and it knows the true identity of every frame, so each
denoising stage can be *measured* (purity, recall), not just trusted.

What :func:`generate` builds (overview: ``docs/DATA_FORMATS.md``, "The synthetic world"):

* **Identities**: attribute vectors (skin; hair colour and length; top colour and pattern: solid,
  horizontal/vertical stripes, checks or a front logo; sleeve length; bottom colour and type:
  trousers, shorts, skirt; shoes; bag: none, backpack, shoulder bag, and its colour; belt; height and
  width; a per-identity texture of small colour variations). Colours come from small palettes, so
  many identities share coarse attributes and fine detail tells them apart.
* **Cameras**: illumination gain and colour cast, a background scene, blur, noise, resolution
  (low-resolution cameras render small and are upsampled), viewpoint distribution (front / back /
  side) and occlusion rate. The viewpoint changes what is visible: the logo and face only from the
  front, the backpack from the back and side, a shoulder bag's strap crossing differently.
* **Videos**: each from one camera, ordered in time (cameras interleaved, so nearby videos come
  from different cameras). An identity appears in a few videos, mostly near one "home" time,
  sometimes far away; at most once per video. Several people are visible at once.
* **Frames**: walking cycle, detector jitter (shift and scale), brightness flicker, background
  drifting with the person, partial occlusion of some appearances.
* **Tracker output** (``World.tracklets``): each appearance is a track of ``track_length`` frames,
  then errors are injected at the configured rates: *fragmentation* (an appearance split into 2-3
  tracklets with small gaps), *identity switch* (two co-occurring tracklets exchange their tails),
  *contamination* (1-3 frames of a co-occurring person moved into a tracklet) and *false positives*
  (background-only tracklets, identity -1). Frames are moved, never copied, so in ground truth a
  person is seen at most once per (video, frame): two tracklets sharing a frame index hold
  different people at that frame.
* **Evaluation split**: ``train`` (labelled images of identities that are in neither the videos nor
  the test split), ``query`` and ``gallery`` (held-out identities; per identity one query camera
  and gallery images only from other cameras; pid-0 distractors in the gallery). Market-1501 pid
  convention: ``pid = global identity + 1``, camids 0-based.

Randomness: ``numpy.random.Generator(PCG64)`` streams keyed by ``(seed, stream, item)`` (identity,
camera, video, ...), so a world is bit-identical for a seed (with the same numpy version: numpy does
not promise identical distribution streams across releases) and does not depend on iteration
order. Rendering is vectorised numpy (see ``cion_fast.data._render``): a frame renders to the same
bytes whatever batch it is in; about 5,000-8,000 frames per second per core at 128 x 64.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from cion_fast._checks import (check_int, check_positive, check_probability, check_real, check_type, checked,
                               validate_fields)
from cion_fast._io import atomic_write_json
from cion_fast.data import _render as R
from cion_fast.data._io import write_image
from cion_fast.data.readers import ImageSet, write_market1501
from cion_fast.data.tracklets import Tracklets

__all__ = ["WorldConfig", "World", "generate", "measure_tracker_noise", "sample_sheet"]

# child-stream keys: (seed, stream, item)
_S_IDENTITY, _S_CAMERA, _S_NOISE, _S_SCHEDULE, _S_APPEAR, _S_VIDEO, _S_ERRORS = 0, 1, 2, 3, 4, 5, 6
_S_TRAIN, _S_EVAL, _S_DISTRACT, _S_DISTRACT_ID, _S_SHEET = 7, 8, 9, 10, 11


@dataclass(frozen=True)
class WorldConfig:
    """Parameters of a synthetic world. All counts and rates are validated on construction.

    Attributes:
        identities: people who walk through the videos (pre-training identities).
        train_identities: other people, seen only in the labelled ``train`` image set.
        eval_identities: held-out people of the ``query`` / ``gallery`` split.
        cameras: number of cameras (>= 2).
        videos: number of videos (each from one camera, ordered in time).
        image_size: crop (H, W); (128, 64) default, (256, 128) available; H and W must be
            multiples of the largest low-resolution factor (4 at 128 x 64, 8 at 256 x 128).
        track_length: (min, max) frames of one appearance, inclusive.
        appearances: mean number of videos an identity appears in (>= 1).
        far_reappearance: probability that a further appearance is anywhere in time rather than
            in a nearby video.
        concurrency: mean number of people visible at once in a video.
        fragmentation: fraction of appearances split into several tracklets.
        identity_switch: fraction of (person) tracklets whose tail is another person's.
        contamination: fraction of (person) tracklets holding a few frames of another person.
        false_positive: fraction of all tracklets that are background-only (identity -1).
        train_images: (min, max) images per camera of a ``train`` identity.
        gallery_images: (min, max) gallery images per camera of an evaluation identity.
        distractors: pid-0 distractor images in the gallery, as a fraction of its size.
        camera_strength: one knob for how much the cameras differ: every camera effect below is
            multiplied by it (0 = identical cameras). The defaults are calibrated so that identity,
            not the camera, is the larger signal, as in real data (``cion-fast synth --report``;
            measured on the default world, stripe descriptor, plain / camera-normalised mAP:
            strength 1 with own backgrounds 1.3 / 39 %, 0.5 with shared ones 19.5 / 48 %, the
            default 0.4 with shared ones 27 / 51 %: inside the 8-30 % of hand-crafted descriptors
            on Market-1501, and camera normalisation still helps, by less than 2x). The quick
            world's smaller one (0.26) is calibrated the same way: see :meth:`quick`.
        camera_gain: (min, max) illumination gain of a camera at strength 1.
        camera_cast: std of a camera's log colour cast per channel at strength 1.
        camera_background: how camera-specific the background scene is (1 = own scene per camera,
            0 = one scene shared by all cameras), times ``camera_strength``, capped at 1. Shared by
            default: in a 64-pixel-wide crop an own scene per camera outweighs the person (real
            detector boxes are tighter).
        camera_blur, camera_noise: multipliers of the blur passes and sensor-noise std.
        camera_lowres: probability that a low-resolution camera renders small and is upsampled.
        seed: the world's seed.

    Example:
        >>> from cion_fast.data.synth import WorldConfig
        >>> WorldConfig().identities, WorldConfig.quick().cameras
        (600, 8)
        >>> WorldConfig(image_size=(256, 128), seed=3).image_size
        (256, 128)
    """

    # Each field declares its accepted values once (cion_fast._checks.checked); __post_init__ adds
    # the checks that relate fields.
    identities: int = checked(600, check_int, 1, 9998)
    train_identities: int = checked(200, check_int, 1, 9998)
    eval_identities: int = checked(200, check_int, 1, 9998)
    cameras: int = checked(8, check_int, 2, 1000)  # >= 2: query and gallery need different cameras
    videos: int = checked(48, check_int, 1, 100_000)
    image_size: tuple = checked((128, 64), check_type, (tuple, list))
    track_length: tuple = checked((8, 40), check_type, (tuple, list))
    appearances: float = checked(2.2, check_real, 1.0, 1000.0)
    far_reappearance: float = checked(0.15, check_probability)
    concurrency: float = checked(4.0, check_positive)
    fragmentation: float = checked(0.2, check_probability)
    identity_switch: float = checked(0.06, check_probability)
    contamination: float = checked(0.1, check_probability)
    false_positive: float = checked(0.05, check_real, 0.0, 0.999)
    train_images: tuple = checked((3, 6), check_type, (tuple, list))
    gallery_images: tuple = checked((2, 5), check_type, (tuple, list))
    distractors: float = checked(0.1, check_probability)
    camera_strength: float = checked(0.4, check_real, 0.0, 100.0)
    camera_gain: tuple = checked((0.65, 1.2), check_type, (tuple, list))
    camera_cast: float = checked(0.08, check_real, 0.0, 100.0)
    camera_background: float = checked(0.0, check_real, 0.0, 100.0)
    camera_blur: float = checked(1.0, check_real, 0.0, 100.0)
    camera_noise: float = checked(1.0, check_real, 0.0, 100.0)
    camera_lowres: float = checked(1.0, check_probability)
    seed: int = checked(0, check_int, 0)

    def __post_init__(self):
        try:
            validate_fields(self)
        except (TypeError, ValueError) as error:
            raise type(error)(f"WorldConfig.{error}") from None
        for name, kind in (("camera_gain", check_positive), ("image_size", check_int), ("track_length", check_int),
                           ("train_images", check_int), ("gallery_images", check_int)):
            pair = getattr(self, name)
            if len(pair) != 2:
                raise ValueError(f"WorldConfig.{name} must be a pair, got {pair}")
            pair = tuple(kind(v, f"WorldConfig.{name}[{i}]", *(() if kind is check_positive else (1, 100_000)))
                         for i, v in enumerate(pair))
            object.__setattr__(self, name, pair)
        if not self.camera_gain[0] <= self.camera_gain[1]:
            raise ValueError(f"WorldConfig.camera_gain must be (min, max) with 0 < min <= max, got {self.camera_gain}")
        if self.identities + self.train_identities + self.eval_identities > 9998:
            raise ValueError("WorldConfig: identities + train_identities + eval_identities must be <= 9998 "
                             "(Market-1501 names hold 4-digit pids)")
        h, w = self.image_size
        fmax = 4 * _size_scale(h)
        if h < 32 or w < 16 or h % fmax or w % fmax or h > 1024 or w > 1024:
            raise ValueError(f"WorldConfig.image_size must be (H, W) with 32 <= H <= 1024, 16 <= W <= 1024 and both "
                             f"multiples of {fmax}, e.g. (128, 64) or (256, 128); got {self.image_size}")
        lo, hi = self.track_length
        if not 6 <= lo <= hi <= 10_000:
            raise ValueError(f"WorldConfig.track_length must be (min, max) with 6 <= min <= max <= 10000, got {self.track_length}")
        for name in ("train_images", "gallery_images"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi <= 1000:
                raise ValueError(f"WorldConfig.{name} must be (min, max) with 1 <= min <= max <= 1000, got {getattr(self, name)}")

    @classmethod
    def quick(cls, **overrides) -> "WorldConfig":
        """The small world of the quick demo and the tests: 60 people in 8 videos (~3,200 tracklet
        frames; with the evaluation split ~7,000 images, about 2 s to render on one core), the
        default world's 8 cameras, and an evaluation split calibrated like the default's
        (``cion-fast synth --quick --report``): 600 evaluation identities with 1-2 gallery images
        per camera, camera strength 0.26. Stripe descriptor, plain / camera-normalised mAP, seeds
        0, 1, 2: 26.4 / 43.7, 30.1 / 51.1, 28.0 / 55.1 % (ratios 1.66, 1.69, 1.97; mean 28.2 %):
        near the default world's 27 %, at the top of the 8-30 % of hand-crafted descriptors on
        Market-1501 (seed 1 on its edge). The earlier 20-30 evaluation identities on 4 cameras at
        strength 0.4 gave 40-58 % (46.7 % in the demo). Camera normalisation's figure is bounded
        by how many people the gallery holds, so the plain figure only reaches ~27 % with the
        ratio under 2x with a gallery of several hundred people and a camera strength below the
        default's (docs/SMALL_BUDGET.md, "The quick world", has the sweep).

        Example:
            >>> from cion_fast.data.synth import WorldConfig
            >>> WorldConfig.quick(seed=5).seed, WorldConfig.quick().eval_identities
            (5, 600)
        """
        base = dict(identities=60, train_identities=20, eval_identities=600, cameras=8, videos=8,
                    gallery_images=(1, 2), camera_strength=0.26)
        base.update(overrides)
        return cls(**base)

    def camera_effects(self) -> R.CameraEffects:
        """The camera fields as the renderer's :class:`~cion_fast.data._render.CameraEffects`."""
        return R.CameraEffects(strength=self.camera_strength, gain=self.camera_gain, cast=self.camera_cast,
                               background=self.camera_background, blur=self.camera_blur, noise=self.camera_noise,
                               lowres=self.camera_lowres)

    def to_dict(self) -> dict:
        """The configuration as a JSON-friendly dict.

        Example:
            >>> from cion_fast.data.synth import WorldConfig
            >>> WorldConfig.quick().to_dict()["image_size"]
            [128, 64]
        """
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _size_scale(h: int) -> int:
    """Largest power of two <= max(1, h / 128): low-resolution factors scale with the crop size."""
    s = 1
    while s * 2 * 128 <= h:
        s *= 2
    return s


@dataclass
class World:
    """A generated world (see the module docstring).

    Attributes:
        config: the :class:`WorldConfig`.
        tracklets: tracker output with errors (uint8 frames [M, H, W, 3]; ``identity`` holds the
            ground truth per frame, -1 for false positives).
        train: labelled ImageSet of identities outside the videos and the test split.
        query, gallery: the held-out evaluation split (gallery pid 0 = distractor).
        cameras: per-camera parameters (gain, cast, blur, resolution, noise, viewpoints).
        noise: :func:`measure_tracker_noise` of ``tracklets``.
        timings: seconds spent planning and rendering (wall clock and CPU), frames rendered.

    Example:
        >>> from cion_fast.data.synth import WorldConfig, generate
        >>> w = generate(WorldConfig.quick(identities=10, train_identities=3, eval_identities=3, videos=3))
        >>> w.tracklets.num_frames > 0, set(w.query.pids.tolist()) <= set(w.gallery.pids.tolist())
        (True, True)
    """

    config: WorldConfig
    tracklets: Tracklets
    train: ImageSet
    query: ImageSet
    gallery: ImageSet
    cameras: list = field(default_factory=list)
    noise: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Counts, measured tracker noise next to the configured rates, and render speed.

        Example:
            >>> from cion_fast.data.synth import WorldConfig, generate
            >>> s = generate(WorldConfig.quick(identities=12, train_identities=3, eval_identities=3, videos=4)).summary()
            >>> sorted(s)[:3]
            ['cameras', 'config', 'counts']
        """
        t = self.tracklets
        cfg = self.config
        frames = self.timings.get("frames_rendered", 0)
        seconds = self.timings.get("render_seconds", 0.0)
        cpu = self.timings.get("render_cpu_seconds", 0.0)
        return {
            "config": cfg.to_dict(),
            "counts": {
                "tracklets": t.num_tracklets,
                "tracklet_frames": t.num_frames,
                "videos": int(len(np.unique(t.video))),
                "identities_in_videos": int(len(np.unique(t.identity[t.identity >= 0]))),
                "train_images": len(self.train),
                "train_identities": self.train.num_identities,
                "query_images": len(self.query),
                "gallery_images": len(self.gallery),
                "gallery_distractors": int((self.gallery.pids == 0).sum()),
                "eval_identities": self.query.num_identities,
            },
            "tracker_noise": {
                "measured": {k: self.noise[k] for k in ("fragmentation", "identity_switch", "contamination", "false_positive")},
                "configured": {"fragmentation": cfg.fragmentation, "identity_switch": cfg.identity_switch,
                               "contamination": cfg.contamination, "false_positive": cfg.false_positive},
                "purity": self.noise["purity"],
            },
            "speed": {
                "frames_rendered": frames,
                "render_seconds": round(seconds, 3),
                "frames_per_second": round(frames / seconds, 1) if seconds > 0 else None,
                "render_cpu_seconds": round(cpu, 3),
                "frames_per_cpu_second": round(frames / cpu, 1) if cpu > 0 else None,
                "plan_seconds": round(self.timings.get("plan_seconds", 0.0), 3),
            },
            "cameras": self.cameras,
        }

    def save(self, directory: str | os.PathLike, image_format: str = "png", overwrite: bool = False) -> Path:
        """Writes ``directory/tracklets`` (:meth:`Tracklets.save` format), ``directory/market``
        (Market-1501 layout: ``bounding_box_train`` = train, ``query``, ``bounding_box_test`` =
        gallery) and ``directory/summary.json``. Each part is written atomically.

        Example:
            >>> import tempfile, os
            >>> from cion_fast.data import Tracklets, read_market1501
            >>> from cion_fast.data.synth import WorldConfig, generate
            >>> w = generate(WorldConfig.quick(identities=10, train_identities=3, eval_identities=3, videos=3))
            >>> out = w.save(os.path.join(tempfile.mkdtemp(), "world"))
            >>> Tracklets.load(out / "tracklets").num_frames == w.tracklets.num_frames
            True
            >>> len(read_market1501(out / "market").query) == len(w.query)
            True
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.tracklets.save(out / "tracklets", overwrite=overwrite)
        write_market1501(out / "market", self.train, self.query, self.gallery, image_format=image_format,
                         overwrite=overwrite)
        atomic_write_json(out / "summary.json", self.summary())
        return out


# ---- measuring tracker noise -------------------------------------------------------------------
def measure_tracker_noise(tracklets: Tracklets) -> dict:
    """Tracker error rates measured against the ground-truth ``identity`` of every frame.

    Definitions (a *person tracklet* has at least one frame with identity >= 0; frames with
    identity -1 are ignored inside person tracklets):

    * ``false_positive``: fraction of all tracklets with no person frame.
    * ``identity_switch``: fraction of person tracklets whose first and last identity differ.
    * ``contamination``: fraction of person tracklets holding an identity that is neither their
      first nor their last one.
    * ``fragmentation``: fraction of appearances (a (video, identity) pair starting at least one
      tracklet) that start two or more tracklets.
    * ``purity``: mean share of a person tracklet's frames held by its majority identity.

    Returns:
        dict with the five rates (float) plus ``tracklets``, ``person_tracklets`` and
        ``appearances`` (int).

    Raises:
        ValueError: no frame has a known identity (nothing to measure against).

    Example:
        >>> import numpy as np
        >>> from cion_fast.data import Tracklets
        >>> from cion_fast.data.synth import measure_tracker_noise
        >>> t = Tracklets(np.zeros((7, 2, 2, 3), np.uint8), offsets=[0, 3, 5, 7], video=[0, 0, 0], camera=[0, 0, 0],
        ...               frame_index=[0, 1, 2, 3, 4, 0, 1], identity=[1, 2, 1, 1, 1, -1, -1])
        >>> r = measure_tracker_noise(t)
        >>> r["contamination"], r["fragmentation"], r["false_positive"]
        (0.5, 1.0, 0.3333333333333333)
    """
    if not isinstance(tracklets, Tracklets):
        raise TypeError(f"tracklets must be a Tracklets, got {type(tracklets).__name__}")
    ident = tracklets.identity
    if not (ident >= 0).any():
        raise ValueError("measure_tracker_noise needs ground-truth identities (all frames have identity -1)")
    n = tracklets.num_tracklets
    switched = contaminated = persons = 0
    purity = []
    starts: dict = {}
    for t in range(n):
        ids = ident[tracklets.offsets[t]:tracklets.offsets[t + 1]]
        ids = ids[ids >= 0]
        if len(ids) == 0:
            continue
        persons += 1
        first, last = int(ids[0]), int(ids[-1])
        switched += first != last
        contaminated += bool(((ids != first) & (ids != last)).any())
        purity.append(np.bincount(ids).max() / len(ids))
        key = (int(tracklets.video[t]), first)
        starts[key] = starts.get(key, 0) + 1
    appearances = len(starts)
    return {
        "tracklets": n,
        "person_tracklets": persons,
        "appearances": appearances,
        "false_positive": (n - persons) / n if n else 0.0,
        "identity_switch": switched / persons,
        "contamination": contaminated / persons,
        "fragmentation": sum(c > 1 for c in starts.values()) / appearances,
        "purity": float(np.mean(purity)),
    }


# ---- planning ----------------------------------------------------------------------------------
class _Detections:
    """Growing table of rendered-frame rows: video, identity, frame index + the render spec."""

    def __init__(self):
        self.parts: list[tuple] = []
        self.count = 0

    def add(self, video: int, identity: np.ndarray, frame: np.ndarray, spec: R.FrameSpec) -> np.ndarray:
        ids = np.arange(self.count, self.count + len(spec), dtype=np.int64)
        self.parts.append((np.full(len(spec), video, np.int64), identity.astype(np.int64), frame.astype(np.int64), spec))
        self.count += len(spec)
        return ids

    def labels(self):
        """(video, identity, frame) int64 [count] of every detection so far."""
        return tuple(np.concatenate([p[k] for p in self.parts]) for k in range(3))

    def spec(self) -> R.FrameSpec:
        return R.FrameSpec.concat([p[3] for p in self.parts])


def _appearance_spec(rng: np.random.Generator, n: int, ident: int, cam: int, cams: R.CameraTable,
                     stride: float, frames: np.ndarray, view: int | None = None,
                     occlusion: float | None = None, jitter: float = 1.0) -> R.FrameSpec:
    """Render rows for ``n`` frames of one person (``ident`` row, -1 = background) walking past
    camera ``cam``: a viewpoint, a walking phase advancing with the frame index, smooth detector
    jitter, brightness flicker, background drift and maybe an occluder over a span of frames."""
    f32 = np.float32
    if view is None:
        view = int(rng.choice(3, p=cams.view_probs[cam]))
    flip = f32(rng.choice([-1.0, 1.0]))
    phase0 = rng.uniform(0, 2 * np.pi)
    phase = (phase0 + 2 * np.pi * (frames - frames[0]) / stride).astype(f32)
    dx = (rng.normal(0, 0.035) + rng.normal(0, 0.02, n)) * jitter
    dy = (rng.normal(0, 0.015) + rng.normal(0, 0.01, n)) * jitter
    scale = 1.0 + (rng.normal(0, 0.04) + rng.normal(0, 0.025, n)) * jitter
    light = rng.normal(1.0, 0.06) * rng.normal(1.0, 0.02, n)
    bx0, by0 = rng.random(), rng.random()
    vx = rng.normal(0, 0.012)
    bg_x = np.mod(bx0 + vx * (frames - frames[0]), 1.0)
    bg_y = np.clip(by0 + rng.normal(0, 0.01, n), 0, 0.999)
    occ = np.zeros((n, 4), f32)
    occ[:, 0] = 1.0  # empty rectangle
    occ_color = np.zeros((n, 3), f32)
    p_occ = cams.occlusion[cam] if occlusion is None else occlusion
    if ident >= 0 and rng.random() < p_occ:
        a = int(rng.integers(0, n))
        b = int(rng.integers(a + 1, n + 1))
        kind = int(rng.integers(3))
        if kind == 0:  # something in front of the legs (bench, car, railing, another person)
            rect = (rng.uniform(0.5, 0.8), 1.0, rng.uniform(0.0, 0.3), rng.uniform(0.7, 1.0))
        elif kind == 1:  # a pole or a passer-by on the left
            rect = (0.0, 1.0, 0.0, rng.uniform(0.2, 0.45))
        else:
            rect = (0.0, 1.0, rng.uniform(0.55, 0.8), 1.0)
        occ[a:b] = rect
        occ_color[a:b] = rng.uniform(40, 190) * np.exp(0.2 * rng.standard_normal(3))
    elif ident < 0 and rng.random() < 0.6:  # background crops: a clutter object in the middle
        x0 = rng.uniform(0.15, 0.6)
        occ[:] = (rng.uniform(0.0, 0.5), rng.uniform(0.8, 1.0), x0, x0 + rng.uniform(0.15, 0.4))
        occ_color[:] = rng.uniform(40, 200) * np.exp(0.25 * rng.standard_normal(3))
    return R.FrameSpec(
        ident=np.full(n, ident, np.int64), cam=np.full(n, cam, np.int64), view=np.full(n, view, np.int8),
        flip=np.full(n, flip, f32), phase=phase, dx=dx.astype(f32), dy=dy.astype(f32), scale=scale.astype(f32),
        light=light.astype(f32), occ=occ, occ_color=occ_color, bg_y=bg_y.astype(f32), bg_x=bg_x.astype(f32),
        noise_k=rng.integers(0, R.NOISE_BANK_SIZE, n),
    )


def _video_cameras(cfg: WorldConfig) -> np.ndarray:
    """Camera of each video: blocks of a random camera permutation, so consecutive videos come
    from different cameras and every camera is used."""
    rng = R.child_rng(cfg.seed, _S_SCHEDULE)
    blocks = [rng.permutation(cfg.cameras) for _ in range(math.ceil(cfg.videos / cfg.cameras))]
    return np.concatenate(blocks)[: cfg.videos].astype(np.int64)


def _identity_videos(cfg: WorldConfig, i: int) -> list[int]:
    """Videos in which identity ``i`` appears: a home video, further ones mostly nearby in time
    (geometric offsets), sometimes anywhere; each video at most once."""
    rng = R.child_rng(cfg.seed, _S_APPEAR, i)
    k = int(min(1 + rng.poisson(cfg.appearances - 1.0), cfg.videos, 12))
    home = int(rng.integers(cfg.videos))
    chosen = [home]
    for _ in range(60):
        if len(chosen) >= k:
            break
        if rng.random() < cfg.far_reappearance:
            v = int(rng.integers(cfg.videos))
        else:
            v = home + int(rng.choice([-1, 1])) * int(rng.geometric(0.45))
        if 0 <= v < cfg.videos and v not in chosen:
            chosen.append(v)
    return sorted(chosen)


def _plan_videos(cfg: WorldConfig, ids: R.IdentityTable, cams: R.CameraTable, video_cam: np.ndarray,
                 dets: _Detections):
    """Ground-truth tracks: one per appearance, placed in its video's timeline. Returns the tracks
    (lists of detection ids) and each video's length in frames."""
    per_video: list[list[int]] = [[] for _ in range(cfg.videos)]
    for i in range(cfg.identities):
        for v in _identity_videos(cfg, i):
            per_video[v].append(i)
    lo, hi = cfg.track_length
    tracks: list[list[int]] = []
    video_len = np.zeros(cfg.videos, np.int64)
    for v in range(cfg.videos):
        rng = R.child_rng(cfg.seed, _S_VIDEO, v)
        people = per_video[v]
        lengths = rng.integers(lo, hi + 1, len(people))
        total = max(hi + 8, int(math.ceil(lengths.sum() / cfg.concurrency)))
        video_len[v] = total
        cam = int(video_cam[v])
        for i, n in zip(people, lengths.tolist()):
            start = int(rng.integers(0, total - n + 1))
            frames = np.arange(start, start + n)
            spec = _appearance_spec(rng, n, i, cam, cams, float(ids.stride[i]), frames)
            tracks.append(dets.add(v, np.full(n, i), frames, spec).tolist())
    return tracks, video_len


class _TrackTable:
    """Tracks as lists of detection ids (sorted by frame), with the detection attributes needed to
    inject errors."""

    def __init__(self, tracks: list[list[int]], det_video: np.ndarray, det_ident: np.ndarray, det_frame: np.ndarray):
        self.tracks = tracks
        self.video = det_video
        self.ident = det_ident
        self.frame = det_frame

    def frames(self, t: int) -> np.ndarray:
        return self.frame[self.tracks[t]]

    def idents(self, t: int) -> np.ndarray:
        return self.ident[self.tracks[t]]


def _fragment(cfg: WorldConfig, tt: _TrackTable) -> None:
    """Splits ``fragmentation`` x appearances into 2-3 pieces, dropping 0-2 frames at each cut."""
    rng = R.child_rng(cfg.seed, _S_ERRORS, 0)
    n = len(tt.tracks)
    chosen = np.sort(rng.choice(n, size=int(round(cfg.fragmentation * n)), replace=False))
    for t in chosen.tolist():
        det = tt.tracks[t]
        pieces = 3 if len(det) >= 16 and rng.random() < 0.3 else 2
        cuts = np.sort(rng.choice(np.arange(3, len(det) - 2), size=pieces - 1, replace=False))
        if pieces == 3 and cuts[1] - cuts[0] < 4:
            cuts = cuts[:1]
        segs = np.split(np.array(det), cuts)
        out = [segs[0].tolist()]
        for seg in segs[1:]:  # the tracker loses the person for 0-2 frames at each cut
            gap = int(rng.integers(0, min(3, len(seg) - 1)))
            out.append(seg[gap:].tolist())
        tt.tracks[t] = out[0]
        tt.tracks.extend(out[1:])


def _by_video(tt: _TrackTable, candidates) -> dict:
    groups: dict = {}
    for t in candidates:
        groups.setdefault(int(tt.video[tt.tracks[t][0]]), []).append(t)
    return groups


def _switch(cfg: WorldConfig, tt: _TrackTable) -> set:
    """Identity switches: pairs of co-occurring tracklets of different people exchange their tails
    at a frame where both have at least two frames before and after. Each switch makes two
    switched tracklets, so ``identity_switch * N / 2`` pairs are switched."""
    rng = R.child_rng(cfg.seed, _S_ERRORS, 1)
    n = len(tt.tracks)
    want = int(round(cfg.identity_switch * n / 2))
    pairs = []
    for _, ts in sorted(_by_video(tt, range(n)).items()):
        for a_i, a in enumerate(ts):
            fa = tt.frames(a)
            ia = int(tt.ident[tt.tracks[a][0]])
            for b in ts[a_i + 1:]:
                if int(tt.ident[tt.tracks[b][0]]) == ia:
                    continue
                fb = tt.frames(b)
                lo = max(fa[1], fb[1]) + 1
                hi = min(fa[-2], fb[-2])
                if lo <= hi:
                    pairs.append((a, b, int(lo), int(hi)))
    used: set = set()
    for k in rng.permutation(len(pairs)).tolist():
        if len(used) >= 2 * want:
            break
        a, b, lo, hi = pairs[k]
        if a in used or b in used:
            continue
        s = int(rng.integers(lo, hi + 1))
        da, db = np.array(tt.tracks[a]), np.array(tt.tracks[b])
        fa, fb = tt.frame[da], tt.frame[db]
        tt.tracks[a] = da[fa < s].tolist() + db[fb >= s].tolist()
        tt.tracks[b] = db[fb < s].tolist() + da[fa >= s].tolist()
        used.update((a, b))
    return used


def _contaminate(cfg: WorldConfig, tt: _TrackTable) -> set:
    """Contamination: 1-3 consecutive frames of a co-occurring person (strictly inside both
    tracklets) move into a tracklet, replacing its own frames there (the tracker briefly followed
    the neighbour). ``contamination * N`` tracklets are contaminated when enough neighbours exist."""
    rng = R.child_rng(cfg.seed, _S_ERRORS, 2)
    n = len(tt.tracks)
    want = int(round(cfg.contamination * n))
    groups = _by_video(tt, range(n))
    done: set = set()
    for t in rng.permutation(n).tolist():
        if len(done) >= want:
            break
        if len(tt.tracks[t]) < 6:
            continue
        ft = tt.frames(t)
        it = tt.idents(t)
        forbidden = {int(it[0]), int(it[-1])}
        v = int(tt.video[tt.tracks[t][0]])
        options = []
        for u in groups[v]:
            if u == t or u in done:
                continue
            du = np.array(tt.tracks[u])
            fu, iu = tt.frame[du], tt.ident[du]
            own = int(iu[0])
            if own in forbidden or int(iu[-1]) in forbidden:
                continue
            # interior frames of u with u's own identity, inside t's span (exclusive)
            ok = (iu == own) & (fu > ft[0]) & (fu < ft[-1])
            ok[0] = ok[-1] = False
            if ok.any():
                options.append((u, du, fu, ok))
        if not options:
            continue
        u, du, fu, ok = options[int(rng.integers(len(options)))]
        start = int(rng.choice(np.flatnonzero(ok)))
        w = int(rng.integers(1, 4))
        take = [start]
        while len(take) < w and start + len(take) < len(du) and ok[start + len(take)] \
                and fu[start + len(take)] == fu[start] + len(take):
            take.append(start + len(take))
        moved = du[take]
        moved_frames = set(tt.frame[moved].tolist())
        dt = np.array(tt.tracks[t])
        keep_t = [d for d in dt.tolist() if int(tt.frame[d]) not in moved_frames]
        new_t = sorted(keep_t + moved.tolist(), key=lambda d: (int(tt.frame[d]), d))
        tt.tracks[t] = new_t
        tt.tracks[u] = [d for d in du.tolist() if d not in set(moved.tolist())]
        done.add(t)
    return done


def _false_positives(cfg: WorldConfig, tt: _TrackTable, cams: R.CameraTable, video_cam: np.ndarray,
                     video_len: np.ndarray, dets: _Detections) -> list[list[int]]:
    """Background-only tracklets (identity -1): ``false_positive`` of all tracklets."""
    n_person = len(tt.tracks)
    count = int(round(cfg.false_positive / (1.0 - cfg.false_positive) * n_person))
    out = []
    lo, hi = cfg.track_length
    for k in range(count):
        rng = R.child_rng(cfg.seed, _S_ERRORS, 3, k)
        v = int(rng.integers(cfg.videos))
        n = int(rng.integers(max(2, lo // 2), max(3, hi // 2) + 1))
        start = int(rng.integers(0, max(1, int(video_len[v]) - n + 1)))
        frames = np.arange(start, start + n)
        spec = _appearance_spec(rng, n, -1, int(video_cam[v]), cams, 10.0, frames)
        out.append(dets.add(v, np.full(n, -1), frames, spec).tolist())
    return out


def _image_split(cfg: WorldConfig, cams: R.CameraTable, ids: R.IdentityTable, stream: int,
                 first: int, count: int, query: bool):
    """Spec rows + labels of labelled images. ``query=False``: per identity 2-4 cameras with
    ``train_images`` each. ``query=True``: per identity one query camera (1-2 images) and 1-4
    other cameras with ``gallery_images`` each. Returns lists of (spec, pid, camid, frame)."""
    rows_q, rows_g = [], []
    for j in range(count):
        g = first + j
        rng = R.child_rng(cfg.seed, stream, j)
        n_cams = int(rng.integers(2, min(cfg.cameras, 5 if query else 4) + 1))
        chosen = rng.choice(cfg.cameras, size=n_cams, replace=False)
        for k, cam in enumerate(chosen.tolist()):
            if query and k == 0:
                n = int(rng.integers(1, 3))
            else:
                lo, hi = cfg.gallery_images if query else cfg.train_images
                n = int(rng.integers(lo, hi + 1))
            start = int(rng.integers(0, 90000))
            frames = start + 3 * np.arange(n)
            spec = _appearance_spec(rng, n, g, cam, cams, float(ids.stride[g]), frames)
            target = rows_q if (query and k == 0) else rows_g
            target.append((spec, np.full(n, g + 1), np.full(n, cam), frames))
    return rows_q, rows_g


def _distractors(cfg: WorldConfig, cams: R.CameraTable, count: int, first_row: int):
    """pid-0 gallery images: background crops and badly cropped people who are nobody else."""
    rows = []
    for k in range(count):
        rng = R.child_rng(cfg.seed, _S_DISTRACT, k)
        cam = int(rng.integers(cfg.cameras))
        frames = np.array([int(rng.integers(0, 90000))])
        if rng.random() < 0.5:
            spec = _appearance_spec(rng, 1, -1, cam, cams, 10.0, frames)
        else:
            spec = _appearance_spec(rng, 1, first_row + k, cam, cams, 10.0, frames, jitter=5.0, occlusion=0.5)
        rows.append((spec, np.zeros(1, np.int64), np.full(1, cam), frames))
    return rows


def _stack_rows(rows):
    """Rows of (spec, pid, camid, frame) -> one spec and label arrays, sorted by (pid, camid,
    frame) as the Market-1501 reader returns them."""
    spec = R.FrameSpec.concat([r[0] for r in rows])
    pids = np.concatenate([r[1] for r in rows]).astype(np.int64)
    camids = np.concatenate([r[2] for r in rows]).astype(np.int64)
    frames = np.concatenate([r[3] for r in rows]).astype(np.int64)
    order = np.lexsort((frames, camids, pids))
    return spec.take(order), pids[order], camids[order], frames[order]


# ---- the world ---------------------------------------------------------------------------------
def _world_tables(cfg: WorldConfig):
    """The identity table (video, train and evaluation identities), the cameras and the noise bank."""
    n_ids = cfg.identities + cfg.train_identities + cfg.eval_identities
    return (R.make_identities(cfg.seed, _S_IDENTITY, n_ids),
            R.make_cameras(cfg.seed, _S_CAMERA, cfg.cameras, cfg.image_size, cfg.camera_effects()),
            R.make_noise_bank(cfg.seed, _S_NOISE, cfg.image_size))


def generate(config: WorldConfig | None = None, progress: Callable[[int, int], None] | None = None) -> World:
    """Generates a world (see the module docstring). Same config -> bit-identical world.

    Args:
        config: a :class:`WorldConfig` (default: ``WorldConfig()``, tens of thousands of frames).
        progress: optional ``progress(done, total)`` called while rendering (frames).

    Returns:
        :class:`World` with ``tracklets`` (uint8 frames [M, H, W, 3], int64 offsets [N+1], video,
        camera, frame_index, identity), ``train``, ``query``, ``gallery`` (ImageSets with uint8
        images), camera descriptions, measured tracker noise and timings.

    Example:
        >>> import numpy as np
        >>> from cion_fast.data.synth import WorldConfig, generate
        >>> cfg = WorldConfig.quick(identities=12, train_identities=4, eval_identities=4, videos=4, seed=1)
        >>> w = generate(cfg)
        >>> w.tracklets.frames.dtype, w.tracklets.frames.shape[1:]
        (dtype('uint8'), (128, 64, 3))
        >>> bool((generate(cfg).tracklets.frames == w.tracklets.frames).all())
        True
    """
    cfg = WorldConfig() if config is None else config
    if not isinstance(cfg, WorldConfig):
        raise TypeError(f"config must be a WorldConfig, got {type(cfg).__name__}")
    t0 = time.perf_counter()
    size = cfg.image_size
    n_ids = cfg.identities + cfg.train_identities + cfg.eval_identities
    ids, cams, bank = _world_tables(cfg)
    video_cam = _video_cameras(cfg)

    # tracker output
    dets = _Detections()
    tracks, video_len = _plan_videos(cfg, ids, cams, video_cam, dets)
    det_video, det_ident, det_frame = dets.labels()
    tt = _TrackTable(tracks, det_video, det_ident, det_frame)
    _fragment(cfg, tt)
    _switch(cfg, tt)
    _contaminate(cfg, tt)
    fps = _false_positives(cfg, tt, cams, video_cam, video_len, dets)
    det_video, det_ident, det_frame = dets.labels()
    det_spec = dets.spec()
    all_tracks = [tr for tr in tt.tracks + fps if tr]
    order = sorted(range(len(all_tracks)), key=lambda k: (int(det_video[all_tracks[k][0]]),
                                                          int(det_frame[all_tracks[k][0]]), all_tracks[k][0]))
    all_tracks = [all_tracks[k] for k in order]
    frame_det = np.array([d for tr in all_tracks for d in tr], np.int64)
    offsets = np.concatenate([[0], np.cumsum([len(tr) for tr in all_tracks])]).astype(np.int64)
    t_video = np.array([det_video[tr[0]] for tr in all_tracks], np.int64)

    # labelled splits
    first_train = cfg.identities
    first_eval = cfg.identities + cfg.train_identities
    _, train_rows = _image_split(cfg, cams, ids, _S_TRAIN, first_train, cfg.train_identities, query=False)
    q_rows, g_rows = _image_split(cfg, cams, ids, _S_EVAL, first_eval, cfg.eval_identities, query=True)
    n_gallery = sum(len(r[1]) for r in g_rows)
    n_distract = int(round(cfg.distractors * n_gallery))
    distract_ids = R.make_identities(cfg.seed, _S_DISTRACT_ID, n_distract)
    all_ids = _concat_identities(ids, distract_ids)
    g_rows += _distractors(cfg, cams, n_distract, n_ids)
    train = _stack_rows(train_rows)
    query = _stack_rows(q_rows)
    gallery = _stack_rows(g_rows)
    plan_seconds = time.perf_counter() - t0

    # render everything in one pass (frames are grouped by camera inside)
    specs = [det_spec.take(frame_det), train[0], query[0], gallery[0]]
    spec = R.FrameSpec.concat(specs)
    total = len(spec)
    done = [0]

    def tick(k: int) -> None:
        done[0] += k
        if progress is not None:
            progress(done[0], total)

    t1, c1 = time.perf_counter(), time.process_time()
    pixels = R.render(spec, all_ids, cams, bank, size, batch=32, progress=tick)
    render_seconds, render_cpu = time.perf_counter() - t1, time.process_time() - c1
    bounds = np.cumsum([len(s) for s in specs])

    tracklets = Tracklets(pixels[: bounds[0]], offsets, t_video, video_cam[t_video], det_frame[frame_det],
                          det_ident[frame_det])
    train_set = ImageSet(images=pixels[bounds[0]:bounds[1]], pids=train[1], camids=train[2], frame_index=train[3])
    query_set = ImageSet(images=pixels[bounds[1]:bounds[2]], pids=query[1], camids=query[2], frame_index=query[3])
    gallery_set = ImageSet(images=pixels[bounds[2]:bounds[3]], pids=gallery[1], camids=gallery[2],
                           frame_index=gallery[3])
    return World(
        config=cfg, tracklets=tracklets, train=train_set, query=query_set, gallery=gallery_set,
        cameras=[{"camera": c, **cams.describe(c)} for c in range(len(cams))],
        noise=measure_tracker_noise(tracklets),
        timings={"plan_seconds": plan_seconds, "render_seconds": render_seconds, "render_cpu_seconds": render_cpu,
                 "frames_rendered": total},
    )


def _concat_identities(a: R.IdentityTable, b: R.IdentityTable) -> R.IdentityTable:
    """Rows of ``a`` then ``b`` (each table's trailing blank row is kept once, at the end)."""
    return R.IdentityTable(**{f.name: np.concatenate([getattr(a, f.name)[:-1], getattr(b, f.name)])
                              for f in dataclasses.fields(R.IdentityTable)})


def sample_sheet(config: WorldConfig | None = None, identities: int = 8, path: str | os.PathLike | None = None) -> np.ndarray:
    """A contact sheet of rendered samples: one row per identity (chosen to show different
    clothing patterns and bags), one column per camera and viewpoint (front, back, side), so the
    differences across cameras and views are visible.

    Args:
        config: the world whose identities and cameras are drawn (default ``WorldConfig()``).
        identities: number of rows.
        path: optional PNG path to write the sheet to.

    Returns:
        uint8 [identities * H, columns * W, 3] with columns = min(cameras, 4) * 3.

    Example:
        >>> from cion_fast.data.synth import WorldConfig, sample_sheet
        >>> sample_sheet(WorldConfig.quick(), identities=2).shape
        (256, 768, 3)
    """
    cfg = WorldConfig() if config is None else config
    size = cfg.image_size
    n_ids = cfg.identities + cfg.train_identities + cfg.eval_identities
    ids, cams, bank = _world_tables(cfg)
    rng = R.child_rng(cfg.seed, _S_SHEET)
    who, seen = [], set()
    candidates = rng.permutation(n_ids).tolist()
    for i in candidates:  # prefer identities that show new (pattern, bag) combinations
        key = (int(ids.pattern[i]), int(ids.bag[i]))
        if key not in seen:
            seen.add(key)
            who.append(i)
        if len(who) == min(identities, n_ids):
            break
    who += [i for i in candidates if i not in who][: min(identities, n_ids) - len(who)]
    who = np.array(who)
    n_cam = min(cfg.cameras, 4)
    specs = []
    for i in who.tolist():
        for cam in range(n_cam):
            for view in range(3):
                frames = np.array([int(rng.integers(0, 1000))])
                specs.append(_appearance_spec(rng, 1, i, cam, cams, float(ids.stride[i]), frames, view=view,
                                              occlusion=0.0))
    img = R.render(R.FrameSpec.concat(specs), ids, cams, bank, size)
    h, w = size
    cols = n_cam * 3
    sheet = img.reshape(len(who), cols, h, w, 3).transpose(0, 2, 1, 3, 4).reshape(len(who) * h, cols * w, 3)
    if path is not None:
        write_image(path, np.ascontiguousarray(sheet))
    return sheet
