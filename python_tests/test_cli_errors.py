"""The CLI's error policy: bad input is one line and exit 2; an internal error keeps its traceback."""

from __future__ import annotations

import pytest

from cion_fast import cli


def test_a_bug_keeps_its_traceback(monkeypatch):
    def broken(args):
        return len(None)  # Python's TypeError: a bug, not bad input

    monkeypatch.setitem(cli._COMMANDS, "info", ("info", broken))
    with pytest.raises(TypeError, match="NoneType"):
        cli.main(["info"])


def test_a_check_of_the_package_is_one_line(capsys):
    assert cli.main(["demo", "--quick", "--finetune-steps", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cion-fast demo: error: finetune_steps must be >= 0") and len(err.strip().splitlines()) == 1


def test_a_missing_path_is_one_line(tmp_path, capsys):
    assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "nowhere.safetensors"), "--data", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
