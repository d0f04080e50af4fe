"""CIFAR variants of the networks used in the Nasty Teacher / distillation papers' code.

They follow kuangliu/pytorch-cifar and VITA-Group/Nasty-Teacher (which itself borrows
from weiaicunzai/pytorch-cifar100 and prlz77/ResNeXt.pytorch) closely enough that the
parameter counts match those implementations exactly; the quirks kept for that reason are
commented where they occur. Weight initialisation is PyTorch's default throughout. All
models except ``cnn`` end with adaptive average pooling, so they also accept inputs
smaller than 32x32.

``CIFAR_MODELS`` maps a model name to a constructor ``fn(num_classes) -> nn.Module``.
The ResNets, MobileNetV2 and ShuffleNetV2 expose ``features(x)``: the feature maps after stages
1, 2 and 3 plus the final pre-pool map, with ``forward`` built on it, so auxiliary heads can be
attached to the intermediate maps.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


def _conv_bn(c_in, c_out, kernel, stride=1, groups=1, bias=False):
    """Conv (padding keeps the size for odd kernels at stride 1) followed by BatchNorm."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=bias),
        nn.BatchNorm2d(c_out),
    )


class _PooledHead(nn.Module):
    """Base for models whose ``forward`` is ``features`` -> global average pool -> ``fc``."""

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x)[-1], 1), 1))


# --- ResNet-18/34/50 (kuangliu/pytorch-cifar) ---------------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in, planes, stride):
        super().__init__()
        self.residual = nn.Sequential(
            _conv_bn(c_in, planes, 3, stride), nn.ReLU(inplace=True), _conv_bn(planes, planes, 3)
        )
        # Projection shortcut (1x1 conv + BN) only where the shape changes.
        changes = stride != 1 or c_in != planes
        self.shortcut = _conv_bn(c_in, planes, 1, stride) if changes else nn.Identity()

    def forward(self, x):
        return F.relu(self.residual(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in, planes, stride):
        super().__init__()
        c_out = planes * self.expansion
        self.residual = nn.Sequential(
            _conv_bn(c_in, planes, 1), nn.ReLU(inplace=True),
            _conv_bn(planes, planes, 3, stride), nn.ReLU(inplace=True),
            _conv_bn(planes, c_out, 1),
        )
        changes = stride != 1 or c_in != c_out
        self.shortcut = _conv_bn(c_in, c_out, 1, stride) if changes else nn.Identity()

    def forward(self, x):
        return F.relu(self.residual(x) + self.shortcut(x))


class ResNet(_PooledHead):
    """ImageNet ResNet with a 3x3 stride-1 stem and no max-pool, for 32x32 inputs."""

    def __init__(self, block, num_blocks, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(_conv_bn(3, 64, 3), nn.ReLU(inplace=True))
        c_in, stages = 64, []
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), num_blocks)):
            strides = [1 if i == 0 else 2] + [1] * (n - 1)
            blocks = []
            for s in strides:
                blocks.append(block(c_in, planes, s))
                c_in = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(c_in, num_classes)

    def features(self, x):
        """Outputs of stages 1-4; the last one is the pre-pool map."""
        maps, x = [], self.stem(x)
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps


# --- ResNetC-20/32: pre-activation CIFAR ResNet (Nasty-Teacher "preresnet") --------------


class PreActBlock(nn.Module):
    def __init__(self, c_in, planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        # The original projects with a bare 1x1 conv (no BN) and feeds it the raw input,
        # not the pre-activated one.
        changes = stride != 1 or c_in != planes
        self.shortcut = nn.Conv2d(c_in, planes, 1, stride, bias=False) if changes else nn.Identity()

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + self.shortcut(x)


class ResNetC(_PooledHead):
    """Pre-activation ResNet of depth 6n+2 with widths 16/32/64 (He et al., CIFAR)."""

    def __init__(self, depth, num_classes=10):
        super().__init__()
        assert (depth - 2) % 6 == 0, "depth must be 6n+2"
        n = (depth - 2) // 6
        self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        c_in, stages = 16, []
        for i, planes in enumerate((16, 32, 64)):
            blocks = []
            for s in [1 if i == 0 else 2] + [1] * (n - 1):
                blocks.append(PreActBlock(c_in, planes, s))
                c_in = planes
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.bn = nn.BatchNorm2d(64)  # pre-activation nets need a final BN-ReLU
        self.fc = nn.Linear(64, num_classes)

    def features(self, x):
        """Outputs of stages 1-3, then the final BN-ReLU map (pre-pool)."""
        maps, x = [], self.stem(x)
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        maps.append(F.relu(self.bn(x)))
        return maps


# --- Plain 5-layer CNN (Nasty-Teacher "net", from the cs230 starter code) ----------------


class CNN(nn.Module):
    """3 x [conv3x3 (with bias) + BN + maxpool + ReLU], FC-BN-ReLU, FC.

    The flatten size is fixed at 128*4*4, so inputs must be 32x32.
    """

    def __init__(self, num_classes=10):
        super().__init__()
        layers, c_in = [], 3
        for c_out in (32, 64, 128):
            # The original keeps the conv bias even though BN follows.
            layers += [_conv_bn(c_in, c_out, 3, bias=True), nn.MaxPool2d(2), nn.ReLU(inplace=True)]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(128 * 4 * 4, 128), nn.BatchNorm1d(128), nn.ReLU(inplace=True),
            nn.Linear(128, num_classes),
        )

    def forward(self, x):
        return self.head(self.body(x))


# --- MobileNetV2 (Nasty-Teacher, from weiaicunzai/pytorch-cifar100) ---------------------


class InvertedResidual(nn.Module):
    """Expand 1x1 -> depthwise 3x3 -> linear project 1x1; identity skip when shapes match.

    As in the original, every conv keeps its bias and there is no projection shortcut.
    """

    def __init__(self, c_in, c_out, stride, t):
        super().__init__()
        hidden = c_in * t
        self.residual = nn.Sequential(
            _conv_bn(c_in, hidden, 1, bias=True), nn.ReLU6(inplace=True),
            _conv_bn(hidden, hidden, 3, stride, groups=hidden, bias=True), nn.ReLU6(inplace=True),
            _conv_bn(hidden, c_out, 1, bias=True),
        )
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x):
        out = self.residual(x)
        return out + x if self.skip else out


class MobileNetV2(_PooledHead):
    # (expansion t, out channels, repeats, first stride). Only three downsamplings: the
    # original keeps stride 1 at the 160-channel stage for CIFAR.
    cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
           (6, 96, 3, 1), (6, 160, 3, 1), (6, 320, 1, 1)]

    def __init__(self, num_classes=10):
        super().__init__()
        # Quirk of the original: a 1x1 stem conv with padding 1 (32x32 -> 34x34, zero border).
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 1, padding=1), nn.BatchNorm2d(32), nn.ReLU6(inplace=True)
        )
        c_in, stages = 32, []
        for t, c_out, n, stride in self.cfg:
            blocks = []
            for s in [stride] + [1] * (n - 1):
                blocks.append(InvertedResidual(c_in, c_out, s, t))
                c_in = c_out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.head_conv = nn.Sequential(_conv_bn(320, 1280, 1, bias=True), nn.ReLU6(inplace=True))
        # The original classifies with a 1x1 conv after pooling, i.e. this linear layer.
        self.fc = nn.Linear(1280, num_classes)

    def features(self, x):
        """Outputs of the three downsampling stages (24, 32, 64 ch), then the pre-pool map."""
        maps, x = [], self.stem(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in (1, 2, 3):
                maps.append(x)
        maps.append(self.head_conv(x))
        return maps


# --- ShuffleNetV2 1.0x (Nasty-Teacher, from weiaicunzai/pytorch-cifar100) ---------------
# Differs from kuangliu's version in two count-relevant ways: every conv keeps its bias, and
# the downsampling unit's main branch starts with a c_in -> c_in 1x1 conv (not c_in -> c_out/2).


def _channel_shuffle(x, groups=2):
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """Stride-1 unit: split channels, transform the second half, concat, shuffle."""

    def __init__(self, channels):
        super().__init__()
        c = channels // 2
        self.branch = nn.Sequential(
            _conv_bn(c, c, 1, bias=True), nn.ReLU(inplace=True),
            _conv_bn(c, c, 3, groups=c, bias=True),
            _conv_bn(c, c, 1, bias=True), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=1)
        return _channel_shuffle(torch.cat([x1, self.branch(x2)], 1))


class ShuffleDownUnit(nn.Module):
    """Stride-2 unit: both branches see the whole input, each emits half the channels."""

    def __init__(self, c_in, c_out):
        super().__init__()
        half = c_out // 2
        self.shortcut = nn.Sequential(
            _conv_bn(c_in, c_in, 3, 2, groups=c_in, bias=True),
            _conv_bn(c_in, half, 1, bias=True), nn.ReLU(inplace=True),
        )
        self.residual = nn.Sequential(
            _conv_bn(c_in, c_in, 1, bias=True), nn.ReLU(inplace=True),
            _conv_bn(c_in, c_in, 3, 2, groups=c_in, bias=True),
            _conv_bn(c_in, half, 1, bias=True), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return _channel_shuffle(torch.cat([self.shortcut(x), self.residual(x)], 1))


class ShuffleNetV2(nn.Module):
    def __init__(self, num_classes=10, widths=(116, 232, 464, 1024), repeats=(3, 7, 3)):
        super().__init__()
        # CIFAR stem: 3x3 stride-1 conv + BN, with neither ReLU nor max-pool after it.
        layers, c_in, ends = [_conv_bn(3, 24, 3, bias=True)], 24, []
        for c_out, n in zip(widths[:3], repeats):
            layers += [ShuffleDownUnit(c_in, c_out)] + [ShuffleUnit(c_out) for _ in range(n)]
            c_in = c_out
            ends.append(len(layers) - 1)
        layers += [_conv_bn(c_in, widths[3], 1, bias=True), nn.ReLU(inplace=True)]
        # where stages 1-3 and the pre-pool map end in body: one flat Sequential keeps its checkpoints' keys
        self.ends = (*ends, len(layers) - 1)
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(widths[3], num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.body(x), 1), 1))

    def features(self, x):
        """Outputs of stages 1-3 and the pre-pool map (the skeptical student's heads read them)."""
        maps = []
        for i, layer in enumerate(self.body):
            x = layer(x)
            if i in self.ends:
                maps.append(x)
        return maps


# --- ResNeXt-29 8x64d (Nasty-Teacher, from prlz77/ResNeXt.pytorch) -----------------------


class ResNeXtBlock(nn.Module):
    """Type-C bottleneck: 1x1 reduce -> grouped 3x3 -> 1x1 expand, post-activation."""

    def __init__(self, c_in, c_out, stride, cardinality, widen_factor):
        super().__init__()
        # Inner width D = cardinality * c_out / widen_factor, i.e. 8 groups of 64 in stage 1.
        d = cardinality * c_out // widen_factor
        self.residual = nn.Sequential(
            _conv_bn(c_in, d, 1), nn.ReLU(inplace=True),
            _conv_bn(d, d, 3, stride, groups=cardinality), nn.ReLU(inplace=True),
            _conv_bn(d, c_out, 1),
        )
        # The original projects only on a channel change (which every stride-2 block has).
        self.shortcut = _conv_bn(c_in, c_out, 1, stride) if c_in != c_out else nn.Identity()

    def forward(self, x):
        return F.relu(self.residual(x) + self.shortcut(x))


class ResNeXt(nn.Module):
    def __init__(self, num_classes=10, depth=29, cardinality=8, widen_factor=4):
        super().__init__()
        n = (depth - 2) // 9
        layers, c_in = [_conv_bn(3, 64, 3), nn.ReLU(inplace=True)], 64
        for i, c_out in enumerate((256, 512, 1024)):
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                layers.append(ResNeXtBlock(c_in, c_out, stride, cardinality, widen_factor))
                c_in = c_out
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.body(x), 1), 1))


CIFAR_MODELS = {
    "resnet18": lambda num_classes: ResNet(BasicBlock, (2, 2, 2, 2), num_classes),
    "resnet34": lambda num_classes: ResNet(BasicBlock, (3, 4, 6, 3), num_classes),
    "resnet50": lambda num_classes: ResNet(Bottleneck, (3, 4, 6, 3), num_classes),
    "resnetc20": lambda num_classes: ResNetC(20, num_classes),
    "resnetc32": lambda num_classes: ResNetC(32, num_classes),
    "cnn": CNN,
    "mobilenetv2": MobileNetV2,
    "shufflenetv2": ShuffleNetV2,
    "resnext29": ResNeXt,
}
