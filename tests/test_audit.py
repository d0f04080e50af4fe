"""The audit: its plan per budget, refused options, skipping and resuming students, the release's verdict sentence
(hand-computed intervals), and an audit run end to end whose report is recomputed here from the run summaries and
checkpoints, each seed's searched setting chosen on its validation split."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from undistill import UserError, audit, cells, checkpoint, datasets, metrics, runs, verdict


def plan_of(teacher, *argv):
    return audit.make_plan(audit.parse_args([str(teacher), *argv]))


def names(plan, release="full"):
    return [a.name for a in plan.attacks if a.release == release]


def test_the_plan_of_each_budget(ce_teacher, tmp_path):
    quick = plan_of(ce_teacher, "--output", str(tmp_path))
    assert names(quick) == ["kd", "htc", "dkd", "kd-no-labels", "kd-share0.01", "kd-share0.05"]
    grids = {a.name: [setting for setting, _ in a.grid] for a in quick.attacks if a.release == "full"}
    assert grids["kd"] == ["tau1", "tau2", "tau4", "tau8", "tau20"] and grids["dkd"] == [""]
    assert len(grids["htc"]) == 16 and "tau50-multiplier50" in grids["htc"]  # tau 4..100 x m 1..50, as the paper
    assert quick.seeds == [0, 1, 2] and quick.epochs == 15 and quick.milestones == "8,12"  # mnist5k's whole schedule
    assert sorted((a.name, a.share) for a in quick.attacks if a.release is None) == [
        ("ls", 0.1), ("ls-share0.01", 0.01), ("ls-share0.05", 0.05),
        ("scratch", 0.1), ("scratch-share0.01", 0.01), ("scratch-share0.05", 0.05)]
    full = plan_of(ce_teacher, "--budget", "full", "--student-arch", "resnetc20", "--output", str(tmp_path))
    assert full.seeds == [0, 1, 2, 3, 4] and {"skeptical", "dafl", "deepinversion"} <= set(names(full))
    assert [a.definition.access for a in full.attacks if a.name in ("dafl", "deepinversion")] == ["white-box"] * 2
    standard = plan_of(ce_teacher, "--budget", "standard", "--seeds", "3,4", "--output", str(tmp_path))
    assert standard.seeds == [3, 4] and "skeptical" not in names(standard)  # the plain CNN has no stages
    label = plan_of(ce_teacher, "--release", "label", "--output", str(tmp_path))
    assert names(label, "label")[-1] == "adaptive"  # a release with a decoding meets the attacker who knows it


def test_a_shortened_schedule_scales_its_milestones():
    record = datasets.record("cifar10")  # 160 epochs, steps at 80 and 120
    assert audit.schedule(record, audit.BUDGETS["quick"], None) == (40, "20,30")
    assert audit.schedule(record, audit.BUDGETS["standard"], None) == (160, "80,120")
    assert audit.schedule(record, audit.BUDGETS["quick"], 3) == (3, "2")


def test_releases_and_a_chosen_attack_bring_only_their_baselines(ce_teacher, tmp_path):
    argv = [str(ce_teacher), "--release", "full", "stingy:ratio=0.3", "--attacks", "kd-share0.01", "htc",
            "--output", str(tmp_path), "--data-dir", "data/mnist5k"]
    args = audit.parse_args(argv)
    plan = audit.make_plan(args)
    assert sorted({(a.release or "", a.name) for a, *_ in plan.units(only_chosen=True)}) == [
        ("", "ls"), ("", "ls-share0.01"), ("", "scratch"), ("", "scratch-share0.01"),
        ("full", "htc"), ("full", "kd-share0.01"), ("stingy:ratio=0.3", "htc"), ("stingy:ratio=0.3", "kd-share0.01")]
    assert plan.releases["stingy:ratio=0.3"] == tmp_path / "releases" / "stingy_ratio=0.3" / "checkpoint.pt"
    command = audit.release_command("stingy:ratio=0.3", plan, plan.releases["stingy:ratio=0.3"], args)
    assert command[:8] == [
        "train_teacher.py", "--defense", "stingy", "--from", str(ce_teacher), "--dataset", "mnist5k", "--ratio"]
    # it measures the release on the students' test split, found from any working directory
    assert command[-2:] == ["--data-dir", str(Path("data/mnist5k").absolute())]


@pytest.mark.parametrize("argv, message", [
    (["--share", "0"], r"--share 0.0: give a fraction in \(0, 1\]"),
    (["--epochs", "0"], "--epochs 0: give at least 1"),
    (["--jobs", "0"], "--jobs and --nproc-per-cell must be at least 1"),
    (["--seeds", "0,0"], "a seed appears twice"),
    (["--seeds", "a"], "give comma-separated integers"),
    (["--attacks", "kd-t3"], "--attacks kd-t3: not an attack of this plan"),
])
def test_bad_options_are_refused_before_anything_runs(ce_teacher, tmp_path, argv, message):
    with pytest.raises(UserError, match=message):
        audit.main(audit.parse_args([str(ce_teacher), *argv, "--output", str(tmp_path / "audit")]))
    assert not (tmp_path / "audit").exists()


def test_a_student_or_a_release_given_as_the_teacher_is_refused(ce_teacher, tmp_path):
    ckpt = torch.load(ce_teacher, weights_only=True)
    checkpoint.save(dict(ckpt, role="student"), tmp_path / "student.pt")
    with pytest.raises(UserError, match="is a student's checkpoint: audit a teacher"):
        plan_of(tmp_path / "student.pt")
    checkpoint.save(dict(ckpt, release={"name": "stingy", "ratio": 0.2, "variant": "top"}),
                    tmp_path / "stingy.pt")
    with pytest.raises(UserError, match="is already a stingy release: audit it with --release full"):
        plan_of(tmp_path / "stingy.pt", "--release", "full", "label")


def test_finished_cells_are_skipped_and_unfinished_ones_resumed(ce_teacher, tmp_path, monkeypatch):
    args = audit.parse_args([str(ce_teacher), "--attacks", "dkd", "--seeds", "0", "--output", str(tmp_path)])
    plan = audit.make_plan(args)
    audit.claim(plan, args)
    ls, scratch, dkd = (d for *_, d in plan.units(only_chosen=True))
    ls.mkdir(parents=True)
    (ls / "summary.json").write_text(json.dumps({"epochs": plan.epochs}))  # finished
    scratch.mkdir(parents=True)
    (scratch / "checkpoint.pt").write_bytes(b"")  # interrupted
    (scratch / "summary.json").write_text(json.dumps({"epochs": plan.epochs - 1}))  # of a shorter run
    commands = []
    monkeypatch.setattr(cells, "execute", lambda command, log, jobs, nproc, processes: commands.append(command) or 0)
    assert audit.run(plan, args)
    assert [(c[c.index("--attack") + 1], c[-1]) for c in commands] == [("scratch", "--resume"), ("dkd", "--overwrite")]
    dkd_command = commands[1]
    assert dkd_command[dkd_command.index("--teacher") + 1] == str(ce_teacher)
    assert dkd_command[dkd_command.index("--subset") + 1] == "0.1"
    assert dkd_command[dkd_command.index("--validation") + 1] == "0.2"  # its choice never sees the test split
    assert dkd_command[dkd_command.index("--output") + 1] == str(dkd)


def test_an_output_holding_another_audit_is_refused_unless_overwritten(ce_teacher, tmp_path):
    other = tmp_path / "other.pt"
    other.write_bytes(ce_teacher.read_bytes())
    args = audit.parse_args([str(ce_teacher), "--output", str(tmp_path / "audit")])
    audit.claim(audit.make_plan(args), args)
    (tmp_path / "audit" / "baselines").mkdir()
    audit.claim(audit.make_plan(args), args)  # the same audit: continued
    assert (tmp_path / "audit" / "baselines").is_dir()
    longer = audit.parse_args([str(ce_teacher), "--epochs", "20", "--output", str(tmp_path / "audit")])
    with pytest.raises(UserError, match="holds an audit with another epochs \\(15\\)"):
        audit.claim(audit.make_plan(longer), longer)
    torch.save(dict(torch.load(ce_teacher, weights_only=True), epoch=99), other)
    changed = audit.parse_args([str(other), "--output", str(tmp_path / "audit"), "--overwrite"])
    audit.claim(audit.make_plan(changed), changed)  # --overwrite: the other audit's runs are gone
    assert not (tmp_path / "audit" / "baselines").exists() and (tmp_path / "audit" / "audit.json").is_file()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    foreign = audit.parse_args([str(ce_teacher), "--output", str(tmp_path / "mine")])
    with pytest.raises(UserError, match="holds files that are not an audit"):
        audit.claim(audit.make_plan(foreign), foreign)


def row(attack, differences, share=0.1):
    iv = verdict.interval(differences)
    return {"attack": attack, "student": "cnn", "share": share, "vs_ls": iv.as_dict(), "outcome": iv.outcome}


HALF = 4.302653 / 3 ** 0.5  # t(0.975, 2) / sqrt(3): three seeds' half-width for a std of 1


def test_the_release_sentence_takes_the_strongest_of_its_attacks_beyond_the_seeds_noise():
    held = [row("kd", [-3, -4, -5]), row("htc", [-5, -6, -7])]  # both intervals at or below 0
    assert audit.release_sentence("full", held, [0, 1, 2]) == (
        "full: undistillable against all 2 attacks; strongest kd (cnn): -4.00 ± 1.00 [-6.48, -1.52] points over "
        "the LS student (95% interval, 3 seeds; -7.58 to -0.42 for the best of 2 attacks)")  # t(1 - 0.05/4, 2) 6.21
    tie = held + [row("dkd", [1, -1, 0])]  # level with the LS student on average: inside the noise, no verdict
    assert audit.release_sentence("full", tie, [0, 1, 2]).startswith(
        "full: inconclusive (2 of 3 attacks undistillable, 1 inside the seeds' noise); strongest dkd (cnn): "
        "+0.00 ± 1.00 [-2.48, +2.48]")
    # +3 +- 2.48 clears 0 alone, not for the best of 3 attacks (t(1 - 0.05 / 6, 2) = 7.65: -1.42 to +7.42)
    lucky = held + [row("kd-no-labels", [2, 3, 4])]
    assert lucky[-1]["outcome"] == "cloned"
    assert "1 above 0 alone but not for the best of 3); strongest kd-no-labels (cnn): +3.00 ± 1.00 [+0.52, +5.48]" \
        in audit.release_sentence("full", lucky, [0, 1, 2])
    cloning = held + [row("kd-no-labels", [9, 10, 11])]
    assert audit.release_sentence("label", cloning, [0, 1, 2]) == (
        "label: cloned by kd-no-labels (cnn): +10.00 ± 1.00 [+7.52, +12.48] points over the LS student (95% "
        "interval, 3 seeds; +5.58 to +14.42 for the best of 3 attacks)")
    assert audit.release_sentence("full", [row("kd", [0.3])], [0]).startswith(
        "full: indicative, 1 seed: strongest kd (cnn): +0.30")  # one seed never decides
    void = dict(row("kd", [5, 6, 7]), outcome="void")
    assert "void: the teacher is not clearly better" in audit.release_sentence("full", [void], [0, 1, 2])
    assert "no verdict yet" in audit.release_sentence("full", [], [0])


@pytest.mark.slow
@pytest.mark.timeout(900)  # 24 students and three audits of them: minutes on 2 busy cores
def test_an_audit_end_to_end_reports_what_its_runs_measured(ce_teacher, tmp_path):
    out = tmp_path / "audit"
    argv = [str(ce_teacher), "--attacks", "kd", "--seeds", "0,1", "--epochs", "1", "--share", "0.05", "--release",
            "full", "label", "--reference", str(ce_teacher), "--jobs", "2", "--output", str(out)]
    audit.main(audit.parse_args(argv))
    report = json.loads((out / "report.json").read_text())
    info = datasets.load("mnist5k", train=False)
    x = torch.stack([info.test[i][0] for i in range(len(info.test))])
    y = info.test.labels
    teacher, _ = checkpoint.load_classifier(ce_teacher)
    with torch.no_grad():
        z_teacher = teacher(x)

    def summary(run):
        return json.loads((run / "summary.json").read_text())
    ls = {s: summary(out / f"baselines/cnn/ls/s{s}")["last_acc"] for s in (0, 1)}
    assert [r["release"] for r in report["rows"]] == ["full", "label"]
    for row in report["rows"]:
        accs, fidelities = {}, []
        for seed in (0, 1):  # each seed keeps the temperature with the best validation accuracy
            runs_ = {f"tau{t}": out / row["release"] / "cnn" / "kd" / f"tau{t}" / f"s{seed}" for t in (1, 2, 4, 8, 20)}
            kept = runs.chosen({name: summary(run)["last_val_acc"] for name, run in runs_.items()})
            accs[seed] = summary(runs_[kept])["last_acc"]
            student, _ = checkpoint.load_classifier(runs_[kept] / "checkpoint.pt")
            with torch.no_grad():
                fidelities.append(100 * (student(x).argmax(1) == z_teacher.argmax(1)).double().mean().item())
        assert sum(row["chosen"].values()) == 2 and row["acc"][0] == pytest.approx(sum(accs.values()) / 2)
        assert row["vs_ls"] == verdict.paired(accs, ls).as_dict()  # mean, std and the t-interval over the seeds
        assert row["fidelity"][0] == pytest.approx(sum(fidelities) / 2)
        assert row["queries"] > 0
    label_release = report["releases"]["label"]
    assert label_release["acc"] == pytest.approx(metrics.accuracy(z_teacher, y))  # the label keeps the argmax
    assert report["releases"]["full"]["kl_to_reference"] == pytest.approx(0.0, abs=1e-9)  # against itself
    text = (out / "report.md").read_text()
    assert all(v in text for v in report["verdicts"].values()) and "tau20" in text and "best" in text
    page = (out / "report.html").read_text()  # the same report as one page: its sentences, tables and figures
    assert all(v in page for v in report["verdicts"].values()) and page.count("<table>") == 4
    for figure in ("temperature.png", "responses.png", "tsne.png", "reliability.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f'src="{figure}"' in page
    # run again: every student is done, nothing is trained and the same report is written
    before = {p: p.stat().st_mtime_ns for p in out.rglob("checkpoint.pt")}
    audit.main(audit.parse_args(argv))
    assert {p: p.stat().st_mtime_ns for p in out.rglob("checkpoint.pt")} == before
    assert json.loads((out / "report.json").read_text())["rows"] == report["rows"]
    # another row alone: the report still covers every finished one
    audit.main(audit.parse_args([*argv[:2], "dkd", *argv[3:]]))
    again = json.loads((out / "report.json").read_text())
    assert [r["attack"] for r in again["rows"]].count("kd") == 2 and "dkd" in [r["attack"] for r in again["rows"]]
    shutil.rmtree(out / "full" / "cnn" / "kd" / "tau1" / "s0")  # a lost student is trained again
    audit.main(audit.parse_args(argv))
    assert (out / "full/cnn/kd/tau1/s0/summary.json").is_file()


def test_a_small_share_takes_a_smaller_batch(ce_teacher, tmp_path):
    args = audit.parse_args([str(ce_teacher), "--output", str(tmp_path)])
    plan = audit.make_plan(args)
    plan.train_size = 4000  # mnist5k: shares 0.1, 0.01 and 0.05 train on 80% of 400, 40 and 200 images
    batches = {a.name: plan.batch(a) for a in plan.attacks if a.release is None}
    assert batches == {"ls": 80, "scratch": 80, "ls-share0.01": 8, "scratch-share0.01": 8, "ls-share0.05": 40,
                       "scratch-share0.05": 40}
    small = plan.baseline("ls", 0.01)
    command = audit.run_of(small, "", "cnn", 0, plan, args, tmp_path).argv
    assert command[command.index("--batch-size") + 1] == "8"
    plan.train_size = 50_000  # CIFAR: 4,000 images keep the scripts' batch, and the command its default
    assert "--batch-size" not in audit.run_of(plan.baseline("ls", 0.1), "", "cnn", 0, plan, args, tmp_path).argv


def test_cells_run_under_torchrun_with_their_share_of_the_threads(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(cells.subprocess, "Popen", lambda command, **kw: ran.append((command, kw["env"])) or
                        type("Done", (), {"wait": lambda self: 0})())
    monkeypatch.setattr(cells.os, "cpu_count", lambda: 16)
    assert cells.execute(["distill_student.py", "--attack", "ls"], tmp_path / "logs" / "ls.log", 2, 4) == 0
    command, env = ran[0]
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert command[5:] == ["--module", "undistill.distill_student", "--attack", "ls"]  # the package's, as installed
    assert env["OMP_NUM_THREADS"] == "2"
    assert (tmp_path / "logs" / "ls.log").read_text().startswith("$ distill_student.py --attack ls")


def test_a_cells_command_is_decided_as_it_starts(tmp_path, monkeypatch):
    first, second, third = (cells.Cell(("distill_student.py", name), tmp_path / name, 2) for name in "abc")
    commands = []

    def execute(command, log, jobs, nproc, processes):
        if command[1] == "a":  # meanwhile another process (an earlier launch) takes b to a checkpoint, c to its end
            second.out.mkdir()
            (second.out / "checkpoint.pt").write_bytes(b"")
            third.out.mkdir()
            (third.out / "summary.json").write_text(json.dumps({"epochs": 2}))
        commands.append(command)
        return 0
    monkeypatch.setattr(cells, "execute", execute)
    cells.run([first, second, third], tmp_path, "cells")
    assert commands == [["distill_student.py", "a", "--overwrite"], ["distill_student.py", "b", "--resume"]]


SLEEPER = """import os, sys, time
from pathlib import Path
out = Path(sys.argv[1]); out.mkdir(parents=True)
(out / "pid").write_text(str(os.getpid()))
time.sleep(300)
"""
RUNNER = """import sys
from pathlib import Path
from undistill import cells, distributed
root = Path(sys.argv[1])
todo = [cells.Cell((sys.argv[2], str(root / name)), root / name, 1) for name in ("first", "second")]
distributed.run(lambda _: cells.run(todo, root, "cells"), None)
"""


def test_a_terminated_run_of_cells_stops_its_cell_and_starts_no_other(tmp_path):
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    root = tmp_path / "cells"
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(root), str(tmp_path / "sleeper.py")], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (root / "first" / "pid").is_file() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # the pid written, not necessarily read back whole
        pid = int((root / "first" / "pid").read_text())
        proc.terminate()
        assert proc.wait(timeout=60) == 143 and "terminated" in proc.stderr.read()  # not after the sleeper's 300 s
    finally:
        proc.kill()
    with pytest.raises(ProcessLookupError):  # the running cell was stopped with the run
        os.kill(pid, 0)
    assert not (root / "second").exists()  # and the queued one never started
