"""Atomic file and directory writes: a reader sees the old version or the new one, never half.

Files are written next to their destination under a temporary name, flushed to disk and renamed
over the destination (``os.replace`` is atomic on POSIX and Windows within one filesystem).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Calls ``write(tmp_path)`` then renames ``tmp_path`` to ``path``; on error nothing changes.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> atomic_write(d / "a.txt", lambda p: p.write_text("hi")).read_text()
        'hi'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Writes ``payload`` as indented JSON, atomically.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> json.loads(atomic_write_json(d / "x.json", {"a": 1}).read_text())
        {'a': 1}
    """
    text = json.dumps(payload, indent=2, sort_keys=True)
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_write_dir(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Calls ``write(tmp_dir)`` on a fresh temporary directory, then renames it to ``path``.

    ``path`` must not exist yet (directories cannot be replaced atomically).

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> out = atomic_write_dir(d / "ckpt", lambda p: (p / "f").write_text("x"))
        >>> sorted(q.name for q in out.iterdir())
        ['f']
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        write(tmp_path)
        for item in tmp_path.iterdir():
            with open(item, "rb+") as f:
                os.fsync(f.fileno())
        os.rename(tmp_path, path)
    except BaseException:
        shutil.rmtree(tmp_path, ignore_errors=True)
        raise
    _fsync_dir(path.parent)
    return path
