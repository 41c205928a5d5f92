"""Evaluation: retrieval metrics (with re-ranking) and report plots.

* :mod:`cion_fast.evaluate.retrieval`: mAP / CMC / mINP on features, k-reciprocal re-ranking,
  a network evaluated on a query/gallery split (its features from
  :func:`cion_fast.features.extract_features`).
* :mod:`cion_fast.evaluate.plots`: PNG plots for reports.

Example:
    >>> import numpy as np
    >>> from cion_fast.evaluate.retrieval import evaluate_features
    >>> f = np.eye(3, dtype=np.float32)
    >>> ids, cams = np.arange(3), np.zeros(3, np.int64)
    >>> evaluate_features(f, f, ids, ids, cams, cams + 1)["rank1"]
    1.0
"""
