"""The shared array helpers of cion_fast._xp that every op's input checks go through."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cion_fast import _xp


def huge_finite(library, dtype):
    """100 x 70 finite values near the dtype's largest: their sum overflows float32 and float64;
    float16 ones are summed in float32, where they cannot overflow."""
    value = {"float16": 60000.0, "float32": 3e38, "float64": 1e308}[dtype]
    x = np.full((100, 70), value, dtype=dtype)
    x[1::2] *= 0.5
    return x if library == "numpy" else torch.from_numpy(x)


@pytest.mark.parametrize("library", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_finiteness_checks_survive_an_overflowing_sum(library, dtype):
    """A sum that overflows proves nothing: the checks must then look entry by entry, accept these
    finite values, and refuse one NaN or infinity among them wherever it is."""
    x = huge_finite(library, dtype)
    assert _xp._sum_is_finite(x) == (dtype == "float16")  # the entry-by-entry path is the one tested
    _xp.check_finite(x, "x")
    assert _xp.all_finite(x, 7) == (True, 0)
    for bad in (np.nan, np.inf, -np.inf):
        for row, column in ((0, 0), (57, 3), (99, 69)):
            y = x.copy() if library == "numpy" else x.clone()
            y[row, column] = bad
            with pytest.raises(ValueError, match="y contains NaN or inf"):
                _xp.check_finite(y, "y")
            assert _xp.all_finite(y, 7) == (False, row // 7 * 7)


def test_finiteness_checks_on_ordinary_values_and_tensors_requiring_grad():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(33, 5)).astype(np.float32)).requires_grad_()
    assert _xp._sum_is_finite(x) and _xp._sum_is_finite(x.detach().to(torch.bfloat16))  # the one-read path
    _xp.check_finite(x, "x")
    assert _xp.all_finite(x, 4) == (True, 0)
    bad = x.detach().clone()
    bad[32, 4] = float("nan")
    assert _xp.all_finite(bad, 4) == (False, 32)


@pytest.mark.parametrize("library", ["numpy", "torch"])
@pytest.mark.parametrize("num_rows", [1, 1023, 1024, 1025, 3000])
@pytest.mark.parametrize("dim", [7, 256])
def test_squared_row_norms_in_chunks_equal_the_whole_product_bit_for_bit(library, num_rows, dim):
    x = np.random.default_rng(num_rows + dim).standard_normal((num_rows, dim)).astype(np.float32)
    x = x if library == "numpy" else torch.from_numpy(x)
    got, expected = _xp.squared_row_norms(x), (x * x).sum(1)
    assert type(got) is type(expected) and got.dtype == expected.dtype and got.shape == (num_rows,)
    assert np.array_equal(np.asarray(got), np.asarray(expected))
