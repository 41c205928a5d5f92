"""Atomic writes (cion_fast._io): outputs get the modes a plain open/mkdir would give them."""

from __future__ import annotations

import os
import stat

import pytest

from cion_fast._io import atomic_directory, atomic_write


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
