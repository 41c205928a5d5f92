"""sliding_range_link and connected_components against independent float64 numpy / scipy oracles
written from docs/ALGORITHMS.md (level 3)."""

from __future__ import annotations

import numpy as np
import pytest

from cion_fast.ops import connected_components, sliding_range_link
from cion_fast.reference import sliding_range_link as reference

from conftest import POISON_INT, assert_file_passes_under_isa_cap, cupy, requires_torch, to_framework, torch


def canonical(labels):
    """Relabels a partition by order of first occurrence: equal partitions, equal arrays."""
    labels = np.asarray(labels)
    first = {}
    return np.array([first.setdefault(v, len(first)) for v in labels.tolist()], dtype=np.int64)


def oracle_components(num_nodes, edges):
    csgraph = pytest.importorskip("scipy.sparse.csgraph", reason="scipy's components are the oracle")
    coo_matrix = pytest.importorskip("scipy.sparse").coo_matrix
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(num_nodes, num_nodes))
    return canonical(csgraph.connected_components(graph, directed=False)[1])


def oracle_link(features, video_ids, window, stride, threshold, mutual_k=None):
    """Range by range, every cross-video pair, float64. Returns the links in the documented order
    (first range where the pair links, then i, then j) and the canonical labels."""
    x = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    rank = np.searchsorted(np.unique(video_ids), video_ids)
    num_videos = len(np.unique(video_ids))
    first_range = {}
    start = 0
    r = 0
    while True:
        members = [i for i in range(len(x)) if start <= rank[i] < start + window]
        sims = unit[members] @ unit[members].T
        # One value per pair (the similarity of the pair): a BLAS product need not be
        # exactly symmetric, and an (a, b) that differs from (b, a) in the last bit flips a mutual-k
        # decision at the k-th place (seen with numpy 2.4.6: link (18, 29) at cosine 0.870).
        sims = np.triu(sims) + np.triu(sims, 1).T
        cross = rank[members][:, None] != rank[members][None, :]
        kth = np.full(len(members), -np.inf)
        if mutual_k:
            for a in range(len(members)):
                values = np.sort(sims[a][cross[a]])[::-1]
                if len(values) >= mutual_k:
                    kth[a] = values[mutual_k - 1]
        upper = np.triu(np.ones_like(cross), k=1)
        linked = cross & upper & (sims >= threshold)
        if mutual_k:
            linked &= (sims >= kth[:, None]) & (sims >= kth[None, :])
        for a, b in zip(*np.nonzero(linked)):
            first_range.setdefault((members[a], members[b]), r)
        if start + window >= num_videos:
            break
        start += stride
        r += 1
    links = sorted(first_range, key=lambda ij: (first_range[ij], ij[0], ij[1]))
    links = np.array(links, dtype=np.int64).reshape(-1, 2)
    return links, oracle_components(len(x), links)


def make_identities(videos, per_video_max, dim, seed, num_people=None, dtype=np.float64, noise=0.6):
    """Identities of ``videos`` videos (0..per_video_max each, some videos empty), each showing one
    of a few people, so that cross-video similarities are either clearly high or clearly low."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, per_video_max + 1, videos)
    video_ids = np.repeat(np.sort(rng.choice(10 * videos + 1, videos, replace=False)), counts)
    num_people = num_people or max(2, videos // 3)
    people = rng.normal(size=(num_people, dim))
    features = people[rng.integers(0, num_people, len(video_ids))] + noise * rng.normal(size=(len(video_ids), dim))
    return features.astype(dtype), video_ids


CASES = [
    # videos, per video, dim, window, stride, threshold, mutual_k
    (1, 5, 8, 8, 4, 0.3, None),  # one video only: nothing to link
    (12, 4, 8, 8, 4, 0.5, None),
    (12, 4, 8, 8, 4, 0.5, 2),
    (30, 3, 16, 8, 4, 0.5, None),
    (30, 3, 16, 8, 4, 0.4, 3),
    (30, 3, 16, 5, 5, 0.5, None),  # stride = window
    (30, 3, 16, 5, 5, 0.5, 1),
    (25, 4, 7, 6, 1, 0.5, 2),  # stride 1: pairs in up to 6 ranges, emitted once
    (25, 4, 7, 3, 2, 0.2, 4),
    (6, 4, 9, 40, 7, 0.5, None),  # window >= number of videos: one range
    (6, 4, 9, 40, 7, 0.5, 100),  # mutual_k above every candidate count
    (20, 2, 5, 1, 1, 0.0, None),  # window 1: no two videos share a range
    (40, 70, 12, 4, 2, 0.6, 5),  # 200+ rows per range: several work items and column blocks
    (3, 1500, 3, 3, 1, 0.9, 3),  # a range of 2000+ rows: thresholds per work item, not per range
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("videos,per_video,dim,window,stride,threshold,mutual_k", CASES)
def test_matches_oracle(poisoned_outputs, videos, per_video, dim, window, stride, threshold, mutual_k, dtype):
    """float32 runs the CPU's float32 dot-product copies (16-lane tiles on Intel's AVX-512), whose
    entries must land at their own (i, j): the oracle takes the same float32 values in float64."""
    features, video_ids = make_identities(videos, per_video, dim, seed=videos * 7 + per_video + dim, dtype=dtype)
    expected_links, expected_labels = oracle_link(features, video_ids, window, stride, threshold, mutual_k)
    labels, links = sliding_range_link(features, video_ids, window, stride, threshold, mutual_k)
    assert labels.dtype == np.int64 and labels.shape == (len(features),)
    assert links.dtype == np.int64 and links.shape[1] == 2
    np.testing.assert_array_equal(links, expected_links)  # same links, same order, no repeats
    np.testing.assert_array_equal(canonical(labels), expected_labels)
    np.testing.assert_array_equal(labels, expected_labels)  # the kernel's numbering is canonical


def test_a_range_waits_for_the_norms_of_its_earlier_rows(poisoned_outputs):
    """With mutual_k each range takes the norms of its new rows, and reads rows whose norms an
    earlier range takes. Here range 0 takes the norms of 2,000 wide rows while range 1 (on the other
    thread, where there are two), with 2 rows of its own, goes straight to strips over range 0's
    last 1,000 rows: without waiting it would read their norms before they are written (poison).
    With one thread the ranges run in order and the test cannot fail."""
    rng = np.random.default_rng(11)
    video_ids = np.repeat(np.arange(6), [500, 500, 500, 500, 1, 1])
    people = rng.normal(size=(3, 1024))
    features = people[rng.integers(0, 3, len(video_ids))] + 0.6 * rng.normal(size=(len(video_ids), 1024))
    features[2000:] = features[[1500, 1999]] + 0.01 * rng.normal(size=(2, 1024))  # near copies: they link
    expected_links, expected_labels = oracle_link(features, video_ids, 4, 2, 0.5, 2)
    assert {(1500, 2000), (1999, 2001)} <= set(map(tuple, expected_links.tolist()))
    for _ in range(3):  # a race shows in some calls only
        labels, links = sliding_range_link(features, video_ids, 4, 2, 0.5, 2)
        np.testing.assert_array_equal(links, expected_links)
        np.testing.assert_array_equal(labels, expected_labels)


def test_a_large_range_after_small_ones_with_norms_taken_range_by_range(poisoned_outputs):
    """Ranges 0 and 1 are small; range 2 holds 2,800 rows (thresholds per work item, no candidate
    list) but only 1,400 new ones, so the norms are still taken range by range in the first pass,
    which must take range 2's share although it collects no candidates there."""
    rng = np.random.default_rng(12)
    video_ids = np.repeat(np.arange(8), [1, 1, 1, 1, 700, 700, 700, 700])
    people = rng.normal(size=(4, 8))
    features = people[rng.integers(0, 4, len(video_ids))] + 0.5 * rng.normal(size=(len(video_ids), 8))
    expected_links, expected_labels = oracle_link(features, video_ids, 4, 2, 0.6, 2)
    labels, links = sliding_range_link(features, video_ids, 4, 2, 0.6, 2)
    assert len(expected_links) > 0
    np.testing.assert_array_equal(links, expected_links)
    np.testing.assert_array_equal(labels, expected_labels)


def test_the_avx2_copies_pass_this_file(tmp_path):
    """This file's tests (all but this one) in a process capped at the AVX2 copies
    (CION_FAST_DOT_BLOCK_ISA, read once per process): the 8-lane dot products and the scalar
    screening of cosines, which an AVX-512 CPU otherwise never runs."""
    assert_file_passes_under_isa_cap("CION_FAST_DOT_BLOCK_ISA", "avx2", __file__, "avx2_copies", tmp_path)


@pytest.mark.parametrize("window,stride", [(4, 2), (3, 1), (5, 5)])
def test_small_ranges_beside_large_ones(window, stride):
    """Ranges of 2,000+ rows take their thresholds per work item and keep no candidate list, so a
    small range whose earlier neighbour is large cannot assemble its list from the neighbour's
    new pairs and computes it whole."""
    rng = np.random.default_rng(window * 10 + stride)
    counts = np.array([3, 2, 2100, 4, 3, 2, 5, 2200, 1, 3, 4])
    video_ids = np.repeat(np.arange(len(counts)) * 3, counts)
    people = rng.normal(size=(6, 5))
    features = people[rng.integers(0, 6, len(video_ids))] + 0.6 * rng.normal(size=(len(video_ids), 5))
    expected_links, expected_labels = oracle_link(features, video_ids, window, stride, 0.8, 3)
    labels, links = sliding_range_link(features, video_ids, window, stride, 0.8, 3)
    assert len(expected_links) > 0
    np.testing.assert_array_equal(links, expected_links)
    np.testing.assert_array_equal(labels, expected_labels)


def test_cases_link_across_ranges():
    """The data above is not trivial: links exist, and with overlapping ranges chains merge
    identities of videos that share no range (with stride = window they cannot)."""
    features, video_ids = make_identities(30, 3, 16, seed=30 * 7 + 3 + 16)
    rank = np.searchsorted(np.unique(video_ids), video_ids)
    for window, stride, chains in ((6, 3, True), (5, 5, False)):
        labels, links = sliding_range_link(features, video_ids, window=window, stride=stride, threshold=0.5)
        assert len(links) > 10
        far = [(i, j) for i in range(len(labels)) for j in range(i) if labels[i] == labels[j] and abs(rank[i] - rank[j]) >= window]
        assert bool(far) == chains


def test_float32_half_and_strided_inputs():
    features, video_ids = make_identities(30, 5, 24, seed=3, dtype=np.float32, noise=0.3)
    for low in (features, features.astype(np.float16), np.asfortranarray(features)):
        links, labels = oracle_link(low, video_ids, 8, 4, 0.5, 3)
        got_labels, got_links = sliding_range_link(low, video_ids.astype(np.int32), 8, 4, 0.5, 3)
        np.testing.assert_array_equal(got_links, links)
        np.testing.assert_array_equal(got_labels, labels)


def test_single_identity_and_empty():
    labels, links = sliding_range_link(np.ones((1, 3), np.float32), [4])
    assert labels.tolist() == [0] and links.shape == (0, 2)
    labels, links = sliding_range_link(np.ones((0, 3), np.float32), np.zeros(0, np.int64))
    assert labels.shape == (0,) and links.shape == (0, 2)


@requires_torch
def test_torch_inputs_and_reference():
    features, video_ids = make_identities(20, 4, 10, seed=4)
    for mutual_k in (None, 2):
        expected_links, expected_labels = oracle_link(features, video_ids, 6, 3, 0.5, mutual_k)
        labels, links = sliding_range_link(torch.from_numpy(features), torch.from_numpy(video_ids), 6, 3, 0.5, mutual_k)
        assert isinstance(labels, torch.Tensor) and isinstance(links, torch.Tensor)
        np.testing.assert_array_equal(links.numpy(), expected_links)
        np.testing.assert_array_equal(labels.numpy(), expected_labels)
        ref_labels, ref_links = reference.sliding_range_link(
            torch.from_numpy(features), torch.from_numpy(video_ids), 6, 3, 0.5, mutual_k
        )
        np.testing.assert_array_equal(ref_links.numpy(), np.array(sorted(map(tuple, expected_links))).reshape(-1, 2))
        np.testing.assert_array_equal(ref_labels.numpy(), expected_labels)


def _nan_features():
    features = np.random.default_rng(5).normal(size=(6, 4))
    features[4, 1] = np.nan
    return features


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(video_ids=[0, 0, 2, 1, 3, 3]), ValueError, r"video_ids must be sorted .* video_ids\[3\] = 1"),
        (dict(video_ids=[0, 0, 1]), ValueError, "video_ids must have length 6"),
        (dict(video_ids=np.zeros(6, np.float32)), TypeError, "video_ids must have dtype"),
        (dict(window=0), ValueError, "window must be >= 1"),
        (dict(stride=0), ValueError, "stride must be >= 1"),
        (dict(window=4, stride=5), ValueError, "stride must be <= window"),
        (dict(mutual_k=0), ValueError, "mutual_k must be >= 1"),
        (dict(mutual_k=1.5), TypeError, "mutual_k must be an integer"),
        (dict(threshold=float("inf")), ValueError, "threshold must be a finite number"),
        (dict(features="abc"), TypeError, "features must be"),
        (dict(features=np.zeros((6, 3), np.int32)), TypeError, "features must have dtype"),
        (dict(features=None), TypeError, "features must be"),
    ],
)
def test_bad_input_raises_clear_errors(kwargs, error, match):
    features = np.random.default_rng(6).normal(size=(6, 3))
    args = dict(features=features, video_ids=[0, 0, 1, 2, 3, 3])
    args.update(kwargs)
    with pytest.raises(error, match=match):
        sliding_range_link(**args)


@pytest.mark.parametrize("mutual_k", [None, 2])
@pytest.mark.parametrize("row", [0, 20, 59])
def test_nan_features_raise(mutual_k, row):
    """Wherever the NaN is: with mutual_k the norms are taken range by range (rows 0, 20 and 59 lie
    in the first, third and last range's share), the last range's after the others ran."""
    features = np.random.default_rng(5).normal(size=(60, 4))
    features[row, 1] = np.nan
    with pytest.raises(ValueError, match="features contains NaN"):
        sliding_range_link(features, np.arange(60) // 3, 4, 2, mutual_k=mutual_k)


@pytest.mark.parametrize("mutual_k", [None, 1])
def test_float32_cosine_exactly_at_the_threshold(mutual_k):
    """A float32 cosine s links at threshold s (as a float64) and at anything below it, but not at
    a float64 strictly between s and the next float32: the kernel compares in float32, so it must
    round the threshold up to a float32, never to the nearest one."""
    x = np.array([[1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 2.5, 4.5]], dtype=np.float32)

    def linked(threshold):
        return len(sliding_range_link(x, [0, 1], window=2, stride=1, threshold=threshold, mutual_k=mutual_k)[1]) == 1

    # The kernel's cosine: the largest float32 threshold that links (bisection over float32 bits).
    low, high = np.float32(0.5).view(np.int32), np.float32(1.5).view(np.int32)
    assert linked(float(np.int32(low).view(np.float32))) and not linked(float(np.int32(high).view(np.float32)))
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if linked(float(np.int32(middle).view(np.float32))) else (low, middle)
    s = float(np.int32(low).view(np.float32))
    gap = float(np.spacing(np.float32(s)))
    assert 0.9 < s < 1.0
    assert linked(s) and linked(s - gap / 4)
    assert not linked(s + gap / 4) and not linked(s + gap / 2)


@pytest.mark.parametrize("only_two_late_rows", [False, True])
@pytest.mark.parametrize("dtype,exponents", [(np.float32, (100, -100, 0)), (np.float64, (600, -600, 0))])
def test_rows_out_of_float_range_give_the_same_links(dtype, exponents, only_two_late_rows):
    """Rows times 2^100 (squares past float32), 2^-100 (below its normal range) or the float64
    equivalents: a power of two changes no cosine, so the links are exactly those of the rows at
    unit scale (the kernel rescales such rows in its own norm pass). Only two rows of the last range
    scaled (53 and 59, of different videos and nearly equal: they link, but their dot product
    leaves the float range unless they are rescaled): with mutual_k the norms are taken range by
    range, and the last range finds them after the others ran."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 16)).astype(dtype)
    video_ids = np.arange(60) // 6
    shifts = np.array(exponents)[np.arange(60) % 3]
    if only_two_late_rows:
        x[59] = x[53] + dtype(0.05) * rng.normal(size=16).astype(dtype)  # a pair that links
        shifts = np.where(np.isin(np.arange(60), [53, 59]), exponents[0], 0)
    scaled = x * np.ldexp(1.0, shifts)[:, None].astype(dtype)
    for mutual_k in (None, 3):
        labels, links = sliding_range_link(scaled, video_ids, window=4, stride=2, threshold=0.2, mutual_k=mutual_k)
        want_labels, want_links = sliding_range_link(x, video_ids, window=4, stride=2, threshold=0.2, mutual_k=mutual_k)
        assert len(want_links) > 0
        assert not only_two_late_rows or [53, 59] in want_links.tolist()
        np.testing.assert_array_equal(links, want_links)
        np.testing.assert_array_equal(labels, want_labels)


@pytest.mark.parametrize("num_nodes,num_edges,seed", [(1, 0, 0), (7, 0, 1), (10, 4, 2), (300, 250, 3), (1000, 2000, 4)])
def test_connected_components_matches_scipy(poisoned_outputs, num_nodes, num_edges, seed):
    rng = np.random.default_rng(seed)
    edges = rng.integers(0, num_nodes, (num_edges, 2))
    if num_edges:
        edges[0] = [num_nodes - 1, num_nodes - 1]  # a self-loop
        edges = np.concatenate([edges, edges[:3]])  # repeated edges
    labels = connected_components(num_nodes, edges)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, oracle_components(num_nodes, edges))


def test_connected_components_inputs():
    assert connected_components(0, np.zeros((0, 2), np.int64)).shape == (0,)
    np.testing.assert_array_equal(connected_components(4, [[3, 2]]), [0, 1, 2, 2])
    chain = np.stack([np.arange(1, 500), np.arange(500 - 1)], axis=1)[::-1].astype(np.int32)  # a long path
    np.testing.assert_array_equal(connected_components(500, np.ascontiguousarray(chain[:, ::-1])), np.zeros(500))
    if torch is not None:
        out = connected_components(5, torch.tensor([[0, 4], [1, 2]]))
        assert isinstance(out, torch.Tensor) and out.tolist() == [0, 1, 1, 2, 0]
        np.testing.assert_array_equal(reference.connected_components(500, torch.from_numpy(chain.copy())).numpy(), np.zeros(500))


@pytest.mark.parametrize(
    "num_nodes,edges,error,match",
    [
        (3, [[0, 3]], ValueError, r"edges must hold node indices in \[0, 3\)"),
        (3, [[-1, 0]], ValueError, "edges must hold node indices"),
        (3, [0, 1], ValueError, r"edges must have shape \[E, 2\]"),
        (3, np.array([[0.0, 1.0]]), TypeError, "edges must have dtype"),
        (-1, [[0, 0]], ValueError, "num_nodes must be >= 0"),
        (True, [[0, 0]], TypeError, "num_nodes must be an integer"),
    ],
)
def test_connected_components_bad_input(num_nodes, edges, error, match):
    with pytest.raises(error, match=match):
        connected_components(num_nodes, edges)


@pytest.mark.cuda
@pytest.mark.parametrize("framework", ["torch_cuda", "cupy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mutual_k", [None, 3])
def test_cuda_matches_cpu(framework, dtype, mutual_k):
    if framework == "cupy" and cupy is None:
        pytest.skip("cupy not installed")
    features, video_ids = make_identities(200, 12, 40, seed=61, dtype=dtype, noise=0.3)
    features[5] = 0  # a zero row
    cpu_labels, cpu_links = sliding_range_link(features, video_ids, 8, 4, 0.5, mutual_k)
    labels, links = sliding_range_link(to_framework(features, framework), to_framework(video_ids, framework), 8, 4, 0.5, mutual_k)
    host = (lambda a: a.cpu().numpy()) if framework == "torch_cuda" else (lambda a: a.get())
    assert len(cpu_links) > 100
    np.testing.assert_array_equal(host(links), cpu_links)
    np.testing.assert_array_equal(host(labels), cpu_labels)
    assert not np.any(host(labels) == POISON_INT)


@pytest.mark.cuda
def test_cuda_connected_components_and_nan():
    rng = np.random.default_rng(62)
    for num_nodes, num_edges in ((1, 0), (5000, 4000), (20000, 60000)):
        edges = rng.integers(0, num_nodes, (num_edges, 2))
        got = connected_components(num_nodes, torch.from_numpy(edges).cuda())
        np.testing.assert_array_equal(got.cpu().numpy(), connected_components(num_nodes, edges))
    chain = np.stack([np.arange(1, 100000), np.arange(100000 - 1)], axis=1)
    assert int(connected_components(100000, torch.from_numpy(chain).cuda()).max()) == 0
    with pytest.raises(ValueError, match="features contains NaN"):
        sliding_range_link(torch.from_numpy(_nan_features()).cuda(), torch.arange(6) // 2)
