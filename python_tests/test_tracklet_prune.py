"""tracklet_prune against an independent float64 numpy oracle written from
docs/ALGORITHMS.md (level 1)."""

from __future__ import annotations

import numpy as np
import pytest

from cion_fast.ops import tracklet_prune
from cion_fast.reference import tracklet_prune as reference

from conftest import cupy, requires_torch, to_framework, torch


def oracle(features, offsets, threshold, min_frames):
    """Recomputes every score from scratch at every step (no incremental updates)."""
    x = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    keep = np.zeros(len(x), dtype=bool)
    for t in range(len(offsets) - 1):
        active = list(range(offsets[t], offsets[t + 1]))
        while len(active) >= 2:
            scores = []
            for j in active:
                others = unit[[i for i in active if i != j]].sum(0)
                norm = np.linalg.norm(others)
                scores.append(unit[j] @ others / norm if norm > 1e-6 else 0.0)
            # First of equal minima = the earliest row; with two frames left both scores are the
            # same cosine, so the earlier frame goes whatever rounding says.
            worst = 0 if len(active) == 2 else int(np.argmin(scores))
            if scores[worst] >= threshold:
                break
            del active[worst]
        if len(active) >= min_frames:
            keep[active] = True
    return keep


def make_noisy_tracklets(lengths, dim, seed, outlier_rate=0.3, dtype=np.float32):
    """Each tracklet scatters around its own centre; a share of frames come from elsewhere."""
    rng = np.random.default_rng(seed)
    lengths = np.asarray(lengths, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    centres = rng.normal(size=(len(lengths) + 1, dim))
    owner = np.repeat(np.arange(len(lengths)), lengths)
    outlier = rng.random(len(owner)) < outlier_rate
    owner = np.where(outlier, rng.integers(0, len(lengths) + 1, len(owner)), owner)
    features = centres[owner] + 0.8 * rng.normal(size=(len(owner), dim))
    return features.astype(dtype), offsets


CASES = [
    ([1], 4, 0.6, 2),  # a single one-frame tracklet: dropped (fewer than min_frames)
    ([1], 4, 0.6, 1),  # ... kept with min_frames = 1
    ([2, 0, 3, 1, 0], 5, 0.6, 2),  # empty tracklets in between
    ([7, 12, 5, 30, 2, 9, 1, 16], 16, 0.6, 2),
    ([9, 12, 5, 30, 2, 9, 1, 16], 16, 0.3, 3),
    ([9, 12, 5, 30, 2, 9, 1, 16], 33, 0.9, 1),
    ([200], 12, 0.6, 2),  # one long tracklet: many successive drops
]


@pytest.mark.parametrize("lengths,dim,threshold,min_frames", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_oracle(poisoned_outputs, lengths, dim, threshold, min_frames, dtype):
    features, offsets = make_noisy_tracklets(lengths, dim, seed=sum(lengths) + dim, dtype=dtype)
    expected = oracle(features, offsets, threshold, min_frames)
    keep = tracklet_prune(features, offsets, threshold=threshold, min_frames=min_frames)
    assert keep.dtype == np.bool_ and keep.shape == (len(features),)
    np.testing.assert_array_equal(keep, expected)


def test_prunes_outliers_and_keeps_consistent_frames():
    """The random cases above are not trivial: some frames go, most stay."""
    features, offsets = make_noisy_tracklets([12] * 40, 24, seed=3, outlier_rate=0.2)
    keep = tracklet_prune(features, offsets)
    assert 0.5 < keep.mean() < 0.98
    np.testing.assert_array_equal(keep, oracle(features, offsets, 0.6, 2))


def test_ties_and_zero_vectors():
    """x, -x, y: x and -x tie (the earlier goes), then -x and y are orthogonal (cosine 0 < 0.6):
    -x goes and y is left alone. y's first score is against x + (-x) = 0: a zero vector. The two
    all-zero frames score 0 against each other: the earlier goes."""
    features = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    offsets = [0, 3, 5]
    np.testing.assert_array_equal(tracklet_prune(features, offsets, min_frames=1), [False, False, True, False, True])
    np.testing.assert_array_equal(tracklet_prune(features, offsets, min_frames=2), [False] * 5)
    np.testing.assert_array_equal(oracle(features, offsets, 0.6, 1), [False, False, True, False, True])


def test_threshold_extremes_and_empty_input():
    features, offsets = make_noisy_tracklets([5, 3, 1], 8, seed=4)
    np.testing.assert_array_equal(tracklet_prune(features, offsets, threshold=-1.5), [True] * 8 + [False])
    np.testing.assert_array_equal(tracklet_prune(features, offsets, threshold=1.5, min_frames=1), oracle(features, offsets, 1.5, 1))
    assert tracklet_prune(np.zeros((0, 3), np.float32), [0, 0]).shape == (0,)


def test_low_precision_and_non_contiguous():
    features, offsets = make_noisy_tracklets([6, 11, 4, 9], 10, seed=5, dtype=np.float64)
    half = features.astype(np.float16)
    np.testing.assert_array_equal(tracklet_prune(half, offsets), oracle(half, offsets, 0.6, 2))
    strided = np.zeros((features.shape[0], 20))
    strided[:, ::2] = features
    np.testing.assert_array_equal(tracklet_prune(strided[:, ::2], offsets.astype(np.int32)), oracle(features, offsets, 0.6, 2))


@requires_torch
def test_torch_input_and_reference():
    features, offsets = make_noisy_tracklets([7, 1, 15, 0, 8, 22, 3], 12, seed=6)
    expected = oracle(features, offsets, 0.6, 2)
    tf, to = torch.from_numpy(features), torch.from_numpy(offsets)
    keep = tracklet_prune(tf, to)
    assert isinstance(keep, torch.Tensor) and keep.dtype == torch.bool
    np.testing.assert_array_equal(keep.numpy(), expected)
    np.testing.assert_array_equal(tracklet_prune(tf.to(torch.bfloat16), to).numpy(),
                                  oracle(tf.to(torch.bfloat16).double().numpy(), offsets, 0.6, 2))
    np.testing.assert_array_equal(reference.tracklet_prune(tf, to, chunk=3).numpy(), expected)
    np.testing.assert_array_equal(reference.tracklet_prune(tf, to, 0.3, 3).numpy(), oracle(features, offsets, 0.3, 3))


def _nan_features():
    features, _ = make_noisy_tracklets([2, 3], 4, seed=7)
    features[3, 2] = np.nan
    return features


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(offsets=[1, 2, 5]), ValueError, "offsets must start at 0"),
        (dict(offsets=[0, 3, 2, 5]), ValueError, "offsets must be non-decreasing"),
        (dict(offsets=[0, 2, 4]), ValueError, "must end at the number of feature rows"),
        (dict(offsets=np.array([0.0, 5.0])), TypeError, "offsets must have dtype"),
        (dict(features=_nan_features()), ValueError, "features contains NaN"),
        (dict(threshold=float("nan")), ValueError, "threshold must be a finite number"),
        (dict(threshold="0.5"), TypeError, "threshold must be a real number"),
        (dict(min_frames=-1), ValueError, "min_frames must be >= 0"),
        (dict(min_frames=2.0), TypeError, "min_frames must be an integer"),
        (dict(features=np.zeros((5, 4), dtype=np.int64)), TypeError, "features must have dtype"),
        (dict(features=np.zeros(5, dtype=np.float32)), ValueError, "features must be 2-D"),
    ],
)
def test_bad_input_raises_clear_errors(kwargs, error, match):
    features, offsets = make_noisy_tracklets([2, 3], 4, seed=8)
    args = dict(features=features, offsets=offsets)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        tracklet_prune(**args)


# The CPU kernel's vector body is compiled for AVX-512, for AVX2 + FMA and for the baseline ISA, and
# the widest the CPU has runs; CION_FAST_TRACKLET_PRUNE_ISA caps it so that every copy runs here
# ("native": no cap). A cap above what the CPU has falls back to the copies it can run.
@pytest.fixture(params=["native", "avx2", "baseline"])
def cpu_copy(request, monkeypatch):
    if request.param != "native":
        monkeypatch.setenv("CION_FAST_TRACKLET_PRUNE_ISA", request.param)
    return request.param


# Lengths around the kernel's blocks of 4 rows (and 1-3 left over), single frames, empty
# tracklets and a long tracklet with many drops.
AWKWARD_LENGTHS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 0, 1, 2, 3, 60]


@pytest.mark.parametrize("dim", [1, 3, 8, 17, 64, 255, 257])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_vector_copy_matches_oracle(cpu_copy, poisoned_outputs, dim, dtype):
    """Dims around the 8-lane vectors and the 64-wide column blocks (tails of 1-7), zero rows."""
    features, offsets = make_noisy_tracklets(AWKWARD_LENGTHS, dim, seed=dim, dtype=dtype)
    features[[5, 11, 12, len(features) - 1]] = 0  # zero rows: in a block of 4, left over, last
    features[offsets[9]:offsets[10]] = 0  # a tracklet of zero rows only
    for threshold, min_frames in ((0.6, 2), (0.3, 1)):
        keep = tracklet_prune(features, offsets, threshold=threshold, min_frames=min_frames)
        assert keep.dtype == np.bool_ and keep.shape == (len(features),)
        np.testing.assert_array_equal(keep, oracle(features, offsets, threshold, min_frames))


@pytest.mark.parametrize("dim", [1, 3, 17, 256])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["single frame", "vector lanes", "tail", "long tracklet"])
def test_every_vector_copy_raises_on_nan_and_inf(cpu_copy, dim, bad, where):
    features, offsets = make_noisy_tracklets(AWKWARD_LENGTHS, dim, seed=9)
    row = {"single frame": offsets[11], "vector lanes": offsets[8] + 5, "tail": offsets[9] + 2,
           "long tracklet": offsets[-1] - 1}[where]
    column = {"single frame": 0, "vector lanes": min(4, dim - 1), "tail": dim - 1, "long tracklet": dim // 2}[where]
    features[row, column] = bad
    with pytest.raises(ValueError, match="features contains NaN or inf"):
        tracklet_prune(features, offsets)
    with pytest.raises(ValueError, match="features contains NaN or inf"):
        tracklet_prune(features.astype(np.float64), offsets)


def test_every_vector_copy_handles_ties_and_extreme_scales(cpu_copy):
    """The exact ties of test_ties_and_zero_vectors, and float32 features near the overflow and
    subnormal ends (their squares leave float32's range; the kernel sums them in float64)."""
    features = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    np.testing.assert_array_equal(tracklet_prune(features, [0, 3, 5], min_frames=1), [False, False, True, False, True])
    base, offsets = make_noisy_tracklets([7, 12, 5, 30], 19, seed=10, dtype=np.float64)
    expected = oracle(base.astype(np.float32), offsets, 0.6, 2)
    for scale in (1e30, 1e-40):
        scaled = (base * scale).astype(np.float32)
        np.testing.assert_array_equal(tracklet_prune(scaled, offsets), oracle(scaled.astype(np.float64), offsets, 0.6, 2))
    np.testing.assert_array_equal(tracklet_prune(base.astype(np.float32), offsets), expected)


@pytest.mark.cuda
@pytest.mark.parametrize("framework", ["torch_cuda", "cupy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_cuda_matches_cpu(framework, dtype):
    if framework == "cupy" and (cupy is None or dtype == np.float16):
        pytest.skip("cupy not installed")
    rng = np.random.default_rng(51)
    lengths = np.concatenate([rng.integers(0, 40, 300), [1, 0, 700]])
    features, offsets = make_noisy_tracklets(lengths, 70, seed=52, dtype=dtype)
    for threshold, min_frames in ((0.6, 2), (0.3, 4)):
        cpu = tracklet_prune(features, offsets, threshold, min_frames)
        gpu = tracklet_prune(to_framework(features, framework), to_framework(offsets, framework), threshold, min_frames)
        gpu = gpu.cpu().numpy() if framework == "torch_cuda" else gpu.get()
        np.testing.assert_array_equal(gpu, cpu)


@pytest.mark.cuda
def test_cuda_nan_and_ties():
    with pytest.raises(ValueError, match="features contains NaN"):
        tracklet_prune(torch.from_numpy(_nan_features()).cuda(), [0, 2, 5])
    features = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]).cuda()
    assert tracklet_prune(features, [0, 3, 5], min_frames=1).cpu().tolist() == [False, False, True, False, True]


@pytest.mark.parametrize("offsets", [[0, 3 * 2**61, -3 * 2**61, 12], [0, 13], [1, 12], [0, 7, 3, 12]])
def test_kernel_checks_offsets_again_where_it_forms_pointers(offsets):
    """The C++ binding does not trust its caller: offsets that would make it read out of bounds are
    refused there too (the Python layer refuses them first; this calls the binding directly)."""
    from cion_fast import _arrays
    from cion_fast.ops._extension import kernels

    placement = _arrays.Placement("numpy", "cpu")
    features, keep = np.ones((12, 4), np.float32), np.zeros(12, bool)
    arrays = {name: _arrays.to_dlpack(x, placement) for name, x in
              (("features", features), ("offsets", np.array(offsets, np.int64)), ("keep", keep))}
    with pytest.raises(ValueError, match="offsets must"):
        kernels().tracklet_prune(**arrays, inv_norm=None, dots=None, status=None, threshold=0.5, min_frames=1, stream=0)
