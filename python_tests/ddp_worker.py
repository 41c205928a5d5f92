"""Worker of the 2-process torchrun (gloo) tests of pre-training and fine-tuning.

Run by ``torchrun --nproc_per_node 2 ddp_worker.py pretrain TRACKLETS LABELS OUT`` (3 CION steps)
or ``... ddp_worker.py finetune OUT`` (3 fine-tuning steps on a quick synthetic world), on the CPU;
then every rank writes its final network state and its first batch to ``OUT/rank<r>.safetensors``
so the test can check that ranks agree and saw different identities.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file


def pretrain_run(tracklets_dir: str, labels_path: str, out: str):
    from cion_fast.data import Tracklets
    from cion_fast.pretrain import PretrainConfig, Trainer

    frames = Tracklets.load(tracklets_dir).frames
    labels = np.load(labels_path)
    cfg = PretrainConfig(method="cion", arch="test_vit", steps=3, batch_size=8, k_values=(2, 4), k_boundaries=(0.5,), out_dim=128,
                         head_hidden_dim=32, head_bottleneck_dim=16, base_lr=0.05, warmup=0.0, progress=False, log_every=1, device="cpu",
                         multicrop={"global_size": (64, 32), "local_size": (32, 16), "n_local": 2})
    return Trainer(cfg, frames, labels, Path(out) / "run")


def finetune_run(out: str):
    from cion_fast.data.synth import WorldConfig, generate
    from cion_fast.finetune import FinetuneConfig, FinetuneRun

    world = generate(WorldConfig.quick(identities=20, train_identities=12, eval_identities=10, cameras=3, videos=3))
    cfg = FinetuneConfig(arch="resnet18", image_size=(64, 32), batch_size=8, steps=3, device="cpu", progress=False)
    return FinetuneRun(cfg, world.train, Path(out) / "run")


def main(kind: str, *args: str) -> None:
    run = pretrain_run(*args) if kind == "pretrain" else finetune_run(*args)
    out = args[-1]
    first = torch.from_numpy(run.plan.batch(0).copy())
    run.fit()
    state = {k: v.detach().clone().contiguous() for k, v in run._checkpoint_module().state_dict().items()
             if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    state["batch.first"] = first
    save_file(state, str(Path(out) / f"rank{run.dist.rank}.safetensors"))
    run.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
