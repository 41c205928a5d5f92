"""Frames never need to fit in memory: a memory-mapped tracklet world of 300 MB of frames goes
through extraction (stripe descriptor and a network) and pre-training while the process's
anonymous memory (its heap: what a materialised copy of the frames would occupy, unlike the page
cache of the mapped file) grows by less than a limit well below the frames' size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

WORLD_MB = 300
LIMIT_MB = 100  # a third of the frames: any stage that read them all into memory would exceed it


def test_memory_mapped_world_larger_than_the_limit_is_streamed(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    worker = Path(__file__).resolve().parent / "memory_worker.py"
    done = subprocess.run([sys.executable, str(worker), str(tmp_path), str(WORLD_MB)], env=env, capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    growth = json.loads(done.stdout.strip().splitlines()[-1])
    assert growth["frames_mb"] > 2 * LIMIT_MB
    for stage in ("stripe", "timm:test_resnet", "pretrain"):
        assert growth[stage] < LIMIT_MB, growth
