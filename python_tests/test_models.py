"""cion_fast.models: timm backbones (last stride, IBN-a, ViT input sizes), heads, export/load."""

from __future__ import annotations

import argparse

import pytest
import torch


import torch.nn.functional as F

from cion_fast.models import (IBN, BNNeckHead, DINOHead, ProjectionMLP, WeightNormLinear, build_backbone, load_pretrained,
                              pooled_features, read_safetensors_config, save_backbone)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_resnet_last_stride_one_doubles_the_final_resolution():
    x = torch.randn(2, 3, 64, 32)
    plain = build_backbone("resnet18")
    strided = build_backbone("resnet18", last_stride=1)
    _, fmap_plain = pooled_features(plain.eval(), x)
    pooled, fmap = pooled_features(strided.eval(), x)
    assert fmap_plain.shape[-2:] == (2, 1)
    assert fmap.shape[-2:] == (4, 2)
    assert pooled.shape == (2, 512) and strided.feature_dim == 512
    assert strided.backbone_config == {"arch": "resnet18", "last_stride": 1, "ibn": False, "timm_kwargs": {}}


def test_ibn_a_replaces_bn1_in_the_first_three_stages_only():
    net = build_backbone("resnet50", ibn=True)
    for stage in ("layer1", "layer2", "layer3"):
        for block in getattr(net, stage):
            assert isinstance(block.bn1, IBN)
            assert isinstance(block.bn2, torch.nn.BatchNorm2d)
    assert all(isinstance(block.bn1, torch.nn.BatchNorm2d) for block in net.layer4)
    keys = net.state_dict().keys()
    assert "layer1.0.bn1.IN.weight" in keys and "layer3.5.bn1.BN.running_mean" in keys  # IBN-Net's names


def test_ibn_splits_channels_between_instance_and_batch_norm():
    torch.manual_seed(0)
    layer = IBN(6)
    with torch.no_grad():
        layer.IN.weight.uniform_(0.5, 2)
        layer.IN.bias.normal_()
    x = torch.randn(4, 6, 5, 3) * 3 + 1
    out = layer(x)
    first = x[:, :3]
    expected_in = (first - first.mean((2, 3), keepdim=True)) / torch.sqrt(first.var((2, 3), unbiased=False, keepdim=True) + 1e-5)
    expected_in = expected_in * layer.IN.weight.view(1, 3, 1, 1) + layer.IN.bias.view(1, 3, 1, 1)
    second = x[:, 3:]
    expected_bn = (second - second.mean((0, 2, 3), keepdim=True)) / torch.sqrt(second.var((0, 2, 3), unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(out[:, :3], expected_in, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, 3:], expected_bn, atol=1e-5, rtol=1e-5)


def test_vit_takes_its_global_size_and_smaller_local_crops():
    vit = build_backbone("test_vit", img_size=(64, 32))
    assert vit(torch.randn(2, 3, 64, 32)).shape == (2, vit.feature_dim)
    assert vit(torch.randn(2, 3, 32, 16)).shape == (2, vit.feature_dim)
    _, fmap = pooled_features(vit, torch.randn(2, 3, 64, 32))
    patch = vit.patch_embed.patch_size
    assert fmap.shape == (2, vit.feature_dim, 64 // patch[0], 32 // patch[1])


@pytest.mark.parametrize("name, img_size", [
    ("ghostnet_050", None),           # timm's num_features (480) is the width before the head conv (1280)
    ("mobilenetv3_small_050", None),  # the same head conv: 288 before, 1024 after
    ("lcnet_050", None),
    ("test_resnet", None),
    ("test_vit", (256, 128)),
    ("volo_d1_224", (256, 128)),      # a position embedding of a fixed grid
])
def test_feature_dim_is_the_width_returned_for_global_and_local_crops(name, img_size):
    torch.manual_seed(0)
    net = build_backbone(name, img_size=img_size)
    assert net.training
    total = 0
    for size in ((256, 128), (128, 64)):  # CION's global view and local crop
        out = net(torch.randn(2, 3, *size))
        assert out.shape == (2, net.feature_dim), (name, size)
        total = total + out.square().sum()
    total.backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_pooled_features_of_a_head_conv_network_have_feature_dim_channels():
    net = build_backbone("ghostnet_050")
    pooled, fmap = pooled_features(net, torch.randn(2, 3, 128, 64))
    assert pooled.shape == (2, net.feature_dim) == (2, 1280)
    assert fmap.shape == (2, 480, 4, 2)  # the map is the width before the head conv


def test_volo_keeps_its_state_dict_and_resamples_only_the_position_embedding():
    import timm

    net = build_backbone("volo_d1_224", img_size=(64, 32))
    assert type(net).__name__ == "VOLOAnySize" and net.pos_embed.shape == (1, 4, 2, 384)
    reference = timm.create_model("volo_d1_224", num_classes=0, img_size=(64, 32))
    assert net.state_dict().keys() == reference.state_dict().keys()  # checkpoints load both ways
    reference.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 64, 32)
    torch.testing.assert_close(net.eval()(x), reference.eval()(x))  # the built grid: VOLO's own forward
    assert net(torch.randn(2, 3, 32, 16)).shape == (2, 384)
    with pytest.raises(RuntimeError, match="must match|broadcast"):
        reference(torch.randn(2, 3, 32, 16))


def test_build_backbone_refuses_kwargs_that_leave_features_unpooled():
    with pytest.raises(ValueError, match=r"returns features of shape \(1, 96, \d+, \d+\) .* not pooled"):
        build_backbone("test_resnet", global_pool="")


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "resnet_does_not_exist"}, "not a timm model"),
    ({"name": "test_vit", "last_stride": 1}, "ResNets only"),
    ({"name": "test_vit", "ibn": True}, "ResNets only"),
    ({"name": "resnet18", "last_stride": 3}, "last_stride"),
    ({"name": "resnet18", "num_classes": 10}, "num_classes"),
])
def test_build_backbone_rejects_bad_requests(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_backbone(**kwargs)


def test_dino_head_layout_and_unit_norm_last_layer():
    torch.manual_seed(0)
    head = DINOHead(48, out_dim=300, hidden_dim=40, bottleneck_dim=12)
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(48, 40), (40, 40), (40, 12)]
    assert [type(m).__name__ for m in head.mlp] == ["Linear", "GELU", "Linear", "GELU", "Linear"]
    assert "last_layer.weight_g" in head.state_dict() and "last_layer.weight_v" in head.state_dict()
    assert not any(p is head.last_layer.weight_g for p in head.parameters())  # the norm is frozen
    x = torch.randn(5, 48)
    out = head(x)
    # L2-normalised bottleneck x unit-norm prototypes: every logit is a cosine.
    z = F.normalize(head.mlp(x), dim=-1)
    expected = z @ F.normalize(head.last_layer.weight_v, dim=1).t()
    torch.testing.assert_close(out, expected)
    assert out.abs().max() <= 1 + 1e-5


def test_weight_norm_linear_matches_torch_weight_norm_with_unit_gain():
    torch.manual_seed(1)
    ours = WeightNormLinear(7, 5)
    reference = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(7, 5, bias=False))
    with torch.no_grad():
        reference.parametrizations.weight.original0.fill_(1.0)
        reference.parametrizations.weight.original1.copy_(ours.weight_v)
    x = torch.randn(3, 7)
    torch.testing.assert_close(ours(x), reference(x))


def test_dino_head_from_official_state_dict_with_65336_prototypes():
    head = DINOHead(16, out_dim=65336, hidden_dim=8, bottleneck_dim=4)
    official = {"module.head." + k: v for k, v in head.state_dict().items()}
    loaded = DINOHead.from_state_dict(official, prefix="module.head.")
    assert loaded.out_dim == 65336
    x = torch.randn(2, 16)
    torch.testing.assert_close(loaded(x), head(x))
    del official["module.head.mlp.2.bias"]
    with pytest.raises(ValueError, match="mlp.2.bias"):
        DINOHead.from_state_dict(official, prefix="module.head.")


def test_projection_mlp_and_bnneck_head():
    assert ProjectionMLP(32, out_dim=16)(torch.randn(4, 32)).shape == (4, 16)
    head = BNNeckHead(32, num_classes=7)
    out = head(torch.randn(6, 32))
    assert out.features.shape == out.bn_features.shape == (6, 32) and out.logits.shape == (6, 7)
    assert not head.bottleneck.bias.requires_grad
    assert BNNeckHead(32)(torch.randn(6, 32)).logits is None


def test_export_round_trip_keeps_weights_and_config(tmp_path):
    torch.manual_seed(2)
    net = build_backbone("resnet18", last_stride=1, ibn=True)
    path = save_backbone(net, tmp_path / "backbone.safetensors")
    assert read_safetensors_config(path)["backbone_config"] == net.backbone_config
    assert (tmp_path / "backbone.json").exists()
    loaded = load_pretrained(path)
    assert loaded.backbone_config == net.backbone_config
    for (k, a), (k2, b) in zip(net.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    with pytest.raises(ValueError, match="disagrees"):
        load_pretrained(path, "resnet50")


def test_official_cion_checkpoint_layout_loads(tmp_path):
    torch.manual_seed(3)
    net = build_backbone("resnet18", ibn=True)
    head = DINOHead(net.feature_dim, out_dim=64, hidden_dim=16, bottleneck_dim=8)
    teacher = {"module.backbone." + k: v for k, v in net.state_dict().items()}
    teacher.update({"module.head." + k: v for k, v in head.state_dict().items()})
    ckpt = {"teacher": teacher, "student": teacher, "epoch": 100, "args": argparse.Namespace(arch="resnet18_ibn")}
    torch.save(ckpt, tmp_path / "checkpoint.pth")
    loaded = load_pretrained(tmp_path / "checkpoint.pth")  # CION's args.arch names the network
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    torch.save({**ckpt, "args": argparse.Namespace(arch="vit_small")}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="pass name"):
        load_pretrained(tmp_path / "other.pth")


def test_load_pretrained_names_missing_and_mismatched_keys(tmp_path):
    net = build_backbone("resnet18")
    state = {"module.backbone." + k: v for k, v in net.state_dict().items()}
    del state["module.backbone.layer2.0.conv1.weight"]
    with pytest.raises(ValueError, match=r"missing keys \['layer2.0.conv1.weight'\]"):
        load_pretrained({"teacher": state}, "resnet18")
    with pytest.raises(ValueError, match="shape mismatches|unexpected keys"):
        load_pretrained(net.state_dict(), "resnet18", ibn=True)
    with pytest.raises(FileNotFoundError):
        load_pretrained(tmp_path / "nothing.safetensors")


def _saved(path, value):
    """``path`` holding ``value``: bytes as they are, anything else through torch.save."""
    if isinstance(value, bytes):
        path.write_bytes(value)
    else:
        torch.save(value, path)
    return path


class NotAllowed:
    """A class outside torch.load's weights_only allow-list."""


@pytest.mark.parametrize("name, value, pattern", [
    ("g.pth", bytes(range(256)) * 8, "g.pth is not a checkpoint torch.load reads"),
    ("g.safetensors", bytes(range(256)) * 8, "g.safetensors is unreadable"),
    ("c.pth", {"x": NotAllowed()}, r"c.pth is not a checkpoint .*Unsupported global"),
    ("t.pth", torch.zeros(3), "t.pth holds a Tensor, expected a state dict"),
    ("l.pth", [torch.zeros(3)], "l.pth holds a list, expected a state dict"),
    ("k.pth", {1: torch.zeros(3)}, "k.pth holds no tensors"),
])
def test_load_pretrained_names_a_file_that_is_no_state_dict(tmp_path, name, value, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_pretrained(_saved(tmp_path / name, value), "resnet18")


@pytest.mark.parametrize("metadata", ["not json{", "[1, 2]", '{"backbone_config": {"nope": 1}}',
                                      '{"backbone_config": {"arch": "resnet18"}, "prefix": 3}'])
def test_load_pretrained_names_a_safetensors_file_with_foreign_metadata(tmp_path, metadata):
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1)}, str(tmp_path / "m.safetensors"), metadata={"cion_fast": metadata})
    with pytest.raises(ValueError, match="m.safetensors: its metadata entry 'cion_fast' is not our export's JSON object"):
        load_pretrained(tmp_path / "m.safetensors")


def test_load_pretrained_refuses_integer_and_non_finite_weights_but_keeps_integer_buffers(tmp_path):
    state = build_backbone("resnet18").state_dict()
    assert state["bn1.num_batches_tracked"].dtype == torch.int64  # an integer buffer that must still load
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    assert load_pretrained(_saved(tmp_path / "half.pth", half), "resnet18").bn1.num_batches_tracked.dtype == torch.int64
    for key, value, pattern in [("conv1.weight", state["conv1.weight"].long(), "is torch.int64, expected torch.float32"),
                                ("conv1.weight", torch.full_like(state["conv1.weight"], float("nan")), "holds NaN or infinite"),
                                ("bn1.bias", torch.full_like(state["bn1.bias"], float("inf")), "holds NaN or infinite"),
                                ("bn1.num_batches_tracked", torch.tensor(0.5), "is torch.float32, expected torch.int64")]:
        with pytest.raises(ValueError, match=rf"bad.pth: tensor '{key}' {pattern}"):
            load_pretrained(_saved(tmp_path / "bad.pth", {**state, key: value}), "resnet18")
