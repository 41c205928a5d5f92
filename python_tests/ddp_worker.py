"""Worker of test_pretrain_trainer.py::test_torchrun_two_processes_gloo_ranks_agree.

Run by ``torchrun --nproc_per_node 2 ddp_worker.py TRACKLETS LABELS OUT``: trains 3 CION steps on
the CPU (gloo), then every rank writes its final method state and its first batch to
``OUT/rank<r>.safetensors`` so the test can check that ranks agree and saw different identities.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from cion_fast.data import Tracklets
from cion_fast.pretrain import PretrainConfig, Trainer


def main(tracklets_dir: str, labels_path: str, out: str) -> None:
    frames = Tracklets.load(tracklets_dir).frames
    labels = np.load(labels_path)
    cfg = PretrainConfig(method="cion", arch="test_vit", steps=3, batch_size=8, k_values=(2, 4), k_boundaries=(0.5,), out_dim=128,
                         head_hidden_dim=32, head_bottleneck_dim=16, base_lr=0.05, warmup=0.0, progress=False, log_every=1, device="cpu",
                         multicrop={"global_size": (64, 32), "local_size": (32, 16), "n_local": 2})
    trainer = Trainer(cfg, frames, labels, Path(out) / "run")
    first = torch.from_numpy(trainer.plan.batch(0).copy())
    trainer.fit()
    state = {k: v.detach().clone().contiguous() for k, v in trainer.method.state_dict().items() if not k.endswith("running_mean")}
    state["batch.first"] = first
    save_file(state, str(Path(out) / f"rank{trainer.dist.rank}.safetensors"))
    trainer.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
