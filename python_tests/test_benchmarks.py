"""The benchmark suite stays runnable: every ``benchmarks/bench_<op>.py`` correctness check and
every benchmarked call run once (pytest-benchmark's ``--benchmark-disable``: nothing is timed
here), and ``report.py`` turns a pytest-benchmark JSON into the results page."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_every_benchmark_runs_once_with_its_correctness_check(tmp_path):
    # Run from benchmarks/ with this process's sys.path, so cion_fast comes from where the tests
    # import it (the installed package in CI, the source tree in a developer build).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", ".", "--benchmark-disable", "-q", "-x", "-p", "no:cacheprovider",
                           "--basetemp", str(tmp_path / "base")], cwd=BENCHMARKS, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout


def test_report_names_the_machine_and_the_ratios(tmp_path):
    row = {"group": "op 10 x 10", "params": None, "stats": {"median": 0.002, "min": 0.001, "rounds": 3}}
    data = {"datetime": "2026-12-04T00:00:00", "machine_info": {"python_version": "3.11", "cion_fast_bench": {
        "cpu_model": "Test CPU", "cores": 2, "load_average": [0.5, 0.4, 0.3], "device": "cpu", "full": False}},
        "benchmarks": [{**row, "name": "test_cion_fast", "extra_info": {"role": "cion_fast", "peak_mb": 1.0}},
                       {**row, "name": "test_reference", "stats": {"median": 0.2, "min": 0.2, "rounds": 1},
                        "extra_info": {"role": "reference", "peak_mb": 9.0}},
                       {**row, "name": "test_floor", "stats": {"median": 0.001, "min": 0.001, "rounds": 3},
                        "extra_info": {"role": "floor", "note": "one read"}}]}
    source = tmp_path / "run.json"
    source.write_text(json.dumps(data))
    out = tmp_path / "RESULTS.md"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "report.py"), str(source), "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "Test CPU (2 cores)" in text and "load average at the start: 0.50" in text
    assert "| op 10 x 10 | **2.00 ms** | 200.00 ms (100.0× slower) | — | 2.00× the floor (one read) | 1.0 MB |" in text
    missing = subprocess.run([sys.executable, str(BENCHMARKS / "report.py"), str(tmp_path / "nope.json")], capture_output=True, text=True)
    assert missing.returncode == 2 and "no such file" in missing.stderr
