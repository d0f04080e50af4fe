"""--loader ffcv: datasets/write_ffcv.py's files read back exactly, the order and augmentation replayed from
(seed, epoch), the augmentation as declared, ranks under torchrun, ImageNet's crops, and both scripts training with
it. Numba compiles every FFCV pipeline again in every process and loader (seconds each), so the tests share files
and loaders and start few processes."""
import gc
import importlib.util
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

pytest.importorskip("ffcv", reason="--loader ffcv is optional and FFCV is not installed here "
                    "(pip install -r requirements-ffcv.txt after its apt packages; .ci/run does both)")
# numba's finalizer of a dispatcher that FFCV's crop decoders compile (one per loader) can fail when collected: an
# "Exception ignored ... KeyError", harmless, also with FFCV's own decoders.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <finalize object:pytest.PytestUnraisableExceptionWarning")

from conftest import ROOT, TINY, run_script  # noqa: E402
from test_data import coded  # noqa: E402
from undistill import UserError, datasets, loaders  # noqa: E402

ffcv_io = loaders.import_ffcv()
TRAIN_N, TEST_N = 40, 11
CIFAR_AUGMENT = datasets.Augment(crop=32, pad=4, flip=True)  # pad 4 + flip


def coded_split(betons, split, n, augment=CIFAR_AUGMENT):
    """test_data.coded's images (each pixel names its image and place; label = image id) as a split whose FFCV
    records are betons/<split>.beton; training splits carry `augment`."""
    dataset = coded(n, 32, augment if split == "train" else None)
    dataset.beton = datasets.Beton(betons / f"{split}.beton", n, "test_ffcv.py")
    return dataset


def ffcv_loader(dataset, batch_size=8, train=False, seed=1, rank=0, world_size=1):
    return loaders.LOADERS["ffcv"](dataset, batch_size, train=train, seed=seed, workers=2, rank=rank,
                                world_size=world_size)


def gather(batches):
    """An epoch's batches concatenated (copied: FFCV reuses its buffers)."""
    xs, ys = zip(*[(x.clone(), y.clone()) for x, y in batches])
    return torch.cat(xs), torch.cat(ys)


@pytest.fixture(autouse=True)
def collect_garbage():
    """Collect each test's FFCV loaders now: collected later, inside an import, pytest's report of that finalizer
    error makes Python 3.11's AST parser fail the import (a SystemError)."""
    yield
    gc.collect()


def write_ffcv_module():
    spec = importlib.util.spec_from_file_location("write_ffcv", ROOT / "datasets" / "write_ffcv.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mnist_betons(tmp_path_factory):
    out = tmp_path_factory.mktemp("ffcv") / "mnist5k"
    run_script("datasets/write_ffcv.py", "--dataset", "mnist5k", "--out", str(out), "--workers", "2")
    return out


@pytest.fixture(scope="module")
def coded_betons(tmp_path_factory):
    out = tmp_path_factory.mktemp("coded")
    for split, n in (("train", TRAIN_N), ("test", TEST_N)):
        ffcv_io.write(coded(n, 32), out / f"{split}.beton", workers=2)
    return out


@pytest.fixture(scope="module")
def cifar_epochs(coded_betons):
    """Epochs 3, 3 again and 4 of one training loader, and epoch 3 of a fresh one (as after a resume)."""
    dataset = coded_split(coded_betons, "train", TRAIN_N)
    loader = ffcv_loader(dataset, train=True)
    first, again, other = (gather(loader.epoch(e)) for e in (3, 3, 4))
    return dataset, len(loader), first, again, other, gather(ffcv_loader(dataset, train=True).epoch(3))


# ---------------------------------------------------------------- the writer and the records

def test_raw_records_read_back_exactly_in_order(mnist_betons):
    info = datasets.load("mnist5k", subset=20, seed=3, ffcv_dir=mnist_betons)
    for split in (info.test, info.train):  # the whole test split; 20 images per class of train, by their indices
        loader = ffcv_loader(split, 64)
        x, y = gather(loader.epoch(0))
        assert len(loader) == math.ceil(len(split) / 64) and x.dtype == torch.uint8 and y.dtype == torch.int64
        assert torch.equal(x, split.images) and torch.equal(y, split.labels)


def test_missing_or_foreign_records_are_refused(mnist_betons, coded_betons, tmp_path):
    with pytest.raises(UserError, match="pass --ffcv-dir"):
        ffcv_loader(datasets.load("mnist5k").test)
    with pytest.raises(UserError, match=r"no .*train.beton: write it with `python datasets/write_ffcv.py "
                                        r"--dataset mnist5k --out"):
        ffcv_loader(datasets.load("mnist5k", ffcv_dir=tmp_path).train)
    (tmp_path / "train.beton").write_bytes((mnist_betons / "test.beton").read_bytes())  # another split
    with pytest.raises(UserError, match="another dataset or layout"):
        ffcv_loader(datasets.load("mnist5k", ffcv_dir=tmp_path).train)
    reordered = coded_split(coded_betons, "test", TEST_N)  # same size, other order: labels tell
    reordered.labels = reordered.labels.flip(0)
    with pytest.raises(UserError, match="another dataset or layout"):
        ffcv_loader(reordered)


def test_writer_refuses_to_overwrite_or_guess(mnist_betons, tmp_path):
    write_ffcv = write_ffcv_module()
    for argv, message in ((["--dataset", "mnist5k", "--out", str(mnist_betons)], "--overwrite"),
                          (["--dataset", "mnist5k"], "pass --out"),
                          (["--dataset", "cifar10", "--data-dir", str(tmp_path / "none")], "does not exist"),
                          (["--dataset", "cifar10", "--data-dir", str(tmp_path)], "no cifar10 in")):
        with pytest.raises(UserError, match=message):
            write_ffcv.main(write_ffcv.parse_args(argv))
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- order and augmentation

def test_order_and_augmentation_replay_from_seed_and_epoch(cifar_epochs):
    _, _, first, again, other, fresh = cifar_epochs
    for replay in (again, fresh):
        assert torch.equal(first[1], replay[1]) and torch.equal(first[0], replay[0])
    assert not torch.equal(first[1], other[1])  # another order,
    by_image = [x[y.argsort()] for x, y in (first, other)]  # and other augmentations of the same images
    assert sum(not torch.equal(a, b) for a, b in zip(*by_image)) >= TRAIN_N // 2


def test_augmentation_is_a_crop_of_the_padded_image_and_a_flip(cifar_epochs):
    dataset, batches, (x, y), *_ = cifar_epochs
    assert batches == TRAIN_N // 8 and x.shape == (TRAIN_N, 3, 32, 32) and x.dtype == torch.uint8
    assert sorted(y.tolist()) == list(range(TRAIN_N))
    pad, seen = CIFAR_AUGMENT.pad, set()
    for image, label in zip(x, y):
        # What datasets.Augment(crop=32, pad=4, flip=True) can make of the un-augmented image with this label.
        padded = F.pad(dataset.images[label], (pad,) * 4)
        crops = {(top - pad, left - pad): padded[:, top:top + 32, left:left + 32]
                 for top in range(2 * pad + 1) for left in range(2 * pad + 1)}
        match = [(*shift, flip) for shift, crop in crops.items() for flip in (False, True)
                 if torch.equal(crop.flip(-1) if flip else crop, image)]
        assert len(match) == 1, f"image {label} is no shift of its source within the padding"
        seen.add(match[0])
    assert len({(dy, dx) for dy, dx, _ in seen}) > 10 and {flip for *_, flip in seen} == {False, True}


def test_rotation_runs_on_the_device_and_replays(coded_betons):
    rotating = datasets.Augment(degrees=20, flip=True)  # Tiny-ImageNet's, which FFCV has no operation for
    loader = ffcv_loader(coded_split(coded_betons, "train", TRAIN_N, rotating), train=True)
    (x, y), again = (gather(loader.epoch(0)) for _ in range(2))
    assert torch.equal(x, again[0]) and torch.equal(y, again[1])
    label = x[:, 0].long()
    assert ((label == 0) | (label == y.view(-1, 1, 1) + 1)).all()  # every pixel from its own image, or zero
    corners = (x[:, :, 0, 0] == 0).all(1) | (x[:, :, 0, -1] == 0).all(1)
    assert corners.sum() >= TRAIN_N // 2  # a rotated square leaves a corner empty


# ---------------------------------------------------------------- ranks under torchrun

@pytest.mark.slow
def test_ranks_split_training_and_cover_the_test_split_once(coded_betons, tmp_path):
    run_script("tests/ffcv_worker.py", str(coded_betons), str(tmp_path), nproc=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for epoch in ("epoch0", "epoch1"):
        seen = [torch.cat(r[epoch]).tolist() for r in ranks]
        assert [len(s) for s in seen] == [16, 16]  # 20 images each, full batches of 8 only
        assert not set(seen[0]) & set(seen[1]) and len(set(seen[0] + seen[1])) == 32
    assert torch.cat(ranks[0]["epoch0"]).tolist() != torch.cat(ranks[0]["epoch1"]).tolist()
    test = coded(TEST_N, 32)
    for rank, r in enumerate(ranks):
        assert [len(y) for _, y in r["test"]] == ([4, 2] if rank == 0 else [4, 1])  # no padding, last batch kept
        x, y = torch.cat([x for x, _ in r["test"]]), torch.cat([y for _, y in r["test"]])
        assert y.tolist() == list(range(rank, TEST_N, 2)) and torch.equal(x, test.images[y])


# ---------------------------------------------------------------- ImageNet

@pytest.mark.slow
def test_imagenet_crops_replay_and_evaluation_crops_the_center(tmp_path):
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[:300, :400]
    for split in ("train", "val"):
        for c in range(1000):
            (tmp_path / split / f"n{c:08d}").mkdir(parents=True)
            if split == "train":  # noise of any size: every crop differs
                image = rng.integers(0, 256, (*rng.integers(20, 60, 2), 3), dtype=np.uint8)
            else:  # smooth, 300x400: resizing methods agree
                image = np.stack([(rows + cols) * 255 // 698, rows * 255 // 299, np.full_like(rows, c % 256)], -1)
            Image.fromarray(image.astype(np.uint8)).save(tmp_path / split / f"n{c:08d}" / "0.JPEG", quality=95)
    info = datasets.load("imagenet", tmp_path)
    (tmp_path / "ffcv").mkdir()
    for split in (info.train, info.test):
        ffcv_io.write(split, split.beton.path, "jpg", 400, 90, workers=2)
    train = ffcv_loader(info.train, 250, train=True)
    (x, y), again = (gather(train.epoch(0)) for _ in range(2))
    assert x.shape == (1000, 3, 224, 224) and sorted(y.tolist()) == list(range(1000))
    assert torch.equal(x, again[0]) and torch.equal(y, again[1])
    x, y = gather(ffcv_loader(info.test, 250).epoch(0))
    assert x.shape == (1000, 3, 224, 224) and y.tolist() == list(range(1000))
    for i in (0, 500, 999):  # torchvision's Resize(256) + CenterCrop(224), up to JPEG and interpolation
        assert (x[i].float() - info.test[i][0].float()).abs().mean() < 4


# ---------------------------------------------------------------- the scripts

@pytest.mark.slow
def test_both_scripts_train_with_ffcv_as_with_torchvision(mnist_betons, tmp_path):
    import distill_student
    import train_teacher

    short = [*TINY, "--epochs", "1", "--batch-size", "10"]  # 20 steps: 60-80% test accuracy
    loaders = {"ffcv": ["--loader", "ffcv", "--ffcv-dir", str(mnist_betons)], "torchvision": []}
    runs = {}
    for name, loader in loaders.items():
        runs["teacher", name] = tmp_path / f"teacher-{name}"
        train_teacher.main(train_teacher.parse_args([*short, *loader, "--output", str(runs["teacher", name])]))
    for name, loader in loaders.items():
        runs["student", name] = tmp_path / f"kd-{name}"
        distill_student.main(distill_student.parse_args(
            [*short, "--attack", "kd", "--teacher", str(runs["teacher", "torchvision"] / "checkpoint.pt"), *loader,
             "--output", str(runs["student", name])]))
    acc = {key: json.loads((out / "summary.json").read_text())["last_acc"] for key, out in runs.items()}
    for role in ("teacher", "student"):  # not equal: other augmentation draws (and order)
        assert acc[role, "ffcv"] > 50 and abs(acc[role, "ffcv"] - acc[role, "torchvision"]) < 20, acc
