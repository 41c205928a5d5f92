"""Runs the property-based suite (``properties_ops.py``) and the hostile-input sweep
(``tools/hostile_inputs.py``) in child processes: a crash there fails these tests, never pytest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent

pytest.importorskip("hypothesis", reason="the property suite needs hypothesis (in the test extra)")


def _run(command: list[str], timeout: int) -> subprocess.CompletedProcess:
    # From python_tests/, with PYTHONPATH made absolute: the child imports the cion_fast this test
    # process imports (the installed package, or an in-place build via PYTHONPATH=.), never the
    # source tree's uncompiled copy through the current directory.
    path = os.pathsep.join(os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)
    env = {**os.environ, "PYTHONPATH": path}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=HERE, env=env)
    assert result.returncode >= 0, f"the child process was killed by signal {-result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_property_suite_in_a_child_process():
    result = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "properties_ops.py"], 600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]


def test_hostile_input_sweep_has_no_crash_and_no_unclean_error():
    result = _run([sys.executable, str(HERE.parent / "tools" / "hostile_inputs.py"), "--verbose"], 600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " 0 unclean errors, 0 crashes" in result.stdout
