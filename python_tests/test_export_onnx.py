"""ONNX export: an IBN ResNet, a ViT and a ConvNeXt run in onnxruntime as in torch (eval mode) at
two batch sizes; ``cion-fast export --format onnx`` reads the training size from pre-training and
fine-tuning runs, and bad input is one error line with exit 2."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

from cion_fast import cli
from cion_fast.models import IBN, build_backbone, export_onnx, load_pretrained, save_backbone
from cion_fast.training import latest_checkpoint

ort = pytest.importorskip("onnxruntime", reason="onnx + onnxscript + onnxruntime are the onnx extra (in the test extra)")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SIZE = (64, 32)


def with_random_statistics(net: nn.Module, seed: int = 0) -> nn.Module:
    """Random norm-layer affine weights and BatchNorm running statistics: at their initial values
    (weight 1, bias 0, mean 0, var 1) BatchNorm in eval mode is the identity, so an export that
    normalised with the batch's statistics, or skipped a norm layer, would go unnoticed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm)) and module.weight is not None:
                module.weight.copy_(1 + 0.2 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))
    return net


def session(path) -> "ort.InferenceSession":
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # a small shared machine
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def max_difference(net: nn.Module, path, batch: int, size=SIZE, seed: int = 1) -> float:
    """max |onnxruntime - torch (eval mode)| over the features of ``batch`` random normalised images."""
    x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))
    net.eval()
    with torch.no_grad():
        expected = net(x).numpy()
    (got,) = session(path).run(None, {"images": x.numpy()})
    assert got.shape == expected.shape and got.dtype == np.float32
    return float(np.abs(got - expected).max())


NETWORKS = {
    # IBN-a: InstanceNorm halves (each image's own statistics) beside BatchNorm halves (running ones)
    "resnet_ibn": lambda: build_backbone("test_resnet", ibn=True, last_stride=1),
    "vit": lambda: build_backbone("test_vit", img_size=SIZE),
    "convnext": lambda: build_backbone("test_convnext"),
}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_onnxruntime_matches_torch_at_two_batch_sizes(name, tmp_path):
    net = with_random_statistics(NETWORKS[name]())
    if name == "resnet_ibn":
        assert sum(isinstance(m, IBN) for m in net.modules()) == 3
    path = export_onnx(net, tmp_path / "net.onnx", image_size=SIZE)
    assert path == tmp_path / "net.onnx" and sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx"]  # one file
    assert net.training  # the caller's model is left as it was
    (inp,), (out,) = session(path).get_inputs(), session(path).get_outputs()
    assert (inp.name, inp.type, inp.shape[1:]) == ("images", "tensor(float)", [3, *SIZE]) and isinstance(inp.shape[0], str)
    assert (out.name, out.shape[1]) == ("features", net.feature_dim) and isinstance(out.shape[0], str)
    differences = [max_difference(net, path, batch) for batch in (1, 5)]
    print(f"{name}: max abs difference {differences}")
    assert max(differences) <= 1e-4, differences
    meta = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["cion_fast"])
    assert meta["image_size"] == list(SIZE) and meta["backbone_config"] == net.backbone_config
    assert "ImageNet mean" in meta["input"]


def test_export_onnx_refuses_bad_arguments(tmp_path):
    net = build_backbone("test_resnet")
    with pytest.raises(ValueError, match="path must end in .onnx"):
        export_onnx(net, tmp_path / "net.safetensors", SIZE)
    with pytest.raises(TypeError, match="image_size must be a tuple or list"):
        export_onnx(net, tmp_path / "net.onnx", "64x32")
    with pytest.raises(ValueError, match="image_size must be"):
        export_onnx(net, tmp_path / "net.onnx", (64, 32, 3))
    with pytest.raises(ValueError, match="opset must be >= 18"):
        export_onnx(net, tmp_path / "net.onnx", SIZE, opset=11)
    with pytest.raises(TypeError, match="model must be a Module"):
        export_onnx(net.state_dict(), tmp_path / "net.onnx", SIZE)
    # a ViT built without img_size takes only its 224x224 grid (timm asserts it)
    with pytest.raises(ValueError, match="image_size: the model does not take 64x32 inputs"):
        export_onnx(build_backbone("vit_tiny_patch16_224"), tmp_path / "net.onnx", SIZE)
    assert list(tmp_path.iterdir()) == []


# ---- the CLI: runs made cheaply (one step of timm's test_resnet), errors ---------------------------

@pytest.fixture(scope="module")
def world():
    from cion_fast.data.synth import WorldConfig, generate

    return generate(WorldConfig.quick(identities=12, train_identities=6, eval_identities=4, cameras=2, videos=2, seed=5))


@pytest.fixture(scope="module")
def pretrain_run(world, tmp_path_factory):
    """One DINO step at 64x32 global views: the size comes from the checkpoint's multicrop."""
    from cion_fast.pretrain import PretrainConfig, pretrain

    run = tmp_path_factory.mktemp("pretrain")
    config = PretrainConfig(method="dino", arch="test_resnet", ibn=True, steps=1, batch_size=8, out_dim=64, head_hidden_dim=32,
                            head_bottleneck_dim=16, progress=False, device="cpu",
                            multicrop={"global_size": SIZE, "local_size": (32, 16), "n_local": 2})
    with pytest.warns(UserWarning, match="EMA momentum"):  # one step: the teacher is its random initialisation
        pretrain(config, world.tracklets.frames, world.tracklets.identity.astype(np.int64), run)
    return run


def export(*flags) -> int:
    return cli.main(["export", *map(str, flags)])


def error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "error:" in lines[0], lines
    return lines[0]


def test_cli_exports_a_pretraining_run_at_its_global_view_size(pretrain_run, tmp_path, capsys):
    out = tmp_path / "cion.onnx"
    assert export("--checkpoint", pretrain_run, "--format", "onnx", "--out", out) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    assert session(out).get_inputs()[0].shape[1:] == [3, *SIZE]
    assert max_difference(load_pretrained(latest_checkpoint(pretrain_run)), out, batch=3) <= 1e-4
    assert export("--checkpoint", pretrain_run, "--format", "onnx", "--out", out) == 2  # exists: --overwrite replaces it
    assert "--overwrite" in error_line(capsys)
    assert export("--checkpoint", pretrain_run, "--format", "onnx", "--out", out, "--overwrite", "--opset", "20") == 0
    assert onnx.load(str(out)).opset_import[0].version == 20


def test_cli_exports_a_finetuning_run_at_its_image_size(world, tmp_path):
    from cion_fast.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(arch="test_resnet", image_size=(48, 24), batch_size=8, steps=1, device="cpu", progress=False)
    finetune(config, world.train, tmp_path / "run")
    assert export("--checkpoint", tmp_path / "run", "--format", "onnx", "--out", tmp_path / "ft.onnx") == 0
    assert session(tmp_path / "ft.onnx").get_inputs()[0].shape[1:] == [3, 48, 24]
    assert max_difference(load_pretrained(latest_checkpoint(tmp_path / "run")), tmp_path / "ft.onnx", 2, (48, 24)) <= 1e-4


def test_cli_exports_a_saved_backbone_given_size(tmp_path, capsys):
    saved = save_backbone(with_random_statistics(build_backbone("test_resnet", ibn=True)), tmp_path / "b.safetensors")
    # a CNN's export does not say its training size
    assert export("--checkpoint", saved, "--format", "onnx", "--out", tmp_path / "b.onnx") == 2
    assert "--size HxW" in error_line(capsys)
    assert export("--checkpoint", saved, "--format", "onnx", "--out", tmp_path / "b.onnx", "--size", "64x32") == 0
    assert max_difference(load_pretrained(saved), tmp_path / "b.onnx", batch=2) <= 1e-4
    # a ViT's does (its img_size)
    vit = save_backbone(build_backbone("test_vit", img_size=(32, 16)), tmp_path / "vit.safetensors")
    assert export("--checkpoint", vit, "--format", "onnx", "--out", tmp_path / "vit.onnx") == 0
    assert session(tmp_path / "vit.onnx").get_inputs()[0].shape[1:] == [3, 32, 16]


@pytest.mark.parametrize("flags, message", [
    (["--format", "tflite"], "argument --format: invalid choice: 'tflite'"),
    (["--format", "onnx", "--size", "64"], "size must look like 128x64"),
    (["--format", "onnx", "--opset", "eighteen"], "argument --opset: invalid int value"),
])
def test_cli_bad_flags_are_one_argparse_line(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exited:
        export("--checkpoint", tmp_path, "--out", tmp_path / "b.onnx", *flags)
    assert exited.value.code == 2 and message in error_line(capsys)


@pytest.mark.parametrize("flags, message", [
    (["--size", "64x32"], "apply to format 'onnx' only"),
    (["--format", "onnx", "--opset", "17", "--size", "64x32"], "opset must be >= 18, got 17"),
    (["--format", "onnx", "--out", "b.safetensors", "--size", "64x32"], "path must end in .onnx"),
])
def test_cli_bad_values_are_one_error_line(tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.chdir(tmp_path)
    saved = save_backbone(build_backbone("test_resnet"), tmp_path / "a.safetensors")
    out = [] if "--out" in flags else ["--out", "b.onnx"]
    assert export("--checkpoint", saved, *out, *flags) == 2
    assert message in error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.safetensors"]


def test_cli_without_the_onnx_extra_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    saved = save_backbone(build_backbone("test_resnet"), tmp_path / "a.safetensors")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # what `import onnxscript` finds without the package
    assert export("--checkpoint", saved, "--format", "onnx", "--out", tmp_path / "b.onnx", "--size", "64x32") == 2
    assert "pip install 'cion_fast[onnx]'" in error_line(capsys)
