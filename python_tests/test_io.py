"""Writing to disk: atomic outputs get the modes a plain open/mkdir would give them, and a
checkpoint prune killed halfway leaves only what the next run removes."""

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
