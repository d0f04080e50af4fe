"""A model trained elsewhere, imported without training (undistill.importer): the checkpoint answers exactly as the
original under its owner's input convention, in every format, and goes through the project's commands (a release,
the audit) like a teacher trained here."""
import argparse
import importlib
import importlib.util
import json
import re
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from conftest import run_script
from undistill import UserError, audit, checkpoint, datasets, models

MEAN, STD = 0.5, 0.25  # the owner's normalization, far from mnist5k's own (0.1007, 0.2759)
ORDER = [3, 7, 0, 1, 9, 2, 8, 4, 6, 5]  # the owner's class i is mnist5k's ORDER[i]
TOLERANCE = 1e-6  # relative to the largest logit: float32 rounding of the normalization's order of operations


def owner_sequential():
    """The owner's grayscale 28 px network, of no architecture the project knows."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, 2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 13 * 13, 10))


def train(net, inputs, labels):
    """A few plain PyTorch steps: enough to make the weights the owner's own."""
    torch.manual_seed(0)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(3):
        loss = F.cross_entropy(net(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval().requires_grad_(False)


def owner_gray(images):
    """What the owner fed its grayscale network: 28 px luminance, normalized (the documented convention)."""
    x = F.interpolate(images.float(), size=(28, 28), mode="bilinear", antialias=True, align_corners=False)
    x = 0.2989 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]
    return (x / 255 - MEAN) / STD


@pytest.fixture(scope="module")
def owner(tmp_path_factory):
    """The owner's files: a `cnn` state_dict (.pth and .safetensors) and a grayscale TorchScript module trained on
    mnist5k images in the owner's convention, a pickled full module, and a batch of test images."""
    where = tmp_path_factory.mktemp("owner")
    info = datasets.load("mnist5k", train=True)
    x, y = info.train.images[:128], info.train.labels[:128]
    torch.manual_seed(0)
    cnn = train(models.build("cnn", 10), (x.float() / 255 - MEAN) / STD, y)
    torch.save(cnn.state_dict(), where / "cnn.pth")
    if importlib.util.find_spec("safetensors"):
        from safetensors.torch import save_file
        save_file(cnn.state_dict(), where / "cnn.safetensors")
    inverse = torch.argsort(torch.tensor(ORDER))
    gray = train(owner_sequential(), owner_gray(x), inverse[y])  # trained on the owner's class indices
    with checkpoint.quiet_jit():
        torch.jit.save(torch.jit.script(gray), where / "gray.pt")
    torch.save(gray, where / "gray-pickled.pt")
    (where / "order.txt").write_text("\n".join(map(str, ORDER)) + "\n")
    return {"where": where, "cnn": cnn, "gray": gray, "test": info.test.images[:64]}


def imported(source, out, *options):
    proc = run_script("-m", "undistill.importer", str(source), "--workers", "0", "--output", str(out), *options)
    assert "imported" in proc.stdout, proc.stdout + proc.stderr
    return out / "checkpoint.pt"


def relative_diff(path, expected, images):
    """max |diff| of the imported checkpoint's logits and the original's, over the largest |logit|."""
    model, _ = checkpoint.load_classifier(path)
    with torch.no_grad():
        diff = (model(images) - expected).abs().max().item()
    largest = expected.abs().max().item()
    print(f"{path.parent.parent.name}: max |diff| of logits {diff:.3g}, largest |logit| {largest:.3g}")
    return diff / max(1.0, largest)


@pytest.mark.parametrize("suffix", ["pth", pytest.param("safetensors", marks=pytest.mark.skipif(
    importlib.util.find_spec("safetensors") is None, reason="needs safetensors"))])
def test_a_state_dict_imports_answering_as_the_original(owner, tmp_path, suffix):
    path = imported(owner["where"] / f"cnn.{suffix}", tmp_path / "run", "--arch", "cnn", "--mean", str(MEAN),
                    "--std", str(STD))
    expected = owner["cnn"]((owner["test"].float() / 255 - MEAN) / STD)
    assert relative_diff(path, expected, owner["test"]) < TOLERANCE
    ckpt = checkpoint.load(path)
    assert (ckpt["role"], ckpt["method"], ckpt["arch"], ckpt["mean"], ckpt["std"]) == \
        ("teacher", "imported", "cnn", [MEAN] * 3, [STD] * 3)
    assert all(torch.equal(ckpt["state_dict"][k], v) for k, v in owner["cnn"].state_dict().items())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert 0 <= summary["metrics"]["test_acc"] <= 100 and summary["settings"]["format"] == "state"


@pytest.mark.parametrize("source, options", [("gray.pt", ()), ("gray-pickled.pt", ("--trust-pickle",))])
def test_a_grayscale_module_imports_with_its_size_and_class_order(owner, tmp_path, source, options):
    path = imported(owner["where"] / source, tmp_path / "run", "--mean", str(MEAN), "--std", str(STD),
                    "--image-size", "28", "--channels", "1", "--class-order", str(owner["where"] / "order.txt"),
                    *options)
    owners = owner["gray"](owner_gray(owner["test"]))
    expected = torch.empty_like(owners)
    expected[:, ORDER] = owners  # the owner's class i answers as mnist5k's ORDER[i]
    assert relative_diff(path, expected, owner["test"]) < TOLERANCE
    assert checkpoint.load(path)["input"] == {"image_size": 28, "channels": 1, "class_order": ORDER}


@pytest.fixture(scope="module")
def exported(owner):
    """The owner's grayscale network exported by torch.export and to ONNX (where onnx is installed), each with a
    free and with a fixed batch size."""
    where, gray, x = owner["where"], owner["gray"], owner_gray(owner["test"][:4])
    batch = ({0: torch.export.Dim("batch")},)
    torch.export.save(torch.export.export(gray, (x,), dynamic_shapes=batch), where / "gray.pt2")
    torch.export.save(torch.export.export(gray, (x,)), where / "gray-static.pt2")
    if importlib.util.find_spec("onnx"):
        with warnings.catch_warnings():  # the TorchScript-based exporter's deprecation: it needs no onnxscript
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(gray, (x,), where / "gray.onnx", input_names=["x"], dynamic_axes={"x": {0: "batch"}},
                              dynamo=False)
            torch.onnx.export(gray, (x,), where / "gray-static.onnx", input_names=["x"], dynamo=False)
    return where


GRAY = ("--mean", str(MEAN), "--std", str(STD), "--image-size", "28", "--channels", "1")
NEEDS_ONNXRUNTIME = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None or
                                       importlib.util.find_spec("onnx") is None, reason="needs onnx and onnxruntime")


def test_a_torch_export_program_imports_answering_as_the_original(owner, exported, tmp_path):
    path = imported(exported / "gray.pt2", tmp_path / "run", *GRAY, "--class-order", str(owner["where"] / "order.txt"),
                    "--trust-pickle")
    expected = torch.empty(len(owner["test"]), 10)
    expected[:, ORDER] = owner["gray"](owner_gray(owner["test"]))
    assert relative_diff(path, expected, owner["test"]) < TOLERANCE
    ckpt = checkpoint.load(path)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert ckpt["arch"] == checkpoint.TORCHSCRIPT and summary["settings"]["format"] == "export"


@pytest.mark.parametrize("source, message", [
    ("gray-static.pt2", "or be traced to TorchScript (Guard failed: input.size()[0] == 4)"),
    pytest.param("gray-static.onnx", "takes [[4, 1, 28, 28]], not one batch of images (N, C, H, W) of a free batch",
                 marks=NEEDS_ONNXRUNTIME)])
def test_a_model_exported_with_a_fixed_batch_size_is_refused(exported, tmp_path, source, message):
    proc = run_script("-m", "undistill.importer", str(exported / source), *GRAY, "--trust-pickle", "--output",
                      str(tmp_path / "run"), check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1
    assert message in proc.stderr and "dynamic" in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists()


class Branching(nn.Module):
    """Answers by Python control flow on the batch size: a trace keeps the branch of its own batch only."""

    def forward(self, x):
        logits = x.flatten(1)[:, :10]
        return logits if len(x) == 2 else -logits


def test_a_module_that_does_not_trace_faithfully_is_refused():
    from undistill import importer
    args = argparse.Namespace(source=Path("branching.pt2"), arch=None, channels=1)
    with pytest.raises(UserError, match="does not trace to TorchScript faithfully .* a fixed batch size\\): export"):
        importer.build("export", Branching(), args, datasets.load("mnist5k", train=False), 28)


@pytest.fixture(scope="module")
def onnx_teacher(exported, tmp_path_factory):
    return imported(exported / "gray.onnx", tmp_path_factory.mktemp("onnx") / "run", *GRAY)


@NEEDS_ONNXRUNTIME
def test_an_onnx_model_imports_answering_as_the_original(owner, onnx_teacher):
    expected = owner["gray"](owner_gray(owner["test"]))
    assert relative_diff(onnx_teacher, expected, owner["test"]) < 1e-5
    ckpt = checkpoint.load(onnx_teacher)  # weights_only: the model is its file's bytes
    assert ckpt["arch"] == checkpoint.ONNX and ckpt["state_dict"]["onnx"].dtype == torch.uint8
    assert ckpt["state_dict"]["onnx"].numpy().tobytes() == (owner["where"] / "gray.onnx").read_bytes()


@NEEDS_ONNXRUNTIME
def test_a_student_distills_from_an_onnx_teacher_and_white_box_attacks_refuse_it(onnx_teacher, tmp_path):
    run_script("distill_student.py", "--attack", "kd", "--teacher", str(onnx_teacher), "--epochs", "1", "--subset",
               "0.02", "--batch-size", "40", "--workers", "0", "--quiet", "--output", str(tmp_path / "kd"))
    summary = json.loads((tmp_path / "kd" / "summary.json").read_text())
    assert summary["settings"]["teacher"] == str(onnx_teacher) and summary["queries"] > 0
    for attack in ("dafl", "deepinversion"):
        proc = run_script("distill_student.py", "--attack", attack, "--teacher", str(onnx_teacher), "--output",
                          str(tmp_path / attack), check=False)
        assert proc.returncode == 2 and "is white-box" in proc.stderr and "ONNX model, a black box" in proc.stderr
        assert not (tmp_path / attack).exists()


@NEEDS_ONNXRUNTIME
def test_an_audit_of_an_onnx_teacher_skips_the_white_box_attacks(onnx_teacher, tmp_path):
    plan = audit.make_plan(audit.parse_args([str(onnx_teacher), "--budget", "full", "--output", str(tmp_path)]))
    assert sorted(plan.skipped) == ["dafl", "dafl-htc", "deepinversion"]
    assert "is an imported ONNX model" in plan.skipped["dafl"]


@NEEDS_ONNXRUNTIME
def test_an_onnx_model_without_onnxruntime_is_refused_naming_the_package(exported, onnx_teacher, tmp_path):
    without = "import sys; sys.modules['onnxruntime'] = None; from undistill import {}; {}.cli(sys.argv[1:])"
    for script, argv in (("importer", [str(exported / "gray.onnx"), *GRAY, "--output", str(tmp_path / "run")]),
                         ("evaluate", [str(onnx_teacher), "--workers", "0", "--output", str(tmp_path / "eval.json")])):
        proc = run_script("-c", without.format(script, script), *argv, check=False)
        assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "needs onnxruntime" in proc.stderr
        assert proc.stderr.strip().endswith("pip install onnxruntime"), proc.stderr
        assert not (tmp_path / "run").exists() and not (tmp_path / "eval.json").exists()


def test_torchvisions_published_densenet_imports_with_its_old_key_names(owner, tmp_path):
    """torchvision's published DenseNet files name a dense layer's modules the old way (norm.1 for norm1)."""
    torch.manual_seed(0)
    net = torchvision.models.densenet121(num_classes=10).eval()
    old_name = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))([12]\.(?:weight|bias|running_mean|running_var))$")
    published = {old_name.sub(r"\1.\2", k): v for k, v in net.state_dict().items()}
    assert "features.denseblock1.denselayer1.norm.1.weight" in published and published.keys() != net.state_dict().keys()
    torch.save(published, tmp_path / "densenet121.pth")
    path = imported(tmp_path / "densenet121.pth", tmp_path / "run", "--arch", "tv.densenet121")
    info = datasets.load("mnist5k", train=False)
    mean, std = torch.tensor(info.mean).view(1, 3, 1, 1), torch.tensor(info.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = net((owner["test"].float() / 255 - mean) / std)
    assert relative_diff(path, expected, owner["test"]) < TOLERANCE
    stored = checkpoint.load(path)["state_dict"]
    assert all(torch.equal(stored[k], v) for k, v in net.state_dict().items())


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="needs timm")
def test_a_timm_state_dict_imports_answering_as_the_original(owner, tmp_path):
    import timm
    torch.manual_seed(0)
    net = timm.create_model("resnet18", num_classes=10).eval()
    torch.save(net.state_dict(), tmp_path / "resnet18.pth")
    path = imported(tmp_path / "resnet18.pth", tmp_path / "run", "--arch", "timm.resnet18", "--mean", str(MEAN),
                    "--std", str(STD))
    with torch.no_grad():
        expected = net((owner["test"].float() / 255 - MEAN) / STD)
    assert relative_diff(path, expected, owner["test"]) < TOLERANCE and checkpoint.load(path)["arch"] == "timm.resnet18"


def test_a_timm_architecture_without_timm_is_refused_naming_the_package(owner, tmp_path):
    without_timm = "import sys; sys.modules['timm'] = None; from undistill import importer; importer.cli(sys.argv[1:])"
    proc = run_script("-c", without_timm, str(owner["where"] / "cnn.pth"), "--arch", "timm.resnet18", "--output",
                      str(tmp_path / "run"), check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --arch timm.resnet18 needs timm"), proc.stderr
    assert proc.stderr.strip().endswith("pip install timm") and not (tmp_path / "run").exists()


def test_a_pickled_module_is_refused_without_trust(owner, tmp_path):
    proc = run_script("-m", "undistill.importer", str(owner["where"] / "gray-pickled.pt"), "--output",
                      str(tmp_path / "run"), check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "--trust-pickle" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_plain_state_dict_as_teacher_names_the_import(owner, tmp_path):
    proc = run_script("distill_student.py", "--attack", "kd", "--teacher", str(owner["where"] / "cnn.pth"),
                      "--output", str(tmp_path / "run"), check=False)
    assert proc.returncode == 2 and "python -m undistill.importer" in proc.stderr


def test_a_release_of_an_imported_model_keeps_its_convention(owner, tmp_path):
    source = imported(owner["where"] / "gray.pt", tmp_path / "imported", "--mean", str(MEAN), "--std", str(STD),
                      "--image-size", "28", "--channels", "1", "--class-order", str(owner["where"] / "order.txt"))
    run_script("train_teacher.py", "--defense", "topk", "--from", str(source), "--k", "1", "--workers", "0",
               "--output", str(tmp_path / "topk"))
    released, ckpt = checkpoint.load_classifier(tmp_path / "topk" / "checkpoint.pt")
    original, _ = checkpoint.load_classifier(source)
    assert ckpt["input"] == checkpoint.load(source)["input"] and ckpt["mean"] == [MEAN]
    with torch.no_grad():  # the top-1 class is kept with probability 1 (log 0), every other at -inf
        assert torch.equal(released(owner["test"]).argmax(1), original(owner["test"]).argmax(1))


def test_a_white_box_attack_refuses_a_torchscript_teacher(owner, tmp_path):
    source = imported(owner["where"] / "gray.pt", tmp_path / "imported", "--image-size", "28", "--channels", "1")
    proc = run_script("distill_student.py", "--attack", "dafl", "--teacher", str(source), "--output",
                      str(tmp_path / "run"), check=False)
    assert proc.returncode == 2 and "is white-box" in proc.stderr and "black box" in proc.stderr


@pytest.mark.slow
def test_an_imported_teacher_is_audited(owner, tmp_path):
    source = imported(owner["where"] / "cnn.pth", tmp_path / "imported", "--arch", "cnn", "--mean", str(MEAN),
                      "--std", str(STD))
    run_script("-m", "undistill.audit", str(source), "--budget", "quick", "--attacks", "dkd", "--seeds", "0",
               "--epochs", "1", "--share", "0.05", "--output", str(tmp_path / "audit"))
    report = json.loads((tmp_path / "audit" / "report.json").read_text())
    assert any(row["method"] == "dkd" for row in report["rows"])


API = '''
import torch
from undistill import models

net = models.build("cnn", 10)
net.load_state_dict(torch.load({weights!r}, weights_only=True))
net.eval()


def answer(images):
    with open({log!r}, "a") as log:  # what the API was asked: one line per call
        log.write(f"{{len(images)}}\\n")
    with torch.no_grad():
        return net((images.float() / 255 - {mean}) / {std}).softmax(1)
'''


@pytest.fixture
def api(owner, tmp_path):
    """The owner's cnn behind a function that returns probabilities and logs how many images it was asked."""
    source = tmp_path / "owner_api.py"
    source.write_text(API.format(weights=str(owner["where"] / "cnn.pth"), log=str(tmp_path / "asked.log"),
                                 mean=MEAN, std=STD))
    return f"{source}:answer", tmp_path / "asked.log"


def asked(log):
    return sum(map(int, log.read_text().split())) if log.exists() else 0


def test_an_api_answers_as_its_model_and_each_image_is_asked_once(owner, api, tmp_path):
    from undistill.teacher_api import ApiTeacher, load_function
    spec, log = api
    teacher = ApiTeacher(load_function(spec), spec, "probs", tmp_path / "cache", 10)
    expected = owner["cnn"]((owner["test"].float() / 255 - MEAN) / STD).log_softmax(1)
    first = teacher(owner["test"])
    print(f"--teacher-api probs: max |diff| of log-probabilities {(first - expected).abs().max().item():.3g}")
    assert (first - expected).abs().max() < 1e-5
    assert torch.equal(teacher(owner["test"]), first) and asked(log) == len(owner["test"])  # the second: cached
    labels = ApiTeacher(load_function(spec), spec, "labels", tmp_path / "cache", 10)
    with pytest.raises(Exception, match="expects"):  # probabilities are not labels
        labels(owner["test"][:2])


def test_an_attack_on_an_api_queries_each_image_once_across_runs(api, tmp_path):
    spec, log = api
    command = ("distill_student.py", "--attack", "kd", "--teacher-api", spec, "--api-output", "probs", "--epochs", "1",
               "--subset", "0.02", "--batch-size", "40", "--workers", "0", "--api-cache", str(tmp_path / "cache"))
    run_script(*command, "--output", str(tmp_path / "first"))
    once = asked(log)
    summary = json.loads((tmp_path / "first" / "summary.json").read_text())
    assert once > 0 and summary["queries"] >= once and summary["settings"]["teacher"] == f"api:{spec}"
    run_script(*command, "--output", str(tmp_path / "second"))  # the same seed: the same augmented images
    assert asked(log) == once


def test_a_white_box_attack_refuses_an_api(api, tmp_path):
    proc = run_script("distill_student.py", "--attack", "deepinversion", "--teacher-api", api[0], "--output",
                      str(tmp_path / "run"), check=False)
    assert proc.returncode == 2 and "is white-box" in proc.stderr and "--teacher-api" in proc.stderr


def test_an_api_audit_plans_the_black_box_attacks_only_and_skips_the_white_box_ones_once(api, tmp_path):
    spec, log = api
    argv = ["--teacher-api", spec, "--dataset", "mnist5k", "--budget", "full", "--output", str(tmp_path / "audit")]
    plan = audit.make_plan(audit.parse_args(argv))
    assert sorted(plan.skipped) == ["dafl", "dafl-htc", "deepinversion"]
    assert "--teacher-api answers only" in plan.skipped["dafl"]
    assert [a.name for a in plan.attacks if a.release] == ["kd", "htc", "dkd", "kd-no-labels", "kd-share0.1",
                                                            "kd-share0.5"]
    attack = next(a for a in plan.attacks if a.name == "dkd")
    command = audit.run_of(attack, "", "cnn", 0, plan, audit.parse_args(argv), tmp_path / "s0").argv
    file, _, function = spec.rpartition(":")
    assert command[command.index("--teacher-api") + 1] == f"{Path(file).absolute()}:{function}"
    assert command[command.index("--api-cache") + 1] == str(tmp_path / "audit" / "api-cache")
    assert "--teacher" not in command
    proc = run_script("-m", "undistill.audit", *argv, "--plan-only")
    assert proc.stdout.count("skipped: dafl (white-box") == 1, proc.stdout
    assert not (tmp_path / "audit").exists() and asked(log) == 0  # the plan asks the API nothing


@pytest.mark.parametrize("argv, message", [
    (["--teacher-api", "no_such_module:answer", "--dataset", "mnist5k"], "cannot import no_such_module"),
    (["--teacher-api", "{api}:missing", "--dataset", "mnist5k"], "has no function missing"),
    (["--teacher-api", "{api}", "--dataset", "mnist5k"], "give MODULE:FUNCTION"),
    (["--teacher-api", "{api}:answer"], "give --dataset"),
    (["--teacher-api", "{api}:answer", "--dataset", "mnist5k", "--release", "stingy"], "drop --release"),
    (["{api}", "--teacher-api", "{api}:answer", "--dataset", "mnist5k"], "one of them"),
    (["--teacher-api", "{api}:answer", "--dataset", "mnist5k", "--attacks", "dafl"], "skipped (white-box"),
])
def test_a_bad_api_audit_is_refused_in_one_line_before_anything_is_written(api, tmp_path, argv, message):
    file = api[0].rpartition(":")[0]
    proc = run_script("-m", "undistill.audit", *[a.format(api=file) for a in argv], "--output",
                      str(tmp_path / "audit"), check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "audit").exists() and asked(api[1]) == 0


def test_the_python_api_audits_a_function_its_students_can_import(api, tmp_path, monkeypatch):
    from undistill import api as python_api
    monkeypatch.syspath_prepend(str(tmp_path))
    answer = importlib.import_module("owner_api").answer  # what a notebook imports from the owner's file
    assert python_api.api_spec(answer) == f"{tmp_path / 'owner_api.py'}:answer"
    with pytest.raises(UserError, match="not a function at the top of a .py file"):
        python_api.audit(lambda images: images, output=tmp_path / "bad", dataset="mnist5k")
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_an_api_is_audited_end_to_end_each_image_asked_once(owner, api, tmp_path):
    spec, log = api
    out = tmp_path / "audit"
    run_script("-m", "undistill.audit", "--teacher-api", spec, "--api-output", "probs", "--dataset", "mnist5k",
               "--attacks", "dkd", "kd", "--seeds", "0", "--epochs", "1", "--share", "0.05", "--output", str(out))
    report = json.loads((out / "report.json").read_text())
    assert {r["attack"] for r in report["rows"]} == {"dkd", "kd"}
    assert report["skipped"].keys() == {"dafl", "dafl-htc", "deepinversion"}
    # the report's teacher is the API's answers: its accuracy, the owner's network's on the test split
    test = datasets.load("mnist5k").test
    with torch.no_grad():
        expected = (owner["cnn"]((test.images.float() / 255 - MEAN) / STD).argmax(1) == test.labels).double()
    assert report["releases"]["full"]["acc"] == pytest.approx(100 * expected.mean().item())
    # six students (dkd, kd at five temperatures) of one seed train on the same images: the API answered those of
    # one student's epoch and the test split, each once, though every student sent it all of its images
    sent = [json.loads(p.read_text())["queries"] for p in (out / "full" / "cnn").rglob("s0/summary.json")]
    assert len(sent) == 6 and len(set(sent)) == 1
    assert asked(log) == report["api"]["answered"] == sent[0] + len(test)
    assert "Not run: dafl (white-box" in (out / "report.md").read_text()


@pytest.fixture(scope="module")
def gray_teacher(owner, tmp_path_factory):
    """The grayscale TorchScript model imported with its convention (resize, luminance, normalization, order)."""
    return imported(owner["where"] / "gray.pt", tmp_path_factory.mktemp("gray") / "run", "--mean", str(MEAN),
                    "--std", str(STD), "--image-size", "28", "--channels", "1", "--class-order",
                    str(owner["where"] / "order.txt"))


def test_an_audit_of_a_torchscript_teacher_skips_the_white_box_attacks(gray_teacher, tmp_path):
    plan = audit.make_plan(audit.parse_args([str(gray_teacher), "--budget", "full", "--output", str(tmp_path)]))
    assert sorted(plan.skipped) == ["dafl", "dafl-htc", "deepinversion"]
    assert "is an imported TorchScript module" in plan.skipped["dafl"]
    assert not {"dafl", "dafl-htc", "deepinversion"} & {a.name for a in plan.attacks}


@pytest.mark.parametrize("release", ["stingy", "topk", "rounded", "label", "reverse-sigmoid"])
def test_an_exported_release_answers_as_its_checkpoint(owner, gray_teacher, tmp_path, release):
    run_script("train_teacher.py", "--defense", release, "--from", str(gray_teacher), "--workers", "0", "--output",
               str(tmp_path / release))
    released = tmp_path / release / "checkpoint.pt"
    run_script("-m", "undistill.export", str(released), "--output", str(tmp_path / "model.pt"))
    with checkpoint.quiet_jit():
        exported = torch.jit.load(tmp_path / "model.pt")
    model, _ = checkpoint.load_classifier(released)
    with torch.no_grad():
        assert torch.equal(exported(owner["test"]), model(owner["test"]))  # -inf where the release answers nothing


def test_a_release_the_tracer_cannot_take_is_refused_and_nothing_written(gray_teacher, tmp_path):
    run_script("train_teacher.py", "--defense", "noise", "--from", str(gray_teacher), "--workers", "0", "--output",
               str(tmp_path / "noise"))
    proc = run_script("-m", "undistill.export", str(tmp_path / "noise" / "checkpoint.pt"), "--output",
                      str(tmp_path / "model.pt"), check=False)
    assert proc.returncode == 2 and "cannot be traced" in proc.stderr and not (tmp_path / "model.pt").exists()


@NEEDS_ONNXRUNTIME
def test_a_release_exports_to_onnx_answering_as_its_checkpoint(owner, tmp_path):
    with checkpoint.quiet_jit():  # a TorchScript teacher: the ONNX exporter cannot trace into its loaded module
        torch.jit.save(torch.jit.script(owner["cnn"]), tmp_path / "cnn.pt")
    source = imported(tmp_path / "cnn.pt", tmp_path / "imported", "--mean", str(MEAN), "--std", str(STD))
    run_script("train_teacher.py", "--defense", "topk", "--from", str(source), "--workers", "0", "--output",
               str(tmp_path / "topk"))
    released = tmp_path / "topk" / "checkpoint.pt"
    run_script("-m", "undistill.export", str(released), "--output", str(tmp_path / "model.onnx"))
    import onnxruntime
    session = onnxruntime.InferenceSession(tmp_path / "model.onnx")
    model, _ = checkpoint.load_classifier(released)
    with torch.no_grad():
        expected = model(owner["test"])
    answers = torch.from_numpy(session.run(None, {"images": owner["test"].numpy()})[0])
    kept = expected.isfinite()  # the classes a top-k release answers; -inf elsewhere
    assert torch.equal(answers.isfinite(), kept) and (answers[kept] - expected[kept]).abs().max() < 1e-5


@pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason="needs onnx")
def test_a_model_onnx_cannot_express_is_refused_and_nothing_written(gray_teacher, tmp_path):
    proc = run_script("-m", "undistill.export", str(gray_teacher), "--output", str(tmp_path / "model.onnx"),
                      check=False)  # its owner's convention resizes with antialiasing, which ONNX lacks
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1
    assert "cannot be exported to ONNX" in proc.stderr and "_upsample_bilinear2d_aa" in proc.stderr, proc.stderr
    assert not list(tmp_path.glob("*model.onnx*"))


def test_fine_tuning_an_imported_model_keeps_its_convention_and_warns_of_the_lr(owner, tmp_path):
    source = imported(owner["where"] / "cnn.pth", tmp_path / "imported", "--arch", "cnn", "--mean", str(MEAN),
                      "--std", str(STD))
    command = ("train_teacher.py", "--defense", "cmim", "--init", str(source), "--epochs", "1", "--subset", "0.05",
               "--batch-size", "40", "--workers", "0", "--quiet")
    proc = run_script(*command, "--output", str(tmp_path / "tuned"))
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: --init")]
    # the cnn's from-scratch optimizer: Adam at 1e-3
    assert len(warnings) == 1 and "fine-tune with --lr 0.0001" in warnings[0], proc.stderr
    ckpt = checkpoint.load(tmp_path / "tuned" / "checkpoint.pt")
    assert (ckpt["mean"], ckpt["std"]) == ([MEAN] * 3, [STD] * 3)
    proc = run_script(*command, "--lr", "1e-4", "--output", str(tmp_path / "tuned-slowly"))
    assert "warning:" not in proc.stderr


class Normalized(nn.Module):
    """The owner's model as a notebook holds it: [0, 255] images in, its own normalization inside."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net((x / 255 - MEAN) / STD)


def test_the_python_api_releases_and_measures_a_module_from_any_directory(owner, tmp_path, monkeypatch):
    from undistill import api
    monkeypatch.chdir(tmp_path)  # a notebook's directory, not the repository
    summary = api.release(Normalized(owner["cnn"]), "topk", k=2, output="topk", workers=0)
    assert summary["release"] == {"name": "topk", "k": 2} and summary["method"] == "topk"
    released, _ = checkpoint.load_classifier(tmp_path / "topk" / "checkpoint.pt")
    with torch.no_grad():
        expected = owner["cnn"]((owner["test"].float() / 255 - MEAN) / STD)
        assert torch.equal(released(owner["test"]).argmax(1), expected.argmax(1))
    measured = api.evaluate(tmp_path / "topk" / "checkpoint.pt", workers=0, cmi_split="none", output="eval.json")
    assert measured["test"]["acc"] == pytest.approx(summary["best_acc"])
    with pytest.raises(UserError, match="teacher_api"):
        api.release(lambda images: images, "topk", output="bad")
