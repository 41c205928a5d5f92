"""The package itself: build information, CUDA availability, the command line."""

from __future__ import annotations

import json

import cion_fast
from cion_fast import cli


def test_build_info_reports_what_was_compiled():
    info = cion_fast.build_info()
    assert info["version"] == cion_fast.__version__
    assert isinstance(info["openmp"], bool) and info["openmp_max_threads"] >= 1
    assert isinstance(info["cuda"], bool)
    assert info["multicrop_cpu_copy"] in ("avx512", "avx2", "baseline")
    if info["cuda"]:
        assert info["cuda_version"] and info["cuda_architectures"]
    else:
        assert info["cuda_version"] is None and info["cuda_architectures"] == []


def test_cuda_available_is_false_without_cuda_build_or_gpu():
    available = cion_fast.cuda_available()
    assert isinstance(available, bool)
    if not cion_fast.build_info()["cuda"]:
        assert available is False


def test_cli_info_prints_json(capsys):
    assert cli.main(["info"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["version"] == cion_fast.__version__ and "cuda_available" in printed
