"""The one vocabulary of input checks: scalars, the data containers' host arrays and config fields
here; framework arrays (numpy/torch/cupy) in :mod:`cion_fast._arrays`; ragged offsets in
:func:`cion_fast.ops.as_offsets`.

The policy, for every op, config dataclass and CLI flag:

* a value of the wrong **type** is a ``TypeError``; a value of the right type outside its range is a
  ``ValueError``; both name the argument and say what is accepted;
* integers are checked against int64-safe bounds before anything multiplies, adds or allocates with
  them (no ``OverflowError`` from a C conversion, no wrap-around), and sizes that would allocate more
  than the machine's memory are refused up front (:func:`check_allocation`) instead of being killed;
* bools are flags, never integers; numpy scalars count as their Python kind.

Config dataclasses declare each field's check once, in its metadata (:func:`checked`), and validate
with :func:`validate_fields`; the CLI reads the same metadata for its help (:func:`describe`).

Example:
    >>> check_int(3, "k1", 1)
    3
    >>> check_int(2**64, "window", 1)
    Traceback (most recent call last):
    ...
    ValueError: window must be <= 2**63 - 1 (int64), got 18446744073709551616
    >>> check_real(float("nan"), "threshold", -1, 1)
    Traceback (most recent call last):
    ...
    ValueError: threshold must be a finite number in [-1, 1], got nan
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Callable, Iterable, Sequence

import numpy as np

INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1


def _bound_text(value: float) -> str:
    for exponent in (63, 64):
        if value == 2**exponent - 1:
            return f"2**{exponent} - 1"
    if value == -2**63:
        return "-2**63"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _range_text(low: Any, high: Any) -> str:
    return f"in [{_bound_text(low)}, {_bound_text(high)}]"


def check_int(value: Any, name: str, low: int = -INT64_MAX - 1, high: int | None = INT64_MAX) -> int:
    """An integer in ``[low, high]`` (bools refused) as a Python int.

    ``high=None`` means no upper bound beyond the int64 range. Raises TypeError for a non-integer,
    ValueError outside the range.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    upper = INT64_MAX if high is None else high
    if upper == INT64_MAX and low <= value:  # no bound of its own: the int64 range is the limit
        if value > upper:
            raise ValueError(f"{name} must be <= 2**63 - 1 (int64), got {value}")
    elif upper == INT64_MAX:
        raise ValueError(f"{name} must be >= {_bound_text(low)}, got {value}")
    elif not low <= value <= upper:
        raise ValueError(f"{name} must be {_range_text(low, upper)}, got {value}")
    return value


def check_real(value: Any, name: str, low: float = -math.inf, high: float = math.inf) -> float:
    """A finite real number in ``[low, high]`` as a Python float (bools refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not (math.isfinite(value) and low <= value <= high):
        where = "" if (low, high) == (-math.inf, math.inf) else f" {_range_text(low, high)}"
        raise ValueError(f"{name} must be a finite number{where}, got {value}")
    return value


def check_positive(value: Any, name: str) -> float:
    """A finite real number > 0 (learning rates, temperatures)."""
    value = check_real(value, name)
    if not value > 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def check_text(value: Any, name: str) -> str:
    """A non-empty string (names, devices, paths)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__} {value!r}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    return value


def check_type(value: Any, name: str, kinds: tuple[type, ...]) -> Any:
    """Only the type is checked (the contents are checked where they are used)."""
    if not isinstance(value, kinds):
        raise TypeError(f"{name} must be a {' or '.join(k.__name__ for k in kinds)}, got {type(value).__name__} {value!r}")
    return value


def is_digits(text: str) -> bool:
    """True for a non-empty run of the ASCII digits 0-9. ``str.isdigit`` alone also takes '０'
    (fullwidth), '٣' (Arabic-Indic) and '²', which ``int`` then reads, or refuses."""
    return text.isascii() and text.isdigit()


def parse_int(text: str, name: str, low: int = -INT64_MAX - 1) -> int:
    """The integer ``text`` spells in ASCII digits (a leading "-" allowed), in ``[low, 2**63 - 1]``:
    a number read from a file name or a list file, ``name`` saying which (and where).

    Example:
        >>> parse_int("000451", "frame of a.jpg")
        451
        >>> parse_int("０４５１", "frame of a.jpg")
        Traceback (most recent call last):
        ...
        ValueError: frame of a.jpg must be an int64 integer in ASCII digits, got '０４５１'
    """
    digits = text[1:] if text.startswith("-") else text
    # int() refuses text of over 4300 digits; no file name pads a number to 100
    if not is_digits(digits) or len(digits) > 100:
        raise ValueError(f"{name} must be an int64 integer in ASCII digits, got {text[:40]!r}")
    return check_int(int(text), name, low)


def check_probability(value: Any, name: str) -> float:
    """A real number in [0, 1]."""
    return check_real(value, name, 0.0, 1.0)


def check_flag(value: Any, name: str) -> bool:
    """A bool (numpy bools too); 0/1 and strings are refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def check_choice(value: Any, name: str, choices: Iterable[Any]) -> Any:
    """One of ``choices`` (compared with ==; a value of another type is a TypeError)."""
    choices = tuple(choices)
    kinds = {type(choice) for choice in choices}
    if not isinstance(value, tuple(kinds)):
        raise TypeError(f"{name} must be one of {', '.join(map(repr, choices))}, got {type(value).__name__} {value!r}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


@functools.lru_cache(maxsize=1)
def memory_bytes() -> int:
    """This machine's physical memory in bytes (a large value when the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 2**50


def available_memory_bytes() -> int:
    """The memory the OS could give this process now (Linux: ``MemAvailable``; elsewhere the
    physical memory)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return memory_bytes()


# Requests below this size are never refused: reading /proc/meminfo costs more than they do.
_ALWAYS_GRANTED_BYTES = 1 << 28
# A request for nearly all available memory leaves nothing for the op's own temporaries and the
# rest of the process: the out-of-memory killer would end it, so only this share is granted.
_USABLE_SHARE = 0.85


def check_bytes(needed: int, subject: str, purpose: str) -> None:
    """Refuses a request for ``needed`` bytes for ``purpose`` that the machine cannot give now;
    ``subject`` names the argument that asks for it. A clear ValueError up front beats a
    MemoryError, or the kernel's out-of-memory killer, halfway through.

    Example:
        >>> check_bytes(2**80, "query_features and gallery_features", "the [Q, G] float32 output")
        Traceback (most recent call last):
        ...
        ValueError: query_features and gallery_features: the [Q, G] float32 output needs 1.13e+15 GiB, more than the ... GiB of memory this machine has available
    """
    if needed <= _ALWAYS_GRANTED_BYTES:
        return
    usable = int(available_memory_bytes() * _USABLE_SHARE)
    if needed > usable:
        raise ValueError(f"{subject}: {purpose} needs {needed / 2**30:.3g} GiB, more than the {usable / 2**30:.3g} GiB "
                         "of memory this machine has available")


def check_allocation(count: int, itemsize: int, name: str, what: str) -> None:
    """Refuses ``count`` items of ``itemsize`` bytes (the integer argument ``name``) that the
    machine cannot give now (:func:`check_bytes`). Python ints do not wrap: the product is exact."""
    check_bytes(int(count) * int(itemsize), f"{name} = {count}", what)


# ---- host arrays of the data containers (Tracklets, ImageSet) ------------------------------------

def int_array(value, name: str, length: int | None = None) -> np.ndarray:
    """``value`` as a C-contiguous 1-D int64 array; integer dtypes only (bool and float refused),
    of ``length`` entries when given."""
    arr = np.asarray(value)
    if arr.size == 0 and arr.dtype == np.float64:  # an empty list
        arr = arr.astype(np.int64)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array (int64; int32 accepted), got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {list(arr.shape)}")
    if length is not None and len(arr) != length:
        raise ValueError(f"{name} must have {length} entries, got {len(arr)}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def is_path_array(value) -> bool:
    """True for a 1-D numpy array of strings (image paths)."""
    return isinstance(value, np.ndarray) and value.dtype.kind in "US" and value.ndim == 1


def image_array(value: np.ndarray, name: str) -> np.ndarray:
    """Checks uint8 [n, H, W, 3]."""
    if value.dtype != np.uint8:
        raise TypeError(f"{name} must be uint8 [n, H, W, 3], got dtype {value.dtype}")
    if value.ndim != 4 or value.shape[3] != 3:
        raise ValueError(f"{name} must be uint8 [n, H, W, 3], got shape {list(value.shape)}")
    return value


def path_list(value, name: str) -> list[str]:
    """A sequence of str / ``os.PathLike`` (or a 1-D string array) as a list of str."""
    if is_path_array(value):
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence of image paths, got {type(value).__name__}")
    for i, p in enumerate(value):
        if not isinstance(p, (str, os.PathLike)):
            raise TypeError(f"{name}[{i}] must be an image path (str or os.PathLike), got {type(p).__name__}")
    return [os.fspath(p) for p in value]


# ---- config dataclasses: each field's check declared once, in its metadata ---------------------

def checked(default: Any, check: Callable[..., Any] | None = None, *args: Any, optional: bool = False,
            help: str = "", factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field that declares, once, what it accepts and what it means.

    :func:`validate_fields` runs ``check(value, name, *args)`` (None is also accepted when
    ``optional``); the CLI builds its flags and help from the same metadata (``help`` and
    :func:`describe`). ``factory`` replaces ``default`` for mutable defaults (dicts).

    Example:
        >>> @dataclasses.dataclass
        ... class Config:
        ...     window: int = checked(8, check_int, 1, help="videos per range")
        ...     def __post_init__(self):
        ...         validate_fields(self)
        >>> Config(window=0)
        Traceback (most recent call last):
        ...
        ValueError: window must be >= 1, got 0
    """
    metadata = {"check": (check, args), "optional": optional, "help": help}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def validate_fields(instance: Any) -> None:
    """Runs every field's declared check (see :func:`checked`) in declaration order."""
    for field in dataclasses.fields(instance):
        check, args = field.metadata.get("check", (None, ()))
        value = getattr(instance, field.name)
        if check is None or (value is None and field.metadata.get("optional")):
            continue
        check(value, field.name, *args)


def describe(field: dataclasses.Field) -> str:
    """What a checked field accepts, for help texts: 'integer >= 1', 'number in [-1, 1]', ..."""
    check, args = field.metadata.get("check", (None, ()))
    if check is check_int:
        low = args[0] if args else -INT64_MAX - 1
        high = args[1] if len(args) > 1 else INT64_MAX
        return f"integer >= {low}" if high in (None, INT64_MAX) else f"integer in [{low}, {high}]"
    if check is check_real:
        if not args:
            return "finite number"
        return f"number >= {_bound_text(args[0])}" if args[1] == math.inf else f"number in [{_bound_text(args[0])}, {_bound_text(args[1])}]"
    if check is check_positive:
        return "number > 0"
    if check is check_probability:
        return "number in [0, 1]"
    if check is check_choice:
        return "one of " + ", ".join(map(str, args[0]))
    return ""
