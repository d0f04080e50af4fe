"""The owner's own images (--dataset folder): classes and class count read from the folders, the owner's split
file honoured exactly and refused in one line when it is wrong, the warning where the teacher was trained on test
images, and a teacher, a student, an import and the Python API on a tiny folder written here."""
import json
from argparse import Namespace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_script
from undistill import UserError, api, checkpoint, datasets

CLASSES = ("cat", "dog", "owl")
TRAIN, TEST = 8, 4  # images per class in train/ and test/
FAST = ["--arch", "cnn", "--epochs", "1", "--batch-size", "8", "--workers", "0", "--quiet"]


def write_folder(root, size=32):
    """train/<class>/i.png and test/<class>/i.png: noise with the class's channel raised, so classes are
    learnable."""
    rng = np.random.default_rng(0)
    for split, n in (("train", TRAIN), ("test", TEST)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                x = rng.integers(0, 80, (size, size, 3))
                x[..., c] += 150
                Image.fromarray(x.astype(np.uint8)).save(root / split / name / f"{i}.png")
    return root


def write_split(path, rows):
    path.write_text("path,label,split\n" + "".join(f"{p},{label},{split}\n" for p, label, split in rows))
    return path


def owner_rows():
    """The owner's split: the last two train/ images of each class tested, the test/ images trained on."""
    rows = []
    for c, name in enumerate(CLASSES):
        rows += [(f"train/{name}/{i}.png", c, "train" if i < TRAIN - 2 else "test") for i in range(TRAIN)]
        rows += [(f"test/{name}/{i}.png", c, "train") for i in range(TEST)]
    return rows


@pytest.fixture(scope="module")
def owner(tmp_path_factory):
    root = write_folder(tmp_path_factory.mktemp("owner") / "images")
    return root, write_split(root.parent / "split.csv", owner_rows())


def decoded(path):
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


def test_the_classes_and_the_split_are_the_folders(owner):
    root, _ = owner
    info = datasets.load("folder", root)
    assert (info.num_classes, info.image_size) == (3, 32)
    assert (len(info.train), len(info.test)) == (3 * TRAIN, 3 * TEST)
    expected = [(root / "test" / name / f"{i}.png", c) for c, name in enumerate(CLASSES) for i in range(TEST)]
    assert list(zip(info.test_files, info.test.labels.tolist())) == expected
    assert torch.equal(info.test.images[5], decoded(expected[5][0]))
    assert info.train.labels.bincount().tolist() == [TRAIN] * 3
    assert info.record.augment == datasets.Augment(crop=32, pad=4, flip=True)
    assert (info.mean, info.std) == datasets.IMAGENET_STATS


def test_the_split_file_decides_every_image(owner):
    root, split = owner
    info = datasets.load("folder", root, split_file=split)
    tested = [(root / p, label) for p, label, s in owner_rows() if s == "test"]
    assert list(zip(info.test_files, info.test.labels.tolist())) == tested
    assert torch.equal(info.test.images, torch.stack([decoded(p) for p, _ in tested]))
    trained = torch.stack([decoded(root / p) for p, _, s in owner_rows() if s == "train"])
    assert torch.equal(info.train.images, trained)  # test/ images are training images in the owner's split
    assert info.train.labels.tolist() == [label for _, label, s in owner_rows() if s == "train"]


def test_a_flat_class_folder_with_a_split_file(tmp_path):
    """<class>/* without train/ and test/: the classes are the root's folders."""
    root = (write_folder(tmp_path / "made") / "train").rename(tmp_path / "flat")
    rows = [(f"{name}/{i}.png", c, "test" if i == 0 else "train") for c, name in enumerate(CLASSES)
            for i in range(TRAIN)]
    info = datasets.load("folder", root, split_file=write_split(tmp_path / "flat.csv", rows))
    assert info.num_classes == 3 and info.test_files == [root / name / "0.png" for name in CLASSES]


def test_image_size_and_statistics(owner, tmp_path):
    root, _ = owner
    info = datasets.load("folder", root, image_size=16, mean=[0.5], std=[0.2, 0.25, 0.3])
    assert info.image_size == 16 and info.train.images.shape[1:] == (3, 16, 16)
    assert (info.mean, info.std) == ((0.5,) * 3, (0.2, 0.25, 0.3))
    x = torch.from_numpy(np.array(Image.open(root / "test" / "cat" / "0.png").resize((16, 16), Image.BILINEAR)))
    assert (info.test.images[0].permute(1, 2, 0).int() - x.int()).abs().float().mean() < 3  # a resize, not a crop
    wide = write_folder(tmp_path / "wide", size=32)
    Image.new("RGB", (40, 32)).save(wide / "train" / "cat" / "0.png")
    with pytest.raises(UserError, match="not square: pass --image-size"):
        datasets.load("folder", wide)
    with pytest.raises(UserError, match="--split-file is an option of --dataset folder"):
        datasets.record("cifar10", root, split_file=root / "x.csv")
    bom = tmp_path / "bom.csv"  # a spreadsheet's export: a byte-order mark before the header
    bom.write_text("\ufeffpath,label,split\ntrain/cat/0.png,0,train\ntest/cat/0.png,0,test\n", encoding="utf-8")
    assert datasets.load("folder", root, split_file=bom).test_files == [root / "test" / "cat" / "0.png"]


@pytest.mark.parametrize("rows, header, message", [
    ([("train/cat/99.png", 0, "train")], None, r"line 2: .*train/cat/99.png is not a file"),
    ([("train/cat/0.png", 0, "val")], None, "line 2: unknown split 'val'"),
    ([("train/cat/0.png", 3, "train")], None, r"line 2: label '3' is not a class index 0..2"),
    ([("train/cat/0.png", -1, "train")], None, r"label '-1' is not a class index"),
    ([("train/cat/0.png", "²", "train")], None, r"label '²' is not a class index"),
    ([("train/cat/0.png", 0, "train"), ("train/cat/./0.png", 0, "test")], None, "line 3: .* listed twice"),
    ([("train/cat/0.png", 0, "train")], None, "the test split is empty"),
    ([("/etc/hostname", 0, "test")], None, "not a path relative to --data-dir"),
    ([("../images/train/cat/0.png", 0, "test")], None, "not a path relative to --data-dir"),
    ([("train/cat/0.png", 0, "train")], "file,class,split", "first line must be the header path,label,split"),
])
def test_a_bad_split_file_is_refused(owner, tmp_path, rows, header, message):
    root, _ = owner
    split = write_split(tmp_path / "split.csv", rows + [("train/dog/1.png", 1, "train")])
    if header:
        split.write_text(split.read_text().replace("path,label,split", header))
    with pytest.raises(UserError, match=message):
        datasets.load("folder", root, split_file=split)


def test_ffcv_refuses_the_owners_split_and_size(owner):
    """datasets/write_ffcv.py writes the folders' own split at the images' own size."""
    _, split = owner
    with pytest.raises(UserError, match="--loader ffcv reads the folders' own split"):
        datasets.folder_options(Namespace(loader="ffcv", split_file=split))
    assert datasets.folder_options(Namespace(loader="gpu", split_file=split, mean=None)) == {"split_file": split}


def test_a_bad_split_file_stops_the_script_with_one_line(owner, tmp_path):
    root, _ = owner
    split = write_split(tmp_path / "split.csv", [("train/cat/0.png", 5, "test")])
    out = tmp_path / "run"
    proc = run_script("train_teacher.py", "--dataset", "folder", "--data-dir", str(root), "--split-file", str(split),
                      *FAST, "--output", str(out), check=False)
    assert proc.returncode == 2 and not out.exists()
    assert proc.stderr.strip().splitlines() == [
        f"error: --split-file {split} line 2: label '5' is not a class index 0..2 (the sorted class folders: cat, "
        "dog, owl)"]
    missing = run_script("train_teacher.py", "--dataset", "folder", "--data-dir", str(root), "--split-file",
                         str(tmp_path / "none.csv"), *FAST, "--output", str(out), check=False)
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0 and "error: --split-file" in \
        missing.stderr


def test_the_teacher_trained_on_test_images_is_a_warning(owner, tmp_path):
    root, split = owner
    info = datasets.load("folder", root, split_file=split, train=False)
    listed = tmp_path / "trained.txt"
    # two of the owner's test images, one training image, and a test/ folder image (a training image here)
    listed.write_text("train/cat/7.png\n\ntrain/owl/6.png\ntrain/cat/0.png\ntest/dog/1.png\n")
    warning = datasets.test_overlap(info, listed, root)
    assert warning.startswith("warning: the teacher was trained on 2 of the 6 test images")
    listed.write_text("train/cat/0.png\ntest/dog/1.png\n")
    assert datasets.test_overlap(info, listed, root) is None
    listed.write_text("train/cat/404.png\n")
    with pytest.raises(UserError, match="line 1: .*404.png is not a file"):
        datasets.test_overlap(info, listed, root)
    with pytest.raises(UserError, match="not read from image files"):
        datasets.test_overlap(datasets.load("mnist5k", train=False), listed, root)


def test_a_teacher_a_student_an_import_and_the_api_on_the_owners_split(owner, tmp_path):
    root, split = owner
    data = ["--dataset", "folder", "--data-dir", str(root), "--split-file", str(split)]
    run_script("train_teacher.py", *data, *FAST, "--epochs", "2", "--output", str(tmp_path / "teacher"))
    teacher = json.loads((tmp_path / "teacher" / "summary.json").read_text())
    assert (teacher["dataset"], teacher["num_classes"], teacher["image_size"]) == ("folder", 3, 32)
    run_script("distill_student.py", "--attack", "kd", "--teacher", str(tmp_path / "teacher" / "checkpoint.pt"),
               *data, *FAST, "--output", str(tmp_path / "kd"))
    assert json.loads((tmp_path / "kd" / "summary.json").read_text())["num_classes"] == 3

    # the import measures the owner's test split: the accuracy computed here on its six images, by hand
    model, _ = checkpoint.load_classifier(tmp_path / "teacher" / "checkpoint.pt")
    torch.save(model.net.state_dict(), tmp_path / "owner.pth")
    tested = [(root / p, label) for p, label, s in owner_rows() if s == "test"]
    x = (torch.stack([decoded(p) for p, _ in tested]).float() / 255 - 0.5) / 0.25
    logits, labels = model.net(x), torch.tensor([label for _, label in tested])
    expected = 100 * (logits.argmax(1) == labels).float().mean().item()
    nll = torch.nn.functional.cross_entropy(logits.double(), labels).item()  # tells the six images from others
    proc = run_script("-m", "undistill.importer", str(tmp_path / "owner.pth"), "--arch", "cnn", *data, "--mean",
                      "0.5", "--std", "0.25", "--workers", "0", "--output", str(tmp_path / "imported"))
    imported = json.loads((tmp_path / "imported" / "summary.json").read_text())
    assert imported["metrics"]["test_acc"] == pytest.approx(expected) and imported["input"] is None
    assert imported["metrics"]["test_nll"] == pytest.approx(nll, rel=1e-4)
    assert f"as a folder teacher: test top-1 {expected:.2f}%" in proc.stdout
    measured = api.evaluate(tmp_path / "imported" / "checkpoint.pt", data_dir=root, split_file=split,
                            cmi_split="none", workers=0)
    assert (measured["test"]["acc"], measured["test"]["nll"]) == (pytest.approx(expected), pytest.approx(nll, rel=1e-4))

    # the Python API: a module teacher on the owner's images, traced at their size
    summary = api.distill(output=tmp_path / "api", teacher=model.net.eval(), attack="kd", dataset="folder",
                          data_dir=root, split_file=split, arch="cnn", epochs=1, batch_size=8, workers=0, quiet=True)
    assert summary["dataset"] == "folder" and summary["num_classes"] == 3
    assert (tmp_path / "api" / "teacher" / "imported" / "checkpoint.pt").is_file()


@pytest.mark.slow
def test_the_audit_warns_and_reports_the_overlap(owner, tmp_path):
    root, split = owner
    data = ["--data-dir", str(root), "--split-file", str(split)]
    run_script("train_teacher.py", "--dataset", "folder", *data, *FAST, "--output", str(tmp_path / "teacher"))
    listed = tmp_path / "trained.txt"
    listed.write_text("train/cat/7.png\ntrain/dog/6.png\ntrain/cat/0.png\n")
    proc = run_script("-m", "undistill.audit", str(tmp_path / "teacher" / "checkpoint.pt"), *data,
                      "--teacher-trained-on", str(listed), "--student-arch", "cnn", "--attacks", "dkd", "--seeds",
                      "0", "--epochs", "1", "--share", "1", "--output", str(tmp_path / "audit"))
    line = "warning: the teacher was trained on 2 of the 6 test images"
    assert proc.stderr.count(line) == 1
    report = json.loads((tmp_path / "audit" / "report.json").read_text())
    assert len(report["warnings"]) == 1 and report["warnings"][0].startswith(line)
    assert line in (tmp_path / "audit" / "report.md").read_text()
    assert report["rows"][0]["attack"] == "dkd" and report["dataset"] == "folder"
