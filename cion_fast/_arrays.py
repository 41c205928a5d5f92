"""The array bridge: numpy, torch and cupy arrays in and out of the C++/CUDA kernels.

Every public op follows the same path (docs/PROTOCOLS.md, "The array contract"):

1. :func:`as_array` accepts a numpy array, a torch tensor or a cupy array (lists become numpy);
   :func:`placement_of` says which framework it came from and on which device it lives.
2. The op validates it (clear ``ValueError``/``TypeError`` naming the argument), makes it
   contiguous and casts it with the caller's own library.
3. Outputs and scratch are allocated with :meth:`Placement.empty` (torch's caching allocator for
   torch tensors, cupy's memory pool for cupy arrays).
4. :func:`to_dlpack` exports each array with ``__dlpack__(stream=...)`` on the caller's current
   CUDA stream; the C++ side borrows the memory without linking libtorch, and launches on that
   same stream. Nothing synchronises the device.

No framework is imported unless an array of it is passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cion_fast import _checks

_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
_HOST_DTYPE = {"bfloat16": "float16"}  # numpy has no bfloat16: the same 2 bytes
_INDEX_DTYPES = ("int32", "int64")


def framework_of(x: Any) -> str | None:
    """'numpy', 'torch' or 'cupy' for an array of that library, else None."""
    if isinstance(x, np.ndarray):
        return "numpy"
    root = type(x).__module__.split(".", 1)[0]
    if root == "torch" and hasattr(x, "data_ptr"):
        return "torch"
    if root == "cupy" and hasattr(x, "data"):
        return "cupy"
    return None


def as_array(x: Any, name: str) -> Any:
    """Returns ``x`` if it is a numpy/torch/cupy array; lists, tuples and scalars become numpy.

    Raises:
        TypeError: for anything else (naming ``name``).
    """
    if isinstance(x, np.ndarray) and not x.dtype.isnative:
        # Big-endian input (e.g. read from a file written elsewhere): DLPack carries native byte
        # order only, so it is swapped here, once, for every op alike.
        return x.astype(x.dtype.newbyteorder("="))
    if framework_of(x) is not None:
        return x
    if isinstance(x, (list, tuple, int, float, np.generic)):
        try:
            return np.asarray(x)
        except ValueError as error:  # ragged nested lists
            raise ValueError(f"{name} must be a rectangular array; as nested lists it is ragged ({error})") from error
    raise TypeError(
        f"{name} must be a numpy array, torch tensor or cupy array, got {type(x).__module__}.{type(x).__name__}"
    )


def dtype_name(x: Any) -> str:
    """The dtype as a framework-neutral string: 'float32', 'int64', 'bool', 'bfloat16', ..."""
    if framework_of(x) == "torch":
        return str(x.dtype).replace("torch.", "")
    return x.dtype.name


#: Alignment of the numpy arrays the ops allocate: a cache line (torch's CPU allocator gives 64 too).
CACHE_LINE = 64


def aligned_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised C-contiguous numpy array whose data starts on a cache line. numpy gives
    16 bytes (large arrays sit 16 bytes past a page), so every 64-byte vector store of a kernel
    writing it would straddle two lines: the multicrop views are written ~7 % slower so."""
    dtype = np.dtype(dtype)
    count = math.prod(int(n) for n in shape)
    raw = np.empty(count * dtype.itemsize + CACHE_LINE, dtype=np.uint8)
    start = -raw.ctypes.data % CACHE_LINE
    return raw[start:start + count * dtype.itemsize].view(dtype).reshape(shape)


@dataclass(frozen=True)
class Placement:
    """Where an array lives: its framework and its device (``device_index`` is -1 on CPU)."""

    framework: str
    device: str
    device_index: int = -1

    @property
    def is_cuda(self) -> bool:
        return self.device == "cuda"

    def __str__(self) -> str:
        where = f"cuda:{self.device_index}" if self.is_cuda else "cpu"
        return f"{self.framework} on {where}"

    def stream(self) -> int:
        """The caller's current CUDA stream handle on this device (0 on CPU or the legacy stream)."""
        if not self.is_cuda:
            return 0
        if self.framework == "torch":
            import torch

            return int(torch.cuda.current_stream(self.device_index).cuda_stream)
        import cupy

        with cupy.cuda.Device(self.device_index):
            return int(cupy.cuda.get_current_stream().ptr)

    def empty(self, shape: tuple[int, ...], dtype: str, name: str = "the input") -> Any:
        """An uninitialised array of this placement (the caller's allocator). On the host, a size
        the machine cannot give now is refused first, naming ``name`` (the argument that asks
        for it), instead of a MemoryError or the out-of-memory killer."""
        if not self.is_cuda:
            count = math.prod(int(n) for n in shape)
            _checks.check_bytes(count * np.dtype(_HOST_DTYPE.get(dtype, dtype)).itemsize, name,
                                f"the {'x'.join(map(str, shape))} {dtype} array it asks for")
        if self.framework == "numpy":
            return aligned_empty(shape, dtype)
        if self.framework == "torch":
            import torch

            device = f"cuda:{self.device_index}" if self.is_cuda else "cpu"
            return torch.empty(shape, dtype=getattr(torch, dtype), device=device)
        import cupy

        with cupy.cuda.Device(self.device_index):
            return cupy.empty(shape, dtype=dtype)

    def zeros(self, shape: tuple[int, ...], dtype: str, name: str = "the input") -> Any:
        out = self.empty(shape, dtype, name)
        out[...] = 0
        return out

    def from_numpy(self, x: np.ndarray) -> Any:
        """Copies a host numpy array to this placement (no copy for numpy)."""
        if self.framework == "numpy":
            return x
        if self.framework == "torch":
            import torch

            device = f"cuda:{self.device_index}" if self.is_cuda else "cpu"
            return torch.from_numpy(np.ascontiguousarray(x)).to(device, non_blocking=False)
        import cupy

        with cupy.cuda.Device(self.device_index):
            return cupy.asarray(x)


def placement_of(x: Any, name: str) -> Placement:
    """The :class:`Placement` of an array returned by :func:`as_array`."""
    framework = framework_of(x)
    if framework is None:
        raise TypeError(f"{name} must be a numpy array, torch tensor or cupy array")
    if framework == "numpy":
        return Placement("numpy", "cpu")
    if framework == "torch":
        if x.device.type == "cuda":
            return Placement("torch", "cuda", x.device.index or 0)
        if x.device.type != "cpu":
            raise TypeError(f"{name} is a torch tensor on {x.device}; only CPU and CUDA are supported")
        return Placement("torch", "cpu")
    return Placement("cupy", "cuda", int(x.device.id))


def check_same_device(placements: dict[str, Placement]) -> Placement:
    """All arrays must be on one device (CPU or one GPU); returns the first placement."""
    items = list(placements.items())
    first_name, first = items[0]
    for name, other in items[1:]:
        if (other.device, other.device_index) != (first.device, first.device_index):
            raise TypeError(
                f"{name} is on {other} but {first_name} is on {first}: all arrays must share a device"
            )
    return first


def to_numpy(x: Any) -> np.ndarray:
    """A host numpy copy (or view, for numpy) of any supported array."""
    framework = framework_of(x)
    if framework == "numpy":
        return x
    if framework == "torch":
        import torch

        x = x.detach()
        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.cpu().numpy()
    if framework == "cupy":
        return x.get()
    return np.asarray(x)


def contiguous(x: Any) -> Any:
    """C-contiguous version of x in its own framework (no copy when it already is)."""
    framework = framework_of(x)
    if framework == "numpy":
        return np.ascontiguousarray(x)
    if framework == "torch":
        return x.detach().contiguous()
    import cupy

    return cupy.ascontiguousarray(x)


def rows_contiguous(x: Any) -> Any:
    """A 2-D array whose rows are contiguous (unit column stride); row padding is kept, no copy then."""
    framework = framework_of(x)
    if framework == "torch":
        x = x.detach()
        return x if x.stride(1) == 1 or x.shape[1] <= 1 else x.contiguous()
    item = x.dtype.itemsize
    return x if x.strides[1] == item or x.shape[1] <= 1 else contiguous(x)


# Below this many elements numpy's own float16 cast is as fast as a call into the extension.
_WIDEN_MIN_SIZE = 4096


def astype(x: Any, dtype: str) -> Any:
    """Casts with the array's own library (no copy when the dtype already matches).

    numpy float16 -> float32, the widening of every pass over half-precision features, goes
    through the extension's F16C kernel instead (``csrc/ops/widen_half.h``: numpy converts one
    element at a time, several times slower); the values are the same.
    """
    if dtype_name(x) == dtype:
        return x
    if framework_of(x) == "torch":
        import torch

        return x.to(getattr(torch, dtype))
    if dtype == "float32" and isinstance(x, np.ndarray) and x.dtype == np.float16 and x.size >= _WIDEN_MIN_SIZE:
        try:
            from cion_fast import _C
        except ImportError:  # no build (a source checkout): numpy's cast gives the same values
            return x.astype(dtype)
        host = Placement("numpy", "cpu")
        out = np.empty(x.shape, dtype=np.float32)
        _C.widen_half(to_dlpack(np.ascontiguousarray(x), host), to_dlpack(out, host))
        return out
    return x.astype(dtype)



def require_dtype(x: Any, name: str, allowed: tuple[str, ...]) -> str:
    """Raises TypeError unless x's dtype is one of ``allowed``; returns the dtype name."""
    dtype = dtype_name(x)
    if dtype not in allowed:
        raise TypeError(f"{name} must have dtype {' or '.join(allowed)}, got {dtype}")
    return dtype


def require_ndim(x: Any, name: str, ndim: int, shape_hint: str) -> None:
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {shape_hint}, got shape {tuple(x.shape)}")


def as_float_array(x: Any, name: str, ndim: int, shape_hint: str) -> Any:
    """Validates a floating array (float16/bfloat16/float32/float64) of the given rank."""
    x = as_array(x, name)
    require_ndim(x, name, ndim, shape_hint)
    require_dtype(x, name, _FLOAT_DTYPES)
    return x


def as_feature_array(x: Any, name: str, shape_hint: str) -> Any:
    """Validates floating features [N, D] with at least one dimension (D >= 1): a zero-width
    feature compares nothing, so every similarity and ranking from it would be meaningless."""
    x = as_float_array(x, name, 2, shape_hint)
    if x.shape[1] < 1:
        raise ValueError(f"{name} must have at least one feature dimension {shape_hint}, got shape {tuple(x.shape)}")
    return x


def as_index_array(x: Any, name: str, length: int | None = None) -> np.ndarray:
    """A 1-D int64 host (numpy) array from int32/int64 input of any framework."""
    x = as_array(x, name)
    require_ndim(x, name, 1, "[N]")
    require_dtype(x, name, _INDEX_DTYPES)
    host = np.ascontiguousarray(to_numpy(x), dtype=np.int64)
    if length is not None and host.shape[0] != length:
        raise ValueError(f"{name} must have length {length}, got {host.shape[0]}")
    return host


def _byte_range(x: Any) -> tuple[int, int]:
    """[first, last) bytes of a C-contiguous array's elements."""
    framework = framework_of(x)
    if framework == "torch":
        start, item = x.data_ptr(), x.element_size()
    elif framework == "numpy":
        start, item = x.__array_interface__["data"][0], x.itemsize
    else:
        start, item = int(x.data.ptr), x.itemsize
    return start, start + math.prod(int(n) for n in x.shape) * item


def check_output(x: Any, name: str, placement: Placement, shape: tuple[int, ...], dtype: str,
                 reads: dict[str, Any]) -> Any:
    """Validates a caller's buffer for an op to write into: the op's framework and device, its
    dtype and shape, C-contiguous and writable, sharing no memory with ``reads`` (name -> the
    C-contiguous arrays the op reads, and outputs checked before this one).

    Raises:
        TypeError: not an array of the op's framework and device, or another dtype (naming ``name``).
        ValueError: another shape, not C-contiguous, read-only (numpy) or requiring grad (torch),
            or overlapping one of ``reads``.
    """
    where = placement_of(x, name)
    if where != placement:
        raise TypeError(f"{name} must be an array of the op's inputs' kind, {placement}; got {where}")
    require_dtype(x, name, (dtype,))
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(x.shape)}")
    if not (x.is_contiguous() if where.framework == "torch" else x.flags.c_contiguous):
        raise ValueError(f"{name} must be C-contiguous")
    if where.framework == "numpy" and not x.flags.writeable:
        raise ValueError(f"{name} is read-only")
    if where.framework == "torch" and x.requires_grad:
        raise ValueError(f"{name} requires grad: the op writes into it outside autograd")
    first, last = _byte_range(x)
    for other_name, other in reads.items():
        other_first, other_last = _byte_range(other)
        if first < other_last and other_first < last:
            raise ValueError(f"{name} shares memory with {other_name}")
    return x


def to_dlpack(x: Any, placement: Placement) -> Any:
    """Exports ``x`` (already on ``placement``) as a DLPack capsule for the kernels.

    CUDA arrays are exported for the caller's current stream, so the producer orders its pending
    work before ours without a device-wide synchronisation.
    """
    if framework_of(x) == "torch":
        x = x.detach()
    kwargs: dict[str, Any] = {}
    if placement.is_cuda:
        stream = placement.stream()
        # DLPack reserves 0; the legacy default stream is spelled 1.
        kwargs["stream"] = stream if stream != 0 else 1
    try:
        # Versioned capsules carry a read-only flag, so read-only numpy arrays export too.
        return x.__dlpack__(max_version=(1, 0), **kwargs)
    except TypeError:
        return x.__dlpack__(**kwargs)
