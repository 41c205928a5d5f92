"""Oracle features: what a perfect-but-realistic ReID model would output, built from ground truth.

Used to tell denoising quality from feature quality: run the denoising on these and on real
features of the same world; what the oracle run gets wrong is the denoising's fault.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cion_fast import _arrays


def oracle_features(
    identity: Any,
    camera: Any,
    dim: int = 128,
    camera_shift: float = 0.5,
    noise: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """Per-frame features = identity vector + camera offset + frame noise, L2-normalised.

    Each true identity gets a random unit vector, each camera a random vector of norm
    ``camera_shift`` (the domain shift between cameras), each frame Gaussian noise of expected
    norm ``noise``. Frames of unknown identity (-1, false positives) get a unit vector of their
    own. With the defaults the expected cosine is about 0.83 for one person in one camera, 0.67
    for one person across cameras, 0.17 for two people in one camera and 0 otherwise.

    Args:
        identity: int [M] true identity per frame, -1 = unknown.
        camera: int [M] camera per frame.
        dim: feature dimension D.
        camera_shift: norm of the per-camera offset (>= 0).
        noise: expected norm of the per-frame noise (>= 0).
        seed: random seed (same inputs and seed -> same features).

    Returns:
        float32 [M, dim], unit rows.

    Example:
        >>> f = oracle_features(np.array([0, 0, 1, 0]), np.array([0, 0, 0, 1]), dim=256)
        >>> s = f @ f.T
        >>> bool(s[0, 1] > s[0, 3] > s[0, 2])
        True
    """
    identity = _arrays.as_index_array(identity, "identity")
    camera = _arrays.as_index_array(camera, "camera", identity.shape[0])
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be an int >= 1, got {dim!r}")
    for name, value in (("camera_shift", camera_shift), ("noise", noise)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    rng = np.random.default_rng(seed)
    known = identity >= 0
    people, person = np.unique(identity[known], return_inverse=True)
    cameras, camera_of_frame = np.unique(camera, return_inverse=True)

    def unit(rows: int) -> np.ndarray:
        x = rng.standard_normal((rows, dim))
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    base = np.empty((identity.shape[0], dim))
    base[known] = unit(people.shape[0])[person]
    base[~known] = unit(int((~known).sum()))
    features = base + camera_shift * unit(cameras.shape[0])[camera_of_frame]
    features += rng.standard_normal(features.shape) * (noise / np.sqrt(dim))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    return features.astype(np.float32)
