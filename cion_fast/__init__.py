"""cion_fast: fast C++/CUDA kernels and the CION pipeline for person re-identification.

Quick look::

    >>> import cion_fast
    >>> cion_fast.build_info()["version"]  # doctest: +SKIP
    '0.1.0'
    >>> cion_fast.cuda_available()  # doctest: +SKIP
    False

The kernels live in :mod:`cion_fast.ops`; the compiled extension (``cion_fast._C``) is imported
on first use, so the pure-Python layers (data, denoising reports) import without it.
"""

from __future__ import annotations

import os

# The kernels' OpenMP runtime and the one torch bundles are two thread pools in one process: with
# the default (spinning) wait policy, the idle workers of one keep the cores busy and starve the
# other; measured on 2 cores, a torch matmul loop run right after a cion_fast kernel took 4x longer.
# Passive waiting costs the kernels nothing measurable. Set before the extension loads its runtime;
# a value the user chose is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

__all__ = ["__version__", "build_info", "cuda_available"]


def build_info() -> dict:
    """What the compiled extension contains.

    Returns:
        dict with ``version`` (str), ``openmp`` (bool), ``openmp_max_threads`` (int), ``cuda``
        (bool: CUDA kernels compiled in), ``cuda_version`` (str or None, the nvcc version) and
        ``cuda_architectures`` (list of str, e.g. ``["80-real", ..., "90-virtual"]``) and
        ``multicrop_cpu_copy`` (str: ``"avx512"``, ``"avx2"`` or ``"baseline"``, the copy of the
        CPU multicrop kernel this process runs, capped by ``CION_FAST_MULTICROP_ISA``).

    Example:
        >>> info = build_info()
        >>> sorted(info)[:3]
        ['cuda', 'cuda_architectures', 'cuda_version']
    """
    from cion_fast import _C

    return dict(_C.build_info())


def cuda_available() -> bool:
    """True when the CUDA kernels were compiled in *and* a CUDA device can be used now.

    Example:
        >>> isinstance(cuda_available(), bool)
        True
    """
    from cion_fast import _C

    return bool(_C.build_info()["cuda"]) and _C.cuda_device_count() > 0
