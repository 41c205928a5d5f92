"""CION's ReIDZoo teachers of the families other than ResNet-IBN-a, checked against CION's own model
code (copied below, the smallest network of each family): their teacher is saved the way CION's
pre-training saves it, and ``load_pretrained`` must map every backbone key, drop the head and give
the same features in eval mode for a 256 x 128 batch.

None of CION's networks is built with ``timm.create_model``: ``CION_Pretrain/models/*.py`` are
copies of each family's reference code. What that means for their checkpoints:

* ResNet (torchvision's code, ``layer4`` at stride 1), GhostNet (Huawei's) and VOLO (Sea's, built
  for 256 x 128) have timm's key names and shapes: they load, with identical features (ResNet with
  ``last_stride=1``, VOLO with ``img_size=(256, 128)``).
* ConvNeXt, EdgeNeXt (their papers' code) and FastViT (Apple's) hold the same tensors as timm's
  networks under other names (``downsample_layers.0.0.weight`` for timm's ``stem.0.weight``, ...);
  Swin (the detection code: window 8, patch merging at the end of a stage, ``norm3``) too.
  ``load_pretrained`` renames them with timm's ``checkpoint_filter_fn`` of the family (plus
  ``norm3`` -> ``norm`` for Swin) and builds what their ``args.arch`` names (Swin with
  ``window_size=8, always_partition=True`` at 256 x 128): identical features.
* RepViT and ViT are not here: they are other networks than timm's. CION's RepViT has its own
  squeeze-excite (hard-sigmoid gate, reduced width a multiple of 4: 12 channels where timm's has 16
  for 48) and its ``features.N`` layout; CION's ViT ("TransReID_ViT") embeds patches with a
  convolution stem with IBN (``patch_embed.conv.*``, ``patch_embed.proj.weight`` of shape
  [192, 64, 8, 8] where timm's ViT has [192, 3, 16, 16]).
"""

from __future__ import annotations

import argparse
import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
from torch import nn  # noqa: E402

from cion_fast.models import load_pretrained  # noqa: E402
from cion_fast.models.pretrained import CION_ZOO_NAMES  # noqa: E402
from test_models_cion_ibn import HEAD_KEYS, DINOHead, MultiCropWrapper  # noqa: E402  (their Head.py and utils.py)

pytestmark = [
    pytest.mark.usefixtures("torch_one_thread"),
    # their DINOHead uses nn.utils.weight_norm, their code imports from timm's deprecated paths and
    # their Swin calls torch.meshgrid without indexing
    pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning", "ignore:.*weight_norm.*:UserWarning",
                               "ignore:Importing from timm.* is deprecated:FutureWarning",
                               "ignore:torch.meshgrid:UserWarning"),
]

# ---- their code ---------------------------------------------------------------------------------
# Verbatim from github.com/Zplusdragon/CION_ReIDZoo (Apache License 2.0; each file keeps the header
# of the code it was copied from), commit 7ac6fd738da74e70beac127b4136a51ed2dd24d3 (these files last
# changed in f6fa2e3d, 2024-09-30): CION_Pretrain/utils.py (has_batchnorms) and, as the body of one
# function each (so that their names, several of which clash, stay apart), CION_Pretrain/models/
# ResNet.py, GhostNet.py, VOLO.py, ConvNext.py, EdgeNext.py, FastViT.py and Swin_Transformer.py, each
# without the top-level definitions that its smallest network does not use (named in the function's
# docstring). Only the indentation differs. DINOHead and MultiCropWrapper, from the same commit,
# are imported from test_models_cion_ibn.py.
# fmt: off

def has_batchnorms(model):
    bn_types = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
    for name, module in model.named_modules():
        if isinstance(module, bn_types):
            return True
    return False


def _cion_resnet():
    """CION_Pretrain/models/ResNet.py, without resnet34, resnet50, resnet101, resnet152: returns resnet18."""
    from typing import Type, Callable, Union, List, Optional
    import torch
    import torch.nn as nn
    from torch import Tensor


    def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
        """3x3 convolution with padding"""
        return nn.Conv2d(
            in_planes,
            out_planes,
            kernel_size=3,
            stride=stride,
            padding=dilation,
            groups=groups,
            bias=False,
            dilation=dilation,
        )


    def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
        """1x1 convolution"""
        return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


    class BasicBlock(nn.Module):
        expansion: int = 1

        def __init__(
            self,
            inplanes: int,
            planes: int,
            stride: int = 1,
            downsample: Optional[nn.Module] = None,
            groups: int = 1,
            base_width: int = 64,
            dilation: int = 1,
            norm_layer: Optional[Callable[..., nn.Module]] = None,
        ) -> None:
            super().__init__()
            if norm_layer is None:
                norm_layer = nn.BatchNorm2d
            if groups != 1 or base_width != 64:
                raise ValueError("BasicBlock only supports groups=1 and base_width=64")
            if dilation > 1:
                raise NotImplementedError("Dilation > 1 not supported in BasicBlock")
            # Both self.conv1 and self.downsample layers downsample the input when stride != 1
            self.conv1 = conv3x3(inplanes, planes, stride)
            self.bn1 = norm_layer(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = conv3x3(planes, planes)
            self.bn2 = norm_layer(planes)
            self.downsample = downsample
            self.stride = stride

        def forward(self, x: Tensor) -> Tensor:
            identity = x

            out = self.conv1(x)
            out = self.bn1(out)
            out = self.relu(out)

            out = self.conv2(out)
            out = self.bn2(out)

            if self.downsample is not None:
                identity = self.downsample(x)

            out += identity
            out = self.relu(out)

            return out


    class Bottleneck(nn.Module):
        # Bottleneck in torchvision places the stride for downsampling at 3x3 convolution(self.conv2)
        # while original implementation places the stride at the first 1x1 convolution(self.conv1)
        # according to "Deep residual learning for image recognition"https://arxiv.org/abs/1512.03385.
        # This variant is also known as ResNet V1.5 and improves accuracy according to
        # https://ngc.nvidia.com/catalog/model-scripts/nvidia:resnet_50_v1_5_for_pytorch.

        expansion: int = 4

        def __init__(
            self,
            inplanes: int,
            planes: int,
            stride: int = 1,
            downsample: Optional[nn.Module] = None,
            groups: int = 1,
            base_width: int = 64,
            dilation: int = 1,
            norm_layer: Optional[Callable[..., nn.Module]] = None,
        ) -> None:
            super().__init__()
            if norm_layer is None:
                norm_layer = nn.BatchNorm2d
            width = int(planes * (base_width / 64.0)) * groups
            # Both self.conv2 and self.downsample layers downsample the input when stride != 1
            self.conv1 = conv1x1(inplanes, width)
            self.bn1 = norm_layer(width)
            self.conv2 = conv3x3(width, width, stride, groups, dilation)
            self.bn2 = norm_layer(width)
            self.conv3 = conv1x1(width, planes * self.expansion)
            self.bn3 = norm_layer(planes * self.expansion)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample
            self.stride = stride

        def forward(self, x: Tensor) -> Tensor:
            identity = x

            out = self.conv1(x)
            out = self.bn1(out)
            out = self.relu(out)

            out = self.conv2(out)
            out = self.bn2(out)
            out = self.relu(out)

            out = self.conv3(out)
            out = self.bn3(out)

            if self.downsample is not None:
                identity = self.downsample(x)

            out += identity
            out = self.relu(out)

            return out


    class ResNet(nn.Module):
        def __init__(
            self,
            block: Type[Union[BasicBlock, Bottleneck]],
            layers: List[int],
            groups: int = 1,
            width_per_group: int = 64,
            replace_stride_with_dilation: Optional[List[bool]] = None,
            norm_layer: Optional[Callable[..., nn.Module]] = None,
        ) -> None:
            super().__init__()
            if norm_layer is None:
                norm_layer = nn.BatchNorm2d
            self._norm_layer = norm_layer

            self.inplanes = 64
            self.dilation = 1
            if replace_stride_with_dilation is None:
                # each element in the tuple indicates if we should replace
                # the 2x2 stride with a dilated convolution instead
                replace_stride_with_dilation = [False, False, False]
            if len(replace_stride_with_dilation) != 3:
                raise ValueError(
                    "replace_stride_with_dilation should be None "
                    f"or a 3-element tuple, got {replace_stride_with_dilation}"
                )
            self.groups = groups
            self.base_width = width_per_group
            self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = norm_layer(self.inplanes)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.layer1 = self._make_layer(block, 64, layers[0])
            self.layer2 = self._make_layer(block, 128, layers[1], stride=2, dilate=replace_stride_with_dilation[0])
            self.layer3 = self._make_layer(block, 256, layers[2], stride=2, dilate=replace_stride_with_dilation[1])
            # last_stride=1
            self.layer4 = self._make_layer(block, 512, layers[3], stride=1, dilate=replace_stride_with_dilation[2])
            self.avgpool = nn.AdaptiveAvgPool2d(1)

            self.embed_dim = 512 * block.expansion


            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)


        def _make_layer(
            self,
            block: Type[Union[BasicBlock, Bottleneck]],
            planes: int,
            blocks: int,
            stride: int = 1,
            dilate: bool = False,
        ) -> nn.Sequential:
            norm_layer = self._norm_layer
            downsample = None
            previous_dilation = self.dilation
            if dilate:
                self.dilation *= stride
                stride = 1
            if stride != 1 or self.inplanes != planes * block.expansion:
                downsample = nn.Sequential(
                    conv1x1(self.inplanes, planes * block.expansion, stride),
                    norm_layer(planes * block.expansion),
                )

            layers = []
            layers.append(
                block(
                    self.inplanes, planes, stride, downsample, self.groups, self.base_width, previous_dilation, norm_layer
                )
            )
            self.inplanes = planes * block.expansion
            for _ in range(1, blocks):
                layers.append(
                    block(
                        self.inplanes,
                        planes,
                        groups=self.groups,
                        base_width=self.base_width,
                        dilation=self.dilation,
                        norm_layer=norm_layer,
                    )
                )

            return nn.Sequential(*layers)

        def forward(self, x: Tensor) -> Tensor:
            x = self.conv1(x)
            x = self.bn1(x)
            x = self.relu(x)
            x = self.maxpool(x)
            x = self.layer1(x)
            x = self.layer2(x)
            x = self.layer3(x)
            x = self.layer4(x)
            x = self.avgpool(x)
            x = torch.flatten(x, 1)
            return x



    def resnet18():
        return ResNet(BasicBlock, [2, 2, 2, 2])

    return resnet18


def _cion_ghostnet():
    """CION_Pretrain/models/GhostNet.py, without ghostnet_1_0, ghostnet_1_3: returns ghostnet_0_5."""
    # 2020.06.09-Changed for building GhostNet
    #            Huawei Technologies Co., Ltd. <foss@huawei.com>
    """
    Creates a GhostNet Model as defined in:
    GhostNet: More Features from Cheap Operations By Kai Han, Yunhe Wang, Qi Tian, Jianyuan Guo, Chunjing Xu, Chang Xu.
    https://arxiv.org/abs/1911.11907
    Modified from https://github.com/d-li14/mobilenetv3.pytorch and https://github.com/rwightman/pytorch-image-models
    """
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import math



    def _make_divisible(v, divisor, min_value=None):
        """
        This function is taken from the original tf repo.
        It ensures that all layers have a channel number that is divisible by 8
        It can be seen here:
        https://github.com/tensorflow/models/blob/master/research/slim/nets/mobilenet/mobilenet.py
        """
        if min_value is None:
            min_value = divisor
        new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
        # Make sure that round down does not go down by more than 10%.
        if new_v < 0.9 * v:
            new_v += divisor
        return new_v


    def hard_sigmoid(x, inplace: bool = False):
        if inplace:
            return x.add_(3.).clamp_(0., 6.).div_(6.)
        else:
            return F.relu6(x + 3.) / 6.


    class SqueezeExcite(nn.Module):
        def __init__(self, in_chs, se_ratio=0.25, reduced_base_chs=None,
                     act_layer=nn.ReLU, gate_fn=hard_sigmoid, divisor=4, **_):
            super(SqueezeExcite, self).__init__()
            self.gate_fn = gate_fn
            reduced_chs = _make_divisible((reduced_base_chs or in_chs) * se_ratio, divisor)
            self.avg_pool = nn.AdaptiveAvgPool2d(1)
            self.conv_reduce = nn.Conv2d(in_chs, reduced_chs, 1, bias=True)
            self.act1 = act_layer(inplace=True)
            self.conv_expand = nn.Conv2d(reduced_chs, in_chs, 1, bias=True)

        def forward(self, x):
            x_se = self.avg_pool(x)
            x_se = self.conv_reduce(x_se)
            x_se = self.act1(x_se)
            x_se = self.conv_expand(x_se)
            x = x * self.gate_fn(x_se)
            return x


    class ConvBnAct(nn.Module):
        def __init__(self, in_chs, out_chs, kernel_size,
                     stride=1, act_layer=nn.ReLU):
            super(ConvBnAct, self).__init__()
            self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, bias=False)
            self.bn1 = nn.BatchNorm2d(out_chs)
            self.act1 = act_layer(inplace=True)

        def forward(self, x):
            x = self.conv(x)
            x = self.bn1(x)
            x = self.act1(x)
            return x


    class GhostModule(nn.Module):
        def __init__(self, inp, oup, kernel_size=1, ratio=2, dw_size=3, stride=1, relu=True):
            super(GhostModule, self).__init__()
            self.oup = oup
            init_channels = math.ceil(oup / ratio)
            new_channels = init_channels * (ratio - 1)

            self.primary_conv = nn.Sequential(
                nn.Conv2d(inp, init_channels, kernel_size, stride, kernel_size // 2, bias=False),
                nn.BatchNorm2d(init_channels),
                nn.ReLU(inplace=True) if relu else nn.Sequential(),
            )

            self.cheap_operation = nn.Sequential(
                nn.Conv2d(init_channels, new_channels, dw_size, 1, dw_size // 2, groups=init_channels, bias=False),
                nn.BatchNorm2d(new_channels),
                nn.ReLU(inplace=True) if relu else nn.Sequential(),
            )

        def forward(self, x):
            x1 = self.primary_conv(x)
            x2 = self.cheap_operation(x1)
            out = torch.cat([x1, x2], dim=1)
            return out[:, :self.oup, :, :]


    class GhostBottleneck(nn.Module):
        """ Ghost bottleneck w/ optional SE"""

        def __init__(self, in_chs, mid_chs, out_chs, dw_kernel_size=3,
                     stride=1, act_layer=nn.ReLU, se_ratio=0.):
            super(GhostBottleneck, self).__init__()
            has_se = se_ratio is not None and se_ratio > 0.
            self.stride = stride

            # Point-wise expansion
            self.ghost1 = GhostModule(in_chs, mid_chs, relu=True)

            # Depth-wise convolution
            if self.stride > 1:
                self.conv_dw = nn.Conv2d(mid_chs, mid_chs, dw_kernel_size, stride=stride,
                                         padding=(dw_kernel_size - 1) // 2,
                                         groups=mid_chs, bias=False)
                self.bn_dw = nn.BatchNorm2d(mid_chs)

            # Squeeze-and-excitation
            if has_se:
                self.se = SqueezeExcite(mid_chs, se_ratio=se_ratio)
            else:
                self.se = None

            # Point-wise linear projection
            self.ghost2 = GhostModule(mid_chs, out_chs, relu=False)

            # shortcut
            if (in_chs == out_chs and self.stride == 1):
                self.shortcut = nn.Sequential()
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_chs, in_chs, dw_kernel_size, stride=stride,
                              padding=(dw_kernel_size - 1) // 2, groups=in_chs, bias=False),
                    nn.BatchNorm2d(in_chs),
                    nn.Conv2d(in_chs, out_chs, 1, stride=1, padding=0, bias=False),
                    nn.BatchNorm2d(out_chs),
                )

        def forward(self, x):
            residual = x

            # 1st ghost bottleneck
            x = self.ghost1(x)

            # Depth-wise convolution
            if self.stride > 1:
                x = self.conv_dw(x)
                x = self.bn_dw(x)

            # Squeeze-and-excitation
            if self.se is not None:
                x = self.se(x)

            # 2nd ghost bottleneck
            x = self.ghost2(x)

            x += self.shortcut(residual)
            return x


    class GhostNet(nn.Module):
        def __init__(self, cfgs, width=1.0, dropout=0.0):
            super(GhostNet, self).__init__()
            # setting of inverted residual blocks
            self.cfgs = cfgs
            self.dropout = dropout

            # building first layer
            output_channel = _make_divisible(16 * width, 4)
            self.conv_stem = nn.Conv2d(3, output_channel, 3, 2, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(output_channel)
            self.act1 = nn.ReLU(inplace=True)
            input_channel = output_channel

            # building inverted residual blocks
            stages = []
            block = GhostBottleneck
            for cfg in self.cfgs:
                layers = []
                for k, exp_size, c, se_ratio, s in cfg:
                    output_channel = _make_divisible(c * width, 4)
                    hidden_channel = _make_divisible(exp_size * width, 4)
                    layers.append(block(input_channel, hidden_channel, output_channel, k, s,
                                        se_ratio=se_ratio))
                    input_channel = output_channel
                stages.append(nn.Sequential(*layers))

            output_channel = _make_divisible(exp_size * width, 4)
            stages.append(nn.Sequential(ConvBnAct(input_channel, output_channel, 1)))
            input_channel = output_channel

            self.blocks = nn.Sequential(*stages)

            # building last several layers
            output_channel = 1280
            self.global_pool = nn.AdaptiveAvgPool2d((1, 1))
            self.conv_head = nn.Conv2d(input_channel, output_channel, 1, 1, 0, bias=True)
            self.act2 = nn.ReLU(inplace=True)

            self.embed_dim = output_channel

        def forward(self, x):
            x = self.conv_stem(x)
            x = self.bn1(x)
            x = self.act1(x)
            x = self.blocks(x)
            x = self.global_pool(x)
            x = self.conv_head(x)
            x = self.act2(x)
            x = x.view(x.size(0), -1)
            if self.dropout > 0.:
                x = F.dropout(x, p=self.dropout, training=self.training)

            return x


    def ghostnet_0_5():
        """
        Constructs a GhostNet0.5x model
        """
        cfgs = [
            # k, t, c, SE, s
            # stage1
            [[3, 16, 16, 0, 1]],
            # stage2
            [[3, 48, 24, 0, 2]],
            [[3, 72, 24, 0, 1]],
            # stage3
            [[5, 72, 40, 0.25, 2]],
            [[5, 120, 40, 0.25, 1]],
            # stage4
            [[3, 240, 80, 0, 2]],
            [[3, 200, 80, 0, 1],
             [3, 184, 80, 0, 1],
             [3, 184, 80, 0, 1],
             [3, 480, 112, 0.25, 1],
             [3, 672, 112, 0.25, 1]
             ],
            # stage5
            [[5, 672, 160, 0.25, 2]],
            [[5, 960, 160, 0, 1],
             [5, 960, 160, 0.25, 1],
             [5, 960, 160, 0, 1],
             [5, 960, 160, 0.25, 1]
             ]
        ]
        return GhostNet(cfgs, width=0.5)



    # model = ghostnet_1_0()
    # img = torch.randn([64,3,256,128])
    # out = model(img)

    return ghostnet_0_5


def _cion_volo():
    """CION_Pretrain/models/VOLO.py, without rand_bbox, volo_d2, volo_d3, volo_d4, volo_d5: returns volo_d1."""
    # Copyright 2021 Sea Limited.
    #
    # Licensed under the Apache License, Version 2.0 (the "License");
    # you may not use this file except in compliance with the License.
    # You may obtain a copy of the License at
    #
    #     http://www.apache.org/licenses/LICENSE-2.0
    #
    # Unless required by applicable law or agreed to in writing, software
    # distributed under the License is distributed on an "AS IS" BASIS,
    # WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
    # See the License for the specific language governing permissions and
    # limitations under the License.
    """
    Vision OutLOoker (VOLO) implementation
    """
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from timm.models.layers import DropPath, trunc_normal_
    from timm.models.registry import register_model
    import math
    import numpy as np


    class OutlookAttention(nn.Module):
        """
        Implementation of outlook attention
        --dim: hidden dim
        --num_heads: number of heads
        --kernel_size: kernel size in each window for outlook attention
        return: token features after outlook attention
        """

        def __init__(self, dim, num_heads, kernel_size=3, padding=1, stride=1,
                     qkv_bias=False, qk_scale=None, attn_drop=0., proj_drop=0.):
            super().__init__()
            head_dim = dim // num_heads
            self.num_heads = num_heads
            self.kernel_size = kernel_size
            self.padding = padding
            self.stride = stride
            self.scale = qk_scale or head_dim**-0.5

            self.v = nn.Linear(dim, dim, bias=qkv_bias)
            self.attn = nn.Linear(dim, kernel_size**4 * num_heads)

            self.attn_drop = nn.Dropout(attn_drop)
            self.proj = nn.Linear(dim, dim)
            self.proj_drop = nn.Dropout(proj_drop)

            self.unfold = nn.Unfold(kernel_size=kernel_size, padding=padding, stride=stride)
            self.pool = nn.AvgPool2d(kernel_size=stride, stride=stride, ceil_mode=True)

        def forward(self, x):
            B, H, W, C = x.shape

            v = self.v(x).permute(0, 3, 1, 2)  # B, C, H, W

            h, w = math.ceil(H / self.stride), math.ceil(W / self.stride)
            v = self.unfold(v).reshape(B, self.num_heads, C // self.num_heads,
                                       self.kernel_size * self.kernel_size,
                                       h * w).permute(0, 1, 4, 3, 2)  # B,H,N,kxk,C/H

            attn = self.pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            attn = self.attn(attn).reshape(
                B, h * w, self.num_heads, self.kernel_size * self.kernel_size,
                self.kernel_size * self.kernel_size).permute(0, 2, 1, 3, 4)  # B,H,N,kxk,kxk
            attn = attn * self.scale
            attn = attn.softmax(dim=-1)
            attn = self.attn_drop(attn)

            x = (attn @ v).permute(0, 1, 4, 3, 2).reshape(
                B, C * self.kernel_size * self.kernel_size, h * w)
            x = F.fold(x, output_size=(H, W), kernel_size=self.kernel_size,
                       padding=self.padding, stride=self.stride)

            x = self.proj(x.permute(0, 2, 3, 1))
            x = self.proj_drop(x)

            return x


    class Outlooker(nn.Module):
        """
        Implementation of outlooker layer: which includes outlook attention + MLP
        Outlooker is the first stage in our VOLO
        --dim: hidden dim
        --num_heads: number of heads
        --mlp_ratio: mlp ratio
        --kernel_size: kernel size in each window for outlook attention
        return: outlooker layer
        """
        def __init__(self, dim, kernel_size, padding, stride=1,
                     num_heads=1,mlp_ratio=3., attn_drop=0.,
                     drop_path=0., act_layer=nn.GELU,
                     norm_layer=nn.LayerNorm, qkv_bias=False,
                     qk_scale=None):
            super().__init__()
            self.norm1 = norm_layer(dim)
            self.attn = OutlookAttention(dim, num_heads, kernel_size=kernel_size,
                                         padding=padding, stride=stride,
                                         qkv_bias=qkv_bias, qk_scale=qk_scale,
                                         attn_drop=attn_drop)

            self.drop_path = DropPath(
                drop_path) if drop_path > 0. else nn.Identity()

            self.norm2 = norm_layer(dim)
            mlp_hidden_dim = int(dim * mlp_ratio)
            self.mlp = Mlp(in_features=dim,
                           hidden_features=mlp_hidden_dim,
                           act_layer=act_layer)

        def forward(self, x):
            x = x + self.drop_path(self.attn(self.norm1(x)))
            x = x + self.drop_path(self.mlp(self.norm2(x)))
            return x


    class Mlp(nn.Module):
        "Implementation of MLP"

        def __init__(self, in_features, hidden_features=None,
                     out_features=None, act_layer=nn.GELU,
                     drop=0.):
            super().__init__()
            out_features = out_features or in_features
            hidden_features = hidden_features or in_features
            self.fc1 = nn.Linear(in_features, hidden_features)
            self.act = act_layer()
            self.fc2 = nn.Linear(hidden_features, out_features)
            self.drop = nn.Dropout(drop)

        def forward(self, x):
            x = self.fc1(x)
            x = self.act(x)
            x = self.drop(x)
            x = self.fc2(x)
            x = self.drop(x)
            return x


    class Attention(nn.Module):
        "Implementation of self-attention"

        def __init__(self, dim,  num_heads=8, qkv_bias=False,
                     qk_scale=None, attn_drop=0., proj_drop=0.):
            super().__init__()
            self.num_heads = num_heads
            head_dim = dim // num_heads
            self.scale = qk_scale or head_dim**-0.5

            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
            self.attn_drop = nn.Dropout(attn_drop)
            self.proj = nn.Linear(dim, dim)
            self.proj_drop = nn.Dropout(proj_drop)

        def forward(self, x):
            B, H, W, C = x.shape

            qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads,
                                      C // self.num_heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[
                2]  # make torchscript happy (cannot use tensor as tuple)

            attn = (q @ k.transpose(-2, -1)) * self.scale
            attn = attn.softmax(dim=-1)
            attn = self.attn_drop(attn)

            x = (attn @ v).transpose(1, 2).reshape(B, H, W, C)
            x = self.proj(x)
            x = self.proj_drop(x)

            return x


    class Transformer(nn.Module):
        """
        Implementation of Transformer,
        Transformer is the second stage in our VOLO
        """
        def __init__(self, dim, num_heads, mlp_ratio=4., qkv_bias=False,
                     qk_scale=None, attn_drop=0., drop_path=0.,
                     act_layer=nn.GELU, norm_layer=nn.LayerNorm):
            super().__init__()
            self.norm1 = norm_layer(dim)
            self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias,
                                  qk_scale=qk_scale, attn_drop=attn_drop)

            # NOTE: drop path for stochastic depth, we shall see if this is better than dropout here
            self.drop_path = DropPath(
                drop_path) if drop_path > 0. else nn.Identity()

            self.norm2 = norm_layer(dim)
            mlp_hidden_dim = int(dim * mlp_ratio)
            self.mlp = Mlp(in_features=dim,
                           hidden_features=mlp_hidden_dim,
                           act_layer=act_layer)

        def forward(self, x):
            x = x + self.drop_path(self.attn(self.norm1(x)))
            x = x + self.drop_path(self.mlp(self.norm2(x)))
            return x


    class ClassAttention(nn.Module):
        """
        Class attention layer from CaiT, see details in CaiT
        Class attention is the post stage in our VOLO, which is optional.
        """
        def __init__(self, dim, num_heads=8, head_dim=None, qkv_bias=False,
                     qk_scale=None, attn_drop=0., proj_drop=0.):
            super().__init__()
            self.num_heads = num_heads
            if head_dim is not None:
                self.head_dim = head_dim
            else:
                head_dim = dim // num_heads
                self.head_dim = head_dim
            self.scale = qk_scale or head_dim**-0.5

            self.kv = nn.Linear(dim,
                                self.head_dim * self.num_heads * 2,
                                bias=qkv_bias)
            self.q = nn.Linear(dim, self.head_dim * self.num_heads, bias=qkv_bias)
            self.attn_drop = nn.Dropout(attn_drop)
            self.proj = nn.Linear(self.head_dim * self.num_heads, dim)
            self.proj_drop = nn.Dropout(proj_drop)

        def forward(self, x):
            B, N, C = x.shape

            kv = self.kv(x).reshape(B, N, 2, self.num_heads,
                                    self.head_dim).permute(2, 0, 3, 1, 4)
            k, v = kv[0], kv[
                1]  # make torchscript happy (cannot use tensor as tuple)
            q = self.q(x[:, :1, :]).reshape(B, self.num_heads, 1, self.head_dim)
            attn = ((q * self.scale) @ k.transpose(-2, -1))
            attn = attn.softmax(dim=-1)
            attn = self.attn_drop(attn)

            cls_embed = (attn @ v).transpose(1, 2).reshape(
                B, 1, self.head_dim * self.num_heads)
            cls_embed = self.proj(cls_embed)
            cls_embed = self.proj_drop(cls_embed)
            return cls_embed


    class ClassBlock(nn.Module):
        """
        Class attention block from CaiT, see details in CaiT
        We use two-layers class attention in our VOLO, which is optional.
        """

        def __init__(self, dim, num_heads, head_dim=None, mlp_ratio=4.,
                     qkv_bias=False, qk_scale=None, drop=0., attn_drop=0.,
                     drop_path=0., act_layer=nn.GELU, norm_layer=nn.LayerNorm):
            super().__init__()
            self.norm1 = norm_layer(dim)
            self.attn = ClassAttention(
                dim, num_heads=num_heads, head_dim=head_dim, qkv_bias=qkv_bias,
                qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop)
            # NOTE: drop path for stochastic depth
            self.drop_path = DropPath(
                drop_path) if drop_path > 0. else nn.Identity()
            self.norm2 = norm_layer(dim)
            mlp_hidden_dim = int(dim * mlp_ratio)
            self.mlp = Mlp(in_features=dim,
                           hidden_features=mlp_hidden_dim,
                           act_layer=act_layer,
                           drop=drop)

        def forward(self, x):
            cls_embed = x[:, :1]
            cls_embed = cls_embed + self.drop_path(self.attn(self.norm1(x)))
            cls_embed = cls_embed + self.drop_path(self.mlp(self.norm2(cls_embed)))
            return torch.cat([cls_embed, x[:, 1:]], dim=1)


    def get_block(block_type, **kargs):
        """
        get block by name, specifically for class attention block in here
        """
        if block_type == 'ca':
            return ClassBlock(**kargs)




    class PatchEmbed(nn.Module):
        """
        Image to Patch Embedding.
        Different with ViT use 1 conv layer, we use 4 conv layers to do patch embedding
        """

        def __init__(self, img_size=224, stem_conv=False, stem_stride=1,
                     patch_size=8, in_chans=3, hidden_dim=64, embed_dim=384):
            super().__init__()
            assert patch_size in [4, 8, 16]

            self.stem_conv = stem_conv
            if stem_conv:
                self.conv = nn.Sequential(
                    nn.Conv2d(in_chans, hidden_dim, kernel_size=7, stride=stem_stride,
                              padding=3, bias=False),  # 112x112
                    nn.BatchNorm2d(hidden_dim),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(hidden_dim, hidden_dim, kernel_size=3, stride=1,
                              padding=1, bias=False),  # 112x112
                    nn.BatchNorm2d(hidden_dim),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(hidden_dim, hidden_dim, kernel_size=3, stride=1,
                              padding=1, bias=False),  # 112x112
                    nn.BatchNorm2d(hidden_dim),
                    nn.ReLU(inplace=True),
                )

            self.proj = nn.Conv2d(hidden_dim,
                                  embed_dim,
                                  kernel_size=patch_size // stem_stride,
                                  stride=patch_size // stem_stride)
            self.num_patches = (img_size // patch_size) * (img_size // patch_size)

        def forward(self, x):
            if self.stem_conv:
                x = self.conv(x)
            x = self.proj(x)  # B, C, H, W
            return x


    class Downsample(nn.Module):
        """
        Image to Patch Embedding, downsampling between stage1 and stage2
        """
        def __init__(self, in_embed_dim, out_embed_dim, patch_size):
            super().__init__()
            self.proj = nn.Conv2d(in_embed_dim, out_embed_dim,
                                  kernel_size=patch_size, stride=patch_size)

        def forward(self, x):
            x = x.permute(0, 3, 1, 2)
            x = self.proj(x)  # B, C, H, W
            x = x.permute(0, 2, 3, 1)
            return x


    def outlooker_blocks(block_fn, index, dim, layers, num_heads=1, kernel_size=3,
                         padding=1,stride=1, mlp_ratio=3., qkv_bias=False, qk_scale=None,
                         attn_drop=0, drop_path_rate=0., **kwargs):
        """
        generate outlooker layer in stage1
        return: outlooker layers
        """
        blocks = []
        for block_idx in range(layers[index]):
            block_dpr = drop_path_rate * (block_idx +
                                          sum(layers[:index])) / (sum(layers) - 1)
            blocks.append(block_fn(dim, kernel_size=kernel_size, padding=padding,
                                   stride=stride, num_heads=num_heads, mlp_ratio=mlp_ratio,
                                   qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop,
                                   drop_path=block_dpr))

        blocks = nn.Sequential(*blocks)

        return blocks


    def transformer_blocks(block_fn, index, dim, layers, num_heads, mlp_ratio=3.,
                           qkv_bias=False, qk_scale=None, attn_drop=0,
                           drop_path_rate=0., **kwargs):
        """
        generate transformer layers in stage2
        return: transformer layers
        """
        blocks = []
        for block_idx in range(layers[index]):
            block_dpr = drop_path_rate * (block_idx +
                                          sum(layers[:index])) / (sum(layers) - 1)
            blocks.append(
                block_fn(dim, num_heads,
                         mlp_ratio=mlp_ratio,
                         qkv_bias=qkv_bias,
                         qk_scale=qk_scale,
                         attn_drop=attn_drop,
                         drop_path=block_dpr))

        blocks = nn.Sequential(*blocks)

        return blocks


    class VOLO(nn.Module):
        """
        Vision Outlooker, the main class of our model
        --layers: [x,x,x,x], four blocks in two stages, the first block is outlooker, the
                  other three are transformer, we set four blocks, which are easily
                  applied to downstream tasks
        --img_size, --in_chans, --num_classes: these three are very easy to understand
        --patch_size: patch_size in outlook attention
        --stem_hidden_dim: hidden dim of patch embedding, d1-d4 is 64, d5 is 128
        --embed_dims, --num_heads: embedding dim, number of heads in each block
        --downsamples: flags to apply downsampling or not
        --outlook_attention: flags to apply outlook attention or not
        --mlp_ratios, --qkv_bias, --qk_scale, --drop_rate: easy to undertand
        --attn_drop_rate, --drop_path_rate, --norm_layer: easy to undertand
        --post_layers: post layers like two class attention layers using [ca, ca],
                      if yes, return_mean=False
        --return_mean: use mean of all feature tokens for classification, if yes, no class token
        --return_dense: use token labeling, details are here:
                        https://github.com/zihangJiang/TokenLabeling
        --mix_token: mixing tokens as token labeling, details are here:
                        https://github.com/zihangJiang/TokenLabeling
        --pooling_scale: pooling_scale=2 means we downsample 2x
        --out_kernel, --out_stride, --out_padding: kerner size,
                                                   stride, and padding for outlook attention
        """
        def __init__(self, layers, img_size=[256,128], in_chans=3, num_classes=1000, patch_size=8,
                     stem_hidden_dim=64, embed_dims=None, num_heads=None, downsamples=None,
                     outlook_attention=None, mlp_ratios=None, qkv_bias=False, qk_scale=None,
                     drop_rate=0., attn_drop_rate=0., drop_path_rate=0., norm_layer=nn.LayerNorm,
                     post_layers=None, return_mean=False,pooling_scale=2, out_kernel=3, out_stride=2, out_padding=1):

            super().__init__()
            self.num_classes = num_classes
            self.img_size = img_size
            self.pooling_scale = pooling_scale
            self.patch_size = patch_size
            self.embed_dim = embed_dims[-1]
            self.return_mean = return_mean  # if yes, return mean, not use class token

            self.patch_embed = PatchEmbed(stem_conv=True, stem_stride=2, patch_size=patch_size,
                                          in_chans=in_chans, hidden_dim=stem_hidden_dim,
                                          embed_dim=embed_dims[0])

            # inital positional encoding, we add positional encoding after outlooker blocks
            self.pos_embed = nn.Parameter(
                torch.zeros(1, img_size[0] // patch_size // pooling_scale,
                            img_size[1] // patch_size // pooling_scale,
                            embed_dims[-1]))

            self.pos_drop = nn.Dropout(p=drop_rate)

            # set the main block in network
            network = []
            for i in range(len(layers)):
                if outlook_attention[i]:
                    # stage 1
                    stage = outlooker_blocks(Outlooker, i, embed_dims[i], layers,
                                             downsample=downsamples[i], num_heads=num_heads[i],
                                             kernel_size=out_kernel, stride=out_stride,
                                             padding=out_padding, mlp_ratio=mlp_ratios[i],
                                             qkv_bias=qkv_bias, qk_scale=qk_scale,
                                             attn_drop=attn_drop_rate, norm_layer=norm_layer)
                    network.append(stage)
                else:
                    # stage 2
                    stage = transformer_blocks(Transformer, i, embed_dims[i], layers,
                                               num_heads[i], mlp_ratio=mlp_ratios[i],
                                               qkv_bias=qkv_bias, qk_scale=qk_scale,
                                               drop_path_rate=drop_path_rate,
                                               attn_drop=attn_drop_rate,
                                               norm_layer=norm_layer)
                    network.append(stage)

                if downsamples[i]:
                    # downsampling between two stages
                    network.append(Downsample(embed_dims[i], embed_dims[i + 1], 2))

            self.network = nn.ModuleList(network)

            # set post block, for example, class attention layers
            self.post_network = None
            if post_layers is not None:
                self.post_network = nn.ModuleList([
                    get_block(post_layers[i],
                              dim=embed_dims[-1],
                              num_heads=num_heads[-1],
                              mlp_ratio=mlp_ratios[-1],
                              qkv_bias=qkv_bias,
                              qk_scale=qk_scale,
                              attn_drop=attn_drop_rate,
                              drop_path=0.,
                              norm_layer=norm_layer)
                    for i in range(len(post_layers))
                ])
                self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims[-1]))
                trunc_normal_(self.cls_token, std=.02)

            self.norm = norm_layer(embed_dims[-1])

            trunc_normal_(self.pos_embed, std=.02)
            self.apply(self._init_weights)

        def _init_weights(self, m):
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.LayerNorm):
                nn.init.constant_(m.bias, 0)
                nn.init.constant_(m.weight, 1.0)

        @torch.jit.ignore
        def no_weight_decay(self):
            return {'pos_embed', 'cls_token'}

        def interpolate_pos_encoding(self, x, h, w):
            npatch = x.shape[1]*x.shape[2]
            N = self.pos_embed.shape[1]*self.pos_embed.shape[2]
            if npatch == N:
                return self.pos_embed
            OH = self.img_size[0] // self.patch_size // self.pooling_scale
            OW = self.img_size[1] // self.patch_size // self.pooling_scale
            patch_pos_embed = self.pos_embed
            dim = x.shape[-1]
            # we add a small number to avoid floating point error in the interpolation
            # see discussion at https://github.com/facebookresearch/dino/issues/8
            w0 = w // self.patch_size // self.pooling_scale
            h0 = h // self.patch_size // self.pooling_scale
            w0, h0 = w0 + 0.1, h0 + 0.1
            patch_pos_embed = nn.functional.interpolate(
                patch_pos_embed.reshape(1, OH, OW, dim).permute(0, 3, 1, 2),
                scale_factor=(h0 / OH, w0 / OW),
                mode='bicubic',
            )
            assert int(w0) == patch_pos_embed.shape[-1] and int(h0) == patch_pos_embed.shape[-2]
            patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1)
            return patch_pos_embed

        def forward_embeddings(self, x):
            B, nc, w, h = x.shape
            # patch embedding
            x = self.patch_embed(x)
            # B,C,H,W-> B,H,W,C
            x = x.permute(0, 2, 3, 1)
            return x,w,h

        def forward_tokens(self, x,w,h):
            for idx, block in enumerate(self.network):
                if idx == 2:  # add positional encoding after outlooker blocks
                    x = x + self.interpolate_pos_encoding(x, w, h)
                    x = self.pos_drop(x)
                x = block(x)

            B, H, W, C = x.shape
            x = x.reshape(B, -1, C)
            return x

        def forward_cls(self, x):
            B, N, C = x.shape
            cls_tokens = self.cls_token.expand(B, -1, -1)
            x = torch.cat((cls_tokens, x), dim=1)
            for block in self.post_network:
                x = block(x)
            return x

        def forward(self, x):
            # step1: patch embedding
            x,w,h = self.forward_embeddings(x)

            # step2: tokens learning in the two stages
            x = self.forward_tokens(x,w,h)

            # step3: post network, apply class attention or not
            if self.post_network is not None:
                x = self.forward_cls(x)
            x = self.norm(x)

            if self.return_mean:  # if no class token, return mean
                return x.mean(1)

            x = x[:, 0]
            return x




    def volo_d1(**kwargs):
        """
        VOLO-D1 model, Params: 27M
        --layers: [x,x,x,x], four blocks in two stages, the first stage(block) is outlooker,
                the other three blocks are transformer, we set four blocks, which are easily
                 applied to downstream tasks
        --embed_dims, --num_heads,: embedding dim, number of heads in each block
        --downsamples: flags to apply downsampling or not in four blocks
        --outlook_attention: flags to apply outlook attention or not
        --mlp_ratios: mlp ratio in four blocks
        --post_layers: post layers like two class attention layers using [ca, ca]
        See detail for all args in the class VOLO()
        """
        layers = [4, 4, 8, 2]  # num of layers in the four blocks
        embed_dims = [192, 384, 384, 384]
        num_heads = [6, 12, 12, 12]
        mlp_ratios = [3, 3, 3, 3]
        downsamples = [True, False, False, False] # do downsampling after first block
        outlook_attention = [True, False, False, False ]
        # first block is outlooker (stage1), the other three are transformer (stage2)
        model = VOLO(layers,
                     embed_dims=embed_dims,
                     num_heads=num_heads,
                     mlp_ratios=mlp_ratios,
                     downsamples=downsamples,
                     outlook_attention=outlook_attention,
                     post_layers=['ca', 'ca'],
                     **kwargs)
        return model

    return volo_d1


def _cion_convnext():
    """CION_Pretrain/models/ConvNext.py, without convnext_small, convnext_base, convnext_large, convnext_xlarge: returns convnext_tiny."""
    # Copyright (c) Meta Platforms, Inc. and affiliates.
    # All rights reserved.
    # This source code is licensed under the license found in the
    # LICENSE file in the root directory of this source tree.

    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from timm.models.layers import trunc_normal_, DropPath



    class Block(nn.Module):
        r""" ConvNeXt Block. There are two equivalent implementations:
        (1) DwConv -> LayerNorm (channels_first) -> 1x1 Conv -> GELU -> 1x1 Conv; all in (N, C, H, W)
        (2) DwConv -> Permute to (N, H, W, C); LayerNorm (channels_last) -> Linear -> GELU -> Linear; Permute back
        We use (2) as we find it slightly faster in PyTorch

        Args:
            dim (int): Number of input channels.
            drop_path (float): Stochastic depth rate. Default: 0.0
            layer_scale_init_value (float): Init value for Layer Scale. Default: 1e-6.
        """

        def __init__(self, dim, drop_path=0., layer_scale_init_value=1e-6):
            super().__init__()
            self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)  # depthwise conv
            self.norm = LayerNorm(dim, eps=1e-6)
            self.pwconv1 = nn.Linear(dim, 4 * dim)  # pointwise/1x1 convs, implemented with linear layers
            self.act = nn.GELU()
            self.pwconv2 = nn.Linear(4 * dim, dim)
            self.gamma = nn.Parameter(layer_scale_init_value * torch.ones((dim)),
                                      requires_grad=True) if layer_scale_init_value > 0 else None
            self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

        def forward(self, x):
            input = x
            x = self.dwconv(x)
            x = x.permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
            x = self.norm(x)
            x = self.pwconv1(x)
            x = self.act(x)
            x = self.pwconv2(x)
            if self.gamma is not None:
                x = self.gamma * x
            x = x.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)

            x = input + self.drop_path(x)
            return x


    class ConvNeXt(nn.Module):
        r""" ConvNeXt
            A PyTorch impl of : `A ConvNet for the 2020s`  -
              https://arxiv.org/pdf/2201.03545.pdf

        Args:
            in_chans (int): Number of input image channels. Default: 3
            num_classes (int): Number of classes for classification head. Default: 1000
            depths (tuple(int)): Number of blocks at each stage. Default: [3, 3, 9, 3]
            dims (int): Feature dimension at each stage. Default: [96, 192, 384, 768]
            drop_path_rate (float): Stochastic depth rate. Default: 0.
            layer_scale_init_value (float): Init value for Layer Scale. Default: 1e-6.
            head_init_scale (float): Init scaling value for classifier weights and biases. Default: 1.
        """

        def __init__(self, in_chans=3, depths=[3, 3, 9, 3], dims=[96, 192, 384, 768], drop_path_rate=0.,
                     layer_scale_init_value=1e-6
                     ):
            super().__init__()

            self.downsample_layers = nn.ModuleList()  # stem and 3 intermediate downsampling conv layers
            stem = nn.Sequential(
                nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4),
                LayerNorm(dims[0], eps=1e-6, data_format="channels_first")
            )
            self.downsample_layers.append(stem)
            for i in range(3):
                downsample_layer = nn.Sequential(
                    LayerNorm(dims[i], eps=1e-6, data_format="channels_first"),
                    nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2),
                )
                self.downsample_layers.append(downsample_layer)

            self.stages = nn.ModuleList()  # 4 feature resolution stages, each consisting of multiple residual blocks
            dp_rates = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths))]
            cur = 0
            for i in range(4):
                stage = nn.Sequential(
                    *[Block(dim=dims[i], drop_path=dp_rates[cur + j],
                            layer_scale_init_value=layer_scale_init_value) for j in range(depths[i])]
                )
                self.stages.append(stage)
                cur += depths[i]

            self.norm = nn.LayerNorm(dims[-1], eps=1e-6)  # final norm layer
            self.embed_dim = dims[-1]


        def _init_weights(self, m):
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                trunc_normal_(m.weight, std=.02)
                nn.init.constant_(m.bias, 0)

        def forward_features(self, x):
            for i in range(4):
                x = self.downsample_layers[i](x)
                x = self.stages[i](x)
            return self.norm(x.mean([-2, -1]))  # global average pooling, (N, C, H, W) -> (N, C)

        def forward(self, x):
            x = self.forward_features(x)
            return x


    class LayerNorm(nn.Module):
        r""" LayerNorm that supports two data formats: channels_last (default) or channels_first.
        The ordering of the dimensions in the inputs. channels_last corresponds to inputs with
        shape (batch_size, height, width, channels) while channels_first corresponds to inputs
        with shape (batch_size, channels, height, width).
        """

        def __init__(self, normalized_shape, eps=1e-6, data_format="channels_last"):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(normalized_shape))
            self.bias = nn.Parameter(torch.zeros(normalized_shape))
            self.eps = eps
            self.data_format = data_format
            if self.data_format not in ["channels_last", "channels_first"]:
                raise NotImplementedError
            self.normalized_shape = (normalized_shape,)

        def forward(self, x):
            if self.data_format == "channels_last":
                return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
            elif self.data_format == "channels_first":
                u = x.mean(1, keepdim=True)
                s = (x - u).pow(2).mean(1, keepdim=True)
                x = (x - u) / torch.sqrt(s + self.eps)
                x = self.weight[:, None, None] * x + self.bias[:, None, None]
                return x



    def convnext_tiny():
        model = ConvNeXt(depths=[3, 3, 9, 3], dims=[96, 192, 384, 768])
        return model

    return convnext_tiny


def _cion_edgenext():
    """CION_Pretrain/models/EdgeNext.py, without ConvEncoderBNHS, SDTAEncoderBNHS, edgenext_small, edgenext_base: returns edgenext_x_small."""
    import torch
    from torch import nn
    from timm.models.layers import trunc_normal_
    from timm.models.layers import DropPath
    import math
    import torch.nn.functional as F

    class LayerNorm(nn.Module):
        def __init__(self, normalized_shape, eps=1e-6, data_format="channels_last"):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(normalized_shape))
            self.bias = nn.Parameter(torch.zeros(normalized_shape))
            self.eps = eps
            self.data_format = data_format
            if self.data_format not in ["channels_last", "channels_first"]:
                raise NotImplementedError
            self.normalized_shape = (normalized_shape,)

        def forward(self, x):
            if self.data_format == "channels_last":
                return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
            elif self.data_format == "channels_first":
                u = x.mean(1, keepdim=True)
                s = (x - u).pow(2).mean(1, keepdim=True)
                x = (x - u) / torch.sqrt(s + self.eps)
                x = self.weight[:, None, None] * x + self.bias[:, None, None]
                return x


    class PositionalEncodingFourier(nn.Module):
        def __init__(self, hidden_dim=32, dim=768, temperature=10000):
            super().__init__()
            self.token_projection = nn.Conv2d(hidden_dim * 2, dim, kernel_size=1)
            self.scale = 2 * math.pi
            self.temperature = temperature
            self.hidden_dim = hidden_dim
            self.dim = dim

        def forward(self, B, H, W):
            mask = torch.zeros(B, H, W).bool().to(self.token_projection.weight.device)
            not_mask = ~mask
            y_embed = not_mask.cumsum(1, dtype=torch.float32)
            x_embed = not_mask.cumsum(2, dtype=torch.float32)
            eps = 1e-6
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale

            dim_t = torch.arange(self.hidden_dim, dtype=torch.float32, device=mask.device)
            dim_t = self.temperature ** (2 * (dim_t // 2) / self.hidden_dim)

            pos_x = x_embed[:, :, :, None] / dim_t
            pos_y = y_embed[:, :, :, None] / dim_t
            pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(),
                                 pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
            pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(),
                                 pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
            pos = torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)
            pos = self.token_projection(pos)

            return pos






    class ConvEncoder(nn.Module):
        def __init__(self, dim, drop_path=0., layer_scale_init_value=1e-6, expan_ratio=4, kernel_size=7):
            super().__init__()
            self.dwconv = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=kernel_size // 2, groups=dim)
            self.norm = LayerNorm(dim, eps=1e-6)
            self.pwconv1 = nn.Linear(dim, expan_ratio * dim)
            self.act = nn.GELU()
            self.pwconv2 = nn.Linear(expan_ratio * dim, dim)
            self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim),
                                      requires_grad=True) if layer_scale_init_value > 0 else None
            self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

        def forward(self, x):
            input = x
            x = self.dwconv(x)
            x = x.permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
            x = self.norm(x)
            x = self.pwconv1(x)
            x = self.act(x)
            x = self.pwconv2(x)
            if self.gamma is not None:
                x = self.gamma * x
            x = x.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)

            x = input + self.drop_path(x)
            return x





    class SDTAEncoder(nn.Module):
        def __init__(self, dim, drop_path=0., layer_scale_init_value=1e-6, expan_ratio=4,
                     use_pos_emb=True, num_heads=8, qkv_bias=True, attn_drop=0., drop=0., scales=1):
            super().__init__()
            width = max(int(math.ceil(dim / scales)), int(math.floor(dim // scales)))
            self.width = width
            if scales == 1:
                self.nums = 1
            else:
                self.nums = scales - 1
            convs = []
            for i in range(self.nums):
                convs.append(nn.Conv2d(width, width, kernel_size=3, padding=1, groups=width))
            self.convs = nn.ModuleList(convs)

            self.pos_embd = None
            if use_pos_emb:
                self.pos_embd = PositionalEncodingFourier(dim=dim)
            self.norm_xca = LayerNorm(dim, eps=1e-6)
            self.gamma_xca = nn.Parameter(layer_scale_init_value * torch.ones(dim),
                                          requires_grad=True) if layer_scale_init_value > 0 else None
            self.xca = XCA(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)

            self.norm = LayerNorm(dim, eps=1e-6)
            self.pwconv1 = nn.Linear(dim, expan_ratio * dim)  # pointwise/1x1 convs, implemented with linear layers
            self.act = nn.GELU()  # TODO: MobileViT is using 'swish'
            self.pwconv2 = nn.Linear(expan_ratio * dim, dim)
            self.gamma = nn.Parameter(layer_scale_init_value * torch.ones((dim)),
                                      requires_grad=True) if layer_scale_init_value > 0 else None
            self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

        def forward(self, x):
            input = x

            spx = torch.split(x, self.width, 1)
            for i in range(self.nums):
                if i == 0:
                    sp = spx[i]
                else:
                    sp = sp + spx[i]
                sp = self.convs[i](sp)
                if i == 0:
                    out = sp
                else:
                    out = torch.cat((out, sp), 1)
            x = torch.cat((out, spx[self.nums]), 1)
            # XCA
            B, C, H, W = x.shape
            x = x.reshape(B, C, H * W).permute(0, 2, 1)
            if self.pos_embd:
                pos_encoding = self.pos_embd(B, H, W).reshape(B, -1, x.shape[1]).permute(0, 2, 1)
                x = x + pos_encoding
            x = x + self.drop_path(self.gamma_xca * self.xca(self.norm_xca(x)))
            x = x.reshape(B, H, W, C)

            # Inverted Bottleneck
            x = self.norm(x)
            x = self.pwconv1(x)
            x = self.act(x)
            x = self.pwconv2(x)
            if self.gamma is not None:
                x = self.gamma * x
            x = x.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)

            x = input + self.drop_path(x)

            return x




    class XCA(nn.Module):
        def __init__(self, dim, num_heads=8, qkv_bias=False, attn_drop=0., proj_drop=0.):
            super().__init__()
            self.num_heads = num_heads
            self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))

            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
            self.attn_drop = nn.Dropout(attn_drop)
            self.proj = nn.Linear(dim, dim)
            self.proj_drop = nn.Dropout(proj_drop)

        def forward(self, x):
            B, N, C = x.shape
            qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
            qkv = qkv.permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]  # make torchscript happy (cannot use tensor as tuple)

            q = q.transpose(-2, -1)
            k = k.transpose(-2, -1)
            v = v.transpose(-2, -1)

            q = torch.nn.functional.normalize(q, dim=-1)
            k = torch.nn.functional.normalize(k, dim=-1)

            attn = (q @ k.transpose(-2, -1)) * self.temperature
            # -------------------
            attn = attn.softmax(dim=-1)
            attn = self.attn_drop(attn)

            x = (attn @ v).permute(0, 3, 1, 2).reshape(B, N, C)
            # ------------------
            x = self.proj(x)
            x = self.proj_drop(x)

            return x

        @torch.jit.ignore
        def no_weight_decay(self):
            return {'temperature'}


    class EdgeNeXt(nn.Module):
        def __init__(self, in_chans=3,
                     depths=[3, 3, 9, 3], dims=[24, 48, 88, 168],
                     global_block=[0, 0, 0, 3], global_block_type=['None', 'None', 'None', 'SDTA'],
                     drop_path_rate=0., layer_scale_init_value=1e-6, expan_ratio=4,
                     kernel_sizes=[7, 7, 7, 7], heads=[8, 8, 8, 8], use_pos_embd_xca=[False, False, False, False],
                     use_pos_embd_global=False, d2_scales=[2, 3, 4, 5]):
            super().__init__()
            for g in global_block_type:
                assert g in ['None', 'SDTA']
            if use_pos_embd_global:
                self.pos_embd = PositionalEncodingFourier(dim=dims[0])
            else:
                self.pos_embd = None
            self.downsample_layers = nn.ModuleList()  # stem and 3 intermediate downsampling conv layers
            stem = nn.Sequential(
                nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4),
                LayerNorm(dims[0], eps=1e-6, data_format="channels_first")
            )
            self.downsample_layers.append(stem)
            for i in range(3):
                downsample_layer = nn.Sequential(
                    LayerNorm(dims[i], eps=1e-6, data_format="channels_first"),
                    nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2),
                )
                self.downsample_layers.append(downsample_layer)

            self.stages = nn.ModuleList()  # 4 feature resolution stages, each consisting of multiple residual blocks
            dp_rates = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths))]
            cur = 0
            for i in range(4):
                stage_blocks = []
                for j in range(depths[i]):
                    if j > depths[i] - global_block[i] - 1:
                        if global_block_type[i] == 'SDTA':
                            stage_blocks.append(SDTAEncoder(dim=dims[i], drop_path=dp_rates[cur + j],
                                                            expan_ratio=expan_ratio, scales=d2_scales[i],
                                                            use_pos_emb=use_pos_embd_xca[i], num_heads=heads[i]))
                        else:
                            raise NotImplementedError
                    else:
                        stage_blocks.append(ConvEncoder(dim=dims[i], drop_path=dp_rates[cur + j],
                                                        layer_scale_init_value=layer_scale_init_value,
                                                        expan_ratio=expan_ratio, kernel_size=kernel_sizes[i]))

                self.stages.append(nn.Sequential(*stage_blocks))
                cur += depths[i]

            self.norm = nn.LayerNorm(dims[-1], eps=1e-6)  # Final norm layer
            self.embed_dim = dims[-1]

        def _init_weights(self, m):  # TODO: MobileViT is using 'kaiming_normal' for initializing conv layers
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, (LayerNorm, nn.LayerNorm)):
                nn.init.constant_(m.bias, 0)
                nn.init.constant_(m.weight, 1.0)

        def forward_features(self, x):
            x = self.downsample_layers[0](x)
            x = self.stages[0](x)
            if self.pos_embd:
                B, C, H, W = x.shape
                x = x + self.pos_embd(B, H, W)
            for i in range(1, 4):
                x = self.downsample_layers[i](x)
                x = self.stages[i](x)

            return self.norm(x.mean([-2, -1]))  # Global average pooling, (N, C, H, W) -> (N, C)

        def forward(self, x):
            x = self.forward_features(x)
            return x


    def edgenext_x_small():
        # 2.34M & 538.0M @ 256 resolution
        # 75.00% Top-1 accuracy
        # No AA, No Mixup & Cutmix, DropPath=0.0, BS=4096, lr=0.006, multi-scale-sampler
        # Jetson FPS=31.61 versus 28.49 for MobileViT_XS
        # For A100: FPS @ BS=1: 179.55 & @ BS=256: 4404.95 versus FPS @ BS=1: 94.55 & @ BS=256: 2361.53 for MobileViT_XS
        model = EdgeNeXt(depths=[3, 3, 9, 3], dims=[32, 64, 100, 192], expan_ratio=4,
                         global_block=[0, 1, 1, 1],
                         global_block_type=['None', 'SDTA', 'SDTA', 'SDTA'],
                         use_pos_embd_xca=[False, True, False, False],
                         kernel_sizes=[3, 5, 7, 9],
                         heads=[4, 4, 4, 4],
                         d2_scales=[2, 2, 3, 4],
                         )
        return model

    return edgenext_x_small


def _cion_fastvit():
    """CION_Pretrain/models/FastViT.py, without reparameterize_model, RepCPE, fastvit_t8, fastvit_t12, fastvit_sa12, fastvit_sa24, fastvit_sa36, fastvit_ma36: returns fastvit_s12."""
    #
    # For licensing see accompanying LICENSE file.
    # Copyright (C) 2023 Apple Inc. All Rights Reserved.
    #
    # (That LICENSE is apple/ml-fastvit's, which CION_ReIDZoo's copy refers to; test code, not shipped.)
    import os
    import copy
    from functools import partial
    from typing import List, Tuple, Optional, Union
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from timm.models.layers import DropPath, trunc_normal_


    class ReparamLargeKernelConv(nn.Module):
        """Building Block of RepLKNet

        This class defines overparameterized large kernel conv block
        introduced in `RepLKNet <https://arxiv.org/abs/2203.06717>`_

        Reference: https://github.com/DingXiaoH/RepLKNet-pytorch
        """

        def __init__(
            self,
            in_channels: int,
            out_channels: int,
            kernel_size: int,
            stride: int,
            groups: int,
            small_kernel: int,
            inference_mode: bool = False,
            activation: nn.Module = nn.GELU(),
        ) -> None:
            """Construct a ReparamLargeKernelConv module.

            Args:
                in_channels: Number of input channels.
                out_channels: Number of output channels.
                kernel_size: Kernel size of the large kernel conv branch.
                stride: Stride size. Default: 1
                groups: Group number. Default: 1
                small_kernel: Kernel size of small kernel conv branch.
                inference_mode: If True, instantiates model in inference mode. Default: ``False``
                activation: Activation module. Default: ``nn.GELU``
            """
            super(ReparamLargeKernelConv, self).__init__()

            self.stride = stride
            self.groups = groups
            self.in_channels = in_channels
            self.out_channels = out_channels
            self.activation = activation

            self.kernel_size = kernel_size
            self.small_kernel = small_kernel
            self.padding = kernel_size // 2
            if inference_mode:
                self.lkb_reparam = nn.Conv2d(
                    in_channels=in_channels,
                    out_channels=out_channels,
                    kernel_size=kernel_size,
                    stride=stride,
                    padding=self.padding,
                    dilation=1,
                    groups=groups,
                    bias=True,
                )
            else:
                self.lkb_origin = self._conv_bn(
                    kernel_size=kernel_size, padding=self.padding
                )
                if small_kernel is not None:
                    assert (
                        small_kernel <= kernel_size
                    ), "The kernel size for re-param cannot be larger than the large kernel!"
                    self.small_conv = self._conv_bn(
                        kernel_size=small_kernel, padding=small_kernel // 2
                    )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """Apply forward pass."""
            if hasattr(self, "lkb_reparam"):
                out = self.lkb_reparam(x)
            else:
                out = self.lkb_origin(x)
                if hasattr(self, "small_conv"):
                    out += self.small_conv(x)

            self.activation(out)
            return out

        def get_kernel_bias(self) -> Tuple[torch.Tensor, torch.Tensor]:
            """Method to obtain re-parameterized kernel and bias.
            Reference: https://github.com/DingXiaoH/RepLKNet-pytorch

            Returns:
                Tuple of (kernel, bias) after fusing branches.
            """
            eq_k, eq_b = self._fuse_bn(self.lkb_origin.conv, self.lkb_origin.bn)
            if hasattr(self, "small_conv"):
                small_k, small_b = self._fuse_bn(self.small_conv.conv, self.small_conv.bn)
                eq_b += small_b
                eq_k += nn.functional.pad(
                    small_k, [(self.kernel_size - self.small_kernel) // 2] * 4
                )
            return eq_k, eq_b

        def reparameterize(self) -> None:
            """
            Following works like `RepVGG: Making VGG-style ConvNets Great Again` -
            https://arxiv.org/pdf/2101.03697.pdf. We re-parameterize multi-branched
            architecture used at training time to obtain a plain CNN-like structure
            for inference.
            """
            eq_k, eq_b = self.get_kernel_bias()
            self.lkb_reparam = nn.Conv2d(
                in_channels=self.in_channels,
                out_channels=self.out_channels,
                kernel_size=self.kernel_size,
                stride=self.stride,
                padding=self.padding,
                dilation=self.lkb_origin.conv.dilation,
                groups=self.groups,
                bias=True,
            )

            self.lkb_reparam.weight.data = eq_k
            self.lkb_reparam.bias.data = eq_b
            self.__delattr__("lkb_origin")
            if hasattr(self, "small_conv"):
                self.__delattr__("small_conv")

        @staticmethod
        def _fuse_bn(
            conv: torch.Tensor, bn: nn.BatchNorm2d
        ) -> Tuple[torch.Tensor, torch.Tensor]:
            """Method to fuse batchnorm layer with conv layer.

            Args:
                conv: Convolutional kernel weights.
                bn: Batchnorm 2d layer.

            Returns:
                Tuple of (kernel, bias) after fusing batchnorm.
            """
            kernel = conv.weight
            running_mean = bn.running_mean
            running_var = bn.running_var
            gamma = bn.weight
            beta = bn.bias
            eps = bn.eps
            std = (running_var + eps).sqrt()
            t = (gamma / std).reshape(-1, 1, 1, 1)
            return kernel * t, beta - running_mean * gamma / std

        def _conv_bn(self, kernel_size: int, padding: int = 0) -> nn.Sequential:
            """Helper method to construct conv-batchnorm layers.

            Args:
                kernel_size: Size of the convolution kernel.
                padding: Zero-padding size.

            Returns:
                A nn.Sequential Conv-BN module.
            """
            mod_list = nn.Sequential()
            mod_list.add_module(
                "conv",
                nn.Conv2d(
                    in_channels=self.in_channels,
                    out_channels=self.out_channels,
                    kernel_size=kernel_size,
                    stride=self.stride,
                    padding=padding,
                    groups=self.groups,
                    bias=False,
                ),
            )
            mod_list.add_module("bn", nn.BatchNorm2d(num_features=self.out_channels))
            return mod_list

    class SEBlock(nn.Module):
        """Squeeze and Excite module.

        Pytorch implementation of `Squeeze-and-Excitation Networks` -
        https://arxiv.org/pdf/1709.01507.pdf
        """

        def __init__(self, in_channels: int, rd_ratio: float = 0.0625) -> None:
            """Construct a Squeeze and Excite Module.

            Args:
                in_channels: Number of input channels.
                rd_ratio: Input channel reduction ratio.
            """
            super(SEBlock, self).__init__()
            self.reduce = nn.Conv2d(
                in_channels=in_channels,
                out_channels=int(in_channels * rd_ratio),
                kernel_size=1,
                stride=1,
                bias=True,
            )
            self.expand = nn.Conv2d(
                in_channels=int(in_channels * rd_ratio),
                out_channels=in_channels,
                kernel_size=1,
                stride=1,
                bias=True,
            )

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            """Apply forward pass."""
            b, c, h, w = inputs.size()
            x = F.avg_pool2d(inputs, kernel_size=[h, w])
            x = self.reduce(x)
            x = F.relu(x)
            x = self.expand(x)
            x = torch.sigmoid(x)
            x = x.view(-1, c, 1, 1)
            return inputs * x


    class MobileOneBlock(nn.Module):
        """MobileOne building block.

        This block has a multi-branched architecture at train-time
        and plain-CNN style architecture at inference time
        For more details, please refer to our paper:
        `An Improved One millisecond Mobile Backbone` -
        https://arxiv.org/pdf/2206.04040.pdf
        """

        def __init__(
            self,
            in_channels: int,
            out_channels: int,
            kernel_size: int,
            stride: int = 1,
            padding: int = 0,
            dilation: int = 1,
            groups: int = 1,
            inference_mode: bool = False,
            use_se: bool = False,
            use_act: bool = True,
            use_scale_branch: bool = True,
            num_conv_branches: int = 1,
            activation: nn.Module = nn.GELU(),
        ) -> None:
            """Construct a MobileOneBlock module.

            Args:
                in_channels: Number of channels in the input.
                out_channels: Number of channels produced by the block.
                kernel_size: Size of the convolution kernel.
                stride: Stride size.
                padding: Zero-padding size.
                dilation: Kernel dilation factor.
                groups: Group number.
                inference_mode: If True, instantiates model in inference mode.
                use_se: Whether to use SE-ReLU activations.
                use_act: Whether to use activation. Default: ``True``
                use_scale_branch: Whether to use scale branch. Default: ``True``
                num_conv_branches: Number of linear conv branches.
            """
            super(MobileOneBlock, self).__init__()
            self.inference_mode = inference_mode
            self.groups = groups
            self.stride = stride
            self.padding = padding
            self.dilation = dilation
            self.kernel_size = kernel_size
            self.in_channels = in_channels
            self.out_channels = out_channels
            self.num_conv_branches = num_conv_branches

            # Check if SE-ReLU is requested
            if use_se:
                self.se = SEBlock(out_channels)
            else:
                self.se = nn.Identity()

            if use_act:
                self.activation = activation
            else:
                self.activation = nn.Identity()

            if inference_mode:
                self.reparam_conv = nn.Conv2d(
                    in_channels=in_channels,
                    out_channels=out_channels,
                    kernel_size=kernel_size,
                    stride=stride,
                    padding=padding,
                    dilation=dilation,
                    groups=groups,
                    bias=True,
                )
            else:
                # Re-parameterizable skip connection
                self.rbr_skip = (
                    nn.BatchNorm2d(num_features=in_channels)
                    if out_channels == in_channels and stride == 1
                    else None
                )

                # Re-parameterizable conv branches
                if num_conv_branches > 0:
                    rbr_conv = list()
                    for _ in range(self.num_conv_branches):
                        rbr_conv.append(
                            self._conv_bn(kernel_size=kernel_size, padding=padding)
                        )
                    self.rbr_conv = nn.ModuleList(rbr_conv)
                else:
                    self.rbr_conv = None

                # Re-parameterizable scale branch
                self.rbr_scale = None
                if (kernel_size > 1) and use_scale_branch:
                    self.rbr_scale = self._conv_bn(kernel_size=1, padding=0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """Apply forward pass."""
            # Inference mode forward pass.
            if self.inference_mode:
                return self.activation(self.se(self.reparam_conv(x)))

            # Multi-branched train-time forward pass.
            # Skip branch output
            identity_out = 0
            if self.rbr_skip is not None:
                identity_out = self.rbr_skip(x)

            # Scale branch output
            scale_out = 0
            if self.rbr_scale is not None:
                scale_out = self.rbr_scale(x)

            # Other branches
            out = scale_out + identity_out
            if self.rbr_conv is not None:
                for ix in range(self.num_conv_branches):
                    out += self.rbr_conv[ix](x)

            return self.activation(self.se(out))

        def reparameterize(self):
            """Following works like `RepVGG: Making VGG-style ConvNets Great Again` -
            https://arxiv.org/pdf/2101.03697.pdf. We re-parameterize multi-branched
            architecture used at training time to obtain a plain CNN-like structure
            for inference.
            """
            if self.inference_mode:
                return
            kernel, bias = self._get_kernel_bias()
            self.reparam_conv = nn.Conv2d(
                in_channels=self.in_channels,
                out_channels=self.out_channels,
                kernel_size=self.kernel_size,
                stride=self.stride,
                padding=self.padding,
                dilation=self.dilation,
                groups=self.groups,
                bias=True,
            )
            self.reparam_conv.weight.data = kernel
            self.reparam_conv.bias.data = bias

            # Delete un-used branches
            for para in self.parameters():
                para.detach_()
            self.__delattr__("rbr_conv")
            self.__delattr__("rbr_scale")
            if hasattr(self, "rbr_skip"):
                self.__delattr__("rbr_skip")

            self.inference_mode = True

        def _get_kernel_bias(self) -> Tuple[torch.Tensor, torch.Tensor]:
            """Method to obtain re-parameterized kernel and bias.
            Reference: https://github.com/DingXiaoH/RepVGG/blob/main/repvgg.py#L83

            Returns:
                Tuple of (kernel, bias) after fusing branches.
            """
            # get weights and bias of scale branch
            kernel_scale = 0
            bias_scale = 0
            if self.rbr_scale is not None:
                kernel_scale, bias_scale = self._fuse_bn_tensor(self.rbr_scale)
                # Pad scale branch kernel to match conv branch kernel size.
                pad = self.kernel_size // 2
                kernel_scale = torch.nn.functional.pad(kernel_scale, [pad, pad, pad, pad])

            # get weights and bias of skip branch
            kernel_identity = 0
            bias_identity = 0
            if self.rbr_skip is not None:
                kernel_identity, bias_identity = self._fuse_bn_tensor(self.rbr_skip)

            # get weights and bias of conv branches
            kernel_conv = 0
            bias_conv = 0
            if self.rbr_conv is not None:
                for ix in range(self.num_conv_branches):
                    _kernel, _bias = self._fuse_bn_tensor(self.rbr_conv[ix])
                    kernel_conv += _kernel
                    bias_conv += _bias

            kernel_final = kernel_conv + kernel_scale + kernel_identity
            bias_final = bias_conv + bias_scale + bias_identity
            return kernel_final, bias_final

        def _fuse_bn_tensor(
            self, branch: Union[nn.Sequential, nn.BatchNorm2d]
        ) -> Tuple[torch.Tensor, torch.Tensor]:
            """Method to fuse batchnorm layer with preceeding conv layer.
            Reference: https://github.com/DingXiaoH/RepVGG/blob/main/repvgg.py#L95

            Args:
                branch: Sequence of ops to be fused.

            Returns:
                Tuple of (kernel, bias) after fusing batchnorm.
            """
            if isinstance(branch, nn.Sequential):
                kernel = branch.conv.weight
                running_mean = branch.bn.running_mean
                running_var = branch.bn.running_var
                gamma = branch.bn.weight
                beta = branch.bn.bias
                eps = branch.bn.eps
            else:
                assert isinstance(branch, nn.BatchNorm2d)
                if not hasattr(self, "id_tensor"):
                    input_dim = self.in_channels // self.groups
                    kernel_value = torch.zeros(
                        (self.in_channels, input_dim, self.kernel_size, self.kernel_size),
                        dtype=branch.weight.dtype,
                        device=branch.weight.device,
                    )
                    for i in range(self.in_channels):
                        kernel_value[
                            i, i % input_dim, self.kernel_size // 2, self.kernel_size // 2
                        ] = 1
                    self.id_tensor = kernel_value
                kernel = self.id_tensor
                running_mean = branch.running_mean
                running_var = branch.running_var
                gamma = branch.weight
                beta = branch.bias
                eps = branch.eps
            std = (running_var + eps).sqrt()
            t = (gamma / std).reshape(-1, 1, 1, 1)
            return kernel * t, beta - running_mean * gamma / std

        def _conv_bn(self, kernel_size: int, padding: int) -> nn.Sequential:
            """Helper method to construct conv-batchnorm layers.

            Args:
                kernel_size: Size of the convolution kernel.
                padding: Zero-padding size.

            Returns:
                Conv-BN module.
            """
            mod_list = nn.Sequential()
            mod_list.add_module(
                "conv",
                nn.Conv2d(
                    in_channels=self.in_channels,
                    out_channels=self.out_channels,
                    kernel_size=kernel_size,
                    stride=self.stride,
                    padding=padding,
                    groups=self.groups,
                    bias=False,
                ),
            )
            mod_list.add_module("bn", nn.BatchNorm2d(num_features=self.out_channels))
            return mod_list










    def convolutional_stem(
        in_channels: int, out_channels: int, inference_mode: bool = False
    ) -> nn.Sequential:
        """Build convolutional stem with MobileOne blocks.

        Args:
            in_channels: Number of input channels.
            out_channels: Number of output channels.
            inference_mode: Flag to instantiate model in inference mode. Default: ``False``

        Returns:
            nn.Sequential object with stem elements.
        """
        return nn.Sequential(
            MobileOneBlock(
                in_channels=in_channels,
                out_channels=out_channels,
                kernel_size=3,
                stride=2,
                padding=1,
                groups=1,
                inference_mode=inference_mode,
                use_se=False,
                num_conv_branches=1,
            ),
            MobileOneBlock(
                in_channels=out_channels,
                out_channels=out_channels,
                kernel_size=3,
                stride=2,
                padding=1,
                groups=out_channels,
                inference_mode=inference_mode,
                use_se=False,
                num_conv_branches=1,
            ),
            MobileOneBlock(
                in_channels=out_channels,
                out_channels=out_channels,
                kernel_size=1,
                stride=1,
                padding=0,
                groups=1,
                inference_mode=inference_mode,
                use_se=False,
                num_conv_branches=1,
            ),
        )


    class MHSA(nn.Module):
        """Multi-headed Self Attention module.

        Source modified from:
        https://github.com/rwightman/pytorch-image-models/blob/master/timm/models/vision_transformer.py
        """

        def __init__(
            self,
            dim: int,
            head_dim: int = 32,
            qkv_bias: bool = False,
            attn_drop: float = 0.0,
            proj_drop: float = 0.0,
        ) -> None:
            """Build MHSA module that can handle 3D or 4D input tensors.

            Args:
                dim: Number of embedding dimensions.
                head_dim: Number of hidden dimensions per head. Default: ``32``
                qkv_bias: Use bias or not. Default: ``False``
                attn_drop: Dropout rate for attention tensor.
                proj_drop: Dropout rate for projection tensor.
            """
            super().__init__()
            assert dim % head_dim == 0, "dim should be divisible by head_dim"
            self.head_dim = head_dim
            self.num_heads = dim // head_dim
            self.scale = head_dim**-0.5

            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
            self.attn_drop = nn.Dropout(attn_drop)
            self.proj = nn.Linear(dim, dim)
            self.proj_drop = nn.Dropout(proj_drop)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            shape = x.shape
            B, C, H, W = shape
            N = H * W
            if len(shape) == 4:
                x = torch.flatten(x, start_dim=2).transpose(-2, -1)  # (B, N, C)
            qkv = (
                self.qkv(x)
                .reshape(B, N, 3, self.num_heads, self.head_dim)
                .permute(2, 0, 3, 1, 4)
            )
            q, k, v = qkv.unbind(0)  # make torchscript happy (cannot use tensor as tuple)

            # trick here to make q@k.t more stable
            attn = (q * self.scale) @ k.transpose(-2, -1)
            attn = attn.softmax(dim=-1)
            attn = self.attn_drop(attn)

            x = (attn @ v).transpose(1, 2).reshape(B, N, C)
            x = self.proj(x)
            x = self.proj_drop(x)
            if len(shape) == 4:
                x = x.transpose(-2, -1).reshape(B, C, H, W)

            return x


    class PatchEmbed(nn.Module):
        """Convolutional patch embedding layer."""

        def __init__(
            self,
            patch_size: int,
            stride: int,
            in_channels: int,
            embed_dim: int,
            inference_mode: bool = False,
        ) -> None:
            """Build patch embedding layer.

            Args:
                patch_size: Patch size for embedding computation.
                stride: Stride for convolutional embedding layer.
                in_channels: Number of channels of input tensor.
                embed_dim: Number of embedding dimensions.
                inference_mode: Flag to instantiate model in inference mode. Default: ``False``
            """
            super().__init__()
            block = list()
            block.append(
                ReparamLargeKernelConv(
                    in_channels=in_channels,
                    out_channels=embed_dim,
                    kernel_size=patch_size,
                    stride=stride,
                    groups=in_channels,
                    small_kernel=3,
                    inference_mode=inference_mode,
                )
            )
            block.append(
                MobileOneBlock(
                    in_channels=embed_dim,
                    out_channels=embed_dim,
                    kernel_size=1,
                    stride=1,
                    padding=0,
                    groups=1,
                    inference_mode=inference_mode,
                    use_se=False,
                    num_conv_branches=1,
                )
            )
            self.proj = nn.Sequential(*block)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.proj(x)
            return x


    class RepMixer(nn.Module):
        """Reparameterizable token mixer.

        For more details, please refer to our paper:
        `FastViT: A Fast Hybrid Vision Transformer using Structural Reparameterization <https://arxiv.org/pdf/2303.14189.pdf>`_
        """

        def __init__(
            self,
            dim,
            kernel_size=3,
            use_layer_scale=True,
            layer_scale_init_value=1e-5,
            inference_mode: bool = False,
        ):
            """Build RepMixer Module.

            Args:
                dim: Input feature map dimension. :math:`C_{in}` from an expected input of size :math:`(B, C_{in}, H, W)`.
                kernel_size: Kernel size for spatial mixing. Default: 3
                use_layer_scale: If True, learnable layer scale is used. Default: ``True``
                layer_scale_init_value: Initial value for layer scale. Default: 1e-5
                inference_mode: If True, instantiates model in inference mode. Default: ``False``
            """
            super().__init__()
            self.dim = dim
            self.kernel_size = kernel_size
            self.inference_mode = inference_mode

            if inference_mode:
                self.reparam_conv = nn.Conv2d(
                    in_channels=self.dim,
                    out_channels=self.dim,
                    kernel_size=self.kernel_size,
                    stride=1,
                    padding=self.kernel_size // 2,
                    groups=self.dim,
                    bias=True,
                )
            else:
                self.norm = MobileOneBlock(
                    dim,
                    dim,
                    kernel_size,
                    padding=kernel_size // 2,
                    groups=dim,
                    use_act=False,
                    use_scale_branch=False,
                    num_conv_branches=0,
                )
                self.mixer = MobileOneBlock(
                    dim,
                    dim,
                    kernel_size,
                    padding=kernel_size // 2,
                    groups=dim,
                    use_act=False,
                )
                self.use_layer_scale = use_layer_scale
                if use_layer_scale:
                    self.layer_scale = nn.Parameter(
                        layer_scale_init_value * torch.ones((dim, 1, 1)), requires_grad=True
                    )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if hasattr(self, "reparam_conv"):
                x = self.reparam_conv(x)
                return x
            else:
                if self.use_layer_scale:
                    x = x + self.layer_scale * (self.mixer(x) - self.norm(x))
                else:
                    x = x + self.mixer(x) - self.norm(x)
                return x

        def reparameterize(self) -> None:
            """Reparameterize mixer and norm into a single
            convolutional layer for efficient inference.
            """
            if self.inference_mode:
                return

            self.mixer.reparameterize()
            self.norm.reparameterize()

            if self.use_layer_scale:
                w = self.mixer.id_tensor + self.layer_scale.unsqueeze(-1) * (
                    self.mixer.reparam_conv.weight - self.norm.reparam_conv.weight
                )
                b = torch.squeeze(self.layer_scale) * (
                    self.mixer.reparam_conv.bias - self.norm.reparam_conv.bias
                )
            else:
                w = (
                    self.mixer.id_tensor
                    + self.mixer.reparam_conv.weight
                    - self.norm.reparam_conv.weight
                )
                b = self.mixer.reparam_conv.bias - self.norm.reparam_conv.bias

            self.reparam_conv = nn.Conv2d(
                in_channels=self.dim,
                out_channels=self.dim,
                kernel_size=self.kernel_size,
                stride=1,
                padding=self.kernel_size // 2,
                groups=self.dim,
                bias=True,
            )
            self.reparam_conv.weight.data = w
            self.reparam_conv.bias.data = b

            for para in self.parameters():
                para.detach_()
            self.__delattr__("mixer")
            self.__delattr__("norm")
            if self.use_layer_scale:
                self.__delattr__("layer_scale")


    class ConvFFN(nn.Module):
        """Convolutional FFN Module."""

        def __init__(
            self,
            in_channels: int,
            hidden_channels: Optional[int] = None,
            out_channels: Optional[int] = None,
            act_layer: nn.Module = nn.GELU,
            drop: float = 0.0,
        ) -> None:
            """Build convolutional FFN module.

            Args:
                in_channels: Number of input channels.
                hidden_channels: Number of channels after expansion. Default: None
                out_channels: Number of output channels. Default: None
                act_layer: Activation layer. Default: ``GELU``
                drop: Dropout rate. Default: ``0.0``.
            """
            super().__init__()
            out_channels = out_channels or in_channels
            hidden_channels = hidden_channels or in_channels
            self.conv = nn.Sequential()
            self.conv.add_module(
                "conv",
                nn.Conv2d(
                    in_channels=in_channels,
                    out_channels=out_channels,
                    kernel_size=7,
                    padding=3,
                    groups=in_channels,
                    bias=False,
                ),
            )
            self.conv.add_module("bn", nn.BatchNorm2d(num_features=out_channels))
            self.fc1 = nn.Conv2d(in_channels, hidden_channels, kernel_size=1)
            self.act = act_layer()
            self.fc2 = nn.Conv2d(hidden_channels, out_channels, kernel_size=1)
            self.drop = nn.Dropout(drop)
            self.apply(self._init_weights)

        def _init_weights(self, m: nn.Module) -> None:
            if isinstance(m, nn.Conv2d):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.conv(x)
            x = self.fc1(x)
            x = self.act(x)
            x = self.drop(x)
            x = self.fc2(x)
            x = self.drop(x)
            return x




    class RepMixerBlock(nn.Module):
        """Implementation of Metaformer block with RepMixer as token mixer.

        For more details on Metaformer structure, please refer to:
        `MetaFormer Is Actually What You Need for Vision <https://arxiv.org/pdf/2111.11418.pdf>`_
        """

        def __init__(
            self,
            dim: int,
            kernel_size: int = 3,
            mlp_ratio: float = 4.0,
            act_layer: nn.Module = nn.GELU,
            drop: float = 0.0,
            drop_path: float = 0.0,
            use_layer_scale: bool = True,
            layer_scale_init_value: float = 1e-5,
            inference_mode: bool = False,
        ):
            """Build RepMixer Block.

            Args:
                dim: Number of embedding dimensions.
                kernel_size: Kernel size for repmixer. Default: 3
                mlp_ratio: MLP expansion ratio. Default: 4.0
                act_layer: Activation layer. Default: ``nn.GELU``
                drop: Dropout rate. Default: 0.0
                drop_path: Drop path rate. Default: 0.0
                use_layer_scale: Flag to turn on layer scale. Default: ``True``
                layer_scale_init_value: Layer scale value at initialization. Default: 1e-5
                inference_mode: Flag to instantiate block in inference mode. Default: ``False``
            """

            super().__init__()

            self.token_mixer = RepMixer(
                dim,
                kernel_size=kernel_size,
                use_layer_scale=use_layer_scale,
                layer_scale_init_value=layer_scale_init_value,
                inference_mode=inference_mode,
            )

            assert mlp_ratio > 0, "MLP ratio should be greater than 0, found: {}".format(
                mlp_ratio
            )
            mlp_hidden_dim = int(dim * mlp_ratio)
            self.convffn = ConvFFN(
                in_channels=dim,
                hidden_channels=mlp_hidden_dim,
                act_layer=act_layer,
                drop=drop,
            )

            # Drop Path
            self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

            # Layer Scale
            self.use_layer_scale = use_layer_scale
            if use_layer_scale:
                self.layer_scale = nn.Parameter(
                    layer_scale_init_value * torch.ones((dim, 1, 1)), requires_grad=True
                )

        def forward(self, x):
            if self.use_layer_scale:
                x = self.token_mixer(x)
                x = x + self.drop_path(self.layer_scale * self.convffn(x))
            else:
                x = self.token_mixer(x)
                x = x + self.drop_path(self.convffn(x))
            return x


    class AttentionBlock(nn.Module):
        """Implementation of metaformer block with MHSA as token mixer.

        For more details on Metaformer structure, please refer to:
        `MetaFormer Is Actually What You Need for Vision <https://arxiv.org/pdf/2111.11418.pdf>`_
        """

        def __init__(
            self,
            dim: int,
            mlp_ratio: float = 4.0,
            act_layer: nn.Module = nn.GELU,
            norm_layer: nn.Module = nn.BatchNorm2d,
            drop: float = 0.0,
            drop_path: float = 0.0,
            use_layer_scale: bool = True,
            layer_scale_init_value: float = 1e-5,
        ):
            """Build Attention Block.

            Args:
                dim: Number of embedding dimensions.
                mlp_ratio: MLP expansion ratio. Default: 4.0
                act_layer: Activation layer. Default: ``nn.GELU``
                norm_layer: Normalization layer. Default: ``nn.BatchNorm2d``
                drop: Dropout rate. Default: 0.0
                drop_path: Drop path rate. Default: 0.0
                use_layer_scale: Flag to turn on layer scale. Default: ``True``
                layer_scale_init_value: Layer scale value at initialization. Default: 1e-5
            """

            super().__init__()

            self.norm = norm_layer(dim)
            self.token_mixer = MHSA(dim=dim)

            assert mlp_ratio > 0, "MLP ratio should be greater than 0, found: {}".format(
                mlp_ratio
            )
            mlp_hidden_dim = int(dim * mlp_ratio)
            self.convffn = ConvFFN(
                in_channels=dim,
                hidden_channels=mlp_hidden_dim,
                act_layer=act_layer,
                drop=drop,
            )

            # Drop path
            self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

            # Layer Scale
            self.use_layer_scale = use_layer_scale
            if use_layer_scale:
                self.layer_scale_1 = nn.Parameter(
                    layer_scale_init_value * torch.ones((dim, 1, 1)), requires_grad=True
                )
                self.layer_scale_2 = nn.Parameter(
                    layer_scale_init_value * torch.ones((dim, 1, 1)), requires_grad=True
                )

        def forward(self, x):
            if self.use_layer_scale:
                x = x + self.drop_path(self.layer_scale_1 * self.token_mixer(self.norm(x)))
                x = x + self.drop_path(self.layer_scale_2 * self.convffn(x))
            else:
                x = x + self.drop_path(self.token_mixer(self.norm(x)))
                x = x + self.drop_path(self.convffn(x))
            return x


    def basic_blocks(
        dim: int,
        block_index: int,
        num_blocks: List[int],
        token_mixer_type: str,
        kernel_size: int = 3,
        mlp_ratio: float = 4.0,
        act_layer: nn.Module = nn.GELU,
        norm_layer: nn.Module = nn.BatchNorm2d,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        use_layer_scale: bool = True,
        layer_scale_init_value: float = 1e-5,
        inference_mode=False,
    ) -> nn.Sequential:
        """Build FastViT blocks within a stage.

        Args:
            dim: Number of embedding dimensions.
            block_index: block index.
            num_blocks: List containing number of blocks per stage.
            token_mixer_type: Token mixer type.
            kernel_size: Kernel size for repmixer.
            mlp_ratio: MLP expansion ratio.
            act_layer: Activation layer.
            norm_layer: Normalization layer.
            drop_rate: Dropout rate.
            drop_path_rate: Drop path rate.
            use_layer_scale: Flag to turn on layer scale regularization.
            layer_scale_init_value: Layer scale value at initialization.
            inference_mode: Flag to instantiate block in inference mode.

        Returns:
            nn.Sequential object of all the blocks within the stage.
        """
        blocks = []
        for block_idx in range(num_blocks[block_index]):
            block_dpr = (
                drop_path_rate
                * (block_idx + sum(num_blocks[:block_index]))
                / (sum(num_blocks) - 1)
            )
            if token_mixer_type == "repmixer":
                blocks.append(
                    RepMixerBlock(
                        dim,
                        kernel_size=kernel_size,
                        mlp_ratio=mlp_ratio,
                        act_layer=act_layer,
                        drop=drop_rate,
                        drop_path=block_dpr,
                        use_layer_scale=use_layer_scale,
                        layer_scale_init_value=layer_scale_init_value,
                        inference_mode=inference_mode,
                    )
                )
            elif token_mixer_type == "attention":
                blocks.append(
                    AttentionBlock(
                        dim,
                        mlp_ratio=mlp_ratio,
                        act_layer=act_layer,
                        norm_layer=norm_layer,
                        drop=drop_rate,
                        drop_path=block_dpr,
                        use_layer_scale=use_layer_scale,
                        layer_scale_init_value=layer_scale_init_value,
                    )
                )
            else:
                raise ValueError(
                    "Token mixer type: {} not supported".format(token_mixer_type)
                )
        blocks = nn.Sequential(*blocks)

        return blocks


    class FastViT(nn.Module):
        """
        This class implements `FastViT architecture <https://arxiv.org/pdf/2303.14189.pdf>`_
        """

        def __init__(
            self,
            layers,
            token_mixers: Tuple[str, ...],
            embed_dims=None,
            mlp_ratios=None,
            downsamples=None,
            repmixer_kernel_size=3,
            norm_layer: nn.Module = nn.BatchNorm2d,
            act_layer: nn.Module = nn.GELU,
            num_classes=1000,
            pos_embs=None,
            down_patch_size=7,
            down_stride=2,
            drop_rate=0.0,
            drop_path_rate=0.0,
            use_layer_scale=True,
            layer_scale_init_value=1e-5,
            fork_feat=False,
            init_cfg=None,
            pretrained=None,
            cls_ratio=2.0,
            inference_mode=False,
            **kwargs,
        ) -> None:

            super().__init__()

            if not fork_feat:
                self.num_classes = num_classes
            self.fork_feat = fork_feat

            if pos_embs is None:
                pos_embs = [None] * len(layers)

            # Convolutional stem
            self.patch_embed = convolutional_stem(3, embed_dims[0], inference_mode)

            # Build the main stages of the network architecture
            network = []
            for i in range(len(layers)):
                # Add position embeddings if requested
                if pos_embs[i] is not None:
                    network.append(
                        pos_embs[i](
                            embed_dims[i], embed_dims[i], inference_mode=inference_mode
                        )
                    )
                stage = basic_blocks(
                    embed_dims[i],
                    i,
                    layers,
                    token_mixer_type=token_mixers[i],
                    kernel_size=repmixer_kernel_size,
                    mlp_ratio=mlp_ratios[i],
                    act_layer=act_layer,
                    norm_layer=norm_layer,
                    drop_rate=drop_rate,
                    drop_path_rate=drop_path_rate,
                    use_layer_scale=use_layer_scale,
                    layer_scale_init_value=layer_scale_init_value,
                    inference_mode=inference_mode,
                )
                network.append(stage)
                if i >= len(layers) - 1:
                    break

                # Patch merging/downsampling between stages.
                if downsamples[i] or embed_dims[i] != embed_dims[i + 1]:
                    network.append(
                        PatchEmbed(
                            patch_size=down_patch_size,
                            stride=down_stride,
                            in_channels=embed_dims[i],
                            embed_dim=embed_dims[i + 1],
                            inference_mode=inference_mode,
                        )
                    )

            self.network = nn.ModuleList(network)

            # For segmentation and detection, extract intermediate output
            if self.fork_feat:
                # add a norm layer for each output
                self.out_indices = [0, 2, 4, 6]
                for i_emb, i_layer in enumerate(self.out_indices):
                    if i_emb == 0 and os.environ.get("FORK_LAST3", None):
                        """For RetinaNet, `start_level=1`. The first norm layer will not used.
                        cmd: `FORK_LAST3=1 python -m torch.distributed.launch ...`
                        """
                        layer = nn.Identity()
                    else:
                        layer = norm_layer(embed_dims[i_emb])
                    layer_name = f"norm{i_layer}"
                    self.add_module(layer_name, layer)
            else:
                # Classifier head
                self.gap = nn.AdaptiveAvgPool2d(output_size=1)
                self.conv_exp = MobileOneBlock(
                    in_channels=embed_dims[-1],
                    out_channels=int(embed_dims[-1] * cls_ratio),
                    kernel_size=3,
                    stride=1,
                    padding=1,
                    groups=embed_dims[-1],
                    inference_mode=inference_mode,
                    use_se=True,
                    num_conv_branches=1,
                )

                self.embed_dim = int(embed_dims[-1] * cls_ratio)


            self.apply(self.cls_init_weights)
            self.init_cfg = copy.deepcopy(init_cfg)

            # load pre-trained model
            if self.fork_feat and (self.init_cfg is not None or pretrained is not None):
                self.init_weights()

        def cls_init_weights(self, m: nn.Module) -> None:
            """Init. for classification"""
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.constant_(m.bias, 0)

        @staticmethod
        def _scrub_checkpoint(checkpoint, model):
            sterile_dict = {}
            for k1, v1 in checkpoint.items():
                if k1 not in model.state_dict():
                    continue
                if v1.shape == model.state_dict()[k1].shape:
                    sterile_dict[k1] = v1
            return sterile_dict


        def forward_embeddings(self, x: torch.Tensor) -> torch.Tensor:
            x = self.patch_embed(x)
            return x

        def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
            outs = []
            for idx, block in enumerate(self.network):
                x = block(x)
                if self.fork_feat and idx in self.out_indices:
                    norm_layer = getattr(self, f"norm{idx}")
                    x_out = norm_layer(x)
                    outs.append(x_out)
            if self.fork_feat:
                # output the features of four stages for dense prediction
                return outs
            # output only the features of last layer for image classification
            return x

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # input embedding
            x = self.forward_embeddings(x)
            # through backbone
            x = self.forward_tokens(x)
            if self.fork_feat:
                # output features of four stages for dense prediction
                return x
            # for image classification
            x = self.conv_exp(x)
            x = self.gap(x)
            x = x.view(x.size(0), -1)

            return x






    def fastvit_s12(pretrained=False, **kwargs):
        """Instantiate FastViT-S12 model variant."""
        layers = [2, 2, 6, 2]
        embed_dims = [64, 128, 256, 512]
        mlp_ratios = [4, 4, 4, 4]
        downsamples = [True, True, True, True]
        token_mixers = ("repmixer", "repmixer", "repmixer", "repmixer")
        model = FastViT(
            layers,
            token_mixers=token_mixers,
            embed_dims=embed_dims,
            mlp_ratios=mlp_ratios,
            downsamples=downsamples,
            **kwargs,
        )
        if pretrained:
            raise ValueError("Functionality not implemented.")
        return model

    return fastvit_s12


def _cion_swin():
    """CION_Pretrain/models/Swin_Transformer.py, without swin_large, swin_base, swin_small: returns swin_tiny."""
    # --------------------------------------------------------
    # Swin Transformer
    # Copyright (c) 2021 Microsoft
    # Licensed under The MIT License [see LICENSE for details]
    # Written by Ze Liu, Yutong Lin, Yixuan Wei
    # --------------------------------------------------------

    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import torch.utils.checkpoint as checkpoint
    import numpy as np
    from timm.models.layers import DropPath, to_2tuple, trunc_normal_


    class Mlp(nn.Module):
        """ Multilayer perceptron."""

        def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.):
            super().__init__()
            out_features = out_features or in_features
            hidden_features = hidden_features or in_features
            self.fc1 = nn.Linear(in_features, hidden_features)
            self.act = act_layer()
            self.fc2 = nn.Linear(hidden_features, out_features)
            self.drop = nn.Dropout(drop)

        def forward(self, x):
            x = self.fc1(x)
            x = self.act(x)
            x = self.drop(x)
            x = self.fc2(x)
            x = self.drop(x)
            return x


    def window_partition(x, window_size):
        """
        Args:
            x: (B, H, W, C)
            window_size (int): window size

        Returns:
            windows: (num_windows*B, window_size, window_size, C)
        """
        B, H, W, C = x.shape
        x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
        windows = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, C)
        return windows


    def window_reverse(windows, window_size, H, W):
        """
        Args:
            windows: (num_windows*B, window_size, window_size, C)
            window_size (int): Window size
            H (int): Height of image
            W (int): Width of image

        Returns:
            x: (B, H, W, C)
        """
        B = int(windows.shape[0] / (H * W / window_size / window_size))
        x = windows.view(B, H // window_size, W // window_size, window_size, window_size, -1)
        x = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)
        return x


    class WindowAttention(nn.Module):
        """ Window based multi-head self attention (W-MSA) module with relative position bias.
        It supports both of shifted and non-shifted window.

        Args:
            dim (int): Number of input channels.
            window_size (tuple[int]): The height and width of the window.
            num_heads (int): Number of attention heads.
            qkv_bias (bool, optional):  If True, add a learnable bias to query, key, value. Default: True
            qk_scale (float | None, optional): Override default qk scale of head_dim ** -0.5 if set
            attn_drop (float, optional): Dropout ratio of attention weight. Default: 0.0
            proj_drop (float, optional): Dropout ratio of output. Default: 0.0
        """

        def __init__(self, dim, window_size, num_heads, qkv_bias=True, qk_scale=None, attn_drop=0., proj_drop=0.):

            super().__init__()
            self.dim = dim
            self.window_size = window_size  # Wh, Ww
            self.num_heads = num_heads
            head_dim = dim // num_heads
            self.scale = qk_scale or head_dim ** -0.5

            # define a parameter table of relative position bias
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros((2 * window_size[0] - 1) * (2 * window_size[1] - 1), num_heads))  # 2*Wh-1 * 2*Ww-1, nH

            # get pair-wise relative position index for each token inside the window
            coords_h = torch.arange(self.window_size[0])
            coords_w = torch.arange(self.window_size[1])
            coords = torch.stack(torch.meshgrid([coords_h, coords_w]))  # 2, Wh, Ww
            coords_flatten = torch.flatten(coords, 1)  # 2, Wh*Ww
            relative_coords = coords_flatten[:, :, None] - coords_flatten[:, None, :]  # 2, Wh*Ww, Wh*Ww
            relative_coords = relative_coords.permute(1, 2, 0).contiguous()  # Wh*Ww, Wh*Ww, 2
            relative_coords[:, :, 0] += self.window_size[0] - 1  # shift to start from 0
            relative_coords[:, :, 1] += self.window_size[1] - 1
            relative_coords[:, :, 0] *= 2 * self.window_size[1] - 1
            relative_position_index = relative_coords.sum(-1)  # Wh*Ww, Wh*Ww
            self.register_buffer("relative_position_index", relative_position_index)

            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
            self.attn_drop = nn.Dropout(attn_drop)
            self.proj = nn.Linear(dim, dim)
            self.proj_drop = nn.Dropout(proj_drop)

            trunc_normal_(self.relative_position_bias_table, std=.02)
            self.softmax = nn.Softmax(dim=-1)

        def forward(self, x, mask=None):
            """ Forward function.

            Args:
                x: input features with shape of (num_windows*B, N, C)
                mask: (0/-inf) mask with shape of (num_windows, Wh*Ww, Wh*Ww) or None
            """
            B_, N, C = x.shape
            qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]  # make torchscript happy (cannot use tensor as tuple)

            q = q * self.scale
            attn = (q @ k.transpose(-2, -1))

            relative_position_bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(
                self.window_size[0] * self.window_size[1], self.window_size[0] * self.window_size[1], -1)  # Wh*Ww,Wh*Ww,nH
            relative_position_bias = relative_position_bias.permute(2, 0, 1).contiguous()  # nH, Wh*Ww, Wh*Ww
            attn = attn + relative_position_bias.unsqueeze(0)

            if mask is not None:
                nW = mask.shape[0]
                attn = attn.view(B_ // nW, nW, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
                attn = attn.view(-1, self.num_heads, N, N)
                attn = self.softmax(attn)
            else:
                attn = self.softmax(attn)

            attn = self.attn_drop(attn)

            x = (attn @ v).transpose(1, 2).reshape(B_, N, C)
            x = self.proj(x)
            x = self.proj_drop(x)
            return x


    class SwinTransformerBlock(nn.Module):
        """ Swin Transformer Block.

        Args:
            dim (int): Number of input channels.
            num_heads (int): Number of attention heads.
            window_size (int): Window size.
            shift_size (int): Shift size for SW-MSA.
            mlp_ratio (float): Ratio of mlp hidden dim to embedding dim.
            qkv_bias (bool, optional): If True, add a learnable bias to query, key, value. Default: True
            qk_scale (float | None, optional): Override default qk scale of head_dim ** -0.5 if set.
            drop (float, optional): Dropout rate. Default: 0.0
            attn_drop (float, optional): Attention dropout rate. Default: 0.0
            drop_path (float, optional): Stochastic depth rate. Default: 0.0
            act_layer (nn.Module, optional): Activation layer. Default: nn.GELU
            norm_layer (nn.Module, optional): Normalization layer.  Default: nn.LayerNorm
        """

        def __init__(self, dim, num_heads, window_size=7, shift_size=0,
                     mlp_ratio=4., qkv_bias=True, qk_scale=None, drop=0., attn_drop=0., drop_path=0.,
                     act_layer=nn.GELU, norm_layer=nn.LayerNorm):
            super().__init__()
            self.dim = dim
            self.num_heads = num_heads
            self.window_size = window_size
            self.shift_size = shift_size
            self.mlp_ratio = mlp_ratio
            assert 0 <= self.shift_size < self.window_size, "shift_size must in 0-window_size"

            self.norm1 = norm_layer(dim)
            self.attn = WindowAttention(
                dim, window_size=to_2tuple(self.window_size), num_heads=num_heads,
                qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop)

            self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
            self.norm2 = norm_layer(dim)
            mlp_hidden_dim = int(dim * mlp_ratio)
            self.mlp = Mlp(in_features=dim, hidden_features=mlp_hidden_dim, act_layer=act_layer, drop=drop)

            self.H = None
            self.W = None

        def forward(self, x, mask_matrix):
            """ Forward function.

            Args:
                x: Input feature, tensor size (B, H*W, C).
                H, W: Spatial resolution of the input feature.
                mask_matrix: Attention mask for cyclic shift.
            """
            B, L, C = x.shape
            H, W = self.H, self.W
            assert L == H * W, "input feature has wrong size"

            shortcut = x
            x = self.norm1(x)
            x = x.view(B, H, W, C)

            # pad feature maps to multiples of window size
            pad_l = pad_t = 0
            pad_r = (self.window_size - W % self.window_size) % self.window_size
            pad_b = (self.window_size - H % self.window_size) % self.window_size
            x = F.pad(x, (0, 0, pad_l, pad_r, pad_t, pad_b))
            _, Hp, Wp, _ = x.shape

            # cyclic shift
            if self.shift_size > 0:
                shifted_x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
                attn_mask = mask_matrix
            else:
                shifted_x = x
                attn_mask = None

            # partition windows
            x_windows = window_partition(shifted_x, self.window_size)  # nW*B, window_size, window_size, C
            x_windows = x_windows.view(-1, self.window_size * self.window_size, C)  # nW*B, window_size*window_size, C

            # W-MSA/SW-MSA
            attn_windows = self.attn(x_windows, mask=attn_mask)  # nW*B, window_size*window_size, C

            # merge windows
            attn_windows = attn_windows.view(-1, self.window_size, self.window_size, C)
            shifted_x = window_reverse(attn_windows, self.window_size, Hp, Wp)  # B H' W' C

            # reverse cyclic shift
            if self.shift_size > 0:
                x = torch.roll(shifted_x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
            else:
                x = shifted_x

            if pad_r > 0 or pad_b > 0:
                x = x[:, :H, :W, :].contiguous()

            x = x.view(B, H * W, C)

            # FFN
            x = shortcut + self.drop_path(x)
            x = x + self.drop_path(self.mlp(self.norm2(x)))

            return x


    class PatchMerging(nn.Module):
        """ Patch Merging Layer

        Args:
            dim (int): Number of input channels.
            norm_layer (nn.Module, optional): Normalization layer.  Default: nn.LayerNorm
        """
        def __init__(self, dim, norm_layer=nn.LayerNorm):
            super().__init__()
            self.dim = dim
            self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
            self.norm = norm_layer(4 * dim)

        def forward(self, x, H, W):
            """ Forward function.

            Args:
                x: Input feature, tensor size (B, H*W, C).
                H, W: Spatial resolution of the input feature.
            """
            B, L, C = x.shape
            assert L == H * W, "input feature has wrong size"

            x = x.view(B, H, W, C)

            # padding
            pad_input = (H % 2 == 1) or (W % 2 == 1)
            if pad_input:
                x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))

            x0 = x[:, 0::2, 0::2, :]  # B H/2 W/2 C
            x1 = x[:, 1::2, 0::2, :]  # B H/2 W/2 C
            x2 = x[:, 0::2, 1::2, :]  # B H/2 W/2 C
            x3 = x[:, 1::2, 1::2, :]  # B H/2 W/2 C
            x = torch.cat([x0, x1, x2, x3], -1)  # B H/2 W/2 4*C
            x = x.view(B, -1, 4 * C)  # B H/2*W/2 4*C

            x = self.norm(x)
            x = self.reduction(x)

            return x


    class BasicLayer(nn.Module):
        """ A basic Swin Transformer layer for one stage.

        Args:
            dim (int): Number of feature channels
            depth (int): Depths of this stage.
            num_heads (int): Number of attention head.
            window_size (int): Local window size. Default: 7.
            mlp_ratio (float): Ratio of mlp hidden dim to embedding dim. Default: 4.
            qkv_bias (bool, optional): If True, add a learnable bias to query, key, value. Default: True
            qk_scale (float | None, optional): Override default qk scale of head_dim ** -0.5 if set.
            drop (float, optional): Dropout rate. Default: 0.0
            attn_drop (float, optional): Attention dropout rate. Default: 0.0
            drop_path (float | tuple[float], optional): Stochastic depth rate. Default: 0.0
            norm_layer (nn.Module, optional): Normalization layer. Default: nn.LayerNorm
            downsample (nn.Module | None, optional): Downsample layer at the end of the layer. Default: None
            use_checkpoint (bool): Whether to use checkpointing to save memory. Default: False.
        """

        def __init__(self,
                     dim,
                     depth,
                     num_heads,
                     window_size=7,
                     mlp_ratio=4.,
                     qkv_bias=True,
                     qk_scale=None,
                     drop=0.,
                     attn_drop=0.,
                     drop_path=0.,
                     norm_layer=nn.LayerNorm,
                     downsample=None,
                     use_checkpoint=False):
            super().__init__()
            self.window_size = window_size
            self.shift_size = window_size // 2
            self.depth = depth
            self.use_checkpoint = use_checkpoint

            # build blocks
            self.blocks = nn.ModuleList([
                SwinTransformerBlock(
                    dim=dim,
                    num_heads=num_heads,
                    window_size=window_size,
                    shift_size=0 if (i % 2 == 0) else window_size // 2,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop,
                    attn_drop=attn_drop,
                    drop_path=drop_path[i] if isinstance(drop_path, list) else drop_path,
                    norm_layer=norm_layer)
                for i in range(depth)])

            # patch merging layer
            if downsample is not None:
                self.downsample = downsample(dim=dim, norm_layer=norm_layer)
            else:
                self.downsample = None

        def forward(self, x, H, W):
            """ Forward function.

            Args:
                x: Input feature, tensor size (B, H*W, C).
                H, W: Spatial resolution of the input feature.
            """

            # calculate attention mask for SW-MSA
            Hp = int(np.ceil(H / self.window_size)) * self.window_size
            Wp = int(np.ceil(W / self.window_size)) * self.window_size
            img_mask = torch.zeros((1, Hp, Wp, 1), device=x.device)  # 1 Hp Wp 1
            h_slices = (slice(0, -self.window_size),
                        slice(-self.window_size, -self.shift_size),
                        slice(-self.shift_size, None))
            w_slices = (slice(0, -self.window_size),
                        slice(-self.window_size, -self.shift_size),
                        slice(-self.shift_size, None))
            cnt = 0
            for h in h_slices:
                for w in w_slices:
                    img_mask[:, h, w, :] = cnt
                    cnt += 1

            mask_windows = window_partition(img_mask, self.window_size)  # nW, window_size, window_size, 1
            mask_windows = mask_windows.view(-1, self.window_size * self.window_size)
            attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
            attn_mask = attn_mask.masked_fill(attn_mask != 0, float(-100.0)).masked_fill(attn_mask == 0, float(0.0))

            for blk in self.blocks:
                blk.H, blk.W = H, W
                if self.use_checkpoint:
                    x = checkpoint.checkpoint(blk, x, attn_mask)
                else:
                    x = blk(x, attn_mask)
            if self.downsample is not None:
                x_down = self.downsample(x, H, W)
                Wh, Ww = (H + 1) // 2, (W + 1) // 2
                return x, H, W, x_down, Wh, Ww
            else:
                return x, H, W, x, H, W


    class PatchEmbed(nn.Module):
        """ Image to Patch Embedding

        Args:
            patch_size (int): Patch token size. Default: 4.
            in_chans (int): Number of input image channels. Default: 3.
            embed_dim (int): Number of linear projection output channels. Default: 96.
            norm_layer (nn.Module, optional): Normalization layer. Default: None
        """

        def __init__(self, patch_size=4, in_chans=3, embed_dim=96, norm_layer=None):
            super().__init__()
            patch_size = to_2tuple(patch_size)
            self.patch_size = patch_size

            self.in_chans = in_chans
            self.embed_dim = embed_dim

            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
            if norm_layer is not None:
                self.norm = norm_layer(embed_dim)
            else:
                self.norm = None

        def forward(self, x):
            """Forward function."""
            # padding
            _, _, H, W = x.size()
            if W % self.patch_size[1] != 0:
                x = F.pad(x, (0, self.patch_size[1] - W % self.patch_size[1]))
            if H % self.patch_size[0] != 0:
                x = F.pad(x, (0, 0, 0, self.patch_size[0] - H % self.patch_size[0]))

            x = self.proj(x)  # B C Wh Ww
            if self.norm is not None:
                Wh, Ww = x.size(2), x.size(3)
                x = x.flatten(2).transpose(1, 2)
                x = self.norm(x)
                x = x.transpose(1, 2).view(-1, self.embed_dim, Wh, Ww)

            return x


    class SwinTransformer(nn.Module):
        """ Swin Transformer backbone.
            A PyTorch impl of : `Swin Transformer: Hierarchical Vision Transformer using Shifted Windows`  -
              https://arxiv.org/pdf/2103.14030

        Args:
            pretrain_img_size (int): Input image size for training the pretrained model,
                used in absolute postion embedding. Default 224.
            patch_size (int | tuple(int)): Patch size. Default: 4.
            in_chans (int): Number of input image channels. Default: 3.
            embed_dim (int): Number of linear projection output channels. Default: 96.
            depths (tuple[int]): Depths of each Swin Transformer stage.
            num_heads (tuple[int]): Number of attention head of each stage.
            window_size (int): Window size. Default: 7.
            mlp_ratio (float): Ratio of mlp hidden dim to embedding dim. Default: 4.
            qkv_bias (bool): If True, add a learnable bias to query, key, value. Default: True
            qk_scale (float): Override default qk scale of head_dim ** -0.5 if set.
            drop_rate (float): Dropout rate.
            attn_drop_rate (float): Attention dropout rate. Default: 0.
            drop_path_rate (float): Stochastic depth rate. Default: 0.2.
            norm_layer (nn.Module): Normalization layer. Default: nn.LayerNorm.
            ape (bool): If True, add absolute position embedding to the patch embedding. Default: False.
            patch_norm (bool): If True, add normalization after patch embedding. Default: True.
            out_indices (Sequence[int]): Output from which stages.
            frozen_stages (int): Stages to be frozen (stop grad and set eval mode).
                -1 means not freezing any parameters.
            use_checkpoint (bool): Whether to use checkpointing to save memory. Default: False.
        """

        def __init__(self,
                     pretrain_img_size=256,
                     patch_size=4,
                     in_chans=3,
                     embed_dim=96,
                     depths=[2, 2, 6, 2],
                     num_heads=[3, 6, 12, 24],
                     window_size=8,
                     mlp_ratio=4.,
                     qkv_bias=True,
                     qk_scale=None,
                     drop_rate=0.,
                     attn_drop_rate=0.,
                     drop_path_rate=0.1,
                     norm_layer=nn.LayerNorm,
                     ape=False,
                     patch_norm=True,
                     out_indices=[3],
                     frozen_stages=-1,
                     use_checkpoint=False,
                     pooling=True):
            super().__init__()

            self.pretrain_img_size = pretrain_img_size
            self.num_layers = len(depths)

            self.ape = ape
            self.patch_norm = patch_norm
            self.out_indices = out_indices
            self.frozen_stages = frozen_stages
            self.pooling = pooling

            # split image into non-overlapping patches
            self.patch_embed = PatchEmbed(
                patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
                norm_layer=norm_layer if self.patch_norm else None)

            # absolute position embedding
            if self.ape:
                pretrain_img_size = to_2tuple(pretrain_img_size)
                patch_size = to_2tuple(patch_size)
                patches_resolution = [pretrain_img_size[0] // patch_size[0], pretrain_img_size[1] // patch_size[1]]

                self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, patches_resolution[0], patches_resolution[1]))
                trunc_normal_(self.absolute_pos_embed, std=.02)

            self.pos_drop = nn.Dropout(p=drop_rate)

            # stochastic depth
            dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths))]  # stochastic depth decay rule

            # build layers
            self.layers = nn.ModuleList()
            for i_layer in range(self.num_layers):
                layer = BasicLayer(
                    dim=int(embed_dim * 2 ** i_layer),
                    depth=depths[i_layer],
                    num_heads=num_heads[i_layer],
                    window_size=window_size,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=dpr[sum(depths[:i_layer]):sum(depths[:i_layer + 1])],
                    norm_layer=norm_layer,
                    downsample=PatchMerging if (i_layer < self.num_layers - 1) else None,
                    use_checkpoint=use_checkpoint)
                self.layers.append(layer)

            num_features = [int(embed_dim * 2 ** i) for i in range(self.num_layers)]
            self.num_features = num_features
            self.embed_dim = num_features[-1]

            # add a norm layer for each output
            for i_layer in out_indices:
                layer = norm_layer(num_features[i_layer])
                layer_name = f'norm{i_layer}'
                self.add_module(layer_name, layer)

            self.avgpool = nn.AdaptiveAvgPool2d((1,1))

            self.init_weights()
            self._freeze_stages()

        def _freeze_stages(self):
            if self.frozen_stages >= 0:
                self.patch_embed.eval()
                for param in self.patch_embed.parameters():
                    param.requires_grad = False

            if self.frozen_stages >= 1 and self.ape:
                self.absolute_pos_embed.requires_grad = False

            if self.frozen_stages >= 2:
                self.pos_drop.eval()
                for i in range(0, self.frozen_stages - 1):
                    m = self.layers[i]
                    m.eval()
                    for param in m.parameters():
                        param.requires_grad = False

        def init_weights(self):
            """Initialize the weights in backbone.
            """
            def _init_weights(m):
                if isinstance(m, nn.Linear):
                    trunc_normal_(m.weight, std=.02)
                    if isinstance(m, nn.Linear) and m.bias is not None:
                        nn.init.constant_(m.bias, 0)
                elif isinstance(m, nn.LayerNorm):
                    nn.init.constant_(m.bias, 0)
                    nn.init.constant_(m.weight, 1.0)
            self.apply(_init_weights)

        def forward(self, x):
            """Forward function."""
            x = self.patch_embed(x)

            Wh, Ww = x.size(2), x.size(3)
            if self.ape:
                # interpolate the position embedding to the corresponding size
                absolute_pos_embed = F.interpolate(self.absolute_pos_embed, size=(Wh, Ww), mode='bicubic')
                x = (x + absolute_pos_embed).flatten(2).transpose(1, 2)  # B Wh*Ww C
            else:
                x = x.flatten(2).transpose(1, 2)
            x = self.pos_drop(x)

            outs = []
            for i in range(self.num_layers):
                layer = self.layers[i]
                x_out, H, W, x, Wh, Ww = layer(x, Wh, Ww)
                if i in self.out_indices:
                    norm_layer = getattr(self, f'norm{i}')
                    x_out = norm_layer(x_out)
                    out = x_out.view(-1, H, W, self.num_features[i]).permute(0, 3, 1, 2).contiguous()
                    outs.append(out)

            if not self.pooling:
                return tuple(outs)
            else:
                out = outs[-1]
                out = self.avgpool(out)
                out = torch.flatten(out,1)
                return out

        def train(self, mode=True):
            """Convert the model into training mode while keep layers freezed."""
            super(SwinTransformer, self).train(mode)
            self._freeze_stages()





    def swin_tiny():
        model = SwinTransformer(patch_size=4, window_size=8, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),pooling=True)
        return model

    return swin_tiny


# fmt: on
# ---- how CION_Pretrain/run.py saves its teacher -----------------------------------------------------
# student = model_zoo[arch](), teacher = model_zoo[arch](), embed_dim = student.embed_dim; each is
# wrapped as utils.MultiCropWrapper(net, DINOHead(embed_dim, out_dim, use_bn=args.use_bn_in_head)).
# If utils.has_batchnorms(student), both are converted to SyncBatchNorm (same state-dict keys) and the
# teacher is wrapped in DistributedDataParallel: keys "module.backbone.*" and "module.head.*";
# otherwise (ConvNeXt, EdgeNeXt, Swin) the teacher stays unwrapped: "backbone.*" and "head.*". The
# student is wrapped in DDP either way. torch.save({'student': student.state_dict(), 'teacher':
# teacher.state_dict(), 'optimizer': ..., 'epoch': ..., 'args': args, 'Loss': ...}).


@dataclass(frozen=True)
class Family:
    arch: str  # CION's name: args.arch, a key of models/make_model.py's model_zoo
    code: Callable[[], Callable[[], nn.Module]]  # the function above holding their code; returns their builder
    name: str  # ours (build_backbone)
    kwargs: dict[str, Any] = field(default_factory=dict)  # what builds their network (inferred from args.arch
    # by load_pretrained for every family but plain ResNet, whose name DINO's checkpoints share)


FAMILIES = [
    Family("resnet18", _cion_resnet, "resnet18", {"last_stride": 1}),
    Family("ghostnet_0_5", _cion_ghostnet, "ghostnet_050"),
    Family("volo_d1", _cion_volo, "volo_d1_224", {"img_size": (256, 128)}),
    Family("convnext_tiny", _cion_convnext, "convnext_tiny"),
    Family("edgenext_x_small", _cion_edgenext, "edgenext_x_small"),
    Family("fastvit_s12", _cion_fastvit, "fastvit_s12"),
    Family("swin_tiny", _cion_swin, "swin_tiny_patch4_window7_224",
           {"img_size": (256, 128), "window_size": 8, "always_partition": True}),
]
FAMILY = {family.arch: family for family in FAMILIES}


def _randomise(model: nn.Module, seed: int) -> None:
    """Random weights and running statistics everywhere (their inits leave norms at 1 / 0 and layer
    scales at 1e-6, which would hide a misplaced tensor), at scales that keep the features of these
    deep residual networks moderate: per-channel tensors (norm weights and biases, running means,
    layer scales) N(1, 0.2) for weights and N(0, 0.2) otherwise, the others N(0, 1 / fan-in)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=g) + 0.5)
            elif tensor.ndim == 0 or tensor.numel() == tensor.shape[0]:
                tensor.copy_(torch.randn(tensor.shape, generator=g) * 0.2 + (1.0 if name.endswith("weight") else 0.0))
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=g) / math.sqrt(tensor[0].numel()))


@functools.lru_cache(maxsize=None)
def _their_teacher(arch: str) -> nn.Module:
    """Their teacher for ``arch``, random weights (built once per module: two tests read it)."""
    backbone = FAMILY[arch].code()()
    teacher = MultiCropWrapper(backbone, DINOHead(backbone.embed_dim, 64, use_bn=False))
    _randomise(teacher, seed=0)
    return teacher.eval()


@pytest.fixture(scope="module", autouse=True)
def _forget_their_teachers():
    yield
    _their_teacher.cache_clear()


def _save_like_run_py(teacher: nn.Module, arch: str, path) -> str:
    """Saves ``teacher`` to ``path`` as CION's run.py saves it; returns its key prefix."""
    prefix = "module." if has_batchnorms(teacher) else ""  # run.py asks the student: the same network
    state = teacher.state_dict()
    args = argparse.Namespace(arch=arch, output_dim=64, use_bn_in_head=False, momentum_teacher=0.996)
    torch.save({"student": {"module." + k: v for k, v in state.items()},
                "teacher": {prefix + k: v for k, v in state.items()}, "epoch": 1, "args": args}, path)
    return prefix


def _assert_same_features(ours: nn.Module, theirs: nn.Module) -> float:
    """Eval-mode features of a 256 x 128 batch agree; returns their largest difference."""
    x = torch.randn(2, 3, 256, 128, generator=torch.Generator().manual_seed(1))
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        expected = theirs(x)  # the features before the DINO head
        got = ours(x)
    assert got.shape == expected.shape == (2, theirs.embed_dim)
    assert bool(torch.isfinite(expected).all())
    difference = (got - expected).abs().max().item()
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item()), difference
    return difference


@pytest.mark.parametrize("family", [pytest.param(family, id=family.arch) for family in FAMILIES])
def test_cion_zoo_checkpoint_loads_with_equal_features(family, tmp_path):
    path = tmp_path / "checkpoint.pth"
    teacher = _their_teacher(family.arch)
    prefix = _save_like_run_py(teacher, family.arch, path)
    saved = torch.load(path, map_location="cpu", weights_only=False)["teacher"]
    assert {k[len(prefix + "head."):] for k in saved if k.startswith(prefix + "head.")} == HEAD_KEYS
    backbone = {k[len(prefix + "backbone."):]: v for k, v in saved.items() if k.startswith(prefix + "backbone.")}
    assert len(backbone) + len(HEAD_KEYS) == len(saved)

    inferred = family.arch in CION_ZOO_NAMES
    assert not inferred or CION_ZOO_NAMES[family.arch] == (family.name, family.kwargs)
    # strict: raises on any missing/unexpected key; the architecture from the checkpoint's args.arch
    ours = load_pretrained(path) if inferred else load_pretrained(path, family.name, **family.kwargs)
    loaded = ours.state_dict()
    # every tensor of theirs loaded once, unchanged (under timm's name where it differs); Swin's
    # relative_position_index buffers are rebuilt by timm, not loaded
    theirs = [v for k, v in backbone.items() if not k.endswith("relative_position_index")]
    assert len(loaded) == len(theirs)
    for key, value in loaded.items():
        match = next((n for n, t in enumerate(theirs) if t.shape == value.shape and torch.equal(t, value)), None)
        assert match is not None, f"{key} holds none of their tensors"
        theirs.pop(match)
    _assert_same_features(ours, teacher.backbone)


def test_a_foreign_layout_still_names_its_keys(tmp_path):
    """A state dict that neither fits nor renames into the network (here ConvNeXt's keys offered to
    a FastViT) is not loaded halfway: the error names the keys."""
    teacher = _their_teacher("convnext_tiny")
    state = {"module.backbone." + k: v for k, v in teacher.backbone.state_dict().items()}
    with pytest.raises(ValueError, match="missing keys .* unexpected keys"):
        load_pretrained(state, "fastvit_s12")
