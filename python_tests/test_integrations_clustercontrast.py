"""The cluster-contrast / SpCL drop-in (cion_fast.integrations.clustercontrast) against the family's
real compute_jaccard_distance, copied below: within float32 rounding of theirs, within float16
rounding with use_float16; the sparse result is the dense one without its pairs at distance 1."""

from __future__ import annotations

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
faiss = pytest.importorskip("faiss", reason="faiss-cpu is in the test extra; skipped where its wheel cannot install")

import scipy.sparse  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cion_fast.integrations.clustercontrast import compute_jaccard_distance  # noqa: E402

# ---- their code ---------------------------------------------------------------------------------
# Verbatim from github.com/alibaba/cluster-contrast-reid (MIT License, Copyright (c) 2021 Alibaba),
# commit 57b62e95eb3ade3da4a464c5eead69ca7d5f4e1d: clustercontrast/utils/faiss_utils.py
# (index_init_cpu) and clustercontrast/utils/faiss_rerank.py (k_reciprocal_neigh,
# compute_jaccard_distance, renamed their_compute_jaccard_distance). Only the imports are adapted:
# the faiss GPU helpers are not imported, and the tests call their CPU branch (search_option=3, an
# exact faiss.IndexFlatL2 search). SpCL's spcl/utils/faiss_rerank.py (MIT, Yixiao Ge, commit
# 01a486e50f7324520a7d9e3741d6c7e1cfd540cf) differs only in whitespace; the copies in
# TransReID-SSL, PASS-reID and CION_ReIDZoo only force search_option = 2 (faiss GPU).
# fmt: off

def index_init_cpu(feat_dim):
    return faiss.IndexFlatL2(feat_dim)


def k_reciprocal_neigh(initial_rank, i, k1):
    forward_k_neigh_index = initial_rank[i,:k1+1]
    backward_k_neigh_index = initial_rank[forward_k_neigh_index,:k1+1]
    fi = np.where(backward_k_neigh_index==i)[0]
    return forward_k_neigh_index[fi]


def their_compute_jaccard_distance(target_features, k1=20, k2=6, print_flag=True, search_option=0, use_float16=False):
    end = time.time()
    if print_flag:
        print('Computing jaccard distance...')

    ngpus = faiss.get_num_gpus()
    N = target_features.size(0)
    mat_type = np.float16 if use_float16 else np.float32

    if (search_option==0):
        # GPU + PyTorch CUDA Tensors (1)
        res = faiss.StandardGpuResources()
        res.setDefaultNullStreamAllDevices()
        _, initial_rank = search_raw_array_pytorch(res, target_features, target_features, k1)
        initial_rank = initial_rank.cpu().numpy()
    elif (search_option==1):
        # GPU + PyTorch CUDA Tensors (2)
        res = faiss.StandardGpuResources()
        index = faiss.GpuIndexFlatL2(res, target_features.size(-1))
        index.add(target_features.cpu().numpy())
        _, initial_rank = search_index_pytorch(index, target_features, k1)
        res.syncDefaultStreamCurrentDevice()
        initial_rank = initial_rank.cpu().numpy()
    elif (search_option==2):
        # GPU
        index = index_init_gpu(ngpus, target_features.size(-1))
        index.add(target_features.cpu().numpy())
        _, initial_rank = index.search(target_features.cpu().numpy(), k1)
    else:
        # CPU
        index = index_init_cpu(target_features.size(-1))
        index.add(target_features.cpu().numpy())
        _, initial_rank = index.search(target_features.cpu().numpy(), k1)


    nn_k1 = []
    nn_k1_half = []
    for i in range(N):
        nn_k1.append(k_reciprocal_neigh(initial_rank, i, k1))
        nn_k1_half.append(k_reciprocal_neigh(initial_rank, i, int(np.around(k1/2))))

    V = np.zeros((N, N), dtype=mat_type)
    for i in range(N):
        k_reciprocal_index = nn_k1[i]
        k_reciprocal_expansion_index = k_reciprocal_index
        for candidate in k_reciprocal_index:
            candidate_k_reciprocal_index = nn_k1_half[candidate]
            if (len(np.intersect1d(candidate_k_reciprocal_index,k_reciprocal_index)) > 2/3*len(candidate_k_reciprocal_index)):
                k_reciprocal_expansion_index = np.append(k_reciprocal_expansion_index,candidate_k_reciprocal_index)

        k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)  ## element-wise unique
        dist = 2-2*torch.mm(target_features[i].unsqueeze(0).contiguous(), target_features[k_reciprocal_expansion_index].t())
        if use_float16:
            V[i,k_reciprocal_expansion_index] = F.softmax(-dist, dim=1).view(-1).cpu().numpy().astype(mat_type)
        else:
            V[i,k_reciprocal_expansion_index] = F.softmax(-dist, dim=1).view(-1).cpu().numpy()

    del nn_k1, nn_k1_half

    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=mat_type)
        for i in range(N):
            V_qe[i,:] = np.mean(V[initial_rank[i,:k2],:], axis=0)
        V = V_qe
        del V_qe

    del initial_rank

    invIndex = []
    for i in range(N):
        invIndex.append(np.where(V[:,i] != 0)[0])  #len(invIndex)=all_num

    jaccard_dist = np.zeros((N, N), dtype=mat_type)
    for i in range(N):
        temp_min = np.zeros((1, N), dtype=mat_type)
        # temp_max = np.zeros((1,N), dtype=mat_type)
        indNonZero = np.where(V[i, :] != 0)[0]
        indImages = []
        indImages = [invIndex[ind] for ind in indNonZero]
        for j in range(len(indNonZero)):
            temp_min[0, indImages[j]] = temp_min[0, indImages[j]]+np.minimum(V[i, indNonZero[j]], V[indImages[j], indNonZero[j]])
            # temp_max[0,indImages[j]] = temp_max[0,indImages[j]]+np.maximum(V[i,indNonZero[j]],V[indImages[j],indNonZero[j]])

        jaccard_dist[i] = 1-temp_min/(2-temp_min)
        # jaccard_dist[i] = 1-temp_min/(temp_max+1e-6)

    del invIndex, V

    pos_bool = (jaccard_dist < 0)
    jaccard_dist[pos_bool] = 0.0
    if print_flag:
        print("Jaccard distance computing time cost: {}".format(time.time()-end))

    return jaccard_dist


# fmt: on
# ---- helpers --------------------------------------------------------------------------------------


def unit_features(n, dim=32, seed=0, spread=0.5):
    """L2-normalised, tie-free features around n // 6 identities, as their models output them."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(2, n // 6), dim))
    x = centres[rng.integers(0, len(centres), n)] + spread * rng.normal(size=(n, dim))
    return F.normalize(torch.from_numpy(x.astype(np.float32)), dim=1)


def theirs(features, k1, k2, use_float16=False):
    return their_compute_jaccard_distance(features, k1, k2, print_flag=False, search_option=3, use_float16=use_float16)


@pytest.mark.parametrize("n,k1,k2", [(151, 20, 6), (151, 9, 1), (150, 30, 6), (37, 2, 2), (1200, 30, 6)])
def test_is_theirs_within_float32_rounding(n, k1, k2):
    """Measured: at most 6e-7 from theirs (N up to 3,000, k1 up to 30)."""
    x = unit_features(n, seed=n + k1)
    want = theirs(x, k1, k2)
    got = compute_jaccard_distance(x, k1, k2, print_flag=False)
    assert isinstance(got, np.ndarray) and got.dtype == want.dtype == np.float32 and got.shape == (n, n)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    numpy_input = compute_jaccard_distance(x.numpy(), k1, k2, print_flag=False)  # numpy too
    np.testing.assert_allclose(numpy_input, got, rtol=0, atol=1e-6)


def test_float16_is_theirs_in_float32_rounded_once():
    """Their use_float16 accumulates V and the sums in float16 (7.8e-3 from their float32 result at
    N = 3,000, k1 = 30); ours is their float32 result rounded once to float16."""
    x = unit_features(400, seed=4)
    want16, want32 = theirs(x, 30, 6, use_float16=True), theirs(x, 30, 6)
    got = compute_jaccard_distance(x, 30, 6, print_flag=False, use_float16=True)
    assert got.dtype == want16.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want32, rtol=0, atol=2**-12 + 2e-6)  # half a float16 ulp
    np.testing.assert_allclose(got.astype(np.float32), want16.astype(np.float32), rtol=0, atol=2e-2)


def test_sparse_is_the_dense_result_without_its_ones():
    x = unit_features(300, seed=6)
    dense = compute_jaccard_distance(x, 20, 6, print_flag=False)
    got = compute_jaccard_distance(x, 20, 6, print_flag=False, sparse=True)
    assert isinstance(got, scipy.sparse.csr_matrix) and got.dtype == np.float32 and got.shape == (300, 300)
    stored = np.zeros((300, 300), dtype=bool)
    stored[np.repeat(np.arange(300), np.diff(got.indptr)), got.indices] = True
    np.testing.assert_array_equal(stored, dense < 1)  # every pair below 1 stored, the diagonal too
    np.testing.assert_array_equal(got.toarray()[stored], dense[stored])
    # what DBSCAN(metric="precomputed") reads of a sparse graph: the stored entries within eps
    for eps in (0.3, 0.6, 0.9):
        within = got.copy()
        within.data = (within.data <= eps).astype(np.float32)
        np.testing.assert_array_equal(within.toarray() > 0, dense <= eps)


def test_print_flag_prints_their_lines(capsys):
    x = unit_features(40, seed=1)
    compute_jaccard_distance(x, 8, 3)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Computing jaccard distance..." and lines[1].startswith("Jaccard distance computing time cost: ")
    compute_jaccard_distance(x, 8, 3, print_flag=False)
    assert not capsys.readouterr().out


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"k1": 40}, ValueError, "k1"),
        ({"k2": 9}, ValueError, "k2"),
        ({"print_flag": 1}, TypeError, "print_flag"),
        ({"search_option": "gpu"}, TypeError, "search_option"),
        ({"use_float16": "yes"}, TypeError, "use_float16"),
        ({"sparse": None}, TypeError, "sparse"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    x = unit_features(40, seed=1)
    with pytest.raises(error, match=match):
        compute_jaccard_distance(x, **{"k1": 8, "k2": 3, "print_flag": False, **kwargs})


def test_bad_features():
    x = unit_features(40, seed=1)
    x[3, 0] = float("nan")
    with pytest.raises(ValueError, match="target_features contains NaN"):
        compute_jaccard_distance(x, 8, 3, print_flag=False)
    with pytest.raises(TypeError, match="target_features"):
        compute_jaccard_distance(torch.ones(40, 4, dtype=torch.int64), 8, 3, print_flag=False)
    with pytest.raises(ValueError, match="target_features"):
        compute_jaccard_distance(torch.ones(40), 8, 3, print_flag=False)
