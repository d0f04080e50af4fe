"""`python -m undistill.evaluate` end to end on mnist5k: a CE teacher and its stingy release."""
import json
import math

import pytest

import train_teacher
from conftest import TINY
from undistill import UserError, evaluate

FAST = ["--batch-size", "500", "--workers", "0", "--temperatures", "1,4,32"]


def run(*argv):
    return evaluate.main(evaluate.parse_args([str(a) for a in argv]))


@pytest.fixture(scope="module")
def evaluated(ce_teacher, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate")
    stingy = tmp / "stingy"
    train_teacher.main(train_teacher.parse_args([*TINY, "--defense", "stingy", "--from", str(ce_teacher),
                                                 "--output", str(stingy)]))
    ce = run(ce_teacher, "--reference", ce_teacher, "--output", tmp / "ce.json", *FAST)
    sparse = run(stingy / "checkpoint.pt", "--reference", ce_teacher, *FAST)  # default output: beside it
    assert json.loads((tmp / "ce.json").read_text()) == ce
    assert json.loads((stingy / "checkpoint.eval.json").read_text()) == sparse
    return ce, sparse


def test_stingy_release_keeps_accuracy_and_is_sparse(evaluated):
    ce, stingy = evaluated
    assert ce["test"]["images"] == stingy["test"]["images"] == 1000
    assert stingy["model"]["release"] == {"name": "stingy", "ratio": 0.2, "variant": "top"}  # k = 2 of 10 classes
    assert ce["model"]["release"] is None
    assert stingy["test"]["acc"] == ce["test"]["acc"]
    assert stingy["test"]["active_classes"] <= 2 < ce["test"]["active_classes"]
    assert stingy["test"]["entropy"] < ce["test"]["entropy"]
    assert stingy["test"]["nll"] >= ce["test"]["nll"] and math.isfinite(ce["test"]["nll"])
    assert ce["test"]["label_excluded"] == 0
    assert (stingy["test"]["nll"] == math.inf) == (stingy["test"]["label_excluded"] > 0)
    assert 0 <= ce["test"]["ece"] <= 1 and 0 <= stingy["test"]["ece"] <= 1


def test_kl_to_reference(evaluated):
    ce, stingy = evaluated
    assert ce["test"]["kl_to_reference"] == pytest.approx(0.0, abs=1e-12)  # KL(ce || ce)
    assert 0 < stingy["test"]["kl_to_reference"] < math.inf  # KL(stingy || ce): stingy zeros contribute 0


def test_several_checkpoints_are_measured_as_their_ensemble(ce_teacher, tmp_path):
    """Two copies of one model: their mean logits are the model's, so its accuracy and KL 0 to itself."""
    alone = run(ce_teacher, "--reference", ce_teacher, "--output", tmp_path / "alone.json", *FAST,
                "--cmi-split", "none")
    both = run(ce_teacher, ce_teacher, "--reference", ce_teacher, "--output", tmp_path / "both.json", *FAST,
               "--cmi-split", "none")
    assert both["test"]["acc"] == alone["test"]["acc"]
    assert both["test"]["kl_to_reference"] == pytest.approx(0.0, abs=1e-12)
    assert both["checkpoint"] == f"{ce_teacher} + {ce_teacher}"

def test_cmi_over_the_training_set(evaluated):
    for result in evaluated:
        assert list(result["cmi"]) == ["1", "4", "32"]
        assert result["settings"]["cmi_split"] == "train" and "train" not in result
        assert all(v >= 0 and math.isfinite(v) for v in result["cmi"].values())
    ce, stingy = evaluated
    assert ce["cmi"]["1"] > ce["cmi"]["4"] > ce["cmi"]["32"]  # full outputs flatten towards one uniform centroid
    # Stingy outputs flatten towards a uniform distribution on each image's own top 2, which differ within a class.
    assert stingy["cmi"]["32"] > ce["cmi"]["32"]


def test_bad_input_is_one_line_user_error(ce_teacher, tmp_path):
    with pytest.raises(UserError, match="temperatures"):
        run(ce_teacher, "--temperatures", "1,-2")
    with pytest.raises(UserError, match="does not exist"):
        run(tmp_path / "missing.pt")
    with pytest.raises(UserError, match="needs --data-dir"):
        run(ce_teacher, "--dataset", "cifar10")
