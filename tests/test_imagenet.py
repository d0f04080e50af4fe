"""ImageNet end to end on a tiny tree of its layout (1000 classes, one real JPEG per class and split, as the recipes'
smoke mode writes it): a ResNet-18 teacher trains through --loader torchvision and through --loader ffcv (its files
written by datasets/write_ffcv.py), and its stingy release at ratio 0.1 answers with exactly 100 finite logits."""
import importlib.util
import json

import pytest
import torch

from conftest import run_script
from undistill import checkpoint, datasets, recipe

SHORT = ["--dataset", "imagenet", "--arch", "tv.resnet18", "--epochs", "1", "--max-steps", "2", "--batch-size", "4",
         "--workers", "0", "--quiet"]


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    recipe.synthesize(datasets.record("imagenet"), root, 1, 1)
    return root


def train(root, out, *loader):
    import train_teacher
    train_teacher.main(train_teacher.parse_args([*SHORT, "--data-dir", str(root), *loader, "--output", str(out)]))
    return json.loads((out / "summary.json").read_text())


@pytest.mark.timeout(900)  # ImageNet-sized images through ResNet-18 on a CPU shared with other jobs
def test_a_teacher_trains_through_torchvision_and_its_stingy_release_keeps_100_logits(imagenet, tmp_path):
    summary = train(imagenet, tmp_path / "ce")
    assert summary["epochs"] == 1 and summary["args"]["loader"] == "torchvision"
    train(imagenet, tmp_path / "stingy", "--defense", "stingy", "--from", str(tmp_path / "ce" / "checkpoint.pt"),
          "--ratio", "0.1")
    released, ckpt = checkpoint.load_classifier(tmp_path / "stingy" / "checkpoint.pt")
    assert ckpt["release"] == {"name": "stingy", "ratio": 0.1, "variant": "top"}
    teacher, _ = checkpoint.load_classifier(tmp_path / "ce" / "checkpoint.pt")
    test = datasets.load("imagenet", imagenet, train=False).test
    x = torch.stack([test[i][0] for i in (0, 1, 500, 999)])  # validation crops, 224 x 224
    with torch.no_grad():
        logits, full = released(x), teacher(x)
    assert logits.shape == (4, 1000)
    assert logits.isfinite().sum(1).tolist() == [100] * 4
    top = full.topk(100).indices  # the kept ones are the teacher's 100 largest, unchanged
    assert logits.gather(1, top).isfinite().all() and torch.equal(logits.gather(1, top), full.gather(1, top))


@pytest.mark.skipif(importlib.util.find_spec("ffcv") is None, reason="--loader ffcv is optional and FFCV is not "
                    "installed here (pip install -r requirements-ffcv.txt after its apt packages; .ci/run does both)")
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_teacher_trains_through_ffcv_from_the_files_write_ffcv_writes(imagenet, tmp_path):
    betons = tmp_path / "ffcv"
    run_script("datasets/write_ffcv.py", "--dataset", "imagenet", "--data-dir", str(imagenet), "--out", str(betons),
               "--workers", "2")
    assert (betons / "train.beton").is_file() and (betons / "test.beton").is_file()
    run_script("train_teacher.py", *SHORT, "--data-dir", str(imagenet), "--loader", "ffcv", "--ffcv-dir", str(betons),
               "--output", str(tmp_path / "ce"))  # a process of its own: FFCV's compiled loaders stay out of this one
    summary = json.loads((tmp_path / "ce" / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["args"]["loader"] == "ffcv"
    metrics = [json.loads(line) for line in (tmp_path / "ce" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and all(torch.isfinite(torch.tensor(metrics[0][k])) for k in ("loss", "test_loss"))
