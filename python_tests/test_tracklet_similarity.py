"""tracklet_similarity against an independent float64 numpy oracle written from
docs/ALGORITHMS.md."""

from __future__ import annotations

import numpy as np
import pytest

from cion_fast.ops import tracklet_similarity
from cion_fast.reference import tracklet_similarity as reference

from conftest import (POISON_FLOAT, assert_file_passes_under_isa_cap, cupy, requires_torch, run_in_threads,
                      run_with_isa_cap, to_framework, torch)

MODES = ("centroid", "mean", "max", "min", "topk_mean")


def _unit_rows(x):
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def oracle_pair(frames_a, frames_b, mode, k=None):
    """Spec definitions on two tracklets of L2-normalised frames (float64)."""
    if mode == "centroid":
        ma, mb = frames_a.mean(0), frames_b.mean(0)
        denominator = np.linalg.norm(ma) * np.linalg.norm(mb)
        return float(ma @ mb / denominator) if denominator > 0 else 0.0
    cosines = (frames_a @ frames_b.T).ravel()
    if mode == "mean":
        return float(cosines.mean())
    if mode == "max":
        return float(cosines.max())
    if mode == "min":
        return float(cosines.min())
    return float(np.sort(cosines)[::-1][:k].mean())


def oracle(features, offsets, other_features=None, other_offsets=None, mode="centroid", k=None, pairs=None):
    if other_features is None:
        other_features, other_offsets = features, offsets
    fa, fb = _unit_rows(features), _unit_rows(other_features)
    sets_a = [fa[offsets[t] : offsets[t + 1]] for t in range(len(offsets) - 1)]
    sets_b = [fb[other_offsets[t] : other_offsets[t + 1]] for t in range(len(other_offsets) - 1)]
    if pairs is None:
        return np.array([[oracle_pair(a, b, mode, k) for b in sets_b] for a in sets_a]).reshape(len(sets_a), len(sets_b))
    return np.array([oracle_pair(sets_a[i], sets_b[j], mode, k) for i, j in pairs])


def make_tracklets(lengths, dim, seed, dtype=np.float32, clusters=True):
    """Random frames; with ``clusters`` each tracklet's frames scatter around its own centre, so
    similarities spread over [-1, 1] instead of hugging 0."""
    rng = np.random.default_rng(seed)
    lengths = np.asarray(lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    centres = rng.normal(size=(len(lengths), dim))
    owner = np.repeat(np.arange(len(lengths)), lengths)
    features = rng.normal(size=(int(offsets[-1]), dim))
    if clusters and len(lengths):
        features = features * 0.7 + centres[owner]
    return features.astype(dtype), offsets


def random_pairs(num_a, num_b, count, seed):
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, num_a, count), rng.integers(0, num_b, count)], axis=1)


SIZES = [
    ([1], 5),  # a single one-frame tracklet
    ([1, 1, 2, 1], 1),  # one-frame tracklets, D = 1
    ([3, 7, 1, 12, 5, 2], 13),  # D not a multiple of the vector width
    ([70, 2, 300, 9], 9),  # longer than the 64-row / 256-column sub-blocks
    ([4, 28, 16, 9, 21, 5, 11], 64),
]


def tol(dtype):
    return 1e-12 if dtype == np.float64 else 3e-6


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("lengths,dim", SIZES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_self_matches_oracle(poisoned_outputs, mode, lengths, dim, dtype):
    features, offsets = make_tracklets(lengths, dim, seed=len(lengths) * 31 + dim, dtype=dtype)
    k = 5 if mode == "topk_mean" else None
    result = tracklet_similarity(features, offsets, mode=mode, k=k)
    assert result.shape == (len(lengths), len(lengths)) and result.dtype == dtype
    np.testing.assert_allclose(result, oracle(features, offsets, mode=mode, k=k), rtol=0, atol=tol(dtype))
    if mode not in ("centroid", "mean"):  # the kernel computes each unordered pair once
        np.testing.assert_array_equal(result, result.T)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_two_sets_and_pairs_match_oracle(poisoned_outputs, mode, dtype):
    fa, oa = make_tracklets([5, 1, 33, 8, 2, 17, 3], 19, seed=1, dtype=dtype)
    fb, ob = make_tracklets([2, 40, 1, 6, 9], 19, seed=2, dtype=dtype)
    k = 7 if mode == "topk_mean" else None
    dense = tracklet_similarity(fa, oa, fb, ob, mode=mode, k=k)
    np.testing.assert_allclose(dense, oracle(fa, oa, fb, ob, mode=mode, k=k), rtol=0, atol=tol(dtype))
    pairs = random_pairs(7, 5, 61, seed=3)
    listed = tracklet_similarity(fa, oa, fb, ob, mode=mode, k=k, pairs=pairs)
    assert listed.shape == (61,) and listed.dtype == dtype
    np.testing.assert_allclose(listed, oracle(fa, oa, fb, ob, mode=mode, k=k, pairs=pairs), rtol=0, atol=tol(dtype))
    self_pairs = random_pairs(7, 7, 40, seed=4)
    np.testing.assert_allclose(
        tracklet_similarity(fa, oa, mode=mode, k=k, pairs=self_pairs),
        oracle(fa, oa, mode=mode, k=k, pairs=self_pairs), rtol=0, atol=tol(dtype),
    )


@pytest.mark.parametrize("k", [1, 2, 5, 16, 17, 32, 33, 40, 3000, 10**6])
def test_topk_mean_any_k(poisoned_outputs, k):
    """k = 1 is max, k >= La * Lb is mean; 100 x 100 blocks push the bounded top-k buffer past its
    capacity (4096 values) so it has to shrink. 16 and 17: a block's values are screened by the
    k-th largest of its 16 group maxima, which exists up to k = 16; 32 / 33: the two regimes of the
    top-k buffer."""
    features, offsets = make_tracklets([100, 100, 3, 1], 6, seed=k % 97)
    pairs = np.array([[0, 1], [1, 0], [0, 0], [2, 3], [0, 2], [1, 1]])
    result = tracklet_similarity(features, offsets, mode="topk_mean", k=k, pairs=pairs)
    np.testing.assert_allclose(result, oracle(features, offsets, mode="topk_mean", k=k, pairs=pairs), rtol=0, atol=3e-6)
    if k == 1:
        np.testing.assert_array_equal(result, tracklet_similarity(features, offsets, mode="max", pairs=pairs))


@pytest.mark.parametrize("k", [1, 3, 5, 16, 20])
def test_topk_mean_with_tied_cosines(k):
    """Frames repeated, so a pair's cosines take two or three values, each many times: the k largest
    include values equal to the screening bound (the k-th largest group maximum of a block, or the
    k-th largest held), which must be kept (a strict bound keeps too few)."""
    rng = np.random.default_rng(k)
    x, y, z = rng.standard_normal((3, 24)).astype(np.float32)
    tracklets = [[x] * 8, [x] * 2 + [y] * 20, [y] * 3 + [z] * 30 + [x], [z] * 70]
    features = np.concatenate([np.stack(t) for t in tracklets])
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in tracklets])])
    pairs = np.array([(a, b) for a in range(4) for b in range(4)])
    result = tracklet_similarity(features, offsets, mode="topk_mean", k=k, pairs=pairs)
    np.testing.assert_allclose(result, oracle(features, offsets, mode="topk_mean", k=k, pairs=pairs), rtol=0, atol=3e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_frame_pair_gives_the_same_bits_in_every_place_of_a_block(dtype):
    """The dot products run in register tiles of several shapes (4 x 3 and the block's edges): a
    frame pair must give the same bits in every one, the tail of a dimension that is not a multiple
    of the vector width included (sliding_range_link recomputes similarities and must reach the same
    decisions). Tracklets repeating one frame x against ones repeating y, every length 1..13 on
    both sides: the max and the min of every pair must be one and the same value."""
    rng = np.random.default_rng(0)
    lengths = np.arange(1, 14)
    pairs = np.array([(i, len(lengths) + j) for i in range(len(lengths)) for j in range(len(lengths))])
    for dim in (5, 8, 37, 100, 257):
        for _ in range(20):
            x, y = rng.standard_normal((2, dim)).astype(dtype)
            features = np.concatenate([np.repeat(x[None], n, 0) for n in lengths] + [np.repeat(y[None], n, 0) for n in lengths])
            offsets = np.concatenate([[0], np.cumsum(np.concatenate([lengths, lengths]))])
            high = tracklet_similarity(features, offsets, pairs=pairs, mode="max")
            low = tracklet_similarity(features, offsets, pairs=pairs, mode="min")
            assert np.all(high == high[0]) and np.all(low == high[0]), f"dim {dim}: {np.unique(np.concatenate([high, low]))}"


# The dot products have a 16-lane copy (float32, Intel AVX-512: two entries per register), an
# AVX-512VL one (4 x 6 tiles of 8 lanes), an AVX2 one (4 x 3) and a baseline one; the widest the CPU
# runs is chosen once per process, and CION_FAST_DOT_BLOCK_ISA caps it, so the two tests below run
# the other copies in subprocesses.
_ISA_CAP = "CION_FAST_DOT_BLOCK_ISA"


@pytest.mark.parametrize("cap", ["avx512vl", "avx2", "baseline"])
def test_every_dot_block_copy_passes_this_file(cap, tmp_path):
    """Each capped copy runs this file's oracle, top-k and same-bits tests (all but these two)."""
    assert_file_passes_under_isa_cap(_ISA_CAP, cap, __file__, "dot_block_copy", tmp_path)


_COPY_OUTPUTS_SCRIPT = """
import sys
import numpy as np
from cion_fast.ops import tracklet_similarity
rng = np.random.default_rng(0)
results = []
for dim in (5, 37, 64, 100, 257):
    lengths = rng.integers(1, 80 if dim == 64 else 30, 40)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    features = rng.standard_normal((int(offsets[-1]), dim)).astype(np.float32)
    pairs = rng.integers(0, 40, (300, 2))
    for mode, k in (("max", None), ("min", None), ("topk_mean", 5)):
        results.append(tracklet_similarity(features, offsets, pairs=pairs, mode=mode, k=k))
np.savez(sys.argv[1], *results)
"""


def test_every_fma_dot_block_copy_gives_the_same_bits(tmp_path):
    """The 16-lane, AVX-512VL and AVX2 copies run the same operations per entry, so max / min /
    topk_mean at awkward lengths and dimensions must agree bit for bit (where the CPU lacks a copy,
    the capped processes run the next narrower one)."""
    outputs = []
    for cap in (None, "avx512vl", "avx2"):
        path = tmp_path / f"{cap}.npz"
        done = run_with_isa_cap(_ISA_CAP, cap, ["-c", _COPY_OUTPUTS_SCRIPT, str(path)], tmp_path, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append(np.load(path))
    for other in outputs[1:]:
        for name in outputs[0].files:
            np.testing.assert_array_equal(other[name], outputs[0][name])


def test_zero_frames_have_cosine_zero():
    features = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    offsets = np.array([0, 2, 3, 4])
    np.testing.assert_allclose(
        tracklet_similarity(features, offsets, mode="max"), [[1, 0, 0], [0, 0, 0], [0, 0, 0]], atol=1e-7
    )
    np.testing.assert_allclose(tracklet_similarity(features, offsets, mode="centroid"), [[1, 0, 0], [0, 0, 0], [0, 0, 0]], atol=1e-7)


def test_empty_sets_and_pairs():
    features, offsets = make_tracklets([3, 2], 4, seed=5)
    assert tracklet_similarity(features, offsets, mode="max", pairs=np.zeros((0, 2), dtype=np.int64)).shape == (0,)
    empty = tracklet_similarity(np.zeros((0, 4), np.float32), [0], features, offsets, mode="max")
    assert empty.shape == (0, 2)
    assert tracklet_similarity(np.zeros((0, 4), np.float32), [0], mode="centroid").shape == (0, 0)


def test_low_precision_and_non_contiguous_inputs():
    features, offsets = make_tracklets([4, 9, 1, 6], 24, seed=6, dtype=np.float64)
    half = features.astype(np.float16)
    expected = oracle(half.astype(np.float64), offsets, mode="max")
    result = tracklet_similarity(half, offsets, mode="max")
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, expected, atol=3e-6)
    wide = np.zeros((features.shape[0], 48))
    wide[:, ::2] = features
    np.testing.assert_allclose(
        tracklet_similarity(wide[:, ::2], offsets.astype(np.int32), mode="min"),
        oracle(features, offsets, mode="min"), atol=1e-12,
    )


@requires_torch
@pytest.mark.parametrize("mode", MODES)
def test_torch_inputs_and_reference(mode):
    features, offsets = make_tracklets([4, 1, 12, 7, 3], 16, seed=7, dtype=np.float64)
    k = 4 if mode == "topk_mean" else None
    pairs = random_pairs(5, 5, 23, seed=8)
    expected_dense = oracle(features, offsets, mode=mode, k=k)
    expected_pairs = oracle(features, offsets, mode=mode, k=k, pairs=pairs)
    tf, to = torch.from_numpy(features), torch.from_numpy(offsets)
    dense = tracklet_similarity(tf, to, mode=mode, k=k)
    assert isinstance(dense, torch.Tensor) and dense.dtype == torch.float64
    np.testing.assert_allclose(dense.numpy(), expected_dense, atol=1e-12)
    listed = tracklet_similarity(tf.float(), to, mode=mode, k=k, pairs=torch.from_numpy(pairs))
    assert isinstance(listed, torch.Tensor) and listed.dtype == torch.float32
    np.testing.assert_allclose(listed.numpy(), expected_pairs, atol=3e-6)
    bf16 = tracklet_similarity(tf.to(torch.bfloat16), to, mode=mode, k=k)
    expected_bf16 = oracle(tf.to(torch.bfloat16).double().numpy(), offsets, mode=mode, k=k)
    np.testing.assert_allclose(bf16.numpy(), expected_bf16, atol=3e-6)
    # The plain-PyTorch reference (the benchmark baseline) computes the same thing.
    np.testing.assert_allclose(reference.tracklet_similarity(tf, to, mode=mode, k=k).numpy(), expected_dense, atol=1e-12)
    np.testing.assert_allclose(
        reference.tracklet_similarity(tf, to, mode=mode, k=k, pairs=torch.from_numpy(pairs), chunk=7).numpy(),
        expected_pairs, atol=1e-12,
    )


def _good_args():
    features, offsets = make_tracklets([2, 3, 1], 4, seed=9)
    return dict(features=features, offsets=offsets)


def _with_nan(features):
    bad = features.copy()
    bad[4, 1] = np.nan
    return bad


@pytest.mark.parametrize(
    "mutate,error,match",
    [
        (lambda a: dict(a, offsets=np.array([1, 2, 5, 6])), ValueError, "offsets must start at 0"),
        (lambda a: dict(a, offsets=np.array([0, 3, 2, 6])), ValueError, "offsets must be non-decreasing"),
        (lambda a: dict(a, offsets=np.array([0, 2, 5, 5])), ValueError, "must end at the number of feature rows"),
        (lambda a: dict(a, offsets=np.array([0, 2, 2, 6])), ValueError, "tracklet 1 of offsets is empty"),
        (lambda a: dict(a, offsets=np.array([], dtype=np.int64)), ValueError, "offsets must have N"),
        (lambda a: dict(a, offsets=np.array([0.0, 2.0, 5.0, 6.0])), TypeError, "offsets must have dtype"),
        (lambda a: dict(a, features=_with_nan(a["features"])), ValueError, "features contains NaN"),
        (lambda a: dict(a, features=_with_nan(a["features"]), mode="centroid"), ValueError, "features contains NaN"),
        (lambda a: dict(a, other_features=_with_nan(a["features"]), other_offsets=a["offsets"]), ValueError,
         "other_features contains NaN"),
        (lambda a: dict(a, other_features=_with_nan(a["features"]), other_offsets=a["offsets"], mode="mean"),
         ValueError, "other_features contains NaN"),
        (lambda a: dict(a, other_features=a["features"][:, :3], other_offsets=a["offsets"]), ValueError,
         "same dimension"),
        (lambda a: dict(a, other_features=a["features"]), ValueError, "pass both or neither"),
        (lambda a: dict(a, pairs=np.array([[0, 1], [3, 0]])), ValueError, r"pairs\[:, 0\] must index the 3"),
        (lambda a: dict(a, pairs=np.array([[0, -1]])), ValueError, r"pairs\[:, 1\] must index"),
        (lambda a: dict(a, pairs=np.array([0, 1])), ValueError, r"pairs must have shape \[P, 2\]"),
        (lambda a: dict(a, pairs=np.array([[0.0, 1.0]])), TypeError, "pairs must have dtype"),
        (lambda a: dict(a, mode="median"), ValueError, "mode must be one of"),
        (lambda a: dict(a, mode="topk_mean"), ValueError, "needs k"),
        (lambda a: dict(a, mode="topk_mean", k=0), ValueError, "k must be >= 1"),
        (lambda a: dict(a, mode="topk_mean", k=2.5), TypeError, "k must be an integer"),
        (lambda a: dict(a, mode="max", k=3), ValueError, "k only applies"),
        (lambda a: dict(a, features=a["features"].astype(np.int32)), TypeError, "features must have dtype"),
        (lambda a: dict(a, features=a["features"][0]), ValueError, "features must be 2-D"),
    ],
)
def test_bad_input_raises_clear_errors(mutate, error, match):
    args = dict(_good_args(), mode="max")
    args = mutate(args)
    with pytest.raises(error, match=match):
        tracklet_similarity(args.pop("features"), args.pop("offsets"), **args)


@pytest.mark.cuda
@pytest.mark.parametrize("framework", ["torch_cuda", "cupy"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_matches_cpu(framework, mode, dtype):
    if framework == "cupy" and cupy is None:
        pytest.skip("cupy not installed")
    rng = np.random.default_rng(41)
    fa, oa = make_tracklets(rng.integers(1, 40, 37).tolist() + [130], 67, seed=42, dtype=dtype)
    fb, ob = make_tracklets(rng.integers(1, 30, 23).tolist(), 67, seed=43, dtype=dtype)
    k = 9 if mode == "topk_mean" else None
    pairs = random_pairs(38, 23, 517, seed=44)
    g = lambda x: to_framework(x, framework)  # noqa: E731
    checks = [
        (tracklet_similarity(fa, oa, mode=mode, k=k), tracklet_similarity(g(fa), g(oa), mode=mode, k=k)),
        (tracklet_similarity(fa, oa, fb, ob, mode=mode, k=k), tracklet_similarity(g(fa), g(oa), g(fb), g(ob), mode=mode, k=k)),
        (tracklet_similarity(fa, oa, fb, ob, mode=mode, k=k, pairs=pairs),
         tracklet_similarity(g(fa), g(oa), g(fb), g(ob), mode=mode, k=k, pairs=g(pairs))),
    ]
    for cpu, gpu in checks:
        gpu = gpu.cpu().numpy() if framework == "torch_cuda" else gpu.get()
        assert not np.any(gpu == POISON_FLOAT)
        np.testing.assert_allclose(gpu, cpu, rtol=0, atol=1e-12 if dtype == np.float64 else 2e-6)


@pytest.mark.cuda
def test_cuda_nan_and_half_inputs():
    features, offsets = make_tracklets([3, 5, 2], 8, seed=45)
    bad = features.copy()
    bad[2, 3] = np.inf
    for mode in ("max", "centroid"):
        with pytest.raises(ValueError, match="features contains NaN"):
            tracklet_similarity(torch.from_numpy(bad).cuda(), offsets, mode=mode)
    half = torch.from_numpy(features).half()
    np.testing.assert_allclose(
        tracklet_similarity(half.cuda(), offsets, mode="topk_mean", k=3).cpu().numpy(),
        tracklet_similarity(half, offsets, mode="topk_mean", k=3).numpy(), atol=2e-6,
    )


def test_threads_share_the_kernels_safely():
    """The GIL is released while the kernels run: concurrent calls must not interfere."""
    problems = [make_tracklets(np.arange(1, 30) % 11 + 1, 16, seed=s) for s in range(6)]
    pairs = random_pairs(29, 29, 300, seed=9)
    expected = [tracklet_similarity(f, o, mode="topk_mean", k=3, pairs=pairs) for f, o in problems]
    results = run_in_threads(lambda i: tracklet_similarity(*problems[i], mode="topk_mean", k=3, pairs=pairs), len(problems))
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


def test_offsets_that_wrap_around_in_int64_are_refused_not_read_out_of_bounds():
    # issue 14: np.diff of these offsets wraps, the old check passed and the kernel crashed the process
    features = np.ones((10, 4), np.float32)
    for mode in ("max", "centroid"):
        with pytest.raises(ValueError, match="non-decreasing"):
            tracklet_similarity(features, np.array([0, 3 * 2**61, -3 * 2**61, 10]), mode=mode)


@pytest.mark.parametrize("dtype,exponents", [(np.float32, (100, -100, 0)), (np.float64, (600, -600, 0))])
@pytest.mark.parametrize("mode", ["max", "min", "topk_mean"])
def test_frames_out_of_float_range_give_the_same_similarities(dtype, exponents, mode):
    """Frames times 2^100 (squares past float32), 2^-100 (below its normal range) or the float64
    equivalents: a power of two changes no cosine, so the similarities equal, bit for bit, those of
    the frames at unit scale (the kernel rescales such rows in its own norm pass)."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(40, 12)).astype(dtype)
    offsets = np.array([0, 5, 9, 20, 31, 40])
    scaled = x * np.ldexp(1.0, np.array(exponents)[np.arange(40) % 3])[:, None].astype(dtype)
    k = 3 if mode == "topk_mean" else None
    got = tracklet_similarity(scaled, offsets, mode=mode, k=k)
    np.testing.assert_array_equal(got, tracklet_similarity(x, offsets, mode=mode, k=k))
    other = tracklet_similarity(x[:9], offsets[:3], scaled[9:], offsets[2:] - 9, mode=mode, k=k)
    np.testing.assert_array_equal(other, tracklet_similarity(x[:9], offsets[:3], x[9:], offsets[2:] - 9, mode=mode, k=k))
