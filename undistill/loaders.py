"""The loaders that feed a training run, all with one interface: `len(loader)` batches per epoch, and
`loader.epoch(epoch)` yielding (uint8 images, labels) whose order and augmentation depend only on the run's seed,
the epoch and the rank, so a resumed run replays exactly.

torchvision: a DataLoader with worker processes; gpu: the whole split as one tensor on the device, batched and
augmented there; ffcv: FFCV's loader over .beton files (undistill/ffcv_io.py, imported only when asked for).
"""
import math
import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler

from . import UserError, require
from .datasets import Augment, TensorImages


def add_arguments(parser):
    g = parser.add_argument_group("loading")
    g.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="data loader processes (--loader ffcv: threads)")
    g.add_argument("--loader", default="torchvision", choices=sorted(LOADERS),
                   help="torchvision: a DataLoader with --workers processes; gpu: the whole split on the device, "
                   "augmented there in batches (datasets decoded to tensors only, not ImageNet); ffcv: FFCV's "
                   "loader over the .beton files of --ffcv-dir, with --workers threads")
    g.add_argument("--ffcv-dir", type=Path, help="where datasets/write_ffcv.py wrote train.beton and test.beton "
                   "(default: <data-dir>/ffcv)")


class TorchvisionLoader:
    """A DataLoader per rank whose order depends only on (seed, epoch), so resumed runs replay. Worker processes
    take their augmentation seeds from the same pair; without workers, augmentation draws from the global RNG,
    which engine.fit seeds from (seed, epoch) before each epoch."""

    def __init__(self, dataset, batch_size, train, seed, workers, rank, world_size, pin_memory=False, device=None):
        # `device` is unused: batches come out on the CPU and the caller moves them.
        self.train, self.seed = train, seed
        # Evaluation splits the test set without padding, so all-reduced counts cover each image exactly once.
        self.sampler = (DistributedSampler(dataset, world_size, rank, shuffle=True, seed=seed) if train
                        else range(rank, len(dataset), world_size))
        self.generator = torch.Generator()
        self.loader = DataLoader(dataset, batch_size, sampler=self.sampler, num_workers=workers,
                                 generator=self.generator, drop_last=train, pin_memory=pin_memory,
                                 persistent_workers=False)

    def __len__(self):
        return len(self.loader)

    def epoch(self, epoch):
        if self.train:
            self.sampler.set_epoch(epoch)
        self.generator.manual_seed(self.seed * 100_003 + epoch)  # worker augmentation seeds
        return iter(self.loader)


class GpuLoader:
    """The whole split as one uint8 tensor on `device`, batched and augmented there: no worker processes and no
    per-image Python. As with TorchvisionLoader, the order depends only on (seed, epoch) and ranks share it as
    DistributedSampler does (training: padded to a multiple of world_size, every world_size-th image, full batches
    only; evaluation: images rank, rank + world_size, ..., last batch kept). The augmentation is the dataset's
    declared Augment, drawn from the same generator for the whole epoch before ranks take their share, so a resumed
    run replays exactly and ranks do not augment in lockstep."""

    def __init__(self, dataset, batch_size, train, seed, workers, rank, world_size, pin_memory=False,
                 device=torch.device("cpu")):
        # workers and pin_memory are unused: nothing is loaded or copied per batch.
        if not isinstance(dataset, TensorImages):
            raise UserError(f"--loader gpu needs a dataset decoded into tensors (mnist5k, CIFAR, Tiny-ImageNet), "
                            f"not image files ({type(dataset).__name__}): use --loader torchvision")
        augment = dataset.transform if train else None
        if augment is not None and not isinstance(augment, Augment):
            raise UserError(f"--loader gpu can apply only a datasets.Augment on the device, not "
                            f"{type(augment).__name__}: use --loader torchvision")
        self.images, self.labels = dataset.images.to(device), dataset.labels.to(device)
        self.batch_size, self.train, self.seed, self.augment = batch_size, train, seed, augment
        self.rank, self.world_size, self.device = rank, world_size, device
        n = len(self.labels)
        self.per_rank = math.ceil(n / world_size) if train else len(range(rank, n, world_size))

    def __len__(self):
        return self.per_rank // self.batch_size if self.train else math.ceil(self.per_rank / self.batch_size)

    def epoch(self, epoch):
        n = len(self.labels)
        if not self.train:
            return self.batches(torch.arange(self.rank, n, self.world_size), {})
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        # DistributedSampler's split: repeat the order's start up to a multiple of world_size, deal it out in turn.
        total = self.per_rank * self.world_size
        order = torch.randperm(n, generator=generator).repeat(math.ceil(total / n))[:total]
        draws = self.augment.draw(total, *self.images.shape[-2:], generator) if self.augment is not None else {}
        mine = slice(self.rank, len(self) * self.batch_size * self.world_size, self.world_size)  # full batches only
        return self.batches(order[mine], {k: v[mine] for k, v in draws.items()})

    def batches(self, order, draws):
        order, draws = order.to(self.device), {k: v.to(self.device) for k, v in draws.items()}
        for start in range(0, len(order), self.batch_size):
            batch = slice(start, start + self.batch_size)
            x = self.images[order[batch]]
            if self.augment is not None:
                x = self.augment.apply(x, {k: v[batch] for k, v in draws.items()})
            yield x, self.labels[order[batch]]


def import_ffcv():
    """undistill/ffcv_io.py, imported on first use: FFCV is optional, and takes seconds to import."""
    threads = torch.get_num_threads()
    try:
        return require("undistill.ffcv_io", "ffcv", "--loader ffcv", "-r requirements-ffcv.txt (after its apt "
                       "packages: pkg-config libopencv-dev libturbojpeg0-dev)")
    finally:
        torch.set_num_threads(threads)  # importing FFCV sets it to 1


def ffcv_loader(*args, **kwargs):
    """--loader ffcv: undistill.ffcv_io.FfcvLoader."""
    return import_ffcv().FfcvLoader(*args, **kwargs)


LOADERS = {"torchvision": TorchvisionLoader, "gpu": GpuLoader, "ffcv": ffcv_loader}
