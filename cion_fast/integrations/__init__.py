"""Drop-in adapters for other ReID codebases: swap one import, keep the call sites.

* :mod:`cion_fast.integrations.torchreid` -- ``evaluate_rank`` (torchreid.metrics.evaluate_rank) and
  ``re_ranking`` (torchreid.utils.re_ranking, k-reciprocal re-ranking).
* :mod:`cion_fast.integrations.fastreid` -- ``evaluate_rank`` (fastreid.evaluation.rank.evaluate_rank).
* :mod:`cion_fast.integrations.transreid` -- ``R1_mAP_eval`` and ``re_ranking`` (TransReID,
  reid-strong-baseline, TransReID-SSL, SOLIDER, PASS, CION's fine-tuning fork).
* :mod:`cion_fast.integrations.clustercontrast` -- ``compute_jaccard_distance`` (cluster-contrast,
  SpCL, CION's USL fork), dense as theirs or sparse for large N.
"""
