"""rank_metrics: CMC / mAP / mINP against an independent float64 numpy oracle written from
docs/ALGORITHMS.md."""

from __future__ import annotations

import numpy as np
import pytest

from cion_fast.integrations import fastreid as fastreid_adapter
from cion_fast.integrations import torchreid as torchreid_adapter
from cion_fast.ops import evaluate_rank, evaluate_rank_from_features

from conftest import cupy, requires_torch, run_in_threads, to_framework, torch, value_errors_under_python_O


def oracle(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, remove_same_camera=True):
    """Steps 1-7 (docs/ALGORITHMS.md), one query at a time, float64, stable argsort (our tie
    rule)."""
    distmat = np.asarray(distmat, dtype=np.float64)
    num_query = distmat.shape[0]
    cmc_sum = np.zeros(max_rank)
    aps, inps, firsts = [], [], []
    for i in range(num_query):
        order = np.argsort(distmat[i], kind="stable")
        same_pid = g_pids[order] == q_pids[i]
        junk = same_pid & (g_camids[order] == q_camids[i]) if remove_same_camera else np.zeros_like(same_pid)
        hits = same_pid[~junk]
        if not hits.any():
            aps.append(np.nan)
            inps.append(np.nan)
            firsts.append(-1)
            continue
        positions = np.flatnonzero(hits)
        cmc = np.zeros(max_rank)
        if positions[0] < max_rank:
            cmc[positions[0]:] = 1.0
        cmc_sum += cmc
        aps.append(np.mean(np.arange(1, len(positions) + 1) / (positions + 1.0)))
        inps.append(len(positions) / (positions[-1] + 1.0))
        firsts.append(int(positions[0]))
    aps, inps = np.array(aps), np.array(inps)
    valid = ~np.isnan(aps)
    return {
        "cmc": cmc_sum / valid.sum(),
        "mAP": aps[valid].mean(),
        "mINP": inps[valid].mean(),
        "num_valid": int(valid.sum()),
        "ap": aps,
        "inp": inps,
        "first": np.array(firsts),
    }


def make_problem(num_query, num_gallery, num_pids, num_cams=3, seed=0, dtype=np.float64):
    """Random tie-free distances; matches are pulled closer so rankings are not trivial."""
    rng = np.random.default_rng(seed)
    q_pids = rng.integers(0, num_pids, num_query)
    g_pids = rng.integers(0, num_pids, num_gallery)
    q_camids = rng.integers(0, num_cams, num_query)
    g_camids = rng.integers(0, num_cams, num_gallery)
    distmat = rng.random((num_query, num_gallery)) + 0.6 * (q_pids[:, None] != g_pids[None, :])
    return distmat.astype(dtype), q_pids, g_pids, q_camids, g_camids


def assert_matches_oracle(result, expected, tol=1e-9):
    np.testing.assert_allclose(result.cmc, expected["cmc"], rtol=0, atol=tol)
    assert abs(result.mAP - expected["mAP"]) <= tol
    assert abs(result.mINP - expected["mINP"]) <= tol
    assert result.num_valid_queries == expected["num_valid"]
    if result.average_precision is not None:
        np.testing.assert_allclose(result.average_precision, expected["ap"], rtol=0, atol=tol)
        np.testing.assert_allclose(result.inverse_negative_penalty, expected["inp"], rtol=0, atol=tol)
        np.testing.assert_array_equal(result.first_match, expected["first"])


@pytest.mark.parametrize(
    "num_query,num_gallery,num_pids,max_rank",
    # The last two have hundreds of matches per query: the histogram path, not per-match counting.
    [(1, 7, 2, 50), (13, 5, 3, 50), (37, 211, 19, 20), (64, 1000, 40, 50), (5, 3, 1, 1), (23, 2000, 4, 50), (3, 700, 1, 10)],
)
@pytest.mark.parametrize("remove_same_camera", [True, False])
def test_matches_oracle_float64(poisoned_outputs, num_query, num_gallery, num_pids, max_rank, remove_same_camera):
    problem = make_problem(num_query, num_gallery, num_pids, seed=num_query * 7 + num_gallery)
    expected = oracle(*problem, max_rank, remove_same_camera)
    if expected["num_valid"] == 0:
        pytest.skip("random draw without a valid query")
    result = evaluate_rank(*problem, max_rank=max_rank, remove_same_camera=remove_same_camera, return_per_query=True)
    assert result.cmc.dtype == np.float64 and result.cmc.shape == (max_rank,)
    assert_matches_oracle(result, expected)


@pytest.mark.parametrize("relabel", ["offset by -2**63", "offset to 2**63 - 200", "spread over more than 2**16", "negative"])
def test_any_int64_pid_labels_give_the_same_metrics(relabel):
    """Pids are grouped by counting when they span fewer than 2**16 values and by sorting otherwise;
    labels anywhere in int64, queries whose pid is absent from the gallery or beyond its span
    included, must give the metrics of the same problem with small labels."""
    distmat, q_pids, g_pids, q_camids, g_camids = make_problem(40, 300, 60, seed=3)
    q_pids = np.concatenate([q_pids, [60, 61]])  # two queries without any match
    distmat = np.concatenate([distmat, np.random.default_rng(0).random((2, 300))])
    q_camids = np.concatenate([q_camids, [0, 0]])
    expected = oracle(distmat, q_pids, g_pids, q_camids, g_camids, 20)
    label = {
        "offset by -2**63": lambda p: p.astype(np.int64) + np.iinfo(np.int64).min + 5,
        "offset to 2**63 - 200": lambda p: p.astype(np.int64) + (np.iinfo(np.int64).max - 200),
        "spread over more than 2**16": lambda p: p.astype(np.int64) * 5000,
        "negative": lambda p: -1 - p.astype(np.int64),
    }[relabel]
    result = evaluate_rank(distmat, label(q_pids), label(g_pids), q_camids, g_camids, max_rank=20, return_per_query=True)
    assert_matches_oracle(result, expected)


def test_queries_without_matches_are_skipped(poisoned_outputs):
    distmat, q_pids, g_pids, q_camids, g_camids = make_problem(20, 50, 10, seed=3)
    q_pids[:5] = 1000  # pids absent from the gallery
    expected = oracle(distmat, q_pids, g_pids, q_camids, g_camids, 10)
    result = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=10, return_per_query=True)
    assert result.num_valid_queries == expected["num_valid"] <= 15
    assert np.all(result.first_match[:5] == -1) and np.all(np.isnan(result.average_precision[:5]))
    assert_matches_oracle(result, expected)


def test_stable_tie_rule():
    """Equal distances keep gallery order: a match tied with an earlier non-match ranks after it."""
    rng = np.random.default_rng(11)
    distmat = rng.integers(0, 4, size=(30, 40)).astype(np.float32)  # heavy ties
    q_pids = rng.integers(0, 5, 30)
    g_pids = rng.integers(0, 5, 40)
    q_camids = np.zeros(30, dtype=np.int64)
    g_camids = rng.integers(0, 3, 40)
    expected = oracle(distmat, q_pids, g_pids, q_camids, g_camids, 15)
    result = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=15, return_per_query=True)
    assert_matches_oracle(result, expected)
    # Many matches per query (the histogram path) with ties.
    many = rng.integers(0, 5, size=(7, 600)).astype(np.float64)
    ids = (rng.integers(0, 2, 7), rng.integers(0, 2, 600), rng.integers(0, 2, 7), rng.integers(0, 3, 600))
    assert_matches_oracle(evaluate_rank(many, *ids, max_rank=15, return_per_query=True), oracle(many, *ids, 15))
    # A hand-made case: gallery [match, non-match] at equal distance -> match first (AP 1);
    # gallery [non-match, match] -> match second (AP 0.5).
    one = np.array([[1.0, 1.0]])
    assert evaluate_rank(one, [7], [7, 8], [0], [1, 1], max_rank=2).mAP == 1.0
    assert evaluate_rank(one, [7], [8, 7], [0], [1, 1], max_rank=2).mAP == 0.5


@pytest.mark.parametrize("matches", [1, 5, 29, 30, 31, 47, 48])
def test_ties_infinities_and_match_counts_around_the_register_passes(matches):
    """float32 rows of heavy ties, negative and infinite distances, with 1..48 matches per query:
    the AVX-512 path compares 30 matches per pass and switches each threshold at its match's index
    (the stable tie rule), so counts around 30 and 48 (the histogram path above it) and rows not a
    multiple of 16 are checked."""
    rng = np.random.default_rng(matches)
    num_gallery = 1007
    g_pids = np.where(np.arange(num_gallery) < matches * 2, 1, rng.integers(2, 50, num_gallery))
    rng.shuffle(g_pids)
    g_camids = np.where(np.arange(num_gallery) % 2 == 0, 1, 2)  # half the matches share the query's camera
    distmat = rng.integers(-3, 4, size=(6, num_gallery)).astype(np.float32)
    distmat[0, rng.integers(0, num_gallery, 40)] = np.inf
    distmat[1, rng.integers(0, num_gallery, 40)] = -np.inf
    ids = (np.ones(6, np.int64), g_pids, np.full(6, 2, np.int64), g_camids)
    expected = oracle(distmat, *ids, 20)
    assert_matches_oracle(evaluate_rank(distmat, *ids, max_rank=20, return_per_query=True), expected)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("matches", [0, 3, 31, 60])
@pytest.mark.parametrize("where", ["beyond every match", "a match", "a same-camera match", "the ragged end"])
def test_a_nan_anywhere_in_a_row_is_refused(dtype, matches, where):
    """The AVX-512 path reads NaNs only among the entries it packs (those at most the farthest
    match; 16-bit rows are widened to float32 first): a NaN far beyond every match, at a match, at
    a junk entry or in the row's last partial block must still be refused, whatever the number of
    matches (no match, one pass, two passes, the histogram path)."""
    rng = np.random.default_rng(matches)
    num_gallery = 1000 + 13
    g_pids = np.where(np.arange(num_gallery) < 2 * matches, 1, rng.integers(2, 50, num_gallery))
    g_camids = np.where(np.arange(num_gallery) % 2 == 0, 1, 2)  # odd indices: the query's camera (2)
    distmat = rng.random((3, num_gallery), dtype=np.float32)
    distmat[:, g_pids == 1] *= np.float32(0.01)  # every match near the front
    positions = {
        "beyond every match": int(np.argmax(np.where(g_pids == 1, -1, distmat[1]))),
        "a match": int(np.flatnonzero((g_pids == 1) & (g_camids == 1))[-1]) if matches else 5,
        "a same-camera match": int(np.flatnonzero((g_pids == 1) & (g_camids == 2))[0]) if matches else 6,
        "the ragged end": num_gallery - 1,
    }
    distmat[1, positions[where]] = np.nan
    ids = (np.ones(3, np.int64), g_pids, np.full(3, 2, np.int64), g_camids)
    if dtype == "bfloat16" and torch is None:
        pytest.skip("bfloat16 rows come from torch")
    rows = torch.from_numpy(distmat).to(torch.bfloat16) if dtype == "bfloat16" else distmat.astype(dtype)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_rank(rows, *ids)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_low_precision_inputs_rank_in_their_own_precision(dtype):
    distmat, *ids = make_problem(17, 90, 9, seed=5)
    low = distmat.astype(dtype)
    expected = oracle(low.astype(np.float64), *ids, 20)
    assert_matches_oracle(evaluate_rank(low, *ids, max_rank=20, return_per_query=True), expected)


@requires_torch
def test_bfloat16_torch_input():
    distmat, *ids = make_problem(9, 40, 6, seed=8)
    low = torch.from_numpy(distmat).to(torch.bfloat16)
    expected = oracle(low.double().numpy(), *ids, 10)
    assert_matches_oracle(evaluate_rank(low, *ids, max_rank=10, return_per_query=True), expected)


@requires_torch
def test_numpy_and_torch_inputs_agree():
    distmat, q_pids, g_pids, q_camids, g_camids = make_problem(25, 120, 12, seed=9)
    from_numpy = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, return_per_query=True)
    from_torch = evaluate_rank(
        torch.from_numpy(distmat), *(torch.from_numpy(a) for a in (q_pids, g_pids, q_camids, g_camids)),
        return_per_query=True,
    )
    np.testing.assert_array_equal(from_numpy.cmc, from_torch.cmc)
    np.testing.assert_array_equal(from_numpy.average_precision, from_torch.average_precision)


@requires_torch
def test_torch_tensor_requiring_grad_is_accepted():
    distmat, *ids = make_problem(4, 30, 5, seed=10)
    tensor = torch.from_numpy(distmat).requires_grad_(True)
    assert evaluate_rank(tensor, *ids, max_rank=5).mAP == pytest.approx(oracle(distmat, *ids, 5)["mAP"], abs=1e-12)


def test_non_contiguous_int32_and_readonly_inputs():
    distmat, q_pids, g_pids, q_camids, g_camids = make_problem(30, 80, 10, seed=12)
    expected = oracle(distmat, q_pids, g_pids, q_camids, g_camids, 10)
    transposed = np.asfortranarray(distmat)  # column-major: rows not contiguous
    wide = np.zeros((30, 160))
    wide[:, ::2] = distmat  # strided columns
    readonly = distmat.copy()
    readonly.flags.writeable = False
    ids32 = [a.astype(np.int32) for a in (q_pids, g_pids, q_camids, g_camids)]
    for variant in (transposed, wide[:, ::2], readonly):
        assert_matches_oracle(evaluate_rank(variant, *ids32, max_rank=10), expected)
    padded = np.zeros((30, 100))
    padded[:, :80] = distmat  # contiguous rows with padding: used in place
    assert_matches_oracle(evaluate_rank(padded[:, :80], q_pids, g_pids, q_camids, g_camids, max_rank=10), expected)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
@pytest.mark.parametrize("tile_size", [None, 7])
def test_from_features_matches_oracle(poisoned_outputs, metric, tile_size):
    rng = np.random.default_rng(21)
    num_pids, dim = 15, 24
    centres = rng.normal(size=(num_pids, dim))
    q_pids, g_pids = rng.integers(0, num_pids, 41), rng.integers(0, num_pids, 133)
    query = centres[q_pids] + 0.8 * rng.normal(size=(41, dim))
    gallery = centres[g_pids] + 0.8 * rng.normal(size=(133, dim))
    q_camids, g_camids = rng.integers(0, 4, 41), rng.integers(0, 4, 133)
    if metric == "cosine":
        qn = query / np.linalg.norm(query, axis=1, keepdims=True)
        gn = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
        distmat = 1 - qn @ gn.T
    else:
        distmat = ((query[:, None, :] - gallery[None, :, :]) ** 2).sum(-1)
    expected = oracle(distmat, q_pids, g_pids, q_camids, g_camids, 30)
    result = evaluate_rank_from_features(
        query, gallery, q_pids, g_pids, q_camids, g_camids, metric=metric, max_rank=30,
        return_per_query=True, tile_size=tile_size,
    )
    assert_matches_oracle(result, expected)


@requires_torch
def test_from_features_torch_float32():
    rng = np.random.default_rng(22)
    query, gallery = rng.normal(size=(20, 16)), rng.normal(size=(60, 16))
    ids = (rng.integers(0, 6, 20), rng.integers(0, 6, 60), rng.integers(0, 2, 20), rng.integers(0, 2, 60))
    distmat = ((query[:, None, :] - gallery[None, :, :]) ** 2).sum(-1)
    expected = oracle(distmat, *ids, 10)
    result = evaluate_rank_from_features(
        torch.from_numpy(query).float(), torch.from_numpy(gallery).float(), *ids, max_rank=10, tile_size=6
    )
    assert abs(result.mAP - expected["mAP"]) < 1e-6


def test_threads_share_the_kernel_safely():
    problems = [make_problem(40, 500, 20, seed=s) for s in range(6)]
    expected = [oracle(*p, 10)["mAP"] for p in problems]
    results = run_in_threads(lambda i: evaluate_rank(*problems[i], max_rank=10).mAP, len(problems))
    np.testing.assert_allclose(results, expected, rtol=0, atol=1e-12)


def test_adapters_have_the_libraries_return_shapes():
    distmat, q_pids, g_pids, q_camids, g_camids = make_problem(12, 30, 6, seed=13)
    expected = oracle(distmat, q_pids, g_pids, q_camids, g_camids, 30)
    cmc, mAP = torchreid_adapter.evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50)
    assert cmc.dtype == np.float32 and cmc.shape == (30,)  # cut to the gallery size
    assert abs(mAP - expected["mAP"]) < 1e-12
    cmc, all_ap, all_inp = fastreid_adapter.evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=10)
    assert cmc.shape == (10,) and all_ap.shape == (expected["num_valid"],) == all_inp.shape
    np.testing.assert_allclose(np.mean(all_ap), expected["mAP"], atol=1e-6)
    np.testing.assert_allclose(np.mean(all_inp), expected["mINP"], atol=1e-6)
    np.random.seed(3)
    cmc, mAP = torchreid_adapter.evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, use_metric_cuhk03=True)
    np.random.seed(3)
    want_cmc, want_mAP = oracle_cuhk03(distmat, q_pids, g_pids, q_camids, g_camids, 50, np.random.mtrand._rand)
    assert cmc.dtype == np.float32 and cmc.shape == (30,)
    np.testing.assert_allclose(cmc, want_cmc, atol=1e-6)
    assert abs(mAP - want_mAP) < 1e-12
    cmc, all_ap, _ = fastreid_adapter.evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=10, use_metric_cuhk03=True)
    assert cmc.shape == (10,) and abs(np.mean(all_ap) - want_mAP) < 1e-6


def oracle_cuhk03(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, rng, num_repeats=10):
    """torchreid's eval_cuhk03 step by step (its loops, its dict of pids, one rng.choice per pid and
    repeat), with the stable argsort that is our tie rule; float64."""
    from collections import defaultdict

    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    indices = np.argsort(distmat, axis=1, kind="stable")
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_AP = [], []
    for q_idx in range(num_q):
        order = indices[q_idx]
        keep = ~((g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx]))
        raw_cmc = matches[q_idx][keep]
        if not np.any(raw_cmc):
            continue
        kept_g_pids = g_pids[order][keep]
        g_pids_dict = defaultdict(list)
        for idx, pid in enumerate(kept_g_pids):
            g_pids_dict[pid].append(idx)
        cmc = np.zeros(max_rank)
        for _ in range(num_repeats):
            mask = np.zeros(len(raw_cmc), dtype=bool)
            for _, idxs in g_pids_dict.items():
                mask[rng.choice(idxs)] = True
            sampled = raw_cmc[mask].cumsum()
            sampled[sampled > 1] = 1
            padded = np.concatenate([sampled, np.full(max(0, max_rank - len(sampled)), sampled[-1])])
            cmc += padded[:max_rank]
        all_cmc.append(cmc / num_repeats)
        positions = np.cumsum(raw_cmc)
        all_AP.append(((positions / (np.arange(len(raw_cmc)) + 1.0)) * raw_cmc).sum() / raw_cmc.sum())
    return np.asarray(all_cmc).sum(0) / len(all_cmc), float(np.mean(all_AP))


@pytest.mark.parametrize("num_query,num_gallery,num_pids,max_rank,seed", [(1, 1, 1, 5, 0), (9, 40, 6, 10, 1), (25, 120, 30, 50, 2),
                                                                         (40, 300, 100, 20, 3)])
def test_cuhk03_protocol_matches_torchreid_loop(num_query, num_gallery, num_pids, max_rank, seed):
    from cion_fast.ops import evaluate_rank_cuhk03

    distmat, q_pids, g_pids, q_camids, g_camids = make_problem(num_query, num_gallery, num_pids, seed=seed)
    if not any(((g_pids == p) & (g_camids != c)).any() for p, c in zip(q_pids, q_camids)):
        g_pids[0], g_camids[0] = q_pids[0], q_camids[0] + 1  # at least one valid query
    want_cmc, want_mAP = oracle_cuhk03(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, np.random.RandomState(seed))
    got = evaluate_rank_cuhk03(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank, seed=seed)
    np.testing.assert_allclose(got.cmc, want_cmc, rtol=0, atol=1e-12)
    assert abs(got.mAP - want_mAP) < 1e-12
    assert got.cmc.shape == (min(max_rank, num_gallery),)
    other = evaluate_rank_cuhk03(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank, seed=seed + 100)
    assert other.mAP == got.mAP  # AP does not sample


def test_cuhk03_protocol_bad_input():
    from cion_fast.ops import evaluate_rank_cuhk03

    problem = make_problem(4, 10, 3, seed=0)
    with pytest.raises(ValueError, match="num_repeats must be in"):
        evaluate_rank_cuhk03(*problem, num_repeats=0)
    with pytest.raises(TypeError, match="seed must be an integer"):
        evaluate_rank_cuhk03(*problem, seed=1.5)


@pytest.mark.parametrize(
    "mutate,error,match",
    [
        (lambda a: dict(a, distmat=np.where(np.eye(4, 6, dtype=bool), np.nan, a["distmat"])), ValueError, "NaN"),
        (lambda a: dict(a, q_pids=a["q_pids"][:3]), ValueError, "q_pids must have length 4"),
        (lambda a: dict(a, g_camids=a["g_camids"][:-1]), ValueError, "g_camids must have length 6"),
        (lambda a: dict(a, distmat=a["distmat"][0]), ValueError, "distmat must be 2-D"),
        (lambda a: dict(a, distmat=np.zeros((0, 6))), ValueError, "at least one query"),
        (lambda a: dict(a, distmat=np.zeros((4, 0))), ValueError, "at least one query"),
        (lambda a: dict(a, distmat=a["distmat"].astype(np.int64)), TypeError, "distmat must have dtype"),
        (lambda a: dict(a, q_pids=a["q_pids"].astype(np.float32)), TypeError, "q_pids must have dtype"),
        (lambda a: dict(a, distmat="not an array"), TypeError, "distmat must be"),
        (lambda a: dict(a, max_rank=0), ValueError, "max_rank"),
        (lambda a: dict(a, max_rank=True), TypeError, "max_rank must be an integer"),
        (lambda a: dict(a, max_rank=2**63), ValueError, "max_rank must be <= 2\\*\\*63 - 1"),
        (lambda a: dict(a, max_rank=10**12), ValueError, "max_rank = 1000000000000: the CMC curve needs .* GiB"),
        (lambda a: dict(a, remove_same_camera="yes"), TypeError, "remove_same_camera"),
        (lambda a: dict(a, q_pids=np.array([100, 101, 102, 103])), ValueError, "no query has a valid match"),
    ],
)
def test_bad_input_raises_clear_errors(mutate, error, match):
    rng = np.random.default_rng(1)
    args = dict(
        distmat=rng.random((4, 6)), q_pids=np.array([0, 1, 2, 3]), g_pids=np.array([0, 1, 2, 3, 0, 1]),
        q_camids=np.zeros(4, dtype=np.int64), g_camids=np.ones(6, dtype=np.int64),
    )
    with pytest.raises(error, match=match):
        evaluate_rank(**mutate(args))


def test_from_features_bad_input():
    rng = np.random.default_rng(2)
    query, gallery = rng.normal(size=(3, 4)), rng.normal(size=(5, 4))
    ids = ([0, 1, 2], [0, 1, 2, 0, 1], [0, 0, 0], [1, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="same dimension"):
        evaluate_rank_from_features(query, gallery[:, :3], *ids)
    with pytest.raises(ValueError, match="metric"):
        evaluate_rank_from_features(query, gallery, *ids, metric="manhattan")
    bad = query.copy()
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match="query_features contains NaN or inf"):
        evaluate_rank_from_features(bad, gallery, *ids)
    with pytest.raises(ValueError, match="tile_size"):
        evaluate_rank_from_features(query, gallery, *ids, tile_size=0)


def test_checks_survive_python_O():
    out = value_errors_under_python_O("import numpy as np\nfrom cion_fast.ops import evaluate_rank",
                                      "evaluate_rank(np.zeros((2, 3)), [0, 1], [0, 1], [0, 0], [1, 1, 1])")
    assert "ValueError g_pids must have length 3" in out


@pytest.mark.cuda
@pytest.mark.parametrize("framework", ["torch_cuda", "cupy"])
@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_cuda_matches_cpu(framework, dtype):
    if framework == "cupy" and cupy is None:
        pytest.skip("cupy not installed")
    distmat, *ids = make_problem(97, 1531, 37, seed=31)
    distmat[:5, :] = 1.0  # a few rows full of ties
    distmat = distmat.astype(dtype)
    cpu = evaluate_rank(distmat, *ids, max_rank=50, return_per_query=True)
    gpu = evaluate_rank(to_framework(distmat, framework), *ids, max_rank=50, return_per_query=True)
    np.testing.assert_array_equal(gpu.first_match, cpu.first_match)
    np.testing.assert_allclose(gpu.average_precision, cpu.average_precision, rtol=0, atol=1e-12)
    np.testing.assert_allclose(gpu.cmc, cpu.cmc, rtol=0, atol=1e-12)


@pytest.mark.cuda
def test_cuda_nan_and_from_features():
    distmat, *ids = make_problem(10, 50, 5, seed=32)
    bad = distmat.copy()
    bad[3, 7] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_rank(torch.from_numpy(bad).cuda(), *ids)
    rng = np.random.default_rng(33)
    query, gallery = rng.normal(size=(10, 8)), rng.normal(size=(50, 8))
    cpu = evaluate_rank_from_features(query, gallery, *ids, max_rank=10, return_per_query=True)
    gpu = evaluate_rank_from_features(
        torch.from_numpy(query).cuda(), torch.from_numpy(gallery).cuda(), *ids, max_rank=10,
        return_per_query=True, tile_size=3,
    )
    np.testing.assert_allclose(gpu.average_precision, cpu.average_precision, rtol=0, atol=1e-9)
