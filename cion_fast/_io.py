"""Atomic file and directory writes (a reader sees the old version or the new one, never half), and
the one reader of numpy files that turns damage into a ValueError naming the file.

Files are written next to their destination under a temporary name, flushed to disk and renamed
over the destination (``os.replace`` is atomic on POSIX and Windows within one filesystem).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
import tokenize
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator


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


def _temporary_name(target: Path) -> Path:
    """A fresh name ``.NAME.<pid>.<random>.tmp`` next to ``target``."""
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")


def _new_file(target: Path) -> Path:
    """Creates an empty temporary file next to ``target`` as a plain ``open`` would (mode 0666
    under the umask, default ACLs): mkstemp's 0600 would survive the rename and lock out the
    rest of a team sharing the run directory."""
    while True:
        path = _temporary_name(target)
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return path
        except FileExistsError:
            continue


def _new_directory(target: Path) -> Path:
    """Creates an empty temporary directory next to ``target`` as a plain ``mkdir`` would (0777
    under the umask, a setgid parent's group bit kept), not mkdtemp's 0700."""
    while True:
        path = _temporary_name(target)
        try:
            os.mkdir(path, 0o777)
            return path
        except FileExistsError:
            continue


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
    tmp_path = _new_file(path)
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


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yields a fresh temporary directory ``.NAME.XXXX.tmp`` next to ``target``; on success its files
    are flushed to disk and it is renamed to ``target``, on error it is removed. Readers never see a
    half-written directory; a killed writer leaves only the ``.tmp`` directory (pretraining removes
    its own at start, :func:`cion_fast.training.checkpoint.remove_stale_temporaries`).

    The one rule for every output directory: an existing ``target`` is replaced only with
    ``overwrite=True`` (else FileExistsError); missing parent directories are created.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> with atomic_directory(d / "ckpt") as tmp:
        ...     _ = (tmp / "f").write_text("x")
        >>> sorted(q.name for q in (d / "ckpt").iterdir())
        ['f']
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists (pass overwrite=True to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_directory(target)
    try:
        yield tmp
        for item in tmp.rglob("*"):
            if item.is_file():
                with open(item, "rb+") as f:
                    os.fsync(f.fileno())
        old = None
        if target.exists():
            if not overwrite:
                raise FileExistsError(f"{target} appeared while writing (pass overwrite=True to replace it)")
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "d")
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(target.parent)


# What numpy raises for a truncated or damaged .npy/.npz: its header parser can end in a
# tokenizer or syntax error, a zip archive in BadZipFile.
DAMAGED_FILE_ERRORS = (OSError, ValueError, EOFError, KeyError, SyntaxError, tokenize.TokenError, zipfile.BadZipFile)


def _map_npz_member(path: str | os.PathLike, archive: zipfile.ZipFile, member: str) -> Any:
    """A read-only ``np.memmap`` of ``member`` (``NAME.npy``) of an .npz written by ``np.savez``,
    or None when it cannot be mapped (compressed by ``np.savez_compressed``, Fortran order, objects)."""
    import struct

    import numpy as np

    info = archive.getinfo(member)
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)  # the local file header; its name and extra field lengths say where the data starts
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise ValueError(f"member {member}: bad local header")
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(f)
        offset = f.tell()
    if fortran_order or dtype.hasobject or int(np.prod(shape)) == 0:  # (an empty array cannot be mapped)
        return None
    if offset + dtype.itemsize * int(np.prod(shape)) > info.header_offset + 30 + name_length + extra_length + info.file_size:
        raise ValueError(f"member {member}: array larger than its archive entry")
    return np.memmap(path, dtype=dtype, mode="r", shape=tuple(shape), offset=offset)


def load_numpy(path: str | os.PathLike, what: str, **kwargs: Any) -> Any:
    """``np.load(path, allow_pickle=False, **kwargs)``; a damaged file is a ValueError naming it.

    For ``.npz`` archives every member is read before returning (a dict), so damage inside the
    archive is found here too. With ``mmap_mode="r"`` the members of an uncompressed archive
    (``np.savez``) are memory-mapped instead (numpy itself maps only ``.npy`` files), so a large
    feature matrix is paged in as it is used, never copied whole into memory.

    Example:
        >>> import tempfile
        >>> bad = Path(tempfile.mkdtemp()) / "frames.npy"
        >>> _ = bad.write_bytes(b"\\x93NUMPY\\x01\\x00\\x10\\x00{'descr': <u1    ")
        >>> load_numpy(bad, "frame array")
        Traceback (most recent call last):
        ...
        ValueError: frame array ... is unreadable (truncated or corrupt?): ...
        >>> import numpy as np
        >>> archive = Path(tempfile.mkdtemp()) / "a.npz"
        >>> np.savez(archive, x=np.arange(6.0).reshape(2, 3))
        >>> mapped = load_numpy(archive, "archive", mmap_mode="r")["x"]
        >>> type(mapped).__name__, mapped[1].tolist()
        ('memmap', [3.0, 4.0, 5.0])
    """
    import numpy as np

    try:
        loaded = np.load(path, allow_pickle=False, **kwargs)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                if kwargs.get("mmap_mode") is None:
                    return {name: loaded[name] for name in loaded.files}
                with zipfile.ZipFile(path) as archive:
                    mapped = {name: _map_npz_member(path, archive, f"{name}.npy") for name in loaded.files}
                return {name: loaded[name] if mapped[name] is None else mapped[name] for name in loaded.files}
        return loaded
    except DAMAGED_FILE_ERRORS as error:
        raise ValueError(f"{what} {path} is unreadable (truncated or corrupt?): {type(error).__name__}: {error}") from error
