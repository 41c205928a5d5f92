"""numpy float16 -> float32 through the extension (``_arrays.astype``): numpy's values for every
one of the 65,536 half-precision bit patterns, at awkward sizes and layouts."""

from __future__ import annotations

import numpy as np
import pytest

from cion_fast import _arrays
from cion_fast.ops._extension import kernels

EVERY_HALF = np.arange(1 << 16, dtype=np.uint16).view(np.float16)


def test_every_half_float_widens_to_numpys_value():
    got = _arrays.astype(EVERY_HALF, "float32")
    assert got.dtype == np.float32 and got.shape == EVERY_HALF.shape
    np.testing.assert_array_equal(got, EVERY_HALF.astype(np.float32))  # NaNs compare equal here
    assert np.isnan(got).sum() == np.isnan(EVERY_HALF).sum() == 2046


@pytest.mark.parametrize("count", [0, 1, 7, 8, 9, 4095, 4096, 65535, 65537, 200_003])
def test_awkward_sizes_write_every_entry(count):
    src = EVERY_HALF[np.random.default_rng(count).integers(0, 1 << 16, count)]
    dst = np.full(count, np.nan, np.float32)  # poisoned
    kernels().widen_half(src.__dlpack__(), dst.__dlpack__())
    np.testing.assert_array_equal(dst, src.astype(np.float32))


def test_layouts_and_memory_maps(tmp_path):
    rows = EVERY_HALF[:60000].reshape(600, 100)
    np.testing.assert_array_equal(_arrays.astype(rows[:, ::3], "float32"), rows[:, ::3].astype(np.float32))  # strided
    np.save(tmp_path / "h.npy", rows)
    mapped = np.load(tmp_path / "h.npy", mmap_mode="r")  # read-only
    np.testing.assert_array_equal(_arrays.astype(mapped, "float32"), rows.astype(np.float32))


def test_the_binding_refuses_mismatches():
    half, single = np.zeros(16, np.float16), np.zeros(16, np.float32)
    with pytest.raises(TypeError, match="src must have dtype float16"):
        kernels().widen_half(single.__dlpack__(), single.__dlpack__())
    with pytest.raises(TypeError, match="dst must have dtype float32"):
        kernels().widen_half(half.__dlpack__(), half.__dlpack__())
    with pytest.raises(ValueError, match="same number of elements"):
        kernels().widen_half(half.__dlpack__(), np.zeros(15, np.float32).__dlpack__())
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels().widen_half(np.zeros(32, np.float16)[::2].__dlpack__(), single.__dlpack__())


def test_the_scalar_path_gives_the_same_values():
    """Calls of fewer than 8 elements never reach the F16C loop: every pattern through the scalar
    conversion (subnormals, infinities, NaN payloads kept)."""
    dst = np.full(EVERY_HALF.shape, np.nan, np.float32)
    for start in range(0, EVERY_HALF.shape[0], 7):
        kernels().widen_half(EVERY_HALF[start : start + 7].__dlpack__(), dst[start : start + 7].__dlpack__())
    want = EVERY_HALF.astype(np.float32)
    np.testing.assert_array_equal(dst, want)
    assert (dst.view(np.uint32) == want.view(np.uint32)).all()  # bit for bit, NaNs too
