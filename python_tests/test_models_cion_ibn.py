"""Official CION / ReIDZoo ResNet-IBN-a checkpoints load into our backbone: their model code,
copied below, builds resnet18_ibn_a / resnet50_ibn_a, its teacher is saved the way CION's
pre-training saves it, and ``load_pretrained(..., ibn=True, last_stride=1)`` must map every backbone
key, drop the head, and give the same pooled features in eval mode.

CION's ResNet_IBN hard-codes ``stride=1`` for layer4 ("# last_stride=1"): its pooled features are
those of our ``last_stride=1`` backbone. A plain ``load_pretrained(..., ibn=True)`` loads the same
weights (a stride has no parameters) into a stride-2 layer4, whose features differ.
"""

from __future__ import annotations

import argparse
import math
import warnings

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from cion_fast.models import load_pretrained  # noqa: E402

# their DINOHead uses nn.utils.weight_norm (keys weight_g / weight_v), which torch deprecates
pytestmark = pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning",
                                        "ignore:.*weight_norm.*:UserWarning")

# ---- their code ---------------------------------------------------------------------------------
# Verbatim from github.com/Zplusdragon/CION_ReIDZoo (Apache License 2.0), commit
# 7ac6fd738da74e70beac127b4136a51ed2dd24d3 (these files last changed in f6fa2e3d, 2024-09-30):
# CION_Pretrain/models/ResNet_IBN.py (all of it: IBN, BasicBlock_IBN, Bottleneck_IBN, ResNet_IBN,
# resnet{18,34,50,101,152}_ibn_a), CION_Pretrain/models/Head.py (DINOHead and its trunc_normal_)
# and CION_Pretrain/utils.py (MultiCropWrapper). Only the imports are left out (math, torch, nn,
# warnings are imported above). Their IBN-a follows XingangPan/IBN-Net ibnnet/resnet_ibn.py, except
# that layer4 keeps stride 1.
# fmt: off

class IBN(nn.Module):
    r"""Instance-Batch Normalization layer from
    `"Two at Once: Enhancing Learning and Generalization Capacities via IBN-Net"
    <https://arxiv.org/pdf/1807.09441.pdf>`

    Args:
        planes (int): Number of channels for the input tensor
        ratio (float): Ratio of instance normalization in the IBN layer
    """
    def __init__(self, planes, ratio=0.5):
        super(IBN, self).__init__()
        self.half = int(planes * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x):
        split = torch.split(x, self.half, 1)
        out1 = self.IN(split[0].contiguous())
        out2 = self.BN(split[1].contiguous())
        out = torch.cat((out1, out2), 1)
        return out

class BasicBlock_IBN(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, ibn=None, stride=1, downsample=None):
        super(BasicBlock_IBN, self).__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride,
                               padding=1, bias=False)
        if ibn == 'a':
            self.bn1 = IBN(planes)
        else:
            self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.IN = nn.InstanceNorm2d(planes, affine=True) if ibn == 'b' else None
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        residual = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)

        if self.downsample is not None:
            residual = self.downsample(x)

        out += residual
        if self.IN is not None:
            out = self.IN(out)
        out = self.relu(out)

        return out


class Bottleneck_IBN(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, ibn=None, stride=1, downsample=None):
        super(Bottleneck_IBN, self).__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        if ibn == 'a':
            self.bn1 = IBN(planes)
        else:
            self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride,
                               padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.IN = nn.InstanceNorm2d(planes * 4, affine=True) if ibn == 'b' else None
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        residual = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)

        out = self.conv3(out)
        out = self.bn3(out)

        if self.downsample is not None:
            residual = self.downsample(x)

        out += residual
        if self.IN is not None:
            out = self.IN(out)
        out = self.relu(out)

        return out


class ResNet_IBN(nn.Module):

    def __init__(self,
                 block,
                 layers,
                 ibn_cfg=('a', 'a', 'a', None),
                 ):
        self.inplanes = 64
        super(ResNet_IBN, self).__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3,
                               bias=False)
        if ibn_cfg[0] == 'b':
            self.bn1 = nn.InstanceNorm2d(64, affine=True)
        else:
            self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], ibn=ibn_cfg[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2, ibn=ibn_cfg[1])
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, ibn=ibn_cfg[2])
        # last_stride=1
        self.layer4 = self._make_layer(block, 512, layers[3], stride=1, ibn=ibn_cfg[3])
        self.avgpool = nn.AdaptiveAvgPool2d(1)

        self.embed_dim = 512 * block.expansion

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2. / n))
            elif isinstance(m, nn.BatchNorm2d) or isinstance(m, nn.InstanceNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()

    def _make_layer(self, block, planes, blocks, stride=1, ibn=None):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion,
                          kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )

        layers = []
        layers.append(block(self.inplanes, planes,
                            None if ibn == 'b' else ibn,
                            stride, downsample))
        self.inplanes = planes * block.expansion
        for i in range(1, blocks):
            layers.append(block(self.inplanes, planes,
                                None if (ibn == 'b' and i < blocks-1) else ibn))

        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.avgpool(x)
        x = torch.flatten(x,1)
        return x


def resnet18_ibn_a():
    model = ResNet_IBN(block=BasicBlock_IBN,
                       layers=[2, 2, 2, 2],
                       ibn_cfg=('a', 'a', 'a', None))
    return model


def resnet34_ibn_a():
    model = ResNet_IBN(block=BasicBlock_IBN,
                       layers=[3, 4, 6, 3],
                       ibn_cfg=('a', 'a', 'a', None))
    return model


def resnet50_ibn_a():
    model = ResNet_IBN(block=Bottleneck_IBN,
                       layers=[3, 4, 6, 3],
                       ibn_cfg=('a', 'a', 'a', None))
    return model


def resnet101_ibn_a():
    model = ResNet_IBN(block=Bottleneck_IBN,
                       layers=[3, 4, 23, 3],
                       ibn_cfg=('a', 'a', 'a', None))
    return model


def resnet152_ibn_a():
    model = ResNet_IBN(block=Bottleneck_IBN,
                       layers=[3, 8, 36, 3],
                       ibn_cfg=('a', 'a', 'a', None))
    return model


def _no_grad_trunc_normal_(tensor, mean, std, a, b):
    # Cut & paste from PyTorch official master until it's in a few official releases - RW
    # Method based on https://people.sc.fsu.edu/~jburkardt/presentations/truncated_normal.pdf
    def norm_cdf(x):
        # Computes standard normal cumulative distribution function
        return (1. + math.erf(x / math.sqrt(2.))) / 2.

    if (mean < a - 2 * std) or (mean > b + 2 * std):
        warnings.warn("mean is more than 2 std from [a, b] in nn.init.trunc_normal_. "
                      "The distribution of values may be incorrect.",
                      stacklevel=2)

    with torch.no_grad():
        # Values are generated by using a truncated uniform distribution and
        # then using the inverse CDF for the normal distribution.
        # Get upper and lower cdf values
        l = norm_cdf((a - mean) / std)
        u = norm_cdf((b - mean) / std)

        # Uniformly fill tensor with values from [l, u], then translate to
        # [2l-1, 2u-1].
        tensor.uniform_(2 * l - 1, 2 * u - 1)

        # Use inverse cdf transform for normal distribution to get truncated
        # standard normal
        tensor.erfinv_()

        # Transform to proper mean, std
        tensor.mul_(std * math.sqrt(2.))
        tensor.add_(mean)

        # Clamp to ensure it's in the proper range
        tensor.clamp_(min=a, max=b)
        return tensor


def trunc_normal_(tensor, mean=0., std=1., a=-2., b=2.):
    # type: (Tensor, float, float, float, float) -> Tensor
    return _no_grad_trunc_normal_(tensor, mean, std, a, b)


class DINOHead(nn.Module):
    def __init__(self, in_dim, out_dim, use_bn=False, norm_last_layer=True, nlayers=3, hidden_dim=2048, bottleneck_dim=256):
        super().__init__()
        nlayers = max(nlayers, 1)
        if nlayers == 1:
            self.mlp = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers = [nn.Linear(in_dim, hidden_dim)]
            if use_bn:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
            for _ in range(nlayers - 2):
                layers.append(nn.Linear(hidden_dim, hidden_dim))
                if use_bn:
                    layers.append(nn.BatchNorm1d(hidden_dim))
                layers.append(nn.GELU())
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        if norm_last_layer:
            self.last_layer.weight_g.requires_grad = False

    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.mlp(x)
        x = nn.functional.normalize(x, dim=-1, p=2)
        x = self.last_layer(x)
        return x


class MultiCropWrapper(nn.Module):
    """
    Perform forward pass separately on each resolution input.
    The inputs corresponding to a single resolution are clubbed and single
    forward is run on the same resolution inputs. Hence we do several
    forward passes = number of different resolutions used. We then
    concatenate all the output features and run the head forward on these
    concatenated features.
    """
    def __init__(self, backbone, head):
        super(MultiCropWrapper, self).__init__()
        # disable layers dedicated to ImageNet labels classification
        backbone.fc, backbone.head = nn.Identity(), nn.Identity()
        self.backbone = backbone
        self.head = head

    def forward(self, x):
        # convert to list
        if not isinstance(x, list):
            x = [x]
        idx_crops = torch.cumsum(torch.unique_consecutive(
            torch.tensor([inp.shape[-1] for inp in x]),
            return_counts=True,
        )[1], 0)
        start_idx = 0
        for end_idx in idx_crops:
            _out = self.backbone(torch.cat(x[start_idx: end_idx]))
            if start_idx == 0:
                output = _out
            else:
                output = torch.cat((output, _out))
            start_idx = end_idx
        # Run the head forward on the concatenated features.
        return self.head(output)


# fmt: on
# ---- how CION_Pretrain/run.py saves its teacher -----------------------------------------------------
# teacher = utils.MultiCropWrapper(model_zoo[arch](), DINOHead(embed_dim, out_dim, use_bn=False)),
# converted to SyncBatchNorm (same state-dict keys) and wrapped in DistributedDataParallel (it has
# batch norms), then torch.save({'student': student.state_dict(), 'teacher': teacher.state_dict(),
# 'optimizer': ..., 'epoch': ..., 'args': args, 'Loss': ...}): teacher keys are
# "module.backbone.<resnet key>" and "module.head.<DINOHead key>". Their fine-tuning code
# (CION_Finetune/TransReID/model/backbones/ResNet_IBN.py, load_param) reads ["teacher"] and keeps
# the keys containing "backbone", minus their first 16 characters ("module.backbone.").

HEAD_KEYS = {"mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "mlp.4.weight", "mlp.4.bias",
             "last_layer.weight_g", "last_layer.weight_v"}


def _randomise(model: nn.Module, seed: int) -> None:
    """Random weights and running statistics everywhere (their init leaves BN at 1/0 and IN at
    identity-like values, which would hide a swapped or misplaced norm)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=g) + 0.5)
            elif name.endswith(("weight", "bias", "running_mean")) and tensor.ndim == 1:
                tensor.copy_(torch.randn(tensor.shape, generator=g) * 0.2 + (1.0 if name.endswith("weight") else 0.0))
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=g) * math.sqrt(2.0 / tensor[0].numel()))


def _cion_checkpoint(arch: str, path) -> nn.Module:
    """Their teacher for ``arch`` (e.g. "resnet50_ibn"), saved to ``path`` as CION's run.py saves
    it; returns their backbone."""
    from_zoo = {"resnet18_ibn": resnet18_ibn_a, "resnet50_ibn": resnet50_ibn_a}
    backbone = from_zoo[arch]()
    teacher = MultiCropWrapper(backbone, DINOHead(backbone.embed_dim, 64, use_bn=False))
    _randomise(teacher, seed=0)
    teacher_state = {"module." + k: v for k, v in teacher.state_dict().items()}  # the DDP wrapper
    args = argparse.Namespace(arch=arch, output_dim=64, use_bn_in_head=False, momentum_teacher=0.996)
    torch.save({"student": dict(teacher_state), "teacher": teacher_state, "epoch": 1, "args": args}, path)
    return backbone


@pytest.mark.parametrize("depth", [18, 50])
def test_cion_resnet_ibn_a_checkpoint_loads_with_equal_features(depth, tmp_path):
    path = tmp_path / "checkpoint.pth"
    theirs = _cion_checkpoint(f"resnet{depth}_ibn", path)
    saved = torch.load(path, map_location="cpu", weights_only=False)["teacher"]
    assert {k[len("module.head."):] for k in saved if k.startswith("module.head.")} == HEAD_KEYS
    backbone_keys = {k[len("module.backbone."):] for k in saved if k.startswith("module.backbone.")}
    assert len(backbone_keys) + len(HEAD_KEYS) == len(saved)

    ours = load_pretrained(path, f"resnet{depth}", ibn=True, last_stride=1)  # strict: raises on any missing/unexpected key
    assert set(ours.state_dict()) == backbone_keys
    for key, value in ours.state_dict().items():
        assert torch.equal(value, saved["module.backbone." + key]), key

    x = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    theirs.eval()
    ours.eval()
    with torch.no_grad():
        expected = theirs(x)  # conv1 ... layer4, avgpool, flatten: the features before the DINO head
        got = ours(x)
    assert got.shape == expected.shape == (2, 512 * (1 if depth < 50 else 4))
    assert (got - expected).abs().max().item() <= 1e-5


def test_cion_checkpoint_with_timms_stride_loads_but_differs(tmp_path):
    """The weights fit a stride-2 layer4 too (a stride has no parameters), but its features are not
    CION's: the stride-1 layer4 the checkpoint implies is what reproduces their network, and a
    caller who asks for stride 2 gets it."""
    path = tmp_path / "checkpoint.pth"
    theirs = _cion_checkpoint("resnet18_ibn", path).eval()
    ours = load_pretrained(path, "resnet18", ibn=True, last_stride=2).eval()
    x = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max().item() > 1e-3


def test_a_cion_ibn_checkpoint_says_its_architecture_and_stride(tmp_path):
    """Loaded without options, the checkpoint's args.arch gives resnet18, IBN-a and the stride-1
    layer4: CION's own features, not a silently different network."""
    path = tmp_path / "checkpoint.pth"
    theirs = _cion_checkpoint("resnet18_ibn", path)
    ours = load_pretrained(path)
    x = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(3))
    theirs.eval()
    ours.eval()
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
