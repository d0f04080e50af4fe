"""The skeptical student's auxiliary heads (Kundu et al., NeurIPS 2021; docs/methods.md).

`SkepticalNet` wraps a CIFAR network that exposes `features(x)` (the maps after stages 1, 2, 3 and the final
pre-pool map: the ResNets, MobileNetV2 and ShuffleNetV2) and adds a classifier after each of stages 1-3: an attention gate
sigmoid(conv(feature)) * feature, separable convolutions that walk the feature through the channel widths of
the later stages (stride 2 wherever the network itself downsamples), global pooling and a linear layer.

In training mode it returns the heads as one (4, batch, classes) tensor ordered [final, after stage 3, after
stage 2, after stage 1]; in eval mode only the final head, which is the wrapped network's own output, so a
checkpoint is queried and evaluated like any other student.
"""
import torch
import torch.nn.functional as F
from torch import nn


def separable_conv(c_in, c_out, stride):
    """Depthwise 3x3 (strided) + pointwise, then depthwise 3x3 + pointwise to the new width, each with BN-ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False), nn.Conv2d(c_in, c_in, 1, bias=False),
        nn.BatchNorm2d(c_in), nn.ReLU(inplace=True),
        nn.Conv2d(c_in, c_in, 3, 1, 1, groups=c_in, bias=False), nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class AttentionGate(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels))

    def forward(self, x):
        return torch.sigmoid(self.conv(x)) * x


class AuxiliaryHead(nn.Module):
    def __init__(self, shapes, num_classes):
        """shapes: (channels, height) of this stage's map, then of every later map up to the final one."""
        super().__init__()
        self.gate = AttentionGate(shapes[0][0])
        self.convs = nn.Sequential(*[separable_conv(c, c_next, 2 if h_next < h else 1)
                                     for (c, h), (c_next, h_next) in zip(shapes, shapes[1:])])
        self.fc = nn.Linear(shapes[-1][0], num_classes)

    def forward(self, x):
        x = self.convs(self.gate(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class SkepticalNet(nn.Module):
    def __init__(self, backbone, num_classes, image_size=32):
        super().__init__()
        if not hasattr(backbone, "features"):
            raise TypeError(f"{type(backbone).__name__} exposes no stage features for auxiliary heads")
        self.backbone = backbone
        was_training = backbone.training
        with torch.no_grad():  # one probe to read each map's width and size
            maps = backbone.eval().features(torch.zeros(1, 3, image_size, image_size))
        backbone.train(was_training)
        shapes = [(m.shape[1], m.shape[2]) for m in maps]
        # Built in output order: after stage 3, stage 2, stage 1.
        self.heads = nn.ModuleList(AuxiliaryHead(shapes[i:], num_classes) for i in (2, 1, 0))

    def forward(self, x):
        if not self.training:
            return self.backbone(x)
        maps = self.backbone.features(x)
        final = self.backbone.fc(torch.flatten(F.adaptive_avg_pool2d(maps[-1], 1), 1))
        return torch.stack([final] + [head(maps[i]) for head, i in zip(self.heads, (2, 1, 0))])
