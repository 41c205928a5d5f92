"""The trainer end to end on a quick synthetic world (CPU, tiny ViT): learning, exact resume,
signals, export, CLI errors that keep what is on disk, and a 2-process torchrun (gloo) run."""

from __future__ import annotations

import hashlib
import json
import math
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from cion_fast import cli
from cion_fast.data import synth
from cion_fast.models import load_pretrained
from cion_fast.pretrain import PretrainConfig, Trainer, pretrain, read_checkpoint
from cion_fast.pretrain.trainer import collapse_warnings
from conftest import assert_ranks_agree, run_ddp_worker, signal_after_step

pytestmark = pytest.mark.usefixtures("torch_one_thread")




@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A quick world (12 identities, ~600 frames of 128x64), saved as a tracklet directory;
    labels = ground-truth identities (-1 for false positives), as denoising would give them."""
    generated = synth.generate(synth.WorldConfig.quick(identities=12, train_identities=3, eval_identities=3, videos=3, seed=1))
    root = tmp_path_factory.mktemp("world")
    generated.tracklets.save(root / "tracklets")
    labels = generated.tracklets.identity.astype(np.int64)
    np.save(root / "labels.npy", labels)
    return {"root": root, "frames": generated.tracklets.frames, "labels": labels}


def tiny(**overrides) -> PretrainConfig:
    """CION on a tiny ViT with 64x32 global / 32x16 local views: ~0.1 s a step here."""
    values = dict(method="cion", arch="test_vit", steps=6, batch_size=8, k_values=(2, 4), k_boundaries=(0.5,), out_dim=256,
                  head_hidden_dim=64, head_bottleneck_dim=32, base_lr=0.05, warmup=0.0, progress=False, log_every=1,
                  device="cpu", multicrop={"global_size": (64, 32), "local_size": (32, 16), "n_local": 2})
    values.update(overrides)
    return PretrainConfig(**values)


def log_lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_few_steps_decrease_the_loss(world, tmp_path):
    summary = pretrain(tiny(steps=6, k_values=(2,), k_boundaries=(), freeze_last_layer=0.0), world["frames"], world["labels"], tmp_path)
    losses = [line["loss"] for line in log_lines(tmp_path)]
    assert summary["finished"] and len(losses) == 6
    assert min(losses[3:]) < losses[0] - 0.3, losses
    assert 0.0 <= summary["view_share"] < 1.0 and summary["images_per_s"] > 0


def test_resume_after_the_k_switch_equals_an_uninterrupted_run(world, tmp_path):
    # K = 2 for steps 0-2, 4 for steps 3-5; drop-path makes the run depend on the per-step RNG too.
    cfg = tiny(deterministic=True, steps=6, timm_kwargs={"drop_path_rate": 0.2})
    straight = pretrain(cfg, world["frames"], world["labels"], tmp_path / "straight")
    first = pretrain(cfg, world["frames"], world["labels"], tmp_path / "resumed", until_step=4)
    assert first["step"] == 4 and not first["finished"]
    _, state = read_checkpoint(tmp_path / "resumed")
    assert state["sampler"]["k"] == 4 and state["sampler"]["batch_in_epoch"] == 1 and state["step"] == 4
    second = pretrain(None, world["frames"], world["labels"], tmp_path / "resumed", resume=True)
    assert second["finished"] and second["step"] == straight["step"] == 6
    assert [line["k"] for line in log_lines(tmp_path / "resumed")] == [2, 2, 2, 4, 4, 4]
    a, _ = read_checkpoint(tmp_path / "straight")
    b, _ = read_checkpoint(tmp_path / "resumed")
    assert a.keys() == b.keys() and any(k.startswith("optimizer.") for k in a)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]


def test_image_files_train_as_the_same_pixels_in_memory(world, tmp_path):
    # A tracklet set stored as image files: each step's crops are decoded (by the read-ahead
    # threads) and resized to the global view size. The run equals, bit for bit, a run on the
    # same resized pixels held as one array.
    from cion_fast.data import read_images, write_image

    paths = []
    for i, frame in enumerate(world["frames"]):
        paths.append(str(tmp_path / "frames" / f"{i:05d}.png"))
        if i == 0:
            (tmp_path / "frames").mkdir()
        write_image(paths[-1], frame)
    cfg = tiny(deterministic=True, steps=3)
    from_files = pretrain(cfg, paths, world["labels"], tmp_path / "files")
    resized = read_images(paths, size=(64, 32), resize_all=True)
    from_array = pretrain(cfg, resized, world["labels"], tmp_path / "array")
    assert from_files["finished"] and from_array["finished"]
    a, state = read_checkpoint(tmp_path / "files")
    b, _ = read_checkpoint(tmp_path / "array")
    assert state["data"]["frame_shape"] == "files"
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    with pytest.raises(TypeError, match="image paths"):
        Trainer(cfg, [1, 2, 3], None, tmp_path / "bad")


def test_sigterm_writes_a_checkpoint_and_returns(world, tmp_path, monkeypatch):
    before = signal.getsignal(signal.SIGTERM)
    signal_after_step(monkeypatch, Trainer, signal.SIGTERM, at_step=2)
    cfg = tiny(steps=6, checkpoint_every=3, keep_checkpoints=2)
    summary = pretrain(cfg, world["frames"], world["labels"], tmp_path)
    assert summary["interrupted"] == signal.SIGTERM and summary["step"] == 2 and not summary["finished"]
    assert Path(summary["checkpoint"]).name == "step-00000002"
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored
    monkeypatch.undo()
    assert pretrain(None, world["frames"], world["labels"], tmp_path, resume=True)["finished"]
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["step-00000003", "step-00000006"]  # every 3 steps + the end, the newest 2 kept


@pytest.mark.parametrize("method, extra", [("dino", {}), ("upreid", {"queue_size": 64})])
def test_dino_and_upreid_train_and_export(world, tmp_path, method, extra):
    labels = None if method == "dino" else world["labels"]
    cfg = tiny(method=method, steps=2, **extra)
    summary = pretrain(cfg, world["frames"], labels, tmp_path / "run")
    assert summary["finished"] and np.isfinite(summary["loss"]) and summary["k"] == 1
    if method == "upreid":
        assert {"nce", "gc", "icc"} <= set(log_lines(tmp_path / "run")[-1])
    assert cli.main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "b.safetensors")]) == 0
    # the same overwrite rule as every output: an existing file needs --overwrite
    assert cli.main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "b.safetensors")]) == 2
    assert cli.main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "b.safetensors"),
                     "--overwrite"]) == 0
    backbone = load_pretrained(tmp_path / "b.safetensors")
    tensors, _ = read_checkpoint(tmp_path / "run")
    prefix = "teacher.backbone." if method == "dino" else "student.backbone."
    for name, value in backbone.state_dict().items():
        assert torch.equal(value, tensors[prefix + name]), name
    assert backbone(torch.randn(2, 3, 64, 32)).shape == (2, backbone.feature_dim)


def test_schedules_and_the_frozen_last_layer(world, tmp_path):
    cfg = tiny(steps=10, batch_size=8, base_lr=0.01, warmup=0.2, teacher_temp=0.04, teacher_temp_final=0.07,
               teacher_temp_warmup=0.5, k_values=(2,), k_boundaries=(), freeze_last_layer=0.3)
    trainer = Trainer(cfg, world["frames"], world["labels"], tmp_path)
    peak = 0.01 * 8 / 256
    s0, s1, s2, s5, s9 = (trainer.schedules(s) for s in (0, 1, 2, 5, 9))
    assert s0["lr"] == 0.0 and s1["lr"] == pytest.approx(peak / 2) and s2["lr"] == pytest.approx(peak)
    assert s9["lr"] < s5["lr"] < peak
    assert s0["weight_decay"] == pytest.approx(0.04) and s5["weight_decay"] == pytest.approx(0.22)
    assert s0["momentum"] == pytest.approx(0.996) and s5["momentum"] == pytest.approx(0.998)
    assert s0["teacher_temp"] == pytest.approx(0.04) and s5["teacher_temp"] == pytest.approx(0.07) and s1["teacher_temp"] == pytest.approx(0.046)
    last = trainer.method.student.head.last_layer.weight_v.detach().clone()
    first_mlp = trainer.method.student.head.mlp[0].weight.detach().clone()
    trainer.fit(until_step=3)  # the first 30 % of the steps: the last layer is frozen, the rest trains
    assert torch.equal(trainer.method.student.head.last_layer.weight_v, last)
    assert not torch.equal(trainer.method.student.head.mlp[0].weight, first_mlp)
    trainer.fit(until_step=4)  # in steps, not sampler epochs: step 3 updates it
    assert not torch.equal(trainer.method.student.head.last_layer.weight_v, last)


def test_log_carries_the_collapse_monitors(world, tmp_path):
    pretrain(tiny(steps=4, log_every=2, k_values=(2,), k_boundaries=()), world["frames"], world["labels"], tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    out_dim = tiny(steps=1).out_dim
    for row in rows:
        assert 0.0 <= row["teacher_entropy"] <= math.log(out_dim) + 1e-4
        assert 1.0 <= row["prototypes"] <= out_dim + 1e-3
    uniform = {"step": 1, "teacher_entropy": math.log(out_dim), "prototypes": float(out_dim)}
    assert "uniform" in collapse_warnings(uniform, out_dim)[0]
    assert "prototypes" in collapse_warnings({"step": 1, "teacher_entropy": 0.1, "prototypes": 2.0}, out_dim)[0]


def _cli_pretrain(world, out, *extra):
    args = ["pretrain", "--method", "cion", "--data", str(world["root"] / "tracklets"), "--labels", str(world["root"] / "labels.npy"),
            "--arch", "test_vit", "--steps", "2", "--batch-size", "8", "--k-values", "2,4", "--k-boundaries", "0.5", "--out-dim", "128",
            "--global-size", "64x32", "--local-size", "32x16", "--n-local", "2", "--out", str(out), "--no-progress", "--device", "cpu"]
    return cli.main(args + list(extra))


def test_cli_run_then_bad_inputs_fail_clearly_and_keep_what_is_written(world, tmp_path, capsys):
    run = tmp_path / "run"
    assert _cli_pretrain(world, run) == 0
    assert (run / "checkpoints" / "step-00000002").is_dir()
    before = tree_digest(run)
    capsys.readouterr()

    np.save(tmp_path / "short.npy", world["labels"][:-3])
    assert _cli_pretrain(world, run, "--resume", "--labels", str(tmp_path / "short.npy")) == 2
    assert f"labels has {len(world['labels']) - 3} entries but the data has {len(world['labels'])} frames" in capsys.readouterr().err
    np.save(tmp_path / "shuffled.npy", world["labels"][::-1].copy())
    assert _cli_pretrain(world, run, "--resume", "--labels", str(tmp_path / "shuffled.npy")) == 2
    assert "differ from the ones the checkpoint was trained on" in capsys.readouterr().err
    assert _cli_pretrain(world, run) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    assert _cli_pretrain(world, run, "--resume", "--lr", "0.1") == 2
    assert "base_lr" in capsys.readouterr().err
    assert tree_digest(run) == before  # nothing written was lost or changed

    fresh = tmp_path / "fresh"
    assert _cli_pretrain(world, fresh, "--arch", "resnet_does_not_exist") == 2
    assert "not a timm model" in capsys.readouterr().err
    assert _cli_pretrain(world, fresh, "--batch-size", "6") == 2
    assert "not divisible by K=4" in capsys.readouterr().err
    assert _cli_pretrain(world, fresh, "--method", "cion", "--labels", str(tmp_path / "nothing.npy")) == 2
    assert "cannot read" in capsys.readouterr().err
    np.savez(tmp_path / "features.npz", features=np.zeros((3, 2)))  # issue 14: was an AttributeError
    assert _cli_pretrain(world, fresh, "--method", "cion", "--labels", str(tmp_path / "features.npz")) == 2
    assert "is an .npz archive" in capsys.readouterr().err
    np.save(tmp_path / "float.npy", world["labels"].astype(np.float32))
    assert _cli_pretrain(world, fresh, "--method", "cion", "--labels", str(tmp_path / "float.npy")) == 2
    assert "labels must be a 1-D integer array" in capsys.readouterr().err
    assert not fresh.exists()  # nothing created for a run that could not start


def test_cli_tracklet_level_labels(world, tmp_path):
    from cion_fast.data import Tracklets

    assert _cli_pretrain(world, tmp_path / "run", "--labels", "tracklet", "--steps", "1") == 0
    _, state = read_checkpoint(tmp_path / "run")
    tracklet_ids = Tracklets.load(world["root"] / "tracklets").tracklet_of_frame.astype(np.int64)
    assert state["data"]["labels_sha1"] == hashlib.sha1(tracklet_ids.tobytes()).hexdigest()
    assert state["data"]["labels_sha1"] != hashlib.sha1(world["labels"].tobytes()).hexdigest()


def test_resume_from_a_checkpoint_missing_keys_is_a_clear_error(world, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    run = tmp_path / "run"
    assert _cli_pretrain(world, run) == 0
    weights = run / "checkpoints" / "step-00000002" / "weights.safetensors"
    tensors = load_file(weights)
    del tensors["student.head.mlp.0.weight"]
    save_file(tensors, weights)
    before = tree_digest(run)
    capsys.readouterr()
    assert _cli_pretrain(world, run, "--resume") == 2
    err = capsys.readouterr().err
    assert "missing keys ['student.head.mlp.0.weight']" in err, err
    assert tree_digest(run) == before


def test_torchrun_two_processes_gloo_ranks_agree(world, tmp_path):
    ranks = run_ddp_worker(tmp_path, "pretrain", str(world["root"] / "tracklets"), str(world["root"] / "labels.npy"))
    assert_ranks_agree(ranks)
    assert (tmp_path / "run" / "checkpoints" / "step-00000003").is_dir()
    assert log_lines(tmp_path / "run")[-1]["step"] == 3


@pytest.mark.cuda
@pytest.mark.parametrize("method", ["cion", "upreid"])
def test_gpu_run_with_amp_views_on_the_gpu(world, tmp_path, method):
    cfg = tiny(method=method, steps=3, device="cuda", queue_size=64)
    trainer = Trainer(cfg, world["frames"], world["labels"] if method == "cion" else None, tmp_path)
    assert trainer.amp and trainer.multicrop_config.out_dtype == "float16"
    views = trainer._views(0)
    assert views.global_views.is_cuda and views.global_views.dtype == torch.float16
    summary = trainer.fit()
    assert summary["finished"] and np.isfinite(summary["loss"]) and 0 < summary["view_share"] < 1
    _, state = read_checkpoint(tmp_path)
    assert state["scaler"]["scale"] > 1  # the GradScaler ran and its state is saved
    # Gradients were unscaled before clipping: they are true gradients (norm <= 3), not scaled ones
    # clipped to 3 and then divided by the scale (which would leave them ~1e-4 of that).
    norms = [p.grad.norm().item() for p in trainer.method.student.parameters() if p.grad is not None]
    assert max(norms) <= 3.0 + 1e-3 and max(norms) > 1e-2


def test_resume_logs_each_step_once_and_removes_stale_temporaries(world, tmp_path):
    # issue 14: a run killed after logging steps past its last checkpoint logged them twice on
    # resume, and a kill during a checkpoint write left .step-*.tmp directories forever
    cfg = tiny(steps=6, log_every=1, checkpoint_every=2, k_values=(2,), k_boundaries=())
    pretrain(cfg, world["frames"], world["labels"], tmp_path, until_step=4)
    log = tmp_path / "log.jsonl"
    with open(log, "a") as f:  # what the killed run had logged after its checkpoint at step 4 ...
        f.write(json.dumps({"step": 5, "loss": 1.0}) + "\n" + '{"step": 6, "lo')  # ... the last line cut by the kill
    stale = tmp_path / "checkpoints" / ".step-00000006.x1y2.tmp"
    stale.mkdir()
    pretrain(cfg, world["frames"], world["labels"], tmp_path, resume=True)
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert not stale.exists()


def test_resume_rewrites_a_damaged_config_copy(world, tmp_path):
    # issue 14: --resume ignored a corrupt config.json; the checkpoint's config is the one a resume
    # uses, and the run directory's copy is rewritten from it, with a warning
    cfg = tiny(steps=4, checkpoint_every=2, k_values=(2,), k_boundaries=())
    pretrain(cfg, world["frames"], world["labels"], tmp_path, until_step=2)
    (tmp_path / "config.json").write_text('{"method": "cion", "ste')
    with pytest.warns(UserWarning, match="config.json was unreadable"):
        pretrain(cfg, world["frames"], world["labels"], tmp_path, resume=True)
    assert json.loads((tmp_path / "config.json").read_text()) == json.loads(json.dumps(cfg.to_dict()))
