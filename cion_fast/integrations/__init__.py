"""Drop-in adapters for other ReID codebases: swap one import, keep the call sites.

* :mod:`cion_fast.integrations.torchreid` -- ``evaluate_rank`` (torchreid.metrics.evaluate_rank) and
  ``re_ranking`` (torchreid.utils.re_ranking, k-reciprocal re-ranking).
* :mod:`cion_fast.integrations.fastreid` -- ``evaluate_rank`` (fastreid.evaluation.rank.evaluate_rank).
"""
