"""Worker of test_large_worlds.py: a memory-mapped tracklet world of WORLD_MB megabytes of frames
goes through extraction (stripe, a timm backbone) and pre-training while
``cion_fast._memory.PeakMemory`` samples the process's anonymous resident memory (the heap, not
the page cache of the mapped file).
Prints one JSON line: the growth of each stage in MB, after a warm-up of each on a few frames.

    python memory_worker.py DIR WORLD_MB
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def write_world(root: Path, world_mb: int):
    """A tracklet directory whose frames.npy (256x128 crops) is written in chunks, never whole in memory."""
    from cion_fast.data import Tracklets

    frame_bytes = 256 * 128 * 3
    m = (world_mb * 2**20 // frame_bytes) // 10 * 10
    source = np.lib.format.open_memmap(root / "source.npy", mode="w+", dtype=np.uint8, shape=(m, 256, 128, 3))
    rng = np.random.default_rng(0)
    for i in range(0, m, 200):
        source[i:i + 200] = rng.integers(0, 256, (min(200, m - i), 256, 128, 3), dtype=np.uint8)
    source.flush()
    n = m // 10
    tracklets = Tracklets(source, np.arange(0, m + 1, 10), np.arange(n) // 30, np.arange(n) % 3, np.tile(np.arange(10), n),
                          np.repeat(np.arange(n), 10))
    tracklets.save(root / "tracklets")
    del tracklets, source
    (root / "source.npy").unlink()


def main(directory: str, world_mb: str) -> None:
    from cion_fast._memory import PeakMemory
    from cion_fast.data import Tracklets
    from cion_fast.features import extract_to_file
    from cion_fast.pretrain import PretrainConfig, Trainer

    root = Path(directory)
    write_world(root, int(world_mb))
    tracklets = Tracklets.load(root / "tracklets")  # frames memory-mapped
    assert isinstance(tracklets.frames, np.memmap)
    few = tracklets.select(np.arange(tracklets.num_frames) < 100)
    growth = {"frames_mb": tracklets.frames.nbytes / 2**20}
    for spec, size in (("stripe", None), ("timm:test_resnet", (64, 32))):
        extract_to_file(spec, few, root / "warm.npz", batch_size=64, size=size, progress=False)  # imports, first allocations
        with PeakMemory() as peak:
            extract_to_file(spec, tracklets, root / f"{spec.replace(':', '_')}.npz", batch_size=64, size=size, progress=False)
        growth[spec] = peak.anon_peak_bytes / 2**20
    cfg = PretrainConfig(method="cion", arch="test_vit", steps=6, batch_size=8, k_values=(2,), k_boundaries=(), out_dim=64,
                         head_hidden_dim=32, head_bottleneck_dim=16, progress=False, device="cpu", checkpoint_every=10**6,
                         multicrop={"global_size": (64, 32), "local_size": (32, 16), "n_local": 2})
    trainer = Trainer(cfg, tracklets.frames, tracklets.identity, tempfile.mkdtemp())
    trainer.fit(until_step=1)
    with PeakMemory() as peak:
        trainer.fit()
    growth["pretrain"] = peak.anon_peak_bytes / 2**20
    trainer.close()
    print(json.dumps(growth))


if __name__ == "__main__":
    main(*sys.argv[1:3])
