"""Atomic file and directory writes (a reader sees the old version or the new one, never half), and
the readers of numpy files and text lists that turn damage into a ValueError naming the file.

Files are written next to their destination under a temporary name, flushed to disk and renamed
over the destination (``os.replace`` is atomic on POSIX and Windows within one filesystem). A
write that fails (a full disk, a read-only filesystem) is an :class:`OutputError` naming the
destination, never the temporary name.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
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


def _temporary_prefix(target: Path) -> str:
    """``.NAME.``, how every temporary name of ``target`` starts; NAME is cut to 200 characters, so
    a valid target name never makes a temporary one too long for the filesystem (255)."""
    return f".{target.name[:200]}."


def _temporary_name(target: Path) -> Path:
    """A fresh name ``.NAME.<pid>.<random>.tmp`` next to ``target``."""
    return target.with_name(f"{_temporary_prefix(target)}{os.getpid()}.{secrets.token_hex(6)}.tmp")


class OutputError(OSError):
    """An output that could not be written (a full disk, a read-only filesystem, a name too long
    for it), naming the output the caller asked for; ``errno`` is the system's number when known.

    Example:
        >>> str(OutputError(28, "cannot write out.npz: No space left on device"))
        'cannot write out.npz: No space left on device'
    """

    def __str__(self) -> str:
        return str(self.strerror)


# How Rust-backed writers (safetensors) report the OSError behind their own exception type.
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


@contextlib.contextmanager
def _naming(target: Path) -> Iterator[None]:
    """A failure to write ``target`` through its temporary is an :class:`OutputError` naming
    ``target`` (a file inside a temporary directory: inside ``target``), not the temporary name
    or no file at all (a full disk's ``write`` names none). It is an OSError about a temporary or
    about no file, numpy's bare OSError ("Not enough free space", no errno) or a Rust writer's
    error carrying an OS error number; errors about other files and the callers' own pass unchanged."""
    prefix = str(target.with_name(_temporary_prefix(target)))
    try:
        yield
    except OSError as error:
        filename = None if error.filename is None else os.fsdecode(error.filename)
        if isinstance(error, OutputError) or (filename is not None and not filename.startswith(prefix)) \
                or (error.errno is None and type(error) is not OSError):
            raise
        inside = "" if filename is None else filename[len(prefix):].partition(os.sep)[2]
        reason = error.strerror or str(error)
        raise OutputError(error.errno, f"cannot write {target / inside if inside else target}: {reason}") from error
    except Exception as error:
        found = _RUST_OS_ERROR.search(str(error))
        if found is None:
            raise
        number = int(found[1])
        raise OutputError(number, f"cannot write {target}: {os.strerror(number)}") from error


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
    with _naming(path):
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
    with _naming(target):
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
                old = Path(tempfile.mkdtemp(prefix=f"{_temporary_prefix(target)}old-", dir=target.parent))
                os.replace(target, old / "d")
            os.replace(tmp, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    _fsync_dir(target.parent)


def read_json(path: str | os.PathLike, what: str) -> Any:
    """The JSON document in ``path``; ValueError naming ``what`` and the file when it is missing,
    unreadable or not JSON.

    Example:
        >>> bad = Path(tempfile.mkdtemp()) / "x.json"
        >>> _ = bad.write_text("{")
        >>> read_json(bad, "recipes")
        Traceback (most recent call last):
        ...
        ValueError: recipes: .../x.json is not JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{what}: cannot read {path} ({error})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{what}: {path} is not JSON ({error})") from None


def text_lines(path: str | os.PathLike, what: str) -> Iterator[tuple[int, str]]:
    """(number from 1, text) of each line of the UTF-8 text file ``path``; a line that is not
    UTF-8 is a ValueError naming the file (``what``) and the line.

    Example:
        >>> import tempfile
        >>> listed = Path(tempfile.mkdtemp()) / "list.txt"
        >>> _ = listed.write_bytes(b"a.jpg 1\\n\\xff.jpg 2\\n")
        >>> list(text_lines(listed, "image list"))
        Traceback (most recent call last):
        ...
        ValueError: image list .../list.txt:2 is not UTF-8 text: ...
    """
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"{what} {path}:{number} is not UTF-8 text: {error}") from error
            yield number, line.rstrip("\r\n")


# What numpy raises for a truncated or damaged .npy/.npz: its header parser can end in a
# tokenizer or syntax error, a zip archive in BadZipFile, an encrypted member or an unknown
# compression method in RuntimeError (NotImplementedError).
DAMAGED_FILE_ERRORS = (OSError, ValueError, EOFError, KeyError, SyntaxError, RuntimeError, tokenize.TokenError,
                       zipfile.BadZipFile)


def _npy_header(f: Any) -> tuple[tuple[int, ...], bool, Any]:
    """(shape, fortran_order, dtype) of the .npy header at ``f``'s position; ``f`` is left at the data."""
    import numpy as np

    version = np.lib.format.read_magic(f)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read_header(f)


def _check_claimed_sizes(path: str | os.PathLike) -> None:
    """Refuses an array header (of the .npy file, or of any member of the .npz archive) that claims
    more bytes than its file or member holds: numpy allocates the claimed size before reading, so
    a damaged header would otherwise be a MemoryError for terabytes."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                with archive.open(info) as f:
                    shape, _, dtype = _npy_header(f)
                    _check_fits(info.filename, math.prod(shape) * dtype.itemsize, info.file_size - f.tell())
    else:
        with open(path, "rb") as f:
            shape, _, dtype = _npy_header(f)
            _check_fits(os.path.basename(path), math.prod(shape) * dtype.itemsize, os.fstat(f.fileno()).st_size - f.tell())


def _check_fits(name: str, claimed: int, held: int) -> None:
    if claimed > held:
        raise ValueError(f"{name}: its header claims {claimed} bytes of data, the file holds {held}")


def _map_npz_member(path: str | os.PathLike, archive: zipfile.ZipFile, member: str) -> Any:
    """A read-only ``np.memmap`` of ``member`` (``NAME.npy``) of an .npz written by ``np.savez``,
    or None when it cannot be mapped (compressed by ``np.savez_compressed``, Fortran order, objects).
    Its size was checked against the archive entry's (:func:`_check_claimed_sizes`)."""
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
        shape, fortran_order, dtype = _npy_header(f)
        offset = f.tell()
    if fortran_order or dtype.hasobject or math.prod(shape) == 0:  # (an empty array cannot be mapped)
        return None
    return np.memmap(path, dtype=dtype, mode="r", shape=tuple(shape), offset=offset)


def _read_numpy(path: str | os.PathLike, **kwargs: Any) -> Any:
    """What :func:`load_numpy` returns; numpy's errors and :func:`_check_claimed_sizes`' pass through."""
    import numpy as np

    _check_claimed_sizes(path)
    loaded = np.load(path, allow_pickle=False, **kwargs)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        return loaded
    with loaded:
        if kwargs.get("mmap_mode") is None:
            return {name: loaded[name] for name in loaded.files}
        with zipfile.ZipFile(path) as archive:
            mapped = {name: _map_npz_member(path, archive, f"{name}.npy") for name in loaded.files}
        return {name: loaded[name] if mapped[name] is None else mapped[name] for name in loaded.files}


def load_numpy(path: str | os.PathLike, what: str, archive: bool | None = None, **kwargs: Any) -> Any:
    """``np.load(path, allow_pickle=False, **kwargs)``; a damaged file is a ValueError naming it.

    For ``.npz`` archives every member is read before returning (a dict), so damage inside the
    archive is found here too. With ``mmap_mode="r"`` the members of an uncompressed archive
    (``np.savez``) are memory-mapped instead (numpy itself maps only ``.npy`` files), so a large
    feature matrix is paged in as it is used, never copied whole into memory. ``archive``: True
    when ``path`` must be an .npz archive, False when it must be a single array (.npy), None for
    either; the other kind is a ValueError naming the file.

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
        >>> load_numpy(archive, "frame array", archive=False)
        Traceback (most recent call last):
        ...
        ValueError: frame array ... is an .npz archive, expected a single array (.npy)
    """
    try:
        loaded = _read_numpy(path, **kwargs)
    except DAMAGED_FILE_ERRORS as error:
        raise ValueError(f"{what} {path} is unreadable (truncated or corrupt?): {type(error).__name__}: {error}") from error
    if archive is not None and isinstance(loaded, dict) != archive:
        found, expected = ("a single array", "an .npz archive") if archive else ("an .npz archive", "a single array (.npy)")
        raise ValueError(f"{what} {path} is {found}, expected {expected}")
    return loaded


def archive_field(fields: dict[str, Any], name: str, path: str | os.PathLike, what: str, kind: str, ndim: int) -> Any:
    """Field ``name`` of an archive read by :func:`load_numpy`, checked: present, of ``kind``
    (``"int64"``, ``"float"``: float16/32/64, ``"str"``) and of ``ndim`` dimensions; else a
    ValueError naming the file and the field.

    Example:
        >>> import numpy as np
        >>> archive_field({"version": np.array("1")}, "version", "t/index.npz", "tracklet index", "int64", 0)
        Traceback (most recent call last):
        ...
        ValueError: tracklet index t/index.npz: field 'version' must be int64 0-D, got <U1 []
    """
    if name not in fields:
        raise ValueError(f"{what} {path} has no field '{name}' (corrupt or not a {what}?)")
    value = fields[name]
    kinds = {"int64": value.dtype == "int64", "float": value.dtype.kind == "f", "str": value.dtype.kind == "U"}
    if not kinds[kind] or value.ndim != ndim:
        raise ValueError(f"{what} {path}: field '{name}' must be {kind} {ndim}-D, got {value.dtype} {list(value.shape)}")
    return value
