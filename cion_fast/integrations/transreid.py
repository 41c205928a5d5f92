"""Drop-in replacements for the TransReID family's ``utils.metrics.R1_mAP_eval`` and
``utils.reranking.re_ranking``: TransReID, TransReID-SSL, SOLIDER-REID, PASS-reID and CION's
fine-tuning fork share both files (reid-strong-baseline has the same ``re_ranking``).

Example (in such a code base)::

    # from utils.metrics import R1_mAP_eval
    # from utils.reranking import re_ranking
    from cion_fast.integrations.transreid import R1_mAP_eval, re_ranking

    evaluator = R1_mAP_eval(num_query, max_rank=50, feat_norm=cfg.TEST.FEAT_NORM)
    evaluator.reset()
    for img, pid, camid, ... in val_loader:
        evaluator.update((model(img), pid, camid))
    cmc, mAP, distmat, pids, camids, qf, gf = evaluator.compute()

Departures (measured against the real code in ``python_tests/test_integrations_transreid.py``):

* ``re_ranking`` builds no N x N array (:func:`cion_fast.ops.k_reciprocal_rerank`) and keeps its
  encodings in float32, where theirs holds V and the Jaccard distance in float16: the results
  differ by their float16 rounding (up to 7e-3 at 300 + 1,200 items, k1 = 50), and agree to 4e-7
  with their code run in float32.
* Ties rank by index (stable), in re-ranking and in the metrics; their ``argsort`` leaves tie
  order unspecified. On tie-free data cmc and mAP are the same numbers.
* ``R1_mAP_eval`` honours ``max_rank`` (theirs always cuts the CMC at 50); reads ``feat_norm="no"``
  as no normalisation (their configs pass the strings ``'yes'``/``'no'``, and theirs normalises for
  both); takes the re-ranking parameters as arguments (TransReID hard-codes k1=50, k2=15; SOLIDER,
  PASS, TransReID-SSL and CION k1=20, k2=6: our default); prints nothing; and raises ValueError
  where theirs asserts (no query with a match in the gallery).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cion_fast import _arrays
from cion_fast._checks import check_flag, check_int, check_probability
from cion_fast.integrations._common import market1501_rank
from cion_fast.ops.k_reciprocal import k_reciprocal_rerank, k_reciprocal_rerank_from_distances

__all__ = ["R1_mAP_eval", "re_ranking"]


def re_ranking(probFea, galFea, k1: int, k2: int, lambda_value: float, local_distmat=None, only_local: bool = False):
    """The family's signature and result: the k-reciprocal re-ranked [Q, G] distance.

    The original distance is the squared Euclidean distance between the features (plus
    ``local_distmat`` when given, or ``local_distmat`` alone with ``only_local``), each item's
    distances divided by its largest, as theirs.

    Args:
        probFea: [Q, D] query features, a torch tensor as theirs (CPU or CUDA; numpy and cupy
            accepted too), float16/bfloat16/float32/float64.
        galFea: [G, D] gallery features, same library and device.
        k1, k2, lambda_value: as theirs (the paper: 20, 6, 0.3); 1 <= k1 < Q + G, 1 <= k2 <= k1 + 1.
        local_distmat: optional [Q + G, Q + G] distance over all items (queries first), numpy or
            torch, added to the squared distance. It must be symmetric: its [G, Q] block is taken
            as the transpose of its [Q, G] block. This path holds N x N arrays, as theirs.
        only_local: use ``local_distmat`` alone (the features only give Q and G).

    Returns:
        float32 numpy [Q, G] on the host, as theirs, whatever the features' device.

    Example:
        >>> import torch
        >>> g = torch.randn(40, 8, generator=torch.Generator().manual_seed(0))
        >>> q = g[:3] + 0.05 * torch.randn(3, 8, generator=torch.Generator().manual_seed(1))
        >>> d = re_ranking(q, g, k1=5, k2=3, lambda_value=0.3)
        >>> d.shape, d.dtype, d.argmin(axis=1).tolist()
        ((3, 40), dtype('float32'), [0, 1, 2])
    """
    only_local = check_flag(only_local, "only_local")
    if local_distmat is None:
        if only_local:
            raise ValueError("only_local=True needs a local_distmat")
        return _arrays.to_numpy(k_reciprocal_rerank(probFea, galFea, k1, k2, lambda_value))
    query = _arrays.to_numpy(_arrays.as_feature_array(probFea, "probFea", "[Q, D]"))
    gallery = _arrays.to_numpy(_arrays.as_feature_array(galFea, "galFea", "[G, D]"))
    num_query, num_items = len(query), len(query) + len(gallery)
    local = _arrays.to_numpy(_arrays.as_float_array(local_distmat, "local_distmat", 2, "[Q + G, Q + G]"))
    if local.shape != (num_items, num_items):
        raise ValueError(f"local_distmat must have shape {(num_items, num_items)} (queries first), got {local.shape}")
    if only_local:
        full = local
    else:  # their formula, |a|^2 + |b|^2 - 2 a.b, in float32 as their torch features
        features = np.concatenate([query, gallery]).astype(np.float32)
        squared = (features * features).sum(1)
        full = squared[:, None] + squared[None, :] - 2 * (features @ features.T) + local
    blocks = (full[:num_query, num_query:], full[:num_query, :num_query], full[num_query:, num_query:])
    return _arrays.to_numpy(k_reciprocal_rerank_from_distances(*blocks, k1=k1, k2=k2, lambda_value=lambda_value))


def _feat_norm_flag(value: Any) -> bool:
    """A bool, or the strings their configs pass (``TEST.FEAT_NORM: 'yes'`` / ``'no'``)."""
    if isinstance(value, str):
        if value not in ("yes", "no"):
            raise ValueError(f"feat_norm must be a bool or 'yes' / 'no', got {value!r}")
        return value == "yes"
    return check_flag(value, "feat_norm")


class R1_mAP_eval:
    """The family's evaluator: collects features batch by batch, then ranks the first
    ``num_query`` items against the rest (Market-1501 protocol: same pid and camera is junk).

    Args:
        num_query: how many of the collected items (the first ones) are queries, >= 1.
        max_rank: CMC length, cut to the gallery size.
        feat_norm: L2-normalise the features first: a bool, or ``'yes'`` / ``'no'`` as their
            configs spell it.
        reranking: k-reciprocal re-ranking (:func:`re_ranking`) instead of the squared Euclidean
            distance.
        k1, k2, lambda_value: the re-ranking's parameters (keyword-only, ours: TransReID itself
            uses k1=50, k2=15).

    Example:
        >>> import torch
        >>> evaluator = R1_mAP_eval(num_query=2, max_rank=3)
        >>> evaluator.reset()
        >>> feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9], [0.7, 0.7]])
        >>> evaluator.update((feats[:2], [7, 8], [0, 0]))   # queries: pids 7 and 8, camera 0
        >>> evaluator.update((feats[2:], [7, 8, 9], [1, 1, 1]))
        >>> cmc, mAP, distmat, pids, camids, qf, gf = evaluator.compute()
        >>> cmc.tolist(), float(mAP), distmat.shape, distmat.dtype
        ([1.0, 1.0, 1.0], 1.0, (2, 3), dtype('float32'))
    """

    def __init__(self, num_query: int, max_rank: int = 50, feat_norm: Any = True, reranking: bool = False, *,
                 k1: int = 20, k2: int = 6, lambda_value: float = 0.3):
        self.num_query = check_int(num_query, "num_query", 1)
        self.max_rank = check_int(max_rank, "max_rank", 1)
        self.feat_norm = _feat_norm_flag(feat_norm)
        self.reranking = check_flag(reranking, "reranking")
        self.k1 = check_int(k1, "k1", 1)
        self.k2 = check_int(k2, "k2", 1)
        self.lambda_value = check_probability(lambda_value, "lambda_value")
        self.reset()  # theirs creates the lists in reset() only; an update() before it would fail

    def reset(self) -> None:
        """Forgets the collected features, pids and camera ids."""
        self.feats = []
        self.pids = []
        self.camids = []

    def update(self, output) -> None:
        """Adds one batch: ``output = (feat, pid, camid)``, feat a [B, D] float torch tensor (any
        device; kept on the CPU), pid and camid B integers (list, tuple, numpy or torch)."""
        feat, pid, camid = output
        if _arrays.framework_of(feat) != "torch":
            raise TypeError(f"feat must be a torch tensor [B, D], got {type(feat).__name__}")
        self.feats.append(feat.cpu())
        self.pids.extend(np.asarray(pid))
        self.camids.extend(np.asarray(camid))

    def compute(self):
        """Ranks queries against the gallery.

        Returns:
            ``(cmc, mAP, distmat, pids, camids, qf, gf)`` as theirs: cmc float32 numpy
            [min(max_rank, G)]; mAP numpy float64; distmat float32 numpy [Q, G] (squared
            Euclidean, or re-ranked); pids and camids the collected lists (all items); qf [Q, D]
            and gf [G, D] the CPU torch features (normalised when ``feat_norm``).
        """
        import torch  # here, not at import: re_ranking alone runs without torch

        if not self.feats:
            raise ValueError("no features collected: call update((feat, pid, camid)) before compute()")
        feats = torch.cat(self.feats, dim=0)
        if not len(feats) == len(self.pids) == len(self.camids):
            raise ValueError(f"update() got {len(feats)} features but {len(self.pids)} pids and "
                             f"{len(self.camids)} camids")
        if self.num_query >= len(feats):
            raise ValueError(f"num_query must be smaller than the {len(feats)} collected items, got {self.num_query}")
        if self.feat_norm:
            feats = torch.nn.functional.normalize(feats, dim=1, p=2)
        qf, gf = feats[:self.num_query], feats[self.num_query:]
        if self.reranking:
            distmat = re_ranking(qf, gf, self.k1, self.k2, self.lambda_value)
        else:
            # their euclidean_distance, op for op (float32 torch), so the distmat is theirs bit for bit
            distmat = qf.pow(2).sum(1, keepdim=True) + gf.pow(2).sum(1, keepdim=True).t()
            distmat = distmat.addmm_(qf, gf.t(), beta=1, alpha=-2).numpy()
        q, g = slice(0, self.num_query), slice(self.num_query, None)
        pids, camids = np.asarray(self.pids), np.asarray(self.camids)
        result, _ = market1501_rank(distmat, pids[q], pids[g], camids[q], camids[g], self.max_rank, False)
        return result.cmc.astype(np.float32), np.float64(result.mAP), distmat, self.pids, self.camids, qf, gf
