"""Access to the compiled extension shared by every op wrapper."""

from __future__ import annotations

from cion_fast._arrays import Placement


def kernels():
    """The compiled module ``cion_fast._C`` (ImportError with a hint when it was not built)."""
    try:
        from cion_fast import _C
    except ImportError as error:  # pragma: no cover - only without a build
        raise ImportError(
            "cion_fast._C is not built: install with `pip install .` "
            "(or run tools/dev_build.sh for an in-place developer build)"
        ) from error
    return _C


def check_device_supported(placement: Placement, name: str) -> None:
    """TypeError when ``name`` lives on a GPU but the kernels were built without CUDA.

    Example:
        >>> import numpy as np
        >>> from cion_fast._arrays import placement_of
        >>> check_device_supported(placement_of(np.zeros(3), "x"), "x")  # host arrays always are
    """
    if placement.is_cuda and not kernels().build_info()["cuda"]:
        raise TypeError(
            f"{name} is a CUDA array ({placement}) but cion_fast was built without CUDA kernels; "
            "reinstall with nvcc on PATH (CION_FAST_CUDA=ON) or pass CPU arrays"
        )
