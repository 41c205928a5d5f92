"""Private: argument checks shared by the data containers (errors name the argument)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np


def int_array(value, name: str, length: int | None = None) -> np.ndarray:
    """``value`` as a C-contiguous 1-D int64 array; integer dtypes only (bool and float refused),
    of ``length`` entries when given."""
    arr = np.asarray(value)
    if arr.size == 0 and arr.dtype == np.float64:  # an empty list
        arr = arr.astype(np.int64)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array (int64; int32 accepted), got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {list(arr.shape)}")
    if length is not None and len(arr) != length:
        raise ValueError(f"{name} must have {length} entries, got {len(arr)}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def is_path_array(value) -> bool:
    """True for a 1-D numpy array of strings (image paths)."""
    return isinstance(value, np.ndarray) and value.dtype.kind in "US" and value.ndim == 1


def image_array(value: np.ndarray, name: str) -> np.ndarray:
    """Checks uint8 [n, H, W, 3]."""
    if value.dtype != np.uint8:
        raise TypeError(f"{name} must be uint8 [n, H, W, 3], got dtype {value.dtype}")
    if value.ndim != 4 or value.shape[3] != 3:
        raise ValueError(f"{name} must be uint8 [n, H, W, 3], got shape {list(value.shape)}")
    return value


def path_list(value, name: str) -> list[str]:
    """A sequence of str / ``os.PathLike`` (or a 1-D string array) as a list of str."""
    if is_path_array(value):
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence of image paths, got {type(value).__name__}")
    for i, p in enumerate(value):
        if not isinstance(p, (str, os.PathLike)):
            raise TypeError(f"{name}[{i}] must be an image path (str or os.PathLike), got {type(p).__name__}")
    return [os.fspath(p) for p in value]
