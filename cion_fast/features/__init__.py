"""Training-free and ground-truth frame features, to run the denoising without a trained model.

* :func:`stripe_histogram`: a LOMO-like colour + texture descriptor over horizontal stripes.
* :func:`oracle_features`: features built from the true identities plus camera shift and noise,
  to tell denoising quality from feature quality.

Features of a trained network come from :func:`cion_fast.evaluate.extract_features`.

Example:
    >>> import numpy as np
    >>> from cion_fast.features import stripe_histogram
    >>> stripe_histogram(np.zeros((2, 64, 32, 3), dtype=np.uint8)).shape
    (2, 816)
"""

from cion_fast.features.oracle import oracle_features
from cion_fast.features.stripe import stripe_histogram

__all__ = ["oracle_features", "stripe_histogram"]
