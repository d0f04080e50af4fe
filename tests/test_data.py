"""Datasets and loaders: the built-in mnist5k, the on-disk layouts (tiny synthetic trees and a slice of the real
CIFAR-10), --subset, and the loaders' determinism and evaluation split."""

import hashlib
import os
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from undistill import UserError, datasets, loaders

CIFAR_TAR = Path(os.environ.get("CIFAR10_TAR", "cifar10-jpeg.tar.gz"))  # the real CIFAR-10 as JPEG files
# Created in this (unsorted) order on purpose: labels must follow the sorted folder names.
CLASS_NAMES = ["ship", "airplane", "frog", "cat", "deer", "dog", "bird", "horse", "truck", "automobile"]


def solid(value, size, channels=3):
    return torch.full((channels, size, size), value, dtype=torch.uint8)


def write_image(image, path):
    """A uint8 CHW tensor as an image file (format from the suffix: PNG is lossless, JPEG is not)."""
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)


def write_image_folder(split_dir, names, per_class, size=32):
    """split_dir/<name>/<j>.png, every pixel of image j of the class with sorted index c equal to 20 c + j."""
    for name in names:
        c = sorted(names).index(name)
        (split_dir / name).mkdir(parents=True)
        for j in range(per_class):
            write_image(solid(20 * c + j, size), split_dir / name / f"{j}.png")


@pytest.fixture(scope="module")
def mnist():
    return datasets.load("mnist5k")


# ---------------------------------------------------------------- mnist5k

def test_mnist5k_sizes_and_dtype(mnist):
    assert (len(mnist.train), len(mnist.test)) == (4000, 1000)
    assert mnist.num_classes == 10 and mnist.image_size == 32
    assert mnist.train.labels.bincount().tolist() == [400] * 10
    assert mnist.test.labels.bincount().tolist() == [100] * 10
    for split in (mnist.train, mnist.test):
        x, y = split[0]
        assert x.dtype == torch.uint8 and x.shape == (3, 32, 32)
        assert isinstance(int(y), int)


def test_mnist5k_split_is_deterministic(mnist):
    again = datasets.load("mnist5k")
    assert torch.equal(again.train.images, mnist.train.images)
    assert torch.equal(again.train.labels, mnist.train.labels)
    assert torch.equal(again.test.images, mnist.test.images)
    assert torch.equal(again.test.labels, mnist.test.labels)


def test_mnist5k_train_and_test_are_disjoint(mnist):
    images = torch.cat([mnist.train.images, mnist.test.images])
    hashes = {hashlib.sha1(x.numpy().tobytes()).hexdigest() for x in images}
    assert len(hashes) == 5000


# ---------------------------------------------------------------- CIFAR image-folder layout

@pytest.fixture
def cifar_tree(tmp_path):
    write_image_folder(tmp_path / "train", CLASS_NAMES, 2)
    write_image_folder(tmp_path / "test", CLASS_NAMES, 1)
    return tmp_path


def test_cifar10_image_folder_sizes_and_labels(cifar_tree):
    info = datasets.load("cifar10", cifar_tree)
    assert (len(info.train), len(info.test)) == (20, 10)
    assert info.num_classes == 10 and info.image_size == 32
    assert info.train.images.shape == (20, 3, 32, 32) and info.train.images.dtype == torch.uint8
    assert info.train.labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert info.test.labels.tolist() == list(range(10))
    # every image sits under the label of its sorted class folder (pixel value 20 * label + j)
    for images, labels in ((info.train.images, info.train.labels), (info.test.images, info.test.labels)):
        for x, y in zip(images, labels):
            assert x.unique().item() // 20 == y.item()


def test_cifar10_second_load_uses_the_cache(cifar_tree, monkeypatch):
    first = datasets.load("cifar10", cifar_tree)
    assert (cifar_tree / ".undistill-train.pt").is_file()
    assert (cifar_tree / ".undistill-test.pt").is_file()

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(datasets, "decode_rgb", no_decoding)
    second = datasets.load("cifar10", cifar_tree)
    assert torch.equal(second.train.images, first.train.images)
    assert torch.equal(second.train.labels, first.train.labels)
    assert torch.equal(second.test.images, first.test.images)
    assert torch.equal(second.test.labels, first.test.labels)


def test_cifar10_with_seven_class_folders_is_refused(tmp_path):
    write_image_folder(tmp_path / "train", CLASS_NAMES[:7], 1)
    write_image_folder(tmp_path / "test", CLASS_NAMES[:7], 1)
    with pytest.raises(UserError, match=r"7 class folders.*10"):
        datasets.load("cifar10", tmp_path)


def test_test_classes_other_than_the_training_classes_are_refused(tmp_path):
    write_image_folder(tmp_path / "train", [f"c{i}" for i in range(10)], 1)
    write_image_folder(tmp_path / "test", [f"d{i}" for i in range(10)], 1)
    with pytest.raises(UserError, match=r"train and .*test have different class folders \(c0, c1, c2 \.\.\. in one"):
        datasets.load("cifar10", tmp_path)


@pytest.fixture(scope="module")
def real_cifar_slice(tmp_path_factory):
    """The first 3 images of each class of train/ and test/ from the CIFAR-10 archive ($CIFAR10_TAR)."""
    if not CIFAR_TAR.is_file():
        pytest.skip(f"no CIFAR-10 archive at {CIFAR_TAR}: set CIFAR10_TAR to the path of cifar10-jpeg.tar.gz")
    root = tmp_path_factory.mktemp("cifar10")
    taken = {}
    with tarfile.open(CIFAR_TAR) as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or not parts[2].endswith(".jpg"):
                continue
            key = (parts[0], parts[1])
            if taken.get(key, 0) == 3:
                continue
            taken[key] = taken.get(key, 0) + 1
            (root / parts[0] / parts[1]).mkdir(parents=True, exist_ok=True)
            (root / member.name).write_bytes(tar.extractfile(member).read())
            if len(taken) == 20 and all(n == 3 for n in taken.values()):
                break
    return root


def test_real_cifar10_slice(real_cifar_slice):
    info = datasets.load("cifar10", real_cifar_slice)
    assert (len(info.train), len(info.test)) == (30, 30)
    for split in (info.train, info.test):
        assert split.images.shape == (30, 3, 32, 32) and split.images.dtype == torch.uint8
        assert split.labels.bincount().tolist() == [3] * 10


def test_real_cifar10_airplane_is_label_0(real_cifar_slice):
    info = datasets.load("cifar10", real_cifar_slice)
    airplane = sorted((real_cifar_slice / "train" / "airplane").iterdir())[0]
    x = datasets.decode_rgb(airplane)
    matches = [i for i, img in enumerate(info.train.images) if torch.equal(img, x)]
    assert matches and all(info.train.labels[i] == 0 for i in matches)


# ---------------------------------------------------------------- Tiny-ImageNet stock layout

WNIDS = [f"n{i:04d}" for i in range(200)]
VAL_CLASSES = [3, 150, 0, 199, 42]


def write_tinyimagenet(root, annotations=True):
    for wnid in WNIDS:
        (root / "train" / wnid / "images").mkdir(parents=True)
        write_image(solid(128, 64), root / "train" / wnid / "images" / f"{wnid}_0.JPEG")
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
    (root / "val" / "images").mkdir(parents=True)
    lines = []
    for i, c in enumerate(VAL_CLASSES):
        write_image(solid(64, 64), root / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{WNIDS[c]}\t0\t0\t63\t63")
    if annotations:
        (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def test_tinyimagenet_stock_layout(tmp_path):
    write_tinyimagenet(tmp_path)
    info = datasets.load("tinyimagenet", tmp_path)
    assert info.num_classes == 200 and info.image_size == 64
    assert len(info.train) == 200
    assert info.train.labels.tolist() == list(range(200))
    assert info.train.images.shape == (200, 3, 64, 64)
    # validation labels come from val_annotations.txt, not from the single val/images/ folder
    assert info.test.labels.tolist() == VAL_CLASSES
    assert info.test.images.shape == (5, 3, 64, 64) and info.test.images.dtype == torch.uint8


def test_tinyimagenet_annotation_naming_a_missing_file_is_refused(tmp_path):
    write_tinyimagenet(tmp_path)
    (tmp_path / "val" / "images" / "val_3.JPEG").unlink()
    with pytest.raises(UserError, match=r"val_annotations\.txt names val_3\.JPEG, which is not in"):
        datasets.load("tinyimagenet", tmp_path)


def test_a_subset_decodes_only_its_own_images(tmp_path, monkeypatch):
    write_tinyimagenet(tmp_path)
    for wnid in WNIDS[:10]:  # two images for ten classes: half of each class leaves one of them undecoded
        write_image(solid(7, 64), tmp_path / "train" / wnid / "images" / f"{wnid}_1.JPEG")
    decoded, decode_rgb = [], datasets.decode_rgb
    monkeypatch.setattr(datasets, "decode_rgb", lambda path, size=None: decoded.append(path) or decode_rgb(path, size))
    info = datasets.load("tinyimagenet", tmp_path, subset=0.5, seed=0)
    train_files = [p for p in decoded if "/train/" in str(p)]
    assert len(train_files) == len(info.train) == 200 and info.train.labels.tolist() == list(range(200))
    assert not (tmp_path / ".undistill-train.pt").exists()  # a subset's images are not cached as the split's
    full = datasets.load("tinyimagenet", tmp_path)  # decodes and caches the whole split ...
    decoded.clear()
    again = datasets.load("tinyimagenet", tmp_path, subset=0.5, seed=0)  # ... which a subset then reads
    assert not [p for p in decoded if "/train/" in str(p)] and len(full.train) == 210
    assert torch.equal(again.train.images, info.train.images)
    assert torch.equal(again.train.beton.indices, info.train.beton.indices)


def test_tinyimagenet_without_val_annotations_is_refused(tmp_path):
    write_tinyimagenet(tmp_path, annotations=False)
    with pytest.raises(UserError):
        datasets.load("tinyimagenet", tmp_path)


# ---------------------------------------------------------------- ImageNet layout

def write_imagenet(root, num_classes):
    for split in ("train", "val"):
        for c in range(num_classes):
            d = root / split / f"n{c:08d}"
            d.mkdir(parents=True)
            write_image(solid(100, 8), d / f"{c}.JPEG")


def test_imagenet_with_three_classes_is_refused(tmp_path):
    write_imagenet(tmp_path, 3)
    with pytest.raises(UserError, match="1000"):
        datasets.load("imagenet", tmp_path)


def test_imagenet_layout_gives_224_uint8_samples(tmp_path):
    write_imagenet(tmp_path, 1000)
    info = datasets.load("imagenet", tmp_path)
    assert (len(info.train), len(info.test)) == (1000, 1000)
    assert info.num_classes == 1000 and info.image_size == 224
    for split, index, label in ((info.train, 0, 0), (info.test, 999, 999)):
        x, y = split[index]
        assert x.dtype == torch.uint8 and tuple(x.shape) == (3, 224, 224)
        assert y == label


# ---------------------------------------------------------------- --subset

def test_subset_fraction_per_class(mnist):
    sub = datasets.take_subset(mnist.train, 0.5, seed=0)
    assert sub.labels.bincount().tolist() == [200] * 10


def test_subset_count_per_class(mnist):
    sub = datasets.take_subset(mnist.train, 30, seed=0)
    assert sub.labels.bincount().tolist() == [30] * 10
    assert sub.transform is mnist.train.transform  # still augmented


def test_subset_depends_only_on_the_seed(mnist):
    a, b = datasets.take_subset(mnist.train, 30, seed=1), datasets.take_subset(mnist.train, 30, seed=1)
    other = datasets.take_subset(mnist.train, 30, seed=2)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, other.images)


def test_subset_through_load(mnist):
    info = datasets.load("mnist5k", subset=30, seed=1)
    assert torch.equal(info.train.images, datasets.take_subset(mnist.train, 30, seed=1).images)
    assert len(info.test) == 1000  # the test set is never subsampled


@pytest.mark.parametrize("bad", [0, -0.5, 2.5, 401])
def test_subset_bad_values_are_refused(mnist, bad):
    with pytest.raises(UserError):
        datasets.take_subset(mnist.train, bad, seed=0)


# ---------------------------------------------------------------- --data-dir

def test_cifar10_without_data_dir_is_refused():
    with pytest.raises(UserError, match="--data-dir"):
        datasets.load("cifar10")


def test_nonexistent_data_dir_is_refused(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        datasets.load("cifar10", tmp_path / "nowhere")


# ---------------------------------------------------------------- TorchvisionLoader

@pytest.fixture(scope="module")
def small_train(mnist):
    return datasets.take_subset(mnist.train, 20, seed=0)  # 200 augmented images


def batches(loader, epoch):
    return [(x.clone(), y.clone()) for x, y in loader.epoch(epoch)]


def same(a, b):
    return len(a) == len(b) and all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))


def test_loader_order_replays_for_the_same_epoch(small_train):
    loader = loaders.TorchvisionLoader(small_train, 32, train=True, seed=1, workers=0, rank=0, world_size=1)
    first, second = batches(loader, 3), batches(loader, 3)
    assert [y.tolist() for _, y in first] == [y.tolist() for _, y in second]
    assert [y.tolist() for _, y in batches(loader, 4)] != [y.tolist() for _, y in first]


def test_loader_batches_replay_for_the_same_epoch_with_workers(small_train):
    # Worker processes draw their augmentation seeds from (seed, epoch) alone, whatever the caller's RNG did.
    loader = loaders.TorchvisionLoader(small_train, 32, train=True, seed=1, workers=2, rank=0, world_size=1)
    first = batches(loader, 3)
    torch.rand(1)  # whatever the caller did in between with the global RNG
    second = batches(loader, 3)
    assert len(first) == len(small_train) // 32  # drop_last for training
    assert [y.tolist() for _, y in first] == [y.tolist() for _, y in second]
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(first, second)), "augmentation differs between replays"
    assert not same(first, batches(loader, 4))


def test_loader_batches_replay_when_the_global_rng_is_seeded_per_epoch(small_train):
    # What engine.fit does before every epoch; with workers=0 the augmentation draws from the global RNG.
    loader = loaders.TorchvisionLoader(small_train, 32, train=True, seed=1, workers=0, rank=0, world_size=1)
    runs = []
    for _ in range(2):
        torch.manual_seed(1 * 100_003 + 3)
        runs.append(batches(loader, 3))
    assert same(*runs)


def test_eval_loader_splits_ranks_without_padding():
    n = 11
    dataset = datasets.TensorImages(torch.zeros(n, 3, 4, 4, dtype=torch.uint8), torch.arange(n))
    seen = []
    for rank in range(2):
        loader = loaders.TorchvisionLoader(dataset, 4, train=False, seed=0, workers=0, rank=rank, world_size=2)
        seen.append(torch.cat([y for _, y in loader.epoch(0)]).tolist())
    assert len(seen[0]) + len(seen[1]) == n  # no padding duplicates
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(n))


# ---------------------------------------------------------------- GpuLoader

def coded(n, size=8, augment=None):
    """n images that tell where each pixel came from: channel 0 is 1 + the label (0 only in padding), channels 1
    and 2 are 1 + the source column and row. Labels are 0..n-1, so each label names its image."""
    labels = torch.arange(n)
    grid = torch.arange(1, size + 1, dtype=torch.uint8)
    images = torch.stack([(labels + 1).to(torch.uint8).view(n, 1, 1).expand(n, size, size),
                          grid.view(1, 1, size).expand(n, size, size), grid.view(1, size, 1).expand(n, size, size)], 1)
    return datasets.TensorImages(images.contiguous(), labels, augment)


def gpu_loader(dataset, batch_size=8, train=True, seed=1, rank=0, world_size=1):
    return loaders.GpuLoader(dataset, batch_size, train=train, seed=seed, workers=0, rank=rank, world_size=world_size,
                          device=torch.device("cpu"))


CROP_FLIP = datasets.Augment(crop=8, pad=2, flip=True)


def test_gpu_loader_keeps_images_with_their_labels(mnist):
    loader = gpu_loader(coded(40, augment=CROP_FLIP))
    assert len(loader) == 5
    for x, y in loader.epoch(0):
        assert x.shape == (8, 3, 8, 8) and x.dtype == torch.uint8 and y.dtype == torch.int64
        label = x[:, 0]
        assert ((label == 0) | (label == (y + 1).view(-1, 1, 1).to(torch.uint8))).all()
        assert (x == 0).all(1).eq(label == 0).all()  # padding is zero in every channel, image pixels in none
        assert x[:, 1:].max() <= 8
    mnist_x, mnist_y = next(iter(gpu_loader(mnist.train, 64).epoch(0)))
    assert mnist_x.shape == (64, 3, 32, 32) and mnist_y.shape == (64,)


def test_gpu_loader_crops_and_flips_as_declared():
    shifts, flips = set(), set()
    for x, _ in gpu_loader(coded(40, augment=CROP_FLIP)).epoch(0):
        for image in x.long():
            valid = image[0] > 0
            rows, cols = valid.nonzero().unbind(1)
            source_col, source_row = image[1][valid] - 1, image[2][valid] - 1
            shift = (source_row - rows).unique()
            assert len(shift) == 1 and -2 <= shift.item() <= 2  # a translation within the padding
            flipped = len((source_col + cols).unique()) == 1
            assert flipped or len((source_col - cols).unique()) == 1
            shifts.add(shift.item())
            flips.add(flipped)
    assert len(shifts) > 1 and flips == {True, False}


def test_gpu_loader_follows_the_datasets_augmentation(mnist):
    assert mnist.train.transform == datasets.Augment(crop=32, pad=2)  # digits: crop, no flip
    x, y = next(iter(gpu_loader(coded(8)).epoch(0)))
    assert torch.equal(x, coded(8).images[y])  # none declared: the images as they are
    tiny = coded(8, size=16, augment=datasets.Augment(degrees=20))  # Tiny-ImageNet's rotation
    rotated, y = next(iter(gpu_loader(tiny).epoch(0)))
    assert ((rotated[:, 0] == 0) | (rotated[:, 0] == (y + 1).view(-1, 1, 1))).all()
    assert (rotated[:, 0] == 0).any()
    assert (rotated != tiny.images[y]).any(dim=(1, 2, 3)).sum() >= 6  # an angle near 0 may change nothing


def test_rotation_by_a_right_angle_is_exact():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.uint8).view(2, 3, 5, 5)
    rotated = datasets.rotate(x, torch.tensor([90.0, 0.0]))
    assert torch.equal(rotated[0], torch.rot90(x[0], 1, (1, 2))) and torch.equal(rotated[1], x[1])


def test_gpu_loader_replays_for_the_same_seed_and_epoch():
    dataset = coded(40, augment=CROP_FLIP)
    first = batches(gpu_loader(dataset), 3)
    torch.rand(1)  # the global RNG plays no part
    assert same(first, batches(gpu_loader(dataset), 3))  # a fresh loader, as after a resume
    assert not same(first, batches(gpu_loader(dataset), 4))
    assert not same(first, batches(gpu_loader(dataset, seed=2), 3))


@pytest.mark.parametrize("n, batch_size, world_size", [(40, 8, 2), (37, 4, 2), (10, 3, 3), (11, 4, 1)])
def test_gpu_loader_has_as_many_batches_as_torchvision(n, batch_size, world_size):
    for train in (True, False):
        for rank in range(world_size):
            kwargs = dict(train=train, seed=0, workers=0, rank=rank, world_size=world_size)
            assert len(gpu_loader(coded(n), batch_size, train, 0, rank, world_size)) == len(
                loaders.TorchvisionLoader(coded(n), batch_size, **kwargs))


def test_gpu_loader_ranks_partition_the_training_set():
    dataset = coded(40, augment=CROP_FLIP)
    seen = [torch.cat([y for _, y in gpu_loader(dataset, rank=rank, world_size=2).epoch(5)]).tolist()
            for rank in range(2)]
    assert len(seen[0]) == len(seen[1]) == 16  # 20 each, full batches of 8 only
    assert not set(seen[0]) & set(seen[1]) and len(set(seen[0])) == 16


def test_gpu_loader_test_split_covers_every_image_once():
    dataset = coded(11, augment=CROP_FLIP)  # declared for training only
    seen = []
    for rank in range(2):
        got = [(x, y) for x, y in gpu_loader(dataset, 4, train=False, rank=rank, world_size=2).epoch(0)]
        assert [len(y) for _, y in got] == ([4, 2] if rank == 0 else [4, 1])  # last partial batch kept
        labels = torch.cat([y for _, y in got])
        assert labels.tolist() == list(range(rank, 11, 2))
        assert torch.equal(torch.cat([x for x, _ in got]), dataset.images[labels])  # not augmented
        seen += labels.tolist()
    assert sorted(seen) == list(range(11))


def test_gpu_loader_test_split_matches_torchvision(mnist):
    kwargs = dict(train=False, seed=0, workers=0, rank=1, world_size=2)
    assert same(batches(loaders.GpuLoader(mnist.test, 128, **kwargs), 0),
                batches(loaders.TorchvisionLoader(mnist.test, 128, **kwargs), 0))


def test_gpu_loader_refuses_what_it_cannot_hold():
    with pytest.raises(UserError, match="--loader torchvision"):
        gpu_loader(torch.utils.data.Subset(coded(4), [0, 1]))
    with pytest.raises(UserError, match="--loader torchvision"):
        gpu_loader(coded(4, augment=lambda x: x))
