"""Drop-in replacement for ``clustercontrast.utils.faiss_rerank.compute_jaccard_distance``: the
clustering distance of cluster-contrast-reid, SpCL (``spcl.utils.faiss_rerank``) and their forks
(TransReID-SSL, PASS-reID, CION's USL fork), all the same function.

Example (in such a code base)::

    # from clustercontrast.utils.faiss_rerank import compute_jaccard_distance
    from cion_fast.integrations.clustercontrast import compute_jaccard_distance

    rerank_dist = compute_jaccard_distance(features, k1=30, k2=6)      # dense, as theirs
    pseudo_labels = DBSCAN(eps=0.6, min_samples=4, metric="precomputed", n_jobs=-1).fit_predict(rerank_dist)

    # Large N: their dense N x N float32 arrays (the encodings V, their query expansion, the
    # result) hold about 8 N^2 bytes at once (3.0 GiB measured at N = 20,000), 2.6 TiB at 600k
    # images; ours dense only the 4 N^2 of the result. The sparse result holds only the pairs with
    # a non-zero overlap, a count per row that depends on the data (41 with ~40 images per
    # identity: 1.09 GiB peak at N = 600,000; 5,400 with ~13: 8.2 GiB at N = 100,000;
    # benchmarks/jaccard_memory.py), and DBSCAN gives the same labels on it (an absent pair is at
    # distance 1):
    rerank_dist = compute_jaccard_distance(features, k1=30, k2=6, sparse=True)

It runs :func:`cion_fast.ops.jaccard_distance` with ``variant="spcl"`` (their k1-item kNN lists,
self included; softmax of the raw squared distances; J clamped at 0), so no N x N array exists
until the dense result is filled, and none at all with ``sparse=True``.

Departures (measured against the real code in ``python_tests/test_integrations_clustercontrast.py``):

* ``search_option`` is ignored: the kNN search is our kernel's, on the features' device (theirs
  picks a faiss GPU or CPU index); ties rank by index, the item itself first.
* Their encodings weigh neighbours by ``2 - 2 x.y``, the squared distance of L2-normalised rows,
  which is what they pass (their models normalise the test feature); ours by the squared distance
  itself: the same for normalised features, so normalise yours as they do.
* Otherwise the result is theirs to float32 rounding (6e-7). ``use_float16=True`` returns float16
  as theirs, but computed in float32 and rounded once: theirs accumulates V and the Jaccard sums in
  float16, up to 8e-3 from its own float32 result at N = 3,000 (ours: half a float16 step, 2.4e-4).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from cion_fast import _arrays, _xp
from cion_fast._checks import check_bytes, check_flag, check_int
from cion_fast.ops.k_reciprocal import jaccard_distance

__all__ = ["compute_jaccard_distance"]


def _host_csr(matrix: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, indices, values) on the host of the kernel's CSR result (scipy, torch or cupy)."""
    if _arrays.framework_of(matrix) == "torch":
        parts = (matrix.crow_indices(), matrix.col_indices(), matrix.values())
    else:
        parts = (matrix.indptr, matrix.indices, matrix.data)
    return tuple(_arrays.to_numpy(p) for p in parts)


def compute_jaccard_distance(
    target_features,
    k1: int = 20,
    k2: int = 6,
    print_flag: bool = True,
    search_option: int = 0,
    use_float16: bool = False,
    *,
    sparse: bool = False,
):
    """Their signature and result: the k-reciprocal Jaccard distance between all N items.

    Args:
        target_features: [N, D] L2-normalised features, a torch tensor as theirs (CPU or CUDA: the
            work runs there; numpy and cupy accepted too), float16/bfloat16/float32/float64.
        k1: kNN list length, self included, 2 <= k1 < N. k2: query expansion, 1 <= k2 <= k1.
        print_flag: print their progress lines.
        search_option: ignored (kept for signature compatibility: their faiss index choice).
        use_float16: return the dense result as float16 (half the memory), as theirs.
        sparse: keyword-only, ours: return a ``scipy.sparse.csr_matrix`` [N, N] float32 holding
            the pairs with a non-zero overlap (J < 1, the diagonal as explicit zeros); every absent
            pair is at distance 1. ``DBSCAN(metric="precomputed")`` takes it as it is, with the same
            labels as on the dense matrix for any eps < 1. ``use_float16`` does not apply to it.

    Returns:
        numpy [N, N] on the host, float32 (float16 with ``use_float16``), as theirs; or the sparse
        matrix above.

    Example:
        >>> import torch
        >>> centres = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
        >>> x = centres.repeat_interleave(10, 0) + 0.1 * torch.randn(40, 16, generator=torch.Generator().manual_seed(1))
        >>> x = torch.nn.functional.normalize(x, dim=1)
        >>> d = compute_jaccard_distance(x, k1=8, k2=3, print_flag=False)
        >>> d.shape, d.dtype, bool(d[0, 1] < 0.5), float(d[0, 39])  # same cluster close, others at 1
        ((40, 40), dtype('float32'), True, 1.0)
        >>> s = compute_jaccard_distance(x, k1=8, k2=3, print_flag=False, sparse=True)
        >>> s.format, bool((s.toarray() == 0).sum() < 40 * 40)  # absent pairs are 1, not 0
        ('csr', True)
    """
    start = time.time()
    print_flag = check_flag(print_flag, "print_flag")
    check_int(search_option, "search_option")
    use_float16 = check_flag(use_float16, "use_float16")
    sparse = check_flag(sparse, "sparse")
    features = _arrays.as_feature_array(target_features, "target_features", "[N, D]")
    _xp.check_finite(features, "target_features")
    num_items = int(features.shape[0])
    dtype = np.float16 if use_float16 else np.float32
    if not sparse:  # refused before the kNN search, the long part
        check_bytes(num_items * num_items * np.dtype(dtype).itemsize, "target_features",
                    f"the dense {num_items}x{num_items} {np.dtype(dtype).name} result (pass sparse=True)")
    if print_flag:
        print("Computing jaccard distance...")
    with warnings.catch_warnings():
        # torch calls its CSR tensors beta; ours is only an intermediate, read right back
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        indptr, indices, values = _host_csr(jaccard_distance(features, k1, k2, variant="spcl", sparse=True))
    if sparse:
        import scipy.sparse

        result = scipy.sparse.csr_matrix((values, indices, indptr), shape=(num_items, num_items))
    else:
        result = np.ones((num_items, num_items), dtype=dtype)
        result[np.repeat(np.arange(num_items), np.diff(indptr)), indices] = values
    if print_flag:
        print("Jaccard distance computing time cost: {}".format(time.time() - start))
    return result
