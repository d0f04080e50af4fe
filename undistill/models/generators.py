"""The image generator of DAFL (Chen et al., "Data-Free Learning of Student Networks", ICCV 2019).

As in the authors' code for 32 px: z -> linear to 128 x 8 x 8 -> BN -> [x2 upsample, conv 128, BN, LeakyReLU 0.2]
-> x2 upsample, conv 64, BN, LeakyReLU 0.2, conv to 3 channels, tanh, BN without affine. The last BN makes each
channel of the batch zero-mean and unit-variance: the images come out in the teacher's normalized input space.
Their BN layers take 0.8 as their second argument, which BatchNorm2d reads as eps: kept, as in their code.

Larger images start from a map of at most 8 x 8 and add [x2 upsample, conv 128, BN, LeakyReLU] stages: 64 px is
8 x 8 with one more stage, 224 px 7 x 7 with three more (a linear layer to 128 x 56 x 56 would hold 400 M weights).
"""
import torch.nn.functional as F
from torch import nn


class DaflGenerator(nn.Module):
    def __init__(self, latent_dim, image_size, channels=3):
        super().__init__()
        stages = 2
        while image_size % 2 ** (stages + 1) == 0 and image_size // 2 ** stages > 8:
            stages += 1
        if image_size % 2 ** stages:
            raise ValueError(f"the DAFL generator needs an image size divisible by 4, not {image_size}")
        self.start = image_size // 2 ** stages
        self.l1 = nn.Linear(latent_dim, 128 * self.start ** 2)
        self.bn0 = nn.BatchNorm2d(128)
        self.up = nn.ModuleList(nn.Sequential(nn.Conv2d(128, 128, 3, 1, 1), nn.BatchNorm2d(128, 0.8),
                                              nn.LeakyReLU(0.2, inplace=True)) for _ in range(stages - 1))
        self.last = nn.Sequential(
            nn.Conv2d(128, 64, 3, 1, 1), nn.BatchNorm2d(64, 0.8), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(64, channels, 3, 1, 1), nn.Tanh(), nn.BatchNorm2d(channels, affine=False))

    def forward(self, z):
        x = self.bn0(self.l1(z).view(len(z), 128, self.start, self.start))
        for stage in self.up:
            x = stage(F.interpolate(x, scale_factor=2))
        return self.last(F.interpolate(x, scale_factor=2))
