"""Frame features: from a network, training-free, or from the ground truth, and the features file.

* :func:`extract_features` (:mod:`cion_fast.features.network`): a network's embeddings of many
  crops, batched, with AMP on GPU and optional flip averaging.
* :func:`extract_by_spec` / :func:`extract_to_file`: the features of a tracklet set from a source
  named by a string (:data:`MODEL_SPECS`: stripe, oracle, ``timm:NAME``, ``checkpoint:PATH``), in
  memory or into the features file (sharded under torchrun).
* :func:`stripe_histogram`: a LOMO-like colour + texture descriptor over horizontal stripes.
* :func:`oracle_features`: features built from the true identities plus camera shift and noise,
  to tell denoising quality from feature quality.
* :mod:`cion_fast.features.io`: the features file (:func:`~cion_fast.features.io.save_features` /
  :func:`~cion_fast.features.io.load_features`).

Example:
    >>> import numpy as np, torch
    >>> from cion_fast.features import extract_features, stripe_histogram
    >>> stripe_histogram(np.zeros((2, 64, 32, 3), dtype=np.uint8)).shape
    (2, 816)
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(4))
    >>> extract_features(net, np.zeros((3, 8, 4, 3), dtype=np.uint8), device="cpu").shape
    (3, 4)
"""

from cion_fast.features.network import MODEL_SPECS, extract_by_spec, extract_features, extract_to_file
from cion_fast.features.oracle import oracle_features
from cion_fast.features.stripe import stripe_histogram

__all__ = ["MODEL_SPECS", "extract_by_spec", "extract_features", "extract_to_file", "oracle_features", "stripe_histogram"]
