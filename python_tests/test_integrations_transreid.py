"""The TransReID-family drop-ins (cion_fast.integrations.transreid) against the family's real code,
copied below: equal where they are exact (the evaluator's distmat, CMC and mAP), within float32
rounding of their re-ranking run in float32, within float16 rounding of their re-ranking as it is."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cion_fast.integrations import transreid  # noqa: E402

# their code calls addmm_(beta, alpha, mat1, mat2), an overload torch still runs but warns about
pytestmark = pytest.mark.filterwarnings("ignore:This overload of addmm_ is deprecated:UserWarning")

# ---- their code ---------------------------------------------------------------------------------
# Verbatim from github.com/damo-cv/TransReID (MIT License, Copyright (c) 2021 heshuting555), commit
# dec55046fcdfadee14e2c28e2df89305d8f7557a: utils/reranking.py (re_ranking) and utils/metrics.py
# (euclidean_distance, eval_func, R1_mAP_eval; its cosine_similarity, unused, left out). Only the
# imports are adapted (their `from utils.reranking import re_ranking` is this module). The same
# files in TransReID-SSL (transreid_pytorch/utils), SOLIDER-REID, PASS-reID (PASS_transreid/utils)
# and CION_ReIDZoo (CION_Finetune/TransReID/utils) differ only in R1_mAP_eval's re-ranking
# parameters (k1=20, k2=6 instead of 50, 15) and a comment.
# fmt: off


def re_ranking(probFea, galFea, k1, k2, lambda_value, local_distmat=None, only_local=False):
    # if feature vector is numpy, you should use 'torch.tensor' transform it to tensor
    query_num = probFea.size(0)
    all_num = query_num + galFea.size(0)
    if only_local:
        original_dist = local_distmat
    else:
        feat = torch.cat([probFea, galFea])
        # print('using GPU to compute original distance')
        distmat = torch.pow(feat, 2).sum(dim=1, keepdim=True).expand(all_num, all_num) + \
                  torch.pow(feat, 2).sum(dim=1, keepdim=True).expand(all_num, all_num).t()
        distmat.addmm_(1, -2, feat, feat.t())
        original_dist = distmat.cpu().numpy()
        del feat
        if not local_distmat is None:
            original_dist = original_dist + local_distmat
    gallery_num = original_dist.shape[0]
    original_dist = np.transpose(original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float16)
    initial_rank = np.argsort(original_dist).astype(np.int32)

    # print('starting re_ranking')
    for i in range(all_num):
        # k-reciprocal neighbors
        forward_k_neigh_index = initial_rank[i, :k1 + 1]
        backward_k_neigh_index = initial_rank[forward_k_neigh_index, :k1 + 1]
        fi = np.where(backward_k_neigh_index == i)[0]
        k_reciprocal_index = forward_k_neigh_index[fi]
        k_reciprocal_expansion_index = k_reciprocal_index
        for j in range(len(k_reciprocal_index)):
            candidate = k_reciprocal_index[j]
            candidate_forward_k_neigh_index = initial_rank[candidate, :int(np.around(k1 / 2)) + 1]
            candidate_backward_k_neigh_index = initial_rank[candidate_forward_k_neigh_index,
                                               :int(np.around(k1 / 2)) + 1]
            fi_candidate = np.where(candidate_backward_k_neigh_index == candidate)[0]
            candidate_k_reciprocal_index = candidate_forward_k_neigh_index[fi_candidate]
            if len(np.intersect1d(candidate_k_reciprocal_index, k_reciprocal_index)) > 2 / 3 * len(
                    candidate_k_reciprocal_index):
                k_reciprocal_expansion_index = np.append(k_reciprocal_expansion_index, candidate_k_reciprocal_index)

        k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)
        weight = np.exp(-original_dist[i, k_reciprocal_expansion_index])
        V[i, k_reciprocal_expansion_index] = weight / np.sum(weight)
    original_dist = original_dist[:query_num, ]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float16)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
        del V_qe
    del initial_rank
    invIndex = []
    for i in range(gallery_num):
        invIndex.append(np.where(V[:, i] != 0)[0])

    jaccard_dist = np.zeros_like(original_dist, dtype=np.float16)

    for i in range(query_num):
        temp_min = np.zeros(shape=[1, gallery_num], dtype=np.float16)
        indNonZero = np.where(V[i, :] != 0)[0]
        indImages = [invIndex[ind] for ind in indNonZero]
        for j in range(len(indNonZero)):
            temp_min[0, indImages[j]] = temp_min[0, indImages[j]] + np.minimum(V[i, indNonZero[j]],
                                                                               V[indImages[j], indNonZero[j]])
        jaccard_dist[i] = 1 - temp_min / (2 - temp_min)

    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    del original_dist
    del V
    del jaccard_dist
    final_dist = final_dist[:query_num, query_num:]
    return final_dist


def euclidean_distance(qf, gf):
    m = qf.shape[0]
    n = gf.shape[0]
    dist_mat = torch.pow(qf, 2).sum(dim=1, keepdim=True).expand(m, n) + \
               torch.pow(gf, 2).sum(dim=1, keepdim=True).expand(n, m).t()
    dist_mat.addmm_(1, -2, qf, gf.t())
    return dist_mat.cpu().numpy()

def eval_func(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """Evaluation with market1501 metric
        Key: for each query identity, its gallery images from the same camera view are discarded.
        """
    num_q, num_g = distmat.shape
    # distmat g
    #    q    1 3 2 4
    #         4 1 2 3
    if num_g < max_rank:
        max_rank = num_g
        print("Note: number of gallery samples is quite small, got {}".format(num_g))
    indices = np.argsort(distmat, axis=1)
    #  0 2 1 3
    #  1 2 3 0
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    # compute cmc curve for each query
    all_cmc = []
    all_AP = []
    num_valid_q = 0.  # number of valid query
    for q_idx in range(num_q):
        # get query pid and camid
        q_pid = q_pids[q_idx]
        q_camid = q_camids[q_idx]

        # remove gallery samples that have the same pid and camid with query
        order = indices[q_idx]  # select one row
        remove = (g_pids[order] == q_pid) & (g_camids[order] == q_camid)
        keep = np.invert(remove)

        # compute cmc curve
        # binary vector, positions with value 1 are correct matches
        orig_cmc = matches[q_idx][keep]
        if not np.any(orig_cmc):
            # this condition is true when query identity does not appear in gallery
            continue

        cmc = orig_cmc.cumsum()
        cmc[cmc > 1] = 1

        all_cmc.append(cmc[:max_rank])
        num_valid_q += 1.

        # compute average precision
        # reference: https://en.wikipedia.org/wiki/Evaluation_measures_(information_retrieval)#Average_precision
        num_rel = orig_cmc.sum()
        tmp_cmc = orig_cmc.cumsum()
        #tmp_cmc = [x / (i + 1.) for i, x in enumerate(tmp_cmc)]
        y = np.arange(1, tmp_cmc.shape[0] + 1) * 1.0
        tmp_cmc = tmp_cmc / y
        tmp_cmc = np.asarray(tmp_cmc) * orig_cmc
        AP = tmp_cmc.sum() / num_rel
        all_AP.append(AP)

    assert num_valid_q > 0, "Error: all query identities do not appear in gallery"

    all_cmc = np.asarray(all_cmc).astype(np.float32)
    all_cmc = all_cmc.sum(0) / num_valid_q
    mAP = np.mean(all_AP)

    return all_cmc, mAP


class R1_mAP_eval():
    def __init__(self, num_query, max_rank=50, feat_norm=True, reranking=False):
        super(R1_mAP_eval, self).__init__()
        self.num_query = num_query
        self.max_rank = max_rank
        self.feat_norm = feat_norm
        self.reranking = reranking

    def reset(self):
        self.feats = []
        self.pids = []
        self.camids = []

    def update(self, output):  # called once for each batch
        feat, pid, camid = output
        self.feats.append(feat.cpu())
        self.pids.extend(np.asarray(pid))
        self.camids.extend(np.asarray(camid))

    def compute(self):  # called after each epoch
        feats = torch.cat(self.feats, dim=0)
        if self.feat_norm:
            print("The test feature is normalized")
            feats = torch.nn.functional.normalize(feats, dim=1, p=2)  # along channel
        # query
        qf = feats[:self.num_query]
        q_pids = np.asarray(self.pids[:self.num_query])
        q_camids = np.asarray(self.camids[:self.num_query])
        # gallery
        gf = feats[self.num_query:]
        g_pids = np.asarray(self.pids[self.num_query:])

        g_camids = np.asarray(self.camids[self.num_query:])
        if self.reranking:
            print('=> Enter reranking')
            # distmat = re_ranking(qf, gf, k1=20, k2=6, lambda_value=0.3)
            distmat = re_ranking(qf, gf, k1=50, k2=15, lambda_value=0.3)

        else:
            print('=> Computing DistMat with euclidean_distance')
            distmat = euclidean_distance(qf, gf)
        cmc, mAP = eval_func(distmat, q_pids, g_pids, q_camids, g_camids)

        return cmc, mAP, distmat, self.pids, self.camids, qf, gf


# fmt: on
# ---- helpers --------------------------------------------------------------------------------------


def their_re_ranking_float32():
    """Their re_ranking with its float16 arrays (V, V_qe, the Jaccard sums) made float32: the
    same algorithm without their half-precision rounding."""
    namespace = {"np": np, "torch": torch}
    exec(inspect.getsource(re_ranking).replace("np.float16", "np.float32"), namespace)
    return namespace["re_ranking"]


def market_like(num_query, num_gallery, dim=32, seed=0):
    """Features of a Market-like split: identities with a few images each, over 6 cameras; every
    query's identity also in the gallery, on another camera too. Tie-free (continuous noise)."""
    rng = np.random.default_rng(seed)
    num_pids = max(2, (num_query + num_gallery) // 6)
    centres = rng.normal(size=(num_pids, dim))
    q_pids = rng.integers(0, num_pids, num_query)
    g_pids = np.concatenate([q_pids, rng.integers(0, num_pids, num_gallery - num_query)])
    q_camids = rng.integers(0, 3, num_query)
    g_camids = np.concatenate([q_camids + 3, rng.integers(0, 6, num_gallery - num_query)])
    pids, camids = np.concatenate([q_pids, g_pids]), np.concatenate([q_camids, g_camids])
    feats = centres[pids] + 0.8 * rng.normal(size=(len(pids), dim))
    return torch.from_numpy(feats.astype(np.float32)), pids, camids


def fill(evaluator, feats, pids, camids, batch=16):
    """Batches as their test loop gives them: features a tensor, pids a tuple of ints, camids a tensor."""
    evaluator.reset()
    for begin in range(0, len(pids), batch):
        rows = slice(begin, begin + batch)
        evaluator.update((feats[rows], tuple(int(p) for p in pids[rows]), torch.from_numpy(camids[rows])))
    return evaluator.compute()


# ---- the evaluator --------------------------------------------------------------------------------


@pytest.mark.parametrize("num_query,num_gallery,feat_norm", [(37, 113, True), (1, 60, "yes"), (120, 900, True)])
def test_evaluator_is_theirs(capsys, num_query, num_gallery, feat_norm):
    """Plain distances: the same distmat bit for bit, the same CMC, mAP to the last bits of its
    sum (their AP sums over the whole ranked gallery), the same returned objects and types."""
    feats, pids, camids = market_like(num_query, num_gallery, seed=num_query)
    want = fill(R1_mAP_eval(num_query, max_rank=50, feat_norm=feat_norm), feats, pids, camids)
    assert "normalized" in capsys.readouterr().out
    got = fill(transreid.R1_mAP_eval(num_query, max_rank=50, feat_norm=feat_norm), feats, pids, camids)
    assert not capsys.readouterr().out  # theirs prints its steps, ours nothing
    cmc, mAP, distmat, got_pids, got_camids, qf, gf = got
    assert isinstance(cmc, np.ndarray) and cmc.dtype == want[0].dtype == np.float32 and cmc.shape == want[0].shape
    np.testing.assert_array_equal(cmc, want[0])
    assert type(mAP) is type(want[1]) is np.float64 and abs(mAP - want[1]) < 1e-15
    assert distmat.dtype == want[2].dtype == np.float32
    np.testing.assert_array_equal(distmat, want[2])
    assert type(got_pids) is type(want[3]) is list and got_pids == want[3] and got_camids == want[4]
    assert torch.equal(qf, want[5]) and torch.equal(gf, want[6])


def test_evaluator_reranked_is_theirs_within_their_float16():
    """Re-ranked: the distmat is their re-ranking's (to their float16 rounding); CMC and mAP are
    their eval_func's on it. TransReID's own R1_mAP_eval re-ranks with k1=50, k2=15."""
    feats, pids, camids = market_like(37, 113, seed=5)
    want = fill(R1_mAP_eval(37, reranking=True), feats, pids, camids)
    cmc, mAP, distmat, *_ = fill(transreid.R1_mAP_eval(37, reranking=True, k1=50, k2=15), feats, pids, camids)
    assert distmat.dtype == np.float32 and distmat.shape == (37, 113)
    np.testing.assert_allclose(distmat, want[2], rtol=0, atol=1e-2)
    want_cmc, want_mAP = eval_func(distmat, pids[:37], pids[37:], camids[:37], camids[37:])
    np.testing.assert_array_equal(cmc, want_cmc)
    assert abs(mAP - want_mAP) < 1e-15


def test_evaluator_options():
    feats, pids, camids = market_like(10, 40, seed=2)
    *_, qf, gf = fill(transreid.R1_mAP_eval(10, feat_norm="no"), feats, pids, camids)
    assert torch.equal(qf, feats[:10]) and torch.equal(gf, feats[10:])  # "no" means no (theirs normalises)
    cmc, *_ = fill(transreid.R1_mAP_eval(10, max_rank=5), feats, pids, camids)
    assert cmc.shape == (5,)  # honoured (theirs always cuts at 50)
    cmc, *_ = fill(transreid.R1_mAP_eval(10, max_rank=100), feats, pids, camids)
    assert cmc.shape == (40,)  # cut to the gallery size, as theirs


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"num_query": 2.0}, TypeError, "num_query"),
        ({"num_query": 0}, ValueError, "num_query"),
        ({"num_query": 3, "max_rank": 0}, ValueError, "max_rank"),
        ({"num_query": 3, "feat_norm": "maybe"}, ValueError, "feat_norm"),
        ({"num_query": 3, "feat_norm": 1}, TypeError, "feat_norm"),
        ({"num_query": 3, "reranking": "yes"}, TypeError, "reranking"),
        ({"num_query": 3, "k1": 0}, ValueError, "k1"),
        ({"num_query": 3, "lambda_value": 2.0}, ValueError, "lambda_value"),
    ],
)
def test_evaluator_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        transreid.R1_mAP_eval(**kwargs)


def test_evaluator_bad_use():
    evaluator = transreid.R1_mAP_eval(3)
    with pytest.raises(ValueError, match="update"):
        evaluator.compute()
    with pytest.raises(TypeError, match="feat"):
        evaluator.update((np.zeros((2, 4), np.float32), [1, 2], [0, 0]))
    evaluator.update((torch.zeros(2, 4), [1, 2], [0, 0]))
    with pytest.raises(ValueError, match="num_query"):
        evaluator.compute()  # 3 queries of 2 items
    evaluator.update((torch.rand(3, 4), [1, 2], [0, 0]))
    with pytest.raises(ValueError, match="5 features but 4 pids"):
        evaluator.compute()
    evaluator.reset()
    evaluator.update((torch.rand(4, 4), [1, 2, 3, 4], [0, 0, 1, 1]))
    with pytest.raises(ValueError, match="no query has a valid match"):  # theirs: AssertionError
        evaluator.compute()


# ---- re_ranking -----------------------------------------------------------------------------------


@pytest.mark.parametrize("num_query,num_gallery,k1,k2", [(37, 113, 20, 6), (37, 113, 50, 15), (5, 30, 7, 1),
                                                         (150, 600, 20, 6)])
def test_re_ranking_is_theirs(num_query, num_gallery, k1, k2):
    """Within float32 rounding of their algorithm run in float32; within their float16 rounding of
    their code as it is (measured up to 7e-3 at 300 + 1200 items, k1 = 50)."""
    feats, _, _ = market_like(num_query, num_gallery, seed=k1 + num_query)
    feats = torch.nn.functional.normalize(feats, dim=1)  # as their evaluator passes them
    qf, gf = feats[:num_query], feats[num_query:]
    got = transreid.re_ranking(qf, gf, k1, k2, 0.3)
    want = re_ranking(qf, gf, k1, k2, 0.3)
    assert isinstance(got, np.ndarray) and got.dtype == want.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, their_re_ranking_float32()(qf, gf, k1, k2, 0.3), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-2)
    numpy_input = transreid.re_ranking(qf.numpy(), gf.numpy(), k1, k2, 0.3)  # numpy's GEMM, not torch's
    np.testing.assert_allclose(numpy_input, got, rtol=0, atol=1e-6)


def test_re_ranking_with_a_local_distance_is_theirs():
    feats, _, _ = market_like(20, 70, seed=8)
    qf, gf = feats[:20], feats[20:]
    other = np.random.default_rng(8).normal(size=(90, 5))
    local = np.sqrt(((other[:, None] - other[None]) ** 2).sum(-1)).astype(np.float32)  # symmetric
    theirs32 = their_re_ranking_float32()
    for only_local in (False, True):
        got = transreid.re_ranking(qf, gf, 12, 4, 0.3, local_distmat=local, only_local=only_local)
        want = theirs32(qf, gf, 12, 4, 0.3, local_distmat=local, only_local=only_local)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_re_ranking_bad_input():
    q, g = torch.rand(3, 4), torch.rand(10, 4)
    with pytest.raises(ValueError, match="only_local"):
        transreid.re_ranking(q, g, 4, 2, 0.3, only_local=True)
    with pytest.raises(ValueError, match="local_distmat"):
        transreid.re_ranking(q, g, 4, 2, 0.3, local_distmat=np.zeros((13, 12), np.float32))
    with pytest.raises(ValueError, match="k1"):
        transreid.re_ranking(q, g, 13, 2, 0.3)
    with pytest.raises(TypeError, match="probFea"):
        transreid.re_ranking(torch.ones(3, 4, dtype=torch.int64), g, 4, 2, 0.3, local_distmat=np.zeros((13, 13)))
