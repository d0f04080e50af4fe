"""Bad input through the real command lines: every row of CASES runs one command as a user types it (a process of
train_teacher.py, distill_student.py, `-m undistill.evaluate` or `-m undistill.report`: conftest.run_script) and
must exit 2 with exactly one `error:` line naming the problem, print no traceback, and leave every file of a
finished run (a copy of a CE teacher's, the --output of the training commands, --overwrite and --resume included)
byte for byte as it was.

argparse's own refusals (an unknown --dataset, --defense or --attack) print its usage block and then one
`<script>: error: ...` line, still with exit code 2: that is accepted for those rows only (`usage=True`), as long
as that line is the only error line.
"""
import hashlib
import importlib.util
import shutil
from dataclasses import dataclass

import pytest
import torch
from PIL import Image

from conftest import run_script
from test_faults import malformed

# The commands train on DATA, a CIFAR-10 image folder of 20 images: the built-in mnist5k costs seconds to load
DATA = ("--dataset", "cifar10", "--data-dir", "{data}", "--arch", "cnn", "--batch-size", "10", "--workers", "0",
        "--quiet", "--epochs", "1")
TRAIN = ("train_teacher.py", *DATA, "--output", "{run}")
DISTILL = ("distill_student.py", *DATA, "--output", "{run}")
EVALUATE = ("-m", "undistill.evaluate", "{bad}", "--workers", "0", "--output", "{run}/eval.json")
TEACHER = ("--teacher", "{run}/checkpoint.pt")
CLASSES = [f"c{i}" for i in range(10)]
NEEDS_ONNXRUNTIME = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs onnxruntime")
NEEDS_ONNX = pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason="needs onnx")
WNIDS = [f"n{i:08d}" for i in range(200)]


@dataclass(frozen=True)
class Case:
    """One command (after `python`; {run} is the run's copy, {data} DATA's root, {bad} the bad input made for it)
    and a fragment of its error line. `bad` names what bad_input makes; `usage`: argparse refuses it (see the
    module docstring)."""
    argv: tuple
    fragment: str
    bad: str | None = None
    usage: bool = False


def row(id, argv, fragment, bad=None, usage=False, marks=()):
    return pytest.param(Case(tuple(argv), fragment, bad, usage), id=id, marks=marks)


def image(path, size=32, shade=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (shade,) * 3).save(path)  # the format follows the suffix (.png, .JPEG)


def image_folders(root, test_classes=CLASSES):
    """A CIFAR-10 image-folder root, train/<class>/ and test/<class>/, two 32 px images per class."""
    for split, classes in (("train", CLASSES), ("test", test_classes)):
        for i, name in enumerate(classes):
            for j in range(2):
                image(root / split / name / f"{j}.png", shade=20 * i + j)
    return root


def tinyimagenet(root, annotated="val_0.JPEG"):
    """A stock Tiny-ImageNet root, one 64 px image per class, whose val_annotations.txt names `annotated`."""
    for i, wnid in enumerate(WNIDS):
        image(root / "train" / wnid / "images" / f"{wnid}_0.JPEG", 64, i)
    image(root / "val" / "images" / "val_0.JPEG", 64)
    (root / "val" / "val_annotations.txt").write_text(f"{annotated}\t{WNIDS[0]}\t0\t0\t63\t63\n")
    return root


def summaries(root, text):
    (root / "run").mkdir(parents=True)
    (root / "run" / "summary.json").write_text(text)
    return root


def bad_input(kind, where, run, good):
    """The bad file or directory `kind` that a case names as {bad}, made in `where`; "metrics" damages the run
    itself, before its files are hashed."""
    if kind == "metrics":
        (run / "metrics.jsonl").write_bytes(b"\x00garbage\n")
        return run / "metrics.jsonl"
    if kind == "binary":
        (where / "ds.json").write_bytes(bytes(range(256)))
        return where / "ds.json"
    if kind == "corrupt-jpeg":
        (image_folders(where / "data") / "train" / "c0" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
        return where / "data"
    if kind == "not-image":
        (image_folders(where / "data") / "train" / "c0" / "notes.png").write_text("not an image\n")
        return where / "data"
    if kind == "class-mismatch":
        return image_folders(where / "data", test_classes=[*CLASSES[:9], "x9"])
    if kind == "tinyimagenet":
        return tinyimagenet(where / "data")
    if kind == "annotation-missing":
        return tinyimagenet(where / "data", annotated="val_404.JPEG")
    if kind == "garbage-summary":
        return summaries(where / "runs", "\x00\xff{garbage")
    if kind == "empty-summary":
        return summaries(where / "runs", "")
    if kind == "no-runs":
        (where / "runs").mkdir()
        return where / "runs"
    if kind in CLAIMS:  # a checkpoint whose fields claim something its tensors or sane bounds deny
        torch.save(dict(torch.load(good, weights_only=True), **CLAIMS[kind]), where / f"{kind}.pt")
        return where / f"{kind}.pt"
    if kind == "pickled-module":
        torch.save(torch.nn.Linear(2, 2), where / "module.pt")
        return where / "module.pt"
    if kind == "corrupt-pt2":  # an exported program cut short, as a failed download leaves it
        torch.export.save(torch.export.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),)), where / "whole.pt2")
        (where / "model.pt2").write_bytes((where / "whole.pt2").read_bytes()[:600])
        return where / "model.pt2"
    if kind in ("garbage-pt2", "garbage-onnx"):
        (where / f"model.{kind[8:]}").write_bytes(bytes(range(256)) * 4)
        return where / f"model.{kind[8:]}"
    if kind == "external-onnx":  # an ONNX model whose weight is a file of the machine that imports it
        return reading_a_file(where / "model.onnx", "/etc/hostname")
    if kind == "class-order":
        (where / "order.txt").write_text("0\n0\n1\n")
        return where / "order.txt"
    return malformed(kind, good, where)  # a checkpoint; an unknown kind ("missing") is a path that does not exist


def reading_a_file(path, outside):
    """An ONNX model adding the first 4 bytes of the file `outside` (its external data) to its input."""
    from onnx import TensorProto, helper
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", outside), ("offset", "0"), ("length", "4")):
        weight.external_data.add(key=key, value=value)
    images = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 3, 32, 32]) for name in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", images[:1], images[1:], [weight])
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


CLAIMS = {
    "huge-classes": {"num_classes": 10 ** 9}, "huge-size": {"image_size": 10 ** 6},
    "zero-std": {"std": [0.0] * 3}, "nan-mean": {"mean": [float("nan")] * 3}, "mean-of-two": {"mean": [0.5] * 2},
    "bad-class-order": {"input": {"class_order": [0] * 10}}, "bad-input": {"input": {"channels": 2}},
    "huge-release-k": {"release": {"name": "topk", "k": 10 ** 9}},
    "broken-script": {"arch": "torchscript", "state_dict": {"script": torch.zeros(16, dtype=torch.uint8)}},
    "broken-onnx": {"arch": "onnx", "state_dict": {"onnx": torch.zeros(16, dtype=torch.uint8)}},
}


CORRUPT = "{bad} is corrupt or not a trusted tensor file"
CHECKPOINTS = [  # (malformed kind, fragment, what the command line adds about --output)
    ("empty", CORRUPT, "--overwrite"), ("truncated", CORRUPT, "--resume"), ("text", CORRUPT, None),
    ("tensor", "{bad} is not an undistill checkpoint", "--overwrite"),
    ("no-arch", "checkpoint {bad} is malformed: its 'arch' is missing", "--resume"),
    ("classes", "checkpoint {bad}: its weights do not fit cnn with 7 classes", "--overwrite"),
    ("arch", "checkpoint {bad}: its weights do not fit resnetc20 with 10 classes", None),
    ("directory", "checkpoint {bad} is not a file", "--overwrite"),
    ("missing", "checkpoint {bad} does not exist", "--resume"),
]

CASES = [
    # option ranges, checked before anything is read or written
    row("epochs-0", [*TRAIN, "--epochs", "0", "--overwrite"], "--epochs 0 is outside [1, inf)"),
    row("batch-size-0", [*TRAIN, "--batch-size", "0", "--resume"], "--batch-size 0 is outside [1, inf)"),
    row("lr-negative", [*TRAIN, "--lr", "-1"], "--lr -1.0 is outside (0, inf)"),
    row("lr-0", [*TRAIN, "--lr", "0", "--overwrite"], "--lr 0.0 is outside (0, inf)"),
    row("workers-negative", [*TRAIN, "--workers", "-1", "--overwrite"], "--workers -1 is outside [0, inf)"),
    row("milestones-letters", [*TRAIN, "--milestones", "a,b", "--resume"], "--milestones 'a,b'"),
    row("log-every-0", [*TRAIN, "--log-every", "0", "--overwrite"], "--log-every 0 is outside [1, inf)"),
    row("nasty-omega-negative", [*TRAIN, "--defense", "nasty", "--adversary", "{run}/checkpoint.pt", "--omega", "-1",
                                 "--overwrite"], "--omega -1.0 is outside (0, inf) for --defense nasty"),
    row("kd-alpha-2", [*DISTILL, "--attack", "kd", *TEACHER, "--alpha", "2", "--overwrite"],
        "--alpha 2.0 is outside [0, 1] for --attack kd"),
    row("kd-alpha-negative", [*DISTILL, "--attack", "kd", *TEACHER, "--alpha", "-0.1"],
        "--alpha -0.1 is outside [0, 1] for --attack kd"),
    row("kd-tau-0", [*DISTILL, "--attack", "kd", *TEACHER, "--tau", "0", "--overwrite"],
        "--tau 0.0 is outside (0, inf) for --attack kd"),
    row("subset-0", [*TRAIN, "--subset", "0", "--overwrite"], "--subset 0.0: give a fraction in (0, 1]"),
    row("subset-1.5", [*TRAIN, "--subset", "1.5", "--resume"], "--subset 1.5: give a fraction in (0, 1]"),
    row("stingy-ratio-0", [*TRAIN, "--defense", "stingy", "--from", "{run}/checkpoint.pt", "--ratio", "0",
                           "--overwrite"], "--ratio 0.0 is outside (0, 1] for --defense stingy"),
    row("arch-unknown", [*TRAIN, "--arch", "nonesuch", "--overwrite"], "unknown architecture 'nonesuch'"),
    row("dataset-unknown", [*TRAIN, "--dataset", "nonesuch", "--overwrite"],
        "argument --dataset: invalid choice: 'nonesuch'", usage=True),
    row("defense-unknown", [*TRAIN, "--defense", "nonesuch"], "argument --defense: invalid choice: 'nonesuch'",
        usage=True),
    row("attack-unknown", [*DISTILL, "--attack", "nonesuch", "--resume"],
        "argument --attack: invalid choice: 'nonesuch'", usage=True),
    # an option of another method
    row("scratch-teacher", [*DISTILL, *TEACHER, "--overwrite"],
        "--teacher is not an option of --attack scratch (it is one of kd, htc"),
    row("dkd-no-labels", [*DISTILL, "--attack", "dkd", *TEACHER, "--no-labels"],
        "--no-labels is not an option of --attack dkd"),
    row("ce-omega", [*TRAIN, "--omega", "0.1", "--overwrite"], "--omega is not an option of --defense ce"),
    # --resume of a run of other settings, or over a damaged history
    row("resume-other-defense", [*TRAIN, "--defense", "ls", "--resume"], "{run} holds a run with method ce, not ls"),
    row("resume-other-seed", [*TRAIN, "--seed", "1", "--resume"], "{run} holds a run with seed 0, not 1"),
    row("resume-other-subset", [*TRAIN, "--subset", "1", "--resume"], "{run} holds a run with subset None, not 1.0"),
    row("resume-other-arch", [*TRAIN, "--arch", "resnetc20", "--resume"],
        "{run} holds a run with arch cnn, not resnetc20"),
    row("resume-damaged-metrics", [*TRAIN, "--epochs", "2", "--resume"], "{bad} is damaged", bad="metrics"),
    # malformed checkpoints: every kind as --teacher, some as the other options that read one
    *[row(f"teacher-{kind}", [*DISTILL, "--attack", "kd", "--teacher", "{bad}", *filter(None, [then])], fragment,
          bad=kind) for kind, fragment, then in CHECKPOINTS],
    row("adversary-truncated", [*TRAIN, "--defense", "nasty", "--adversary", "{bad}", "--overwrite"], CORRUPT,
        bad="truncated"),
    row("from-no-arch", [*TRAIN, "--defense", "stingy", "--from", "{bad}", "--overwrite"],
        "checkpoint {bad} is malformed: its 'arch' is missing", bad="no-arch"),
    row("weights-tensor", [*TRAIN, "--weights", "{bad}", "--overwrite"], "--weights {bad} holds a Tensor, not a "
        "state_dict", bad="tensor"),
    row("weights-other-weights", [*DISTILL, "--weights", "{bad}", "--resume"],
        "--weights {bad}: its weights do not fit cnn with 10 classes", bad="other-weights"),
    *[row(f"evaluate-{kind}", EVALUATE, fragment, bad=kind) for kind, fragment, _ in CHECKPOINTS
      if kind in ("text", "missing")],
    # checkpoints claiming what their tensors or sane bounds deny, for every reader; an import of a hostile file
    row("teacher-huge-classes", [*DISTILL, "--attack", "kd", "--teacher", "{bad}", "--overwrite"],
        "checkpoint {bad} claims 1000000000 classes", bad="huge-classes"),
    row("adversary-huge-size", [*TRAIN, "--defense", "nasty", "--adversary", "{bad}", "--overwrite"],
        "checkpoint {bad} claims 1000000px images", bad="huge-size"),
    row("from-zero-std", [*TRAIN, "--defense", "stingy", "--from", "{bad}", "--overwrite"],
        "checkpoint {bad} claims a std [0.0, 0.0, 0.0]", bad="zero-std"),
    row("evaluate-nan-mean", EVALUATE, "checkpoint {bad} claims a mean [nan, nan, nan]", bad="nan-mean"),
    row("teacher-mean-of-two", [*DISTILL, "--attack", "kd", "--teacher", "{bad}"],
        "checkpoint {bad} claims a mean [0.5, 0.5]", bad="mean-of-two"),
    row("teacher-bad-class-order", [*DISTILL, "--attack", "kd", "--teacher", "{bad}", "--resume"],
        "claims a class order that is not a permutation of its 10 classes", bad="bad-class-order"),
    row("from-bad-input", [*TRAIN, "--defense", "topk", "--from", "{bad}", "--overwrite"],
        "checkpoint {bad} claims 2 input channels (1 or 3)", bad="bad-input"),
    row("teacher-huge-release-k", [*DISTILL, "--attack", "kd", "--teacher", "{bad}", "--overwrite"],
        "a top-1000000000 release of a teacher with 10 classes: k is at most the classes", bad="huge-release-k"),
    row("evaluate-broken-script", EVALUATE, "checkpoint {bad}: its TorchScript module cannot be loaded",
        bad="broken-script"),
    row("audit-huge-classes", ["-m", "undistill.audit", "{bad}", "--output", "{run}/audit"],
        "checkpoint {bad} claims 1000000000 classes", bad="huge-classes"),
    row("import-pickled-module", ["-m", "undistill.importer", "{bad}", "--output", "{run}"],
        "pass --trust-pickle if you trust the file", bad="pickled-module"),
    row("import-untrusted-pt2", ["-m", "undistill.importer", "{bad}", "--output", "{run}"],
        "pass --trust-pickle if you trust the file", bad="garbage-pt2"),
    row("import-corrupt-pt2", ["-m", "undistill.importer", "{bad}", "--trust-pickle", "--output", "{run}"],
        "{bad} is not a readable torch.export file", bad="corrupt-pt2"),
    row("import-garbage-pt2", ["-m", "undistill.importer", "{bad}", "--trust-pickle", "--output", "{run}"],
        "{bad} is not a readable torch.export file", bad="garbage-pt2"),
    row("import-garbage-onnx", ["-m", "undistill.importer", "{bad}", "--output", "{run}"],
        "{bad}: its ONNX model cannot be loaded", bad="garbage-onnx", marks=NEEDS_ONNXRUNTIME),
    row("import-external-onnx", ["-m", "undistill.importer", "{bad}", "--output", "{run}"],
        "{bad}: its ONNX model cannot be loaded", bad="external-onnx", marks=[NEEDS_ONNX, NEEDS_ONNXRUNTIME]),
    row("evaluate-broken-onnx", EVALUATE, "checkpoint {bad}: its ONNX model cannot be loaded", bad="broken-onnx",
        marks=NEEDS_ONNXRUNTIME),
    row("import-class-order", ["-m", "undistill.importer", "{run}/checkpoint.pt", "--arch", "cnn", "--class-order",
                               "{bad}", "--output", "{run}/imported"], "is not a permutation of 0..9",
        bad="class-order"),
    # report over damaged or missing summaries (its --csv would land in the run if it wrote one)
    row("report-garbage-summary", ["-m", "undistill.report", "{bad}", "--csv", "{run}/table.csv"],
        "cannot read {bad}/run/summary.json as JSON", bad="garbage-summary"),
    row("report-empty-summary", ["-m", "undistill.report", "{bad}", "--csv", "{run}/table.csv"],
        "cannot read {bad}/run/summary.json as JSON", bad="empty-summary"),
    row("report-no-runs", ["-m", "undistill.report", "{bad}", "--csv", "{run}/table.csv"],
        "no summary.json under {bad}", bad="no-runs"),
    # where the run writes, how it trains, what it reads the data from
    row("output-is-a-file", [*TRAIN, "--output", "{run}/command.txt", "--overwrite"],
        "--output {run}/command.txt is a file, not a directory"),
    row("deepspeed-config-binary", [*TRAIN, "--backend", "deepspeed", "--deepspeed-config", "{bad}", "--overwrite"],
        "cannot read --deepspeed-config {bad} as JSON", bad="binary",
        marks=pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs deepspeed")),
    row("data-dir-missing", [*TRAIN, "--data-dir", "{run}/cifar10", "--overwrite"],
        "--data-dir {run}/cifar10 does not exist"),
    row("image-folder-corrupt-jpeg", [*TRAIN, "--data-dir", "{bad}", "--overwrite"],
        "cannot read the image {bad}/train/c0/bad.jpg", bad="corrupt-jpeg"),
    row("image-folder-not-an-image", [*TRAIN, "--data-dir", "{bad}", "--resume"],
        "cannot read the image {bad}/train/c0/notes.png", bad="not-image"),
    row("device-cuda", [*TRAIN, "--device", "cuda", "--overwrite"], "--device cuda, but no CUDA GPU is visible",
        marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible here")),
    row("image-folder-class-mismatch", [*TRAIN, "--data-dir", "{bad}", "--overwrite"],
        "{bad}/train and {bad}/test have different class folders", bad="class-mismatch"),
    row("tinyimagenet-cnn", [*TRAIN, "--dataset", "tinyimagenet", "--data-dir", "{bad}", "--overwrite"],
        "--arch cnn cannot take the dataset's 64x64 images", bad="tinyimagenet"),
    row("tinyimagenet-annotation-missing", [*TRAIN, "--dataset", "tinyimagenet", "--data-dir", "{bad}", "--arch",
                                            "resnetc20", "--overwrite"], "names val_404.JPEG, which is not in",
        bad="annotation-missing"),
]


def digests(directory):
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A CE teacher trained for one epoch on DATA: the run every case must leave as it was. Returns its
    checkpoint; DATA's root is data/ beside its run directory."""
    import train_teacher
    where = tmp_path_factory.mktemp("teacher")
    names = {"data": image_folders(where / "data"), "run": where / "run"}
    train_teacher.main(train_teacher.parse_args([arg.format(**names) for arg in TRAIN[1:]]))
    return where / "run" / "checkpoint.pt"


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_error_line_and_the_run_survives(case, teacher, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(teacher.parent, run)
    names = {"run": run, "data": teacher.parent.parent / "data",
             "bad": bad_input(case.bad, tmp_path, run, teacher) if case.bad else None}
    before = digests(run)
    proc = run_script(*(arg.format(**names) for arg in case.argv), check=False)
    said = f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
    assert proc.returncode == 2, said
    assert "Traceback" not in proc.stdout + proc.stderr, said
    lines = proc.stderr.splitlines()
    prefix = f"{case.argv[0]}: error: " if case.usage else "error: "
    errors = [line for line in lines if line.startswith(("error: ", prefix))]
    assert len(errors) == 1 and errors[0].startswith(prefix), said
    assert case.fragment.format(**names) in errors[0], said
    if case.usage:  # argparse's block: usage lines, then its error line last
        assert lines[0].startswith("usage: ") and lines[-1] == errors[0], said
    assert digests(run) == before
