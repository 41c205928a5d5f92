"""Supervised fine-tuning (BoT strong baseline) on a tiny synthetic world: the triplet loss against a
float64 re-statement, augmentation and lr schedule, learning on a fixed batch, checkpoints that
load_pretrained reads, exact resume, the CLI and clear errors."""

from __future__ import annotations

import json
import shutil
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cion_fast import cli
from cion_fast.data.synth import WorldConfig, generate
from cion_fast.ops import IMAGENET_MEAN, IMAGENET_STD
from cion_fast.finetune import (
    FinetuneConfig,
    FinetuneModel,
    FinetuneRun,
    augment_batch,
    batch_hard_triplet_loss,
    evaluate_finetuned,
    finetune,
    load_finetuned,
    lr_at_step,
)
from cion_fast.models import build_backbone, load_pretrained
from cion_fast.training import read_checkpoint
from conftest import assert_ranks_agree, run_ddp_worker, signal_after_step

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def world():
    return generate(WorldConfig.quick(identities=20, train_identities=12, eval_identities=10, cameras=3, videos=3))


def tiny(**overrides) -> FinetuneConfig:
    base = dict(arch="resnet18", image_size=(64, 32), batch_size=16, steps=3, checkpoint_every=2, keep_checkpoints=5)
    base.update(overrides)
    return FinetuneConfig(**base)


def triplet_oracle(features: np.ndarray, labels: np.ndarray, margin: float) -> float:
    """Per anchor, loop over every other sample: hardest positive and hardest negative, float64."""
    f = features.astype(np.float64)
    losses = []
    for i in range(len(f)):
        positive, negative = 0.0, np.inf
        for j in range(len(f)):
            d = float(np.sqrt(((f[i] - f[j]) ** 2).sum()))
            if labels[j] == labels[i]:
                positive = max(positive, d)
            else:
                negative = min(negative, d)
        losses.append(max(0.0, positive - negative + margin))
    return float(np.mean(losses))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("margin", [0.0, 0.3, 5.0])
def test_triplet_loss_matches_float64_oracle(seed, margin):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(12, 5)).astype(np.float32)
    labels = rng.integers(0, 3, 12)
    labels[:2] = [0, 1]  # at least two identities
    got = batch_hard_triplet_loss(torch.from_numpy(features), torch.from_numpy(labels), margin)
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(triplet_oracle(features, labels, margin), rel=1e-5, abs=1e-6)


def test_triplet_loss_gradient_and_errors():
    features = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    batch_hard_triplet_loss(features, labels, 10.0).backward()
    assert torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="single identity"):
        batch_hard_triplet_loss(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="features must be"):
        batch_hard_triplet_loss(torch.randn(4, 3), torch.zeros(5, dtype=torch.long))


def test_augment_identity_and_crop():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (6, 16, 8, 3), dtype=torch.uint8)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    plain = (images.permute(0, 3, 1, 2).float() / 255 - mean) / std
    out = augment_batch(images, (16, 8), flip_p=0.0, padding=0, erasing_p=0.0)
    assert torch.allclose(out, plain, atol=1e-6)
    flipped = augment_batch(images, (16, 8), flip_p=1.0, padding=0, erasing_p=0.0)
    assert torch.allclose(flipped, plain.flip(3), atol=1e-6)
    cropped = augment_batch(images, (16, 8), flip_p=0.0, padding=2, erasing_p=0.0)
    padded = F.pad(images.permute(0, 3, 1, 2).float() / 255, (2, 2, 2, 2))
    padded = (padded - mean) / std
    for n in range(6):  # each output is one 16x8 window of its padded image
        windows = [padded[n, :, t:t + 16, l:l + 8] for t in range(5) for l in range(5)]
        assert any(torch.allclose(cropped[n], w, atol=1e-6) for w in windows)
    erased = augment_batch(images, (32, 16), flip_p=0.0, padding=0, erasing_p=1.0)
    assert erased.shape == (6, 3, 32, 16) and bool((erased == 0).any())
    with pytest.raises(TypeError, match="images must be uint8"):
        augment_batch(images.float(), (16, 8))


def test_lr_schedule_warmup_and_decay():
    config = FinetuneConfig(steps=120, warmup_epochs=10)
    lrs = [lr_at_step(config, s, 120, 1) / config.base_lr for s in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[5] == pytest.approx(0.55)
    assert lrs[10:48] == pytest.approx([1.0] * 38)
    assert lrs[48:84] == pytest.approx([0.1] * 36)
    assert lrs[84:] == pytest.approx([0.01] * 36)
    short = FinetuneConfig(steps=100, warmup_epochs=10)  # 10 epochs of 10 steps: capped at 40 // 4
    assert [lr_at_step(short, s, 100, 10) / short.base_lr for s in (0, 9, 10, 39, 40)] == pytest.approx([0.1, 0.91, 1.0, 1.0, 0.1])


def test_loss_decreases_on_a_fixed_batch(world):
    torch.manual_seed(0)
    labels = np.unique(world.train.pids, return_inverse=True)[1]
    index = np.concatenate([np.flatnonzero(labels == c)[:4] for c in range(4)])
    images = torch.from_numpy(world.train.images[index])
    target = torch.from_numpy(labels[index])
    model = FinetuneModel(build_backbone("resnet18", last_stride=1), num_classes=int(labels.max()) + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3.5e-4, weight_decay=5e-4)
    x = augment_batch(images, (64, 32), flip_p=0.0, padding=0, erasing_p=0.0)
    losses = []
    for _ in range(8):
        out = model(x)
        loss = F.cross_entropy(out.logits, target, label_smoothing=0.1) + batch_hard_triplet_loss(out.features, target, 0.3)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_run_checkpoint_loads_and_evaluates(world, tmp_path):
    summary = finetune(tiny(), world.train, tmp_path / "run")
    assert summary["step"] == 3 and summary["total_steps"] == 3 and np.isfinite(summary["loss"])
    assert summary["num_classes"] == len(np.unique(world.train.pids))
    assert summary["checkpoint"].endswith("step-00000003")
    backbone = load_pretrained(summary["checkpoint"])
    assert backbone.backbone_config["arch"] == "resnet18" and backbone.backbone_config["last_stride"] == 1
    tensors, state = read_checkpoint(tmp_path / "run")
    assert torch.equal(backbone.conv1.weight, tensors["backbone.conv1.weight"])
    assert state["step"] == 3 and "head.classifier.weight" in tensors
    bn = load_finetuned(tmp_path / "run")
    assert bn(torch.randn(2, 3, 128, 64)).shape == (2, 512)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    results = evaluate_finetuned(tmp_path / "run", world.query, world.gallery, device="cpu")
    for name in ("bnneck", "pooled"):
        assert 0.0 < results[name]["mAP"] <= 1.0


def test_resume_is_exact_and_extends(world, tmp_path):
    full = finetune(tiny(steps=4), world.train, tmp_path / "full")
    part = tmp_path / "part"
    (part / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "full" / "config.json", part / "config.json")
    shutil.copy(tmp_path / "full" / "log.jsonl", part / "log.jsonl")  # steps 1-4: 3 and 4 are re-run
    shutil.copytree(tmp_path / "full" / "checkpoints" / "step-00000002", part / "checkpoints" / "step-00000002")
    resumed = finetune(tiny(steps=4), world.train, part, resume=True)
    assert resumed["step"] == 4
    a, _ = read_checkpoint(full["checkpoint"])
    b, _ = read_checkpoint(resumed["checkpoint"])
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key
    log = [json.loads(line)["step"] for line in (part / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4]
    longer = finetune(tiny(steps=6), world.train, part, resume=True)
    assert longer["step"] == 6 and longer["checkpoint"].endswith("step-00000006")


def test_sigint_writes_a_checkpoint_and_resume_is_bit_exact(world, tmp_path, monkeypatch):
    straight = finetune(tiny(steps=5), world.train, tmp_path / "straight")
    before = signal.getsignal(signal.SIGINT)  # (SIG_IGN when the suite runs as a background job)
    signal_after_step(monkeypatch, FinetuneRun, signal.SIGINT, at_step=2)
    stopped = finetune(tiny(steps=5), world.train, tmp_path / "resumed")
    assert stopped["interrupted"] == signal.SIGINT and stopped["step"] == 2 and not stopped["finished"]
    assert stopped["checkpoint"].endswith("step-00000002")
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
    monkeypatch.undo()
    resumed = finetune(None, world.train, tmp_path / "resumed", resume=True)  # the checkpoint's config
    assert resumed["finished"] and resumed["step"] == 5
    a, _ = read_checkpoint(straight["checkpoint"])
    b, _ = read_checkpoint(resumed["checkpoint"])
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    log = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4, 5]


def test_cli_finetune_interrupted_exits_128_plus_signal(tmp_path, monkeypatch, capsys):
    signal_after_step(monkeypatch, FinetuneRun, signal.SIGINT)
    code = cli.main(["finetune", "--synth-quick", "--out", str(tmp_path / "run"), "--arch", "resnet18", "--steps", "3",
                     "--batch-size", "16", "--size", "64x32", "--device", "cpu", "--no-progress"])
    assert code == 128 + signal.SIGINT
    assert "continue with --resume" in capsys.readouterr().err
    assert (tmp_path / "run" / "checkpoints" / "step-00000001").is_dir()


def test_torchrun_two_processes_gloo_ranks_agree(tmp_path):
    ranks = run_ddp_worker(tmp_path, "finetune")
    assert_ranks_agree(ranks)
    _, state = read_checkpoint(tmp_path / "run")
    assert state["world_size"] == 2 and state["step"] == 3


def test_bad_input_gives_clear_errors(world, tmp_path):
    with pytest.raises(ValueError, match="batch_size 18 must be divisible by k=4"):
        finetune(tiny(batch_size=18), world.train, tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="init"):
        finetune(tiny(init=str(tmp_path / "missing.safetensors")), world.train, tmp_path / "b")
    with pytest.raises(ValueError, match="exactly one of steps and epochs"):
        finetune(tiny(steps=None), world.train, tmp_path / "c")
    with pytest.raises(TypeError, match="train must be"):
        finetune(tiny(), world.train.images, tmp_path / "d")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        finetune(tiny(), world.train, tmp_path / "e", resume=True)
    finetune(tiny(steps=1), world.train, tmp_path / "f")
    with pytest.raises(ValueError, match="config differs"):
        finetune(tiny(steps=2, margin=0.5), world.train, tmp_path / "f", resume=True)


def test_init_from_pretrained_backbone(world, tmp_path):
    from cion_fast.models import save_backbone

    source = build_backbone("resnet18", last_stride=1)
    path = save_backbone(source, tmp_path / "pre.safetensors")
    summary = finetune(tiny(steps=1, init=str(path), base_lr=1e-12, weight_decay=0.0), world.train, tmp_path / "run")
    tuned = load_pretrained(summary["checkpoint"])
    assert torch.allclose(tuned.conv1.weight, source.conv1.weight, atol=1e-6)
    from_run = finetune(tiny(steps=1, init=str(tmp_path / "run"), base_lr=1e-12, weight_decay=0.0), world.train,
                        tmp_path / "from_run")  # a run directory: its newest checkpoint
    assert torch.allclose(load_pretrained(from_run["checkpoint"]).conv1.weight, source.conv1.weight, atol=1e-6)
    official = tmp_path / "cion_official.pth"  # CION/DINO layout: ["teacher"]["module.backbone.*"]
    torch.save({"teacher": {"module.backbone." + k: v for k, v in source.state_dict().items()}}, official)
    summary = finetune(tiny(steps=1, init=str(official), base_lr=1e-12, weight_decay=0.0), world.train, tmp_path / "pth")
    assert torch.allclose(load_pretrained(summary["checkpoint"]).conv1.weight, source.conv1.weight, atol=1e-6)


def test_cli_synth_quick(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("cion_fast.data.synth.WorldConfig.quick", classmethod(
        lambda cls, **kw: cls(identities=20, train_identities=12, eval_identities=10, cameras=3, videos=3, **kw)))
    out = tmp_path / "cli"
    code = cli.main(["finetune", "--synth-quick", "--arch", "resnet18", "--size", "64x32", "--steps", "2",
                     "--batch-size", "16", "--out", str(out), "--device", "cpu", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "bnneck" in printed and "Rank-1" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["train"]["step"] == 2 and 0 < results["evaluation"]["bnneck"]["mAP"] <= 1
    assert cli.main(["finetune", "--synth-quick", "--out", str(out), "--resume", "--steps", "3", "--no-progress"]) == 0
    assert json.loads((out / "results.json").read_text())["train"]["step"] == 3
    assert cli.main(["finetune", "--synth-quick", "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "give --steps or --epochs" in capsys.readouterr().err


def test_a_non_finite_loss_is_never_checkpointed_and_a_resume_cannot_shrink(world, tmp_path, monkeypatch):
    original = FinetuneRun._train_step

    def nan_at_step_1(self, step):
        loss, metrics = original(self, step)
        return (loss * float("nan") if step == 1 else loss), metrics

    monkeypatch.setattr(FinetuneRun, "_train_step", nan_at_step_1)
    # checkpoint_every 2 is not a log step (log_every 10): the check runs before the save anyway
    with pytest.raises(FloatingPointError, match="not finite"):
        finetune(tiny(steps=6, log_every=10, checkpoint_every=2), world.train, tmp_path / "nan")
    assert not (tmp_path / "nan" / "checkpoints").exists() or not any((tmp_path / "nan" / "checkpoints").iterdir())
    monkeypatch.undo()
    finetune(tiny(steps=3), world.train, tmp_path / "run")
    with pytest.raises(ValueError, match="may grow, not shrink"):
        finetune(tiny(steps=2), world.train, tmp_path / "run", resume=True)
