"""Writing to disk: atomic outputs get the modes a plain open/mkdir would give them, and a
checkpoint prune killed halfway leaves only what the next run removes. Reading: a damaged numpy
file or text list is a ValueError naming it."""

from __future__ import annotations

import os
import stat
import struct
import zipfile

import numpy as np
import pytest

from cion_fast._io import atomic_directory, atomic_write, load_numpy, text_lines


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)])
def test_atomic_outputs_follow_the_umask(tmp_path, mask, file_mode, dir_mode):
    old = os.umask(mask)
    try:
        written = atomic_write(tmp_path / "a.txt", lambda p: p.write_text("x"))
        with atomic_directory(tmp_path / "run") as tmp:
            (tmp / "f.txt").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE(written.stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == dir_mode


def test_a_setgid_team_directory_keeps_its_group_bit(tmp_path):
    team = tmp_path / "team"
    team.mkdir()
    os.chmod(team, 0o2775)
    with atomic_directory(team / "run") as tmp:
        (tmp / "f.txt").write_text("y")
    plain = team / "plain"
    plain.mkdir()
    assert stat.S_IMODE((team / "run").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    assert (team / "run").stat().st_mode & stat.S_ISGID


def test_a_prune_killed_halfway_leaves_only_what_the_next_run_removes(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from cion_fast.training import checkpoint as ck

    def save(step):
        return ck.write_checkpoint(tmp_path, step, {"w": torch.zeros(2)}, {"step": step}, {}, "", keep=2)

    save(1), save(2)
    real = ck.shutil.rmtree

    def killed(path, ignore_errors=False):  # deletes one file, then the process "dies"
        next(p for p in sorted(path.iterdir())).unlink()
        raise SystemExit("kill -9")

    monkeypatch.setattr(ck.shutil, "rmtree", killed)
    with pytest.raises(SystemExit):
        save(3)
    monkeypatch.setattr(ck.shutil, "rmtree", real)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]
    removed = ck.remove_stale_temporaries(tmp_path)
    assert [p.name for p in removed] == [f".step-00000001.{os.getpid()}.pruned.tmp"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000002", "step-00000003"]
    # an incomplete step-* folder (left by an older version's prune) is removed too
    (tmp_path / "checkpoints" / "step-00000000").mkdir()
    assert [p.name for p in ck.remove_stale_temporaries(tmp_path)] == ["step-00000000"]


def _npy_header(shape, descr="<i8"):
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode().ljust(117) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


@pytest.mark.parametrize("mmap_mode", [None, "r"])
def test_a_header_claiming_terabytes_is_a_damaged_file_not_a_memory_error(tmp_path, mmap_mode):
    (tmp_path / "a.npy").write_bytes(_npy_header((10**12,)))
    with zipfile.ZipFile(tmp_path / "b.npz", "w") as archive:  # np.savez's layout, one member's header damaged
        archive.writestr("frame.npy", _npy_header((10**12,)))
    for name in ("a.npy", "b.npz"):
        with pytest.raises(ValueError, match=rf"{name} is unreadable .*claims 8000000000000 bytes"):
            load_numpy(tmp_path / name, "index", mmap_mode=mmap_mode)


def test_load_numpy_names_an_array_or_archive_of_the_other_kind_and_encrypted_members(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(3))
    np.savez(tmp_path / "b.npz", x=np.arange(3))
    with pytest.raises(ValueError, match="a.npy is a single array, expected an .npz archive"):
        load_numpy(tmp_path / "a.npy", "index", archive=True)
    with pytest.raises(ValueError, match=r"b.npz is an .npz archive, expected a single array \(.npy\)"):
        load_numpy(tmp_path / "b.npz", "frame array", archive=False)
    raw = bytearray((tmp_path / "b.npz").read_bytes())
    for offset in (6, raw.find(b"PK\x01\x02") + 8):  # the encryption flag, local and central headers
        raw[offset] |= 1
    (tmp_path / "c.npz").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="c.npz is unreadable .*encrypted"):
        load_numpy(tmp_path / "c.npz", "index")


def test_text_lines_names_the_line_that_is_not_utf8(tmp_path):
    (tmp_path / "list.txt").write_bytes("a.jpg 1\r\n\u00e9.jpg 2\n".encode() + b"\xff\xfe.jpg 3\n")
    lines = text_lines(tmp_path / "list.txt", "image list")
    assert next(lines) == (1, "a.jpg 1") and next(lines) == (2, "\u00e9.jpg 2")
    with pytest.raises(ValueError, match="image list .*list.txt:3 is not UTF-8 text"):
        next(lines)
