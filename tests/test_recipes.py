"""The recipes: every one runs end to end in smoke mode and writes its table in the paper's layout, or its figure (a
PNG of the numbers the table beside it holds); a killed recipe continues to the same table; the table's numbers are
the runs' means, differences and paired intervals with their outcomes; a searched cell chooses its setting on its
validation split; a real run's cell is a process of its own."""
import csv
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from undistill import UserError, checkpoint, datasets, models, recipe, recipe_figures

from conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
# Every script below recipes/ but the words they source (lib.sh) and the tools (tested on their own)
RECIPES = sorted(p.relative_to(ROOT / "recipes") for p in (ROOT / "recipes").glob("**/*.sh")
                 if p.name != "lib.sh" and p.parent.name != "tools")
# The arguments a recipe needs beyond its run directory: values as in its results file
ARGUMENTS = {"proxies/cifar10_proxy_sweep.sh": ["nasty", "omega", "0.1"],
             "proxies/cifar10_proxy_htc_grid.sh": ["stingy", "50 1 0.9", "20 5 0.9"]}
FAST = "nasty_teacher/fig1.sh"  # the one recipe `-m "not slow"` runs: two teachers and a figure


# A recipe's runs take the threads conftest gives this process (under xdist, its share of the cores)
SMOKE = dict(os.environ, SMOKE="1", SEEDS="0", PYTHONPATH=str(ROOT))


def smoke(script, out):
    return subprocess.run(["bash", str(ROOT / "recipes" / script), str(out), *ARGUMENTS.get(str(script), [])],
                          cwd=ROOT, env=SMOKE, capture_output=True, text=True, timeout=1800)


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("script", [s if str(s) == FAST else pytest.param(s, marks=pytest.mark.slow)
                                    for s in RECIPES], ids=str)
def test_every_recipe_runs_in_smoke_mode_and_writes_the_papers_table(script, tmp_path):
    done = smoke(script, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not (tmp_path / "logs").exists()  # the tiny cells ran in the recipe's one process: no log of their own
    if (tmp_path / "verdict.md").exists():  # a proxy's table: the report's
        assert_reports_every_student(tmp_path)
    written = sorted(p.stem for p in tmp_path.glob("*.md") if p.stem != "verdict")
    if script.parts[0] == "proxies" and "loaders" in script.name:  # its table: a line per student and seed
        assert sum(" loader " in line for line in done.stdout.splitlines()) == 4 * len(SMOKE["SEEDS"].split(","))
        return
    drawn = sorted(tmp_path.glob("*.png"))
    assert written or drawn or (tmp_path / "verdict.md").exists(), f"{script} writes no table and no figure"
    for png in drawn:  # a real image of the numbers the table beside it holds
        with Image.open(png) as image:
            assert image.format == "PNG" and min(image.size) >= 400, (png.name, image.format, image.size)
        plotted = json.loads(png.with_suffix(".plot.json").read_text())
        if "tau" in plotted:  # responses: each model's softmax outputs on the images shown
            for _, probs in plotted["panels"]:
                assert [sum(p) for p in probs] == pytest.approx([1.0] * len(plotted["images"]))
        if "samples" in plotted:  # t-SNE: every model embedded on every sample
            assert all(shape[0] == plotted["samples"] for _, shape in plotted["panels"])
        if "classes" in plotted:  # inverted images: counted per class, some in every model's block
            assert all(len(counts) == plotted["classes"] and sum(counts) for _, counts in plotted["panels"])
        if png.stem in written:
            assert_plots_its_table(plotted, json.loads((tmp_path / f"{png.stem}.json").read_text()),
                                   recipe.read_layout(ROOT / "recipes" / script.parent / f"{png.stem}.toml"))
    for name in written:  # each table beside its layout, recipes/<paper>/<name>.toml
        layout = recipe.read_layout(ROOT / "recipes" / script.parent / f"{name}.toml")
        table = json.loads((tmp_path / f"{name}.json").read_text())
        assert [r["label"] for r in table["rows"]] == [r["label"] for r in layout["rows"]]
        assert [tuple(c) for c in table["columns"]] == [tuple(c) for c in layout["columns"]]
        for row in table["rows"]:  # every entry ran: a number of ours beside the paper's
            assert all(e["ours"] is not None for e in row["entries"]), (name, row["label"])
        text = (tmp_path / f"{name}.md").read_text()
        assert all(f"{label} (paper)" in text for _, label in layout["columns"])


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_proxys_teachers_train_for_seed_0_alone_and_its_students_of_every_seed_read_them(tmp_path):
    env = dict(SMOKE, SEEDS="0,1")
    done = subprocess.run(["bash", str(ROOT / "recipes/proxies/cifar10_cpu_proxy.sh"), str(tmp_path)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("ce", "nasty", "stingy"):
        assert sorted(p.name for p in (tmp_path / "teachers" / name).iterdir()) == ["s0"]
        for seed in (0, 1):
            student = json.loads((tmp_path / "students" / f"kd-from-{name}" / f"s{seed}" / "summary.json").read_text())
            assert student["args"]["seed"] == seed
            assert student["settings"]["teacher"] == str(tmp_path / "teachers" / name / "s0" / "checkpoint.pt")
    with open(tmp_path / "verdict.csv") as f:  # the students' two seeds, paired with the LS students of theirs
        assert [int(r["seeds"]) for r in csv.DictReader(f)] == [2, 2, 2]


@pytest.mark.slow
def test_the_scm_tool_trains_the_sequence_each_against_the_last_then_the_student_of_all(ce_teacher, tmp_path):
    tiny = [*TINY, "--epochs", "1"]
    done = subprocess.run(["bash", str(ROOT / "recipes/tools/scm_sequence.sh"), str(tmp_path), "3", str(ce_teacher),
                           *tiny, "--", *tiny, "--seed", "1"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    sequence = [str(ce_teacher), str(tmp_path / "s2" / "checkpoint.pt"), str(tmp_path / "s3" / "checkpoint.pt")]
    for i in (2, 3):  # S^i: a nasty teacher against S^(i-1)
        settings = json.loads((tmp_path / f"s{i}" / "summary.json").read_text())["settings"]
        assert settings["adversary"] == sequence[i - 2]
    student = json.loads((tmp_path / "student-s1" / "summary.json").read_text())
    assert student["method"] == "scm" and student["settings"]["teacher"] == sequence
    assert student["args"]["seed"] == 1
    missing = subprocess.run(["bash", str(ROOT / "recipes/tools/scm_sequence.sh"), str(tmp_path / "x"), "2",
                              str(tmp_path / "none.pt")], cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and not (tmp_path / "x").exists()


@pytest.mark.slow
def test_the_multinode_tool_runs_a_script_under_torchrun_on_one_node(tmp_path):
    with socket.socket() as s:  # a free port for the c10d rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run(["bash", str(ROOT / "recipes/tools/multinode_torchrun.sh"), "1", "1", f"127.0.0.1:{port}",
                           "check", "train_teacher.py", *TINY, "--epochs", "1", "--device", "cpu", "--output",
                           str(tmp_path / "ce")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("done:") == 1
    summary = json.loads((tmp_path / "ce" / "summary.json").read_text())
    assert summary["role"] == "teacher" and summary["epochs"] == 1


def assert_reports_every_student(out):
    """verdict.md and .csv (python -m undistill.report) hold a row, with its accuracy, for every cell of students
    taught by a teacher of the recipe (an audit's own runs apart)."""
    taught = {summary.parent.parent for summary in out.glob("**/s*/summary.json")
              if not any(part.startswith("audit") for part in summary.relative_to(out).parts)
              and json.loads(summary.read_text())["role"] == "student"
              and "teacher" in json.loads(summary.read_text())["settings"]}
    with open(out / "verdict.csv") as f:
        rows = list(csv.DictReader(f))
    assert taught and len(rows) == len(taught), (sorted(map(str, taught)), rows)
    assert all(0 <= float(r["student_acc"]) <= 100 for r in rows)  # the verdict: where RUN_DIR holds LS students
    lines = (out / "verdict.md").read_text().splitlines()
    assert sum(line.startswith("| ") for line in lines) == len(rows) + 1  # its header and a line per row


def assert_plots_its_table(plotted, table, layout):
    """A curve's points are the table's entries; a history's last epoch is the table's (last_acc) entry."""
    lines = {(panel, label): ours for panel, found in plotted["panels"] for label, ours, _ in found}
    history = "figure" not in layout
    for row, filled in zip(layout["rows"], table["rows"]):
        for i, ((_, column), e) in enumerate(zip(table["columns"], filled["entries"])):
            if history:
                assert lines[column, row["label"]][-1][0] == pytest.approx(e["ours"][0])
            else:
                panel = row.get("panel", "")
                assert lines[panel, row["label"].removeprefix(f"{panel}: ")][i][0] == pytest.approx(e["ours"][0])


@pytest.mark.slow
def test_a_failed_stage_stops_the_recipe_with_its_one_line_error_and_keeps_the_stages_before(tmp_path):
    script = tmp_path / "recipe.sh"  # two stages served by the recipe's one process, the second refused
    script.write_text(f'source {ROOT}/recipes/lib.sh nasty_teacher/test "$@"\n'
                      "cell good train_teacher.py --arch cnn --epochs 1 --max-steps 1 --batch-size 2 --quiet\n"
                      "run_cells\n"
                      "cell bad train_teacher.py --arch cnn --epochs 0\n"
                      "run_cells\n"
                      "echo not reached\n")
    env = dict(os.environ, SEEDS="0", PYTHONPATH=str(ROOT))
    done = subprocess.run(["bash", str(script), str(tmp_path / "out")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 2 and "not reached" not in done.stdout, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1] == "error: --epochs 0 is outside [1, inf)"
    assert (tmp_path / "out" / "good" / "s0" / "summary.json").is_file()
    assert (tmp_path / "out" / "logs" / "good_s0.log").is_file()  # a real run's cell: a process of its own, its log


@pytest.mark.slow
def test_an_imported_teacher_is_a_cell_each_seed_taking_the_same_model_once(tmp_path):
    torch.manual_seed(0)
    weights = models.build("cnn", 10).state_dict()
    torch.save(weights, tmp_path / "owner.pth")
    script = tmp_path / "recipe.sh"  # the owner's weights imported, then distilled from, over two seeds
    script.write_text(f'source {ROOT}/recipes/lib.sh nasty_teacher/test "$@"\n'
                      f"cell teacher undistill.importer {tmp_path / 'owner.pth'} --arch cnn\n"
                      "run_cells\n"
                      "cell kd distill_student.py --arch cnn --attack kd --teacher @teacher\n"
                      "run_cells\n")
    env = dict(SMOKE, SEEDS="0,1")
    done = subprocess.run(["bash", str(script), str(tmp_path / "out")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for seed in (0, 1):
        ckpt = checkpoint.load(tmp_path / "out" / "teacher" / f"s{seed}" / "checkpoint.pt")
        assert ckpt["method"] == "imported" and all(torch.equal(ckpt["state_dict"][k], v) for k, v in weights.items())
        kd = json.loads((tmp_path / "out" / "kd" / f"s{seed}" / "summary.json").read_text())
        assert kd["settings"]["teacher"] == str(tmp_path / "out" / "teacher" / f"s{seed}" / "checkpoint.pt")
    again = subprocess.run(["bash", str(script), str(tmp_path / "out")], env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0 and "undistill.importer" not in again.stdout  # imported once: kept


def summary(path, acc, epochs=1, best=None):
    path.mkdir(parents=True)
    (path / "summary.json").write_text(json.dumps({"last_acc": acc, "best_acc": acc if best is None else best,
                                                   "epochs": epochs}))


def test_the_table_holds_means_differences_to_the_baseline_and_paired_intervals_with_their_outcomes(tmp_path):
    ls = [52.0, 58.0, 55.0]
    students = {"scratch": [50.0, 60.0, 55.0], "kd": [53.0, 57.0, 55.0],  # LS + (1, -1, 0): straddles 0
                "htc": [54.0, 61.0, 59.0],  # LS + (2, 3, 4): mean 3, std 1, 3 +- 4.3027 / sqrt(3)
                "dkd": [50.0, 55.0, 51.0]}  # LS - (2, 3, 4)
    for seed in range(3):
        summary(tmp_path / "ls" / f"s{seed}", ls[seed])
        for name, accs in students.items():
            summary(tmp_path / name / f"s{seed}", accs[seed], best=accs[seed] + 1)
        summary(tmp_path / "weak" / f"s{seed}", ls[seed] + [0.5, 0.0, 0.0][seed])  # no clear headroom
    summary(tmp_path / "kd-one" / "s0", 53.5)  # one seed only: judged against seed 0's LS student (52)
    (tmp_path / "htc" / "search-s0.json").write_text(json.dumps({"chosen": "tau50-multiplier5"}))
    layout = {"title": "t", "baseline": "base", "columns": [["x", "X"]], "rows": [
        {"label": "base", "cells": "scratch", "paper": [1.0]},
        {"label": "kd", "cells": "kd", "ls": "ls", "paper": [2.0]},
        {"label": "htc", "cells": "htc", "ls": "ls"},
        {"label": "dkd", "cells": "dkd", "ls": "ls"},
        {"label": "one", "cells": "kd-one", "ls": "ls"},
        {"label": "void", "cells": "htc", "ls": "ls", "teacher": "weak"}]}
    table = recipe.build_table(layout, tmp_path, [0, 1, 2])
    base, kd, htc, dkd, one, void = (r["entries"][0] for r in table["rows"])
    assert base["ours"] == (55.0, 5.0, 3) and base["best"][0] == 56.0
    assert kd["ours"][0] == 55.0 and kd["vs_baseline"] == 0.0
    half = 4.302653 / 3 ** 0.5  # t(0.975, 2) std / sqrt(n), std 1 for each of these
    assert kd["vs_ls"]["mean"] == 0.0 and kd["vs_ls"]["low"] == pytest.approx(-half, abs=1e-5)
    assert kd["outcome"] == "inconclusive"  # the mean alone (0, at or below 0) would say undistillable
    assert htc["vs_ls"]["low"] == pytest.approx(3 - half, abs=1e-5) and htc["outcome"] == "cloned"
    assert dkd["vs_ls"]["high"] == pytest.approx(-3 + half, abs=1e-5) and dkd["outcome"] == "undistillable"
    assert one["vs_ls"]["mean"] == pytest.approx(1.5) and one["outcome"] == "indicative"
    assert void["outcome"] == "void" and htc["chosen"] == {0: "tau50-multiplier5"}
    text = recipe.markdown(table, layout)
    assert ("| kd | - | - | 55.00 ± 2.00 (best 56.00) (+0.00) LS +0.00 ± 1.00 [-2.48, +2.48] ≈ | 2.00 (+1.00) |"
            in text)
    assert "LS +3.00 ± 1.00 [+0.52, +5.48] ✗ [s0: tau50-multiplier5] |" in text
    assert "LS -3.00 ± 1.00 [-5.48, -0.52] ✓ |" in text
    assert "| one | - | - | 53.50 (best 53.50) (-1.50) LS +1.50 (1 seed) ? | - |" in text


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "tinyimagenet"])
def test_the_smoke_data_has_the_datasets_layout_and_classes(name, tmp_path):
    root = recipe.data_dir(name, tmp_path, smoke=True)
    info = datasets.load(name, root)
    record = datasets.record(name)
    assert info.num_classes == record.num_classes and len(info.train) == 20 * record.num_classes
    assert len(info.test) == 2 * record.num_classes
    assert tuple(info.train[0][0].shape) == (3, record.image_size, record.image_size)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_killed_recipe_continues_to_the_table_of_an_uninterrupted_one(tmp_path):
    script = "nasty_teacher/table1.sh"
    whole = smoke(script, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    out = tmp_path / "killed"
    proc = subprocess.Popen(["bash", str(ROOT / "recipes" / script), str(out)], cwd=ROOT, env=SMOKE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while not (out / "students" / "cnn").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)  # until the students' stage has begun
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the recipe ended before the kill"
    assert not (out / "table1.md").exists()
    again = smoke(script, out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[1/" in again.stdout and "train_teacher.py" not in again.stdout  # the teachers were not trained again
    assert (out / "table1.md").read_text() == (tmp_path / "whole" / "table1.md").read_text()


def test_a_rows_keys_read_a_column_as_another_in_its_cells_its_ls_students_and_the_baseline(tmp_path):
    for name, acc in [("scratch/resnet50", 40.0), ("ls/resnet50", 45.0), ("kd/resnet50", 50.0),
                      ("scratch/self", 0.0), ("ls/self", 0.0)]:
        summary(tmp_path / name / "s0", acc)
    layout = {"title": "t", "baseline": "base", "columns": [["self", "Teacher Self"]], "rows": [
        {"label": "base", "cells": "scratch/{column}", "keys": {"self": "resnet50"}},
        {"label": "kd", "cells": "kd/{column}", "ls": "ls/{column}", "keys": {"self": "resnet50"}}]}
    base, kd = (r["entries"][0] for r in recipe.build_table(layout, tmp_path, [0])["rows"])
    assert base["run"] == "scratch/resnet50" and base["ours"][0] == 40.0
    assert kd["vs_baseline"] == 10.0 and kd["vs_ls"]["mean"] == 5.0 and kd["outcome"] == "indicative"


def metrics(path, accs):
    summary(path, accs[-1])
    (path / "metrics.jsonl").write_text("".join(json.dumps({"epoch": i, "test_acc": a}) + "\n"
                                                for i, a in enumerate(accs)))


def test_a_figure_draws_a_layouts_rows_over_its_columns_or_its_runs_over_the_epochs(tmp_path):
    for seed, (a, b) in enumerate([(50.0, 60.0), (54.0, 64.0)]):
        metrics(tmp_path / "kd/tau1" / f"s{seed}", [10.0, a])
        metrics(tmp_path / "kd/tau4" / f"s{seed}", [20.0, 30.0, b])  # a longer run
        metrics(tmp_path / "ls" / f"s{seed}", [5.0, 40.0])
    (tmp_path / "fig.toml").write_text(
        'title = "t"\ncolumns = [["tau1", "1"], ["tau4", "4"]]\n[figure]\nx = [1, 4]\nlog = true\n'
        '[[rows]]\nlabel = "A: LS"\npanel = "A"\ncells = "ls"\npaper = ["-", "-"]\n'
        '[[rows]]\nlabel = "A: KD"\npanel = "A"\ncells = "kd/{column}"\npaper = [70.5, "-"]\n')
    args = recipe_figures.parse_args(["curve", str(tmp_path / "fig.toml"), "--out", str(tmp_path), "--seeds", "0,1"])
    recipe_figures.main(args)
    plotted = json.loads((tmp_path / "fig.plot.json").read_text())
    assert plotted["x"] == [1, 4]
    [(panel, [ls, kd])] = plotted["panels"]  # the panel's name left out of its lines' labels
    assert panel == "A" and ls[0] == "LS" and kd[0] == "KD"
    assert ls[1] == [[40.0, 0.0]] * 2 and kd[1][0][0] == 52.0 and kd[1][1][0] == 62.0
    assert kd[1][0][1] == pytest.approx(2 ** 1.5) and kd[2] == [70.5, None]
    with Image.open(tmp_path / "fig.png") as image:
        assert image.size == (1080, 600)  # one panel: 9 x 5 inches at 120 dpi

    recipe_figures.main(recipe_figures.parse_args(["history", str(args.layout), "--out", str(tmp_path), "--seeds",
                                                   "0,1"]))
    history = json.loads((tmp_path / "fig.plot.json").read_text())
    assert history["x"] == [1, 2, 3] and [p for p, _ in history["panels"]] == ["1", "4"]
    tau1_kd, tau4_kd = (lines[1][1] for _, lines in history["panels"])
    assert tau1_kd == [[10.0, 0.0], [52.0, pytest.approx(2 ** 1.5)], None]  # a gap where the runs ended
    assert tau4_kd[2][0] == 62.0
    with Image.open(tmp_path / "fig.png") as image:
        assert image.size == (1200, 600)  # two: 10 x 5

    (tmp_path / "fig.toml").write_text('title = "t"\ncolumns = [["tau1", "1"]]\n[[rows]]\nlabel = "a"\n'
                                       'cells = "ls"\n')
    with pytest.raises(UserError, match=r"a curve needs \[figure\] x, one number per column \(1"):
        recipe_figures.main(args)
