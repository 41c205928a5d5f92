"""Evaluation: feature extraction, retrieval metrics (with re-ranking) and report plots.

* :func:`extract_features` (:mod:`cion_fast.evaluate.features`): a network's embeddings of many
  crops, batched, with AMP on GPU and optional flip averaging.
* :mod:`cion_fast.evaluate.retrieval`: mAP / CMC / mINP on features, k-reciprocal re-ranking.
* :mod:`cion_fast.evaluate.plots`: PNG plots for reports.

Example:
    >>> import numpy as np, torch
    >>> from cion_fast.evaluate import extract_features
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(4))
    >>> extract_features(net, np.zeros((3, 8, 4, 3), dtype=np.uint8), device="cpu").shape
    (3, 4)
"""

from cion_fast.evaluate.features import extract_features

__all__ = ["extract_features"]
