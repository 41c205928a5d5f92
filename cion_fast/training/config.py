"""What every run's config shares: the JSON round trip stored in each checkpoint, and the
comparison a resume makes against it.

A run config is a dataclass that inherits :class:`RunConfig`, declares its fields with
:func:`cion_fast._checks.checked`, has the fields ``device``, ``checkpoint_every``,
``keep_checkpoints``, ``log_every``, ``progress`` (which :class:`~cion_fast.training.TrainingRun`
reads), implements ``validate()``, and lists in ``resume_free`` the fields a resumed run may change.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, ClassVar

__all__ = ["RUNTIME_KEYS", "RunConfig"]

# Keys that only say how a run is executed, not what it computes: every run may change them on --resume.
RUNTIME_KEYS = ("device", "checkpoint_every", "keep_checkpoints", "log_every", "progress")


def _plain(value: Any) -> Any:
    """JSON-able form: tuples become lists, paths strings, recursively in lists and dicts."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


class RunConfig:
    """Mixin for run-config dataclasses: :meth:`to_dict`, :meth:`from_dict`, :meth:`differences`.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Demo(RunConfig):
        ...     size: tuple = (2, 3)
        ...     device: str = "cpu"
        >>> Demo().to_dict()
        {'size': [2, 3], 'device': 'cpu'}
        >>> Demo.from_dict({"size": [4, 5]})
        Demo(size=(4, 5), device='cpu')
        >>> Demo().differences(Demo(size=(4, 5), device="cuda"))
        {'size': ([2, 3], [4, 5])}
    """

    resume_free: ClassVar[tuple[str, ...]] = RUNTIME_KEYS

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field (tuples become lists, paths strings)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Inverse of :meth:`to_dict`: lists become tuples again where the field's default is a
        tuple; unknown keys are a ValueError naming them."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}")
        values = dict(data)
        for name, value in values.items():
            if isinstance(value, list) and isinstance(fields[name].default, tuple):
                values[name] = tuple(value)
        return cls(**values)

    def differences(self, other: "RunConfig", ignore: tuple[str, ...] | None = None) -> dict[str, tuple]:
        """``{field: (self value, other value)}`` for the fields that differ, except ``ignore``
        (default: :attr:`resume_free`, the fields a resumed run may change)."""
        ignore = self.resume_free if ignore is None else ignore
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (mine[k], theirs[k]) for k in mine if k not in ignore and mine[k] != theirs[k]}
