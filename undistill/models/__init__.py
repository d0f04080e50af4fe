"""Models by name: the papers' CIFAR zoo (models/cifar.py) and torchvision's ImageNet models.

`Classifier` is what every script trains, saves and queries: uint8 images in, logits out. It carries the
normalization of its dataset and, for a released teacher, the logit transform, so a checkpoint is a complete
black box.
"""

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.transforms.v2.functional import rgb_to_grayscale

from .. import UserError, require, runs
from .cifar import CIFAR_MODELS
from .heads import SkepticalNet

HEADS = {"skeptical": SkepticalNet}  # auxiliary classifier heads a student may carry (attacks.skeptical)


def names():
    return sorted(CIFAR_MODELS) + [f"tv.{n}" for n in torchvision.models.list_models(torchvision.models)]


def build(arch, num_classes, weights=None, heads=None, image_size=None):
    """A randomly initialized network, or one loaded from a local state_dict file (nothing is downloaded).

    CIFAR variants go by their plain names (resnet18); torchvision's ImageNet models by `tv.<name>`
    (tv.resnet18), or by the plain name where no CIFAR variant has it (densenet121); timm's by `timm.<name>`
    (timm.resnet18), where timm is installed. `heads` (a HEADS name)
    wraps the network, after loading `weights`, with auxiliary classifier heads. With `image_size`, one probe
    image checks that the network takes the dataset's images (the plain CNN takes only 32x32).
    """
    torchvision_name = arch[3:] if arch.startswith("tv.") else arch
    if arch in CIFAR_MODELS:
        net = CIFAR_MODELS[arch](num_classes)
    elif torchvision_name in torchvision.models.list_models(torchvision.models):
        net = torchvision.models.get_model(torchvision_name, weights=None, num_classes=num_classes)
    elif arch.startswith("timm."):
        timm = require("timm", "timm", f"--arch {arch}")
        try:
            net = timm.create_model(arch[len("timm."):], pretrained=False, num_classes=num_classes)
        except RuntimeError as e:  # timm's "Unknown model"
            raise UserError(f"--arch {arch}: {str(e).strip()[:120]} (timm.list_models() names timm's)") from None
    else:
        raise UserError(f"unknown architecture {arch!r}; choose one of: {', '.join(names())}, or timm.<name>")
    if weights is not None:
        state = runs.load_tensors(weights, "--weights")
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]  # a project checkpoint's weights
        load_weights(net, state, f"--weights {weights}", arch, num_classes)
    if heads is not None:
        if not hasattr(net, "features"):
            raise UserError(f"{heads} heads attach to the stages of a CIFAR ResNet (resnet18/34/50, resnetc20/32) "
                            f"or mobilenetv2, not {arch}: pass one of those as --arch")
        net = HEADS[heads](net, num_classes, **({} if image_size is None else {"image_size": image_size}))
    if image_size is not None:
        check_input(net, arch, image_size)
    return net


def check_input(net, arch, image_size):
    was_training = net.training
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, 3, image_size, image_size))
    except RuntimeError as e:
        raise UserError(f"--arch {arch} cannot take the dataset's {image_size}x{image_size} images "
                        f"({str(e).strip().splitlines()[0][:120]}): choose another --arch") from None
    finally:
        net.train(was_training)


def load_weights(net, state, source, arch, num_classes):
    """`net.load_state_dict(state)`, or one UserError saying why `source`'s weights do not fit."""
    if not isinstance(state, dict):
        raise UserError(f"{source} holds a {type(state).__name__}, not a state_dict")
    try:
        net.load_state_dict(state)
    except RuntimeError as e:  # its first line names only the class; the next one names the mismatch
        lines = [line.strip() for line in str(e).strip().splitlines()]
        raise UserError(f"{source}: its weights do not fit {arch} with {num_classes} classes "
                        f"({lines[min(1, len(lines) - 1)][:160]})") from None


class Classifier(nn.Module):
    """uint8 (or [0, 255] float) images -> logits, with the dataset's normalization and an optional release
    transform (a function of the logits, e.g. a stingy sparsifier) applied to every output.

    `owner`: an imported model's input convention (checkpoint field "input", undistill.importer), so that it sees
    what it was trained on: `image_size` (images resized to it, bilinear with antialiasing), `channels` (1: the
    luminance of RGB), `class_order` (the owner's class i is the dataset's class_order[i]: its logits reordered
    to the dataset's). None: the dataset's images and classes as they are."""

    def __init__(self, net, mean, std, release=None, owner=None):
        super().__init__()
        self.net, self.release = net, release
        owner = owner or {}
        self.size, self.gray = owner.get("image_size"), owner.get("channels") == 1
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * 255, persistent=False)
        order = owner.get("class_order")
        # the dataset's class j is the owner's class inverse[j]
        inverse = None if order is None else torch.argsort(torch.tensor(order))
        self.register_buffer("inverse", inverse, persistent=False)

    def forward(self, x):
        x = x.float()
        if self.size is not None and x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        if self.gray:
            x = rgb_to_grayscale(x)
        logits = self.net((x - self.mean) / self.std)
        if self.inverse is not None:
            logits = logits[:, self.inverse]
        return self.release(logits) if self.release is not None else logits


class Ensemble(nn.Module):
    """Several frozen classifiers answering as one: the mean of their logits (SCM's z_ens, Jandial et al. eq. 11)."""

    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x):
        return torch.stack([m(x) for m in self.members]).mean(0)
