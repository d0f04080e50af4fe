"""Both entry scripts end to end on the built-in data: outputs, checkpoints, resume, torchrun, bad input."""
import json

import pytest
import torch
from PIL import Image

import distill_student
import train_teacher
from conftest import TINY, run_script
from undistill import UserError, checkpoint, datasets, engine, methods, options, report
from undistill.distributed import Context


def accuracy_on_test_split(model):
    """The model's accuracy on mnist5k's test split, as a run evaluates it."""
    args = train_teacher.parse_args(TINY)
    config, _ = options.resolve(args, methods.get("defense", "ce"), datasets.record("mnist5k"))
    test = engine.make_loader(datasets.load("mnist5k").test, config, Context(), train=False)
    return engine.evaluate(model, test, Context(), config)["acc"]


@pytest.mark.parametrize("argv, lr", [
    (["--arch", "resnet18", "--batch-size", "512"], 0.1),  # the flag is off by default
    (["--arch", "resnet18", "--batch-size", "512", "--scale-lr"], 0.4),  # the papers' 0.1 is for a batch of 128
    (["--arch", "resnet18", "--batch-size", "64", "--lr", "0.05", "--scale-lr"], 0.025),  # a given lr scales too
    (["--attack", "dafl", "--teacher", "t.pt", "--batch-size", "1024", "--scale-lr"], 4e-3),  # DAFL's 2e-3 at 512
])
def test_scale_lr_multiplies_the_lr_by_the_batch_over_the_one_it_is_set_for(argv, lr):
    args = distill_student.parse_args(["--attack", "scratch", *argv] if "--attack" not in argv else argv)
    config, _ = options.resolve(args, methods.get("attack", args.attack), datasets.record("mnist5k"))
    assert config.lr == pytest.approx(lr)


def train(script, tmp_path, name, *argv):
    out = tmp_path / name
    script.main(script.parse_args([*TINY, "--output", str(out), *argv]))
    return out


def test_teacher_run_writes_checkpoint_metrics_and_summary(ce_teacher):
    out = ce_teacher.parent
    ckpt = torch.load(ce_teacher, weights_only=True)
    assert (ckpt["arch"], ckpt["num_classes"], ckpt["dataset"], ckpt["role"], ckpt["method"]) == (
        "cnn", 10, "mnist5k", "teacher", "ce")
    assert ckpt["epoch"] == 1 and ckpt["release"] is None
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])
    [line] = (out / "metrics.jsonl").read_text().splitlines()
    metrics = json.loads(line)
    assert {"loss", "test_acc", "lr", "images_per_s", "time_s", "epoch"} <= set(metrics)
    assert metrics["terms"] == {"ce": pytest.approx(metrics["loss"])}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["last_acc"] == metrics["test_acc"] and summary["best_acc"] >= summary["last_acc"]
    assert (out / "best.pt").is_file() and (out / "command.txt").is_file()


def test_stingy_release_feeds_kd_and_keeps_teacher_accuracy(ce_teacher, tmp_path):
    released = train(train_teacher, tmp_path, "stingy", "--defense", "stingy", "--from", str(ce_teacher))
    model, ckpt = checkpoint.load_classifier(released / "checkpoint.pt")
    assert ckpt["release"] == {"name": "stingy", "ratio": 0.2, "variant": "top"}
    x = datasets.load("mnist5k").test.images[:64]
    with torch.no_grad():
        logits = model(x)
    assert torch.isfinite(logits).sum(1).eq(2).all()  # a black-box user only ever sees 2 logits per image
    original, _ = checkpoint.load_classifier(ce_teacher)
    stingy_acc = accuracy_on_test_split(model)
    assert stingy_acc == accuracy_on_test_split(original)
    assert stingy_acc == json.loads((released / "summary.json").read_text())["last_acc"]

    student = train(distill_student, tmp_path, "kd", "--attack", "kd", "--teacher", str(released / "checkpoint.pt"),
                    "--epochs", "1")
    summary = json.loads((student / "summary.json").read_text())
    assert summary["settings"]["tau"] == 20.0  # stingy teachers are distilled at tau = 20
    assert torch.load(student / "checkpoint.pt", weights_only=True)["role"] == "student"


@pytest.mark.parametrize("attack, extra, terms", [
    ("kd", ["--no-labels"], {"kl"}), ("htc", [], {"kl", "ce"}), ("dkd", [], {"ce", "tckd", "nckd"}),
    ("scm", [], {"kl", "ce"}), ("skeptical", ["--arch", "resnetc20"], {"ce", "kl"})])
def test_every_attack_distills_from_a_subset_and_logs_its_terms(ce_teacher, tmp_path, attack, extra, terms):
    # TINY already takes 20 images per class (--subset): the papers' limited-data setting
    out = train(distill_student, tmp_path, attack, "--attack", attack, "--teacher", str(ce_teacher),
                "--epochs", "1", *extra)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == attack and 0 <= summary["last_acc"] <= 100
    assert summary["args"]["subset"] == 20 and summary["access"] == "black-box"
    [line] = (out / "metrics.jsonl").read_text().splitlines()
    assert set(json.loads(line)["terms"]) == terms


def test_scm_distills_from_a_sequence_of_teachers(ce_teacher, tmp_path):
    nasty = train(train_teacher, tmp_path, "nasty", "--defense", "nasty", "--adversary", str(ce_teacher),
                  "--epochs", "1") / "checkpoint.pt"
    out = train(distill_student, tmp_path, "scm", "--attack", "scm", "--teacher", str(nasty), str(ce_teacher),
                "--epochs", "1")
    settings = json.loads((out / "summary.json").read_text())["settings"]
    assert settings["teacher"] == [str(nasty), str(ce_teacher)] and settings["ensemble"] == 2
    assert settings["multiplier"] == 50.0 and settings["tau"] == 4.0  # m: the largest of Jandial et al.'s search
    rows, _ = report.verdict_rows(report.collect([tmp_path]))
    assert [(r["teacher"].split("(")[0], r["attack"]) for r in rows] == [
        ("nasty", "scm(alpha=0.9,tau=4.0,multiplier=50.0,ensemble=2)")]  # reported against the first teacher


def test_nasty_teacher_trains_against_its_adversary(ce_teacher, tmp_path):
    out = train(train_teacher, tmp_path, "nasty", "--defense", "nasty", "--adversary", str(ce_teacher),
                "--epochs", "1")
    settings = json.loads((out / "summary.json").read_text())["settings"]
    assert settings == {"omega": 0.04, "tau": 4.0, "adversary": str(ce_teacher)}
    [line] = (out / "metrics.jsonl").read_text().splitlines()
    metrics = json.loads(line)  # the balance of the two terms is the result: the loss is CE - omega tau^2 KL
    assert metrics["loss"] == pytest.approx(metrics["terms"]["ce"] - 0.04 * 16 * metrics["terms"]["kl"], rel=1e-4)


@pytest.mark.parametrize("kind", ["kd student", "cmim teacher"])
def test_resume_equals_uninterrupted_run(tmp_path, ce_teacher, kind):
    # Resume must replay a frozen teacher's contribution (kd) and restore a stateful reference (CMIM centroids).
    script, argv = ((distill_student, ["--attack", "kd", "--teacher", str(ce_teacher)]) if kind == "kd student"
                    else (train_teacher, ["--defense", "cmim", "--centroids", "ema"]))
    argv += ["--milestones", "1", "--opt", "sgd", "--lr", "0.05"]
    full = train(script, tmp_path, "full", *argv, "--epochs", "2")
    part = train(script, tmp_path, "part", *argv, "--epochs", "1")
    train(script, tmp_path, "part", *argv, "--epochs", "2", "--resume")
    a, b = (torch.load(d / "checkpoint.pt", weights_only=True) for d in (full, part))
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    strip = lambda d: [{k: v for k, v in json.loads(l).items() if k not in ("images_per_s", "time_s")}
                       for l in (d / "metrics.jsonl").read_text().splitlines()]
    assert strip(full) == strip(part) and len(strip(full)) == 2


@pytest.mark.parametrize("argv, message", [(["--defense", "ls"], "method ce, not ls"),
                                           (["--seed", "1"], "seed 0, not 1"),
                                           (["--subset", "10"], "subset 20.0, not 10.0"),
                                           (["--arch", "resnetc20"], "arch cnn, not resnetc20")])
def test_resume_refuses_a_run_of_other_settings(tmp_path, argv, message):
    out = train(train_teacher, tmp_path, "run", "--epochs", "1")
    before = (out / "checkpoint.pt").read_bytes()
    # argv after TINY: the last value of an option is the one taken
    proc = run_script("train_teacher.py", *TINY, *argv, "--epochs", "2", "--resume", "--output", str(out),
                      check=False)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, \
        proc.stderr
    assert (out / "checkpoint.pt").read_bytes() == before


def test_resume_into_a_directory_without_a_run_starts_a_new_one(tmp_path):
    proc = run_script("train_teacher.py", *TINY, "--epochs", "1", "--resume", "--output", str(tmp_path / "new"))
    assert "holds no checkpoint.pt, so a new run starts there" in proc.stdout
    assert (tmp_path / "new" / "checkpoint.pt").is_file()


def test_existing_run_is_not_overwritten(ce_teacher):
    before = ce_teacher.read_bytes()
    proc = run_script("train_teacher.py", *TINY, "--epochs", "1", "--output", str(ce_teacher.parent), check=False)
    assert proc.returncode == 2 and "--resume" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert ce_teacher.read_bytes() == before


@pytest.mark.parametrize("argv, message", [
    (["distill_student.py", "--attack", "kd"], "needs --teacher"),
    (["train_teacher.py", "--defense", "nasty"], "needs --adversary"),
    (["distill_student.py", "--attack", "kd", "--teacher", "missing.pt"], "does not exist"),
    (["train_teacher.py", "--dataset", "cifar10"], "needs --data-dir"),
    (["distill_student.py", "--attack", "dkd", "--no-labels", "--teacher", "t.pt"],
     "--no-labels is not an option of --attack dkd (it is one of kd, htc, scm, adaptive)"),
    (["distill_student.py", "--attack", "scratch", "--teacher", "t.pt"], "--teacher is not an option"),
    (["distill_student.py", "--attack", "skeptical", "--teacher", "README.md"], "corrupt"),
])
def test_bad_input_exits_2_with_one_line(argv, message, tmp_path):
    proc = run_script(*argv, "--output", str(tmp_path / "x"), check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("argv, message", [
    (["train_teacher.py", "--defense", "nasty", "--omega", "-1", "--adversary"], "--omega -1.0 is outside (0, inf)"),
    (["distill_student.py", "--attack", "kd", "--alpha", "2", "--teacher"], "--alpha 2.0 is outside [0, 1]"),
    (["distill_student.py", "--attack", "kd", "--epochs", "0", "--teacher"], "--epochs 0 is outside [1, inf)"),
    (["distill_student.py", "--attack", "kd", "--milestones", "a,b", "--teacher"], "--milestones 'a,b'"),
])
def test_options_out_of_range_exit_2_before_anything_is_written(ce_teacher, argv, message, tmp_path):
    proc = run_script(*argv, str(ce_teacher), "--output", str(tmp_path / "x"), check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


class Payload:
    """An arbitrary pickled object: weights_only loading must refuse to build it."""


def test_corrupt_and_untrusted_checkpoints_are_refused(tmp_path):
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="corrupt or not a trusted"):
        checkpoint.load(tmp_path / "corrupt.pt")
    torch.save({"format": checkpoint.FORMAT, "x": Payload()}, tmp_path / "untrusted.pt")
    with pytest.raises(UserError, match="corrupt or not a trusted"):
        checkpoint.load(tmp_path / "untrusted.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(UserError, match="not an undistill checkpoint"):
        checkpoint.load(tmp_path / "plain.pt")


def test_teacher_from_another_dataset_is_refused(ce_teacher, tmp_path):
    root = tmp_path / "c10"
    for split in ("train", "test"):
        for c in range(10):
            (root / split / f"class{c}").mkdir(parents=True)
            Image.new("RGB", (32, 32), (c * 20,) * 3).save(root / split / f"class{c}" / "0.png")
    with pytest.raises(UserError, match="trained on mnist5k"):
        distill_student.main(distill_student.parse_args(
            ["--dataset", "cifar10", "--data-dir", str(root), "--attack", "kd", "--teacher", str(ce_teacher),
             "--output", str(tmp_path / "s"), "--epochs", "1", "--workers", "0", "--quiet"]))


def test_non_finite_loss_stops_with_a_clear_error(ce_teacher, tmp_path):
    with pytest.raises(UserError, match="non-finite loss"):
        train(train_teacher, tmp_path, "nan", "--defense", "nasty", "--adversary", str(ce_teacher), "--epochs", "1",
              "--opt", "sgd", "--lr", "1e6", "--omega", "1e6")
    assert not (tmp_path / "nan" / "checkpoint.pt").exists()


@pytest.mark.slow
def test_both_scripts_under_torchrun_with_two_processes(ce_teacher, tmp_path):
    for script, extra in (("train_teacher.py", []), ("distill_student.py", ["--attack", "kd", "--teacher",
                                                                             str(ce_teacher)])):
        out = tmp_path / script
        proc = run_script(script, *TINY, "--epochs", "1", "--output", str(out), *extra, nproc=2)
        assert proc.stdout.count("done:") == 1  # only rank 0 prints
        # The all-reduced test accuracy covers each test image once: it equals a single-process evaluation.
        model, _ = checkpoint.load_classifier(out / "checkpoint.pt")
        reported = json.loads((out / "summary.json").read_text())["last_acc"]
        assert accuracy_on_test_split(model) == pytest.approx(reported)


@pytest.mark.slow
def test_skeptical_student_under_torchrun_through_its_delay(ce_teacher, tmp_path):
    # Before the delay only the final head has a loss: DDP still needs every head in the graph.
    out = tmp_path / "skeptical"
    proc = run_script("distill_student.py", *TINY, "--arch", "resnetc20", "--epochs", "2", "--kd-delay", "1",
                      "--attack", "skeptical", "--teacher", str(ce_teacher), "--output", str(out), nproc=2)
    assert proc.stdout.count("done:") == 1
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_teacher_trains_with_the_gpu_loader(tmp_path):
    out = train(train_teacher, tmp_path, "gpu", "--loader", "gpu", "--epochs", "1")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["args"]["loader"] == "gpu" and summary["last_acc"] > 20  # labels kept with images (chance: 10%)


def test_kd_student_trains_with_the_gpu_loader(ce_teacher, tmp_path):
    out = train(distill_student, tmp_path, "gpu", "--attack", "kd", "--teacher", str(ce_teacher), "--loader", "gpu",
                "--epochs", "1")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["args"]["loader"] == "gpu" and len((out / "metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.slow
def test_compiled_kd_student_matches_eager_and_saves_plain_weights(ce_teacher, tmp_path):
    # In-process runs would share torch.compile's caches with other tests: a subprocess starts clean.
    runs = {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        runs[name] = tmp_path / name
        run_script("distill_student.py", *TINY, "--epochs", "1", "--attack", "kd", "--teacher", str(ce_teacher),
                   "--output", str(runs[name]), *extra)
    eager, compiled = (json.loads((runs[n] / "metrics.jsonl").read_text()) for n in ("eager", "compiled"))
    # Fused kernels round differently, and Adam turns rounding into steps of up to about lr (1e-3) either way, most
    # where a gradient is near zero (biases before BatchNorm). Measured with torch 2.4, whose CPU kernels differ the
    # most: losses 1.5e-4 apart, weights up to 6.5e-3, and 12 to 20 of the 1,000 test images flipped (this
    # near-chance network puts many near a boundary).
    assert compiled["loss"] == pytest.approx(eager["loss"], rel=1e-3)
    assert abs(compiled["test_acc"] - eager["test_acc"]) <= 3
    plain, fused = (torch.load(runs[n] / "checkpoint.pt", weights_only=True)["state_dict"] for n in runs)
    assert plain.keys() == fused.keys()  # no torch.compile prefix: the checkpoint serves as a teacher as is
    assert all(torch.allclose(plain[k].float(), fused[k].float(), atol=1e-2) for k in plain)
    assert json.loads((runs["compiled"] / "summary.json").read_text())["args"]["compile"] is True
