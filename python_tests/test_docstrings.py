"""Every docstring example in the package runs and prints what it says (doctest)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import tempfile

import pytest

import cion_fast


def _modules():
    names = ["cion_fast"]
    for info in pkgutil.walk_packages(cion_fast.__path__, prefix="cion_fast."):
        if info.name.rsplit(".", 1)[-1] != "_C":
            names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    # The examples make scratch directories with tempfile.mkdtemp(); rooting tempfile in
    # tmp_path lets pytest remove them (a finetune example alone writes ~250 MB of checkpoints).
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
