"""The verdict table: pairing students with their teachers, averaging seeds, and the undistillable flip."""
import json

import pytest

from undistill import report


def write_run(root, name, role, method, acc, arch="cnn", weights=None, seed=None, **settings):
    run = root / name
    run.mkdir(parents=True)
    summary = {"role": role, "method": method, "arch": arch, "dataset": "cifar10", "last_acc": acc,
               "best_acc": acc, "settings": settings, "args": {"weights": weights, "seed": seed}}
    (run / "summary.json").write_text(json.dumps(summary))
    return run / "checkpoint.pt"


def table(tmp_path, kd_acc):
    ce = write_run(tmp_path, "s0/teacher-ce", "teacher", "ce", 90.0)
    write_run(tmp_path, "s0/student-ls", "student", "ls", 80.0, smoothing=0.1)
    write_run(tmp_path, "s1/student-ls", "student", "ls", 82.0, smoothing=0.1)
    write_run(tmp_path, "s0/student-kd", "student", "kd", kd_acc, teacher=str(ce), alpha=0.9, tau=4.0)
    rows, baselines = report.verdict_rows(report.collect([tmp_path]))
    return rows, baselines


@pytest.mark.parametrize("kd_acc, undistillable", [(80.5, True), (81.0, True), (81.01, False), (85.0, False)])
def test_verdict_flips_at_the_ls_student_accuracy(tmp_path, kd_acc, undistillable):
    rows, baselines = table(tmp_path, kd_acc)  # LS student mean over two seeds: 81.0
    [row] = rows
    assert row["undistillable"] is undistillable
    assert row["student_vs_ls"] == pytest.approx(kd_acc - 81.0)
    assert row["teacher"] == "ce cnn" and row["teacher_vs_ce"] == 0
    assert row["attack"] == "kd(alpha=0.9,tau=4.0)"


def test_seeds_are_averaged_with_their_spread(tmp_path):
    _, baselines = table(tmp_path, 70.0)
    mean, std, n = baselines[("cifar10", "ls", "cnn")]
    assert (mean, n) == (81.0, 2) and std == pytest.approx(2 ** 0.5)
    assert report.fmt((mean, std, n)) == "81.00 ± 1.41 (n=2)"


def test_methods_are_named_by_their_settings_and_markdown_shows_the_verdict(tmp_path):
    write_run(tmp_path, "ce", "teacher", "ce", 90.0)
    stingy = write_run(tmp_path, "stingy", "teacher", "stingy", 90.0, variant="top", k=2, ratio=0.2)
    write_run(tmp_path, "ls", "student", "ls", 80.0)
    write_run(tmp_path, "kd", "student", "kd", 60.0, teacher=str(stingy))
    rows, baselines = report.verdict_rows(report.collect([tmp_path]))
    assert [r["teacher"] for r in rows] == ["stingy(variant=top,k=2,ratio=0.2) cnn"]
    text = report.markdown(rows, baselines)
    assert ("| cifar10 | stingy(variant=top,k=2,ratio=0.2) cnn | 90.00 | +0.00 | - | - | kd | black-box | cnn "
            "| 60.00 | -20.00 | **yes** |") in text
    report.write_csv(rows, tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text().splitlines()[1].endswith(",True")


def test_evaluated_teachers_show_ece_and_cmi_at_the_chosen_temperature(tmp_path):
    ce = write_run(tmp_path, "ce", "teacher", "ce", 90.0)
    (ce.parent / "checkpoint.eval.json").write_text(json.dumps(
        {"test": {"ece": 0.05}, "cmi": {"1": 0.9, "4": 0.3}}))
    write_run(tmp_path, "ls", "student", "ls", 80.0)
    write_run(tmp_path, "kd", "student", "kd", 85.0, teacher=str(ce))
    [row], _ = report.verdict_rows(report.collect([tmp_path]), cmi_temperature=4.0)
    assert (row["teacher_ece"], row["teacher_cmi"]) == (0.05, 0.3)


def test_a_fine_tuned_teacher_gets_its_own_row(tmp_path):
    ce = write_run(tmp_path, "teachers/ce", "teacher", "ce", 90.0)
    scratch = write_run(tmp_path, "teachers/cmim", "teacher", "cmim", 89.0, cmi_weight=8.0)
    tuned = write_run(tmp_path, "teachers/cmim-ft", "teacher", "cmim", 87.0, weights=str(ce), cmi_weight=8.0)
    write_run(tmp_path, "ls", "student", "ls", 80.0)
    write_run(tmp_path, "kd-scratch", "student", "kd", 81.0, teacher=str(scratch))
    write_run(tmp_path, "kd-tuned", "student", "kd", 84.0, teacher=str(tuned))
    rows, _ = report.verdict_rows(report.collect([tmp_path]))
    assert {r["teacher"]: r["student_acc"][0] for r in rows} == {
        "cmim(cmi_weight=8.0) cnn": 81.0, "cmim(cmi_weight=8.0)+init=ce cnn": 84.0}
    assert {r["teacher"]: r["teacher_vs_ce"] for r in rows} == {
        "cmim(cmi_weight=8.0) cnn": -1.0, "cmim(cmi_weight=8.0)+init=ce cnn": -3.0}


def test_students_are_compared_with_the_ls_students_of_their_own_seeds(tmp_path):
    ce = write_run(tmp_path, "ce", "teacher", "ce", 90.0)
    for seed, acc in enumerate([80.0, 82.0, 90.0]):
        write_run(tmp_path, f"s{seed}/ls", "student", "ls", acc, seed=seed)
    for seed in (0, 1):
        write_run(tmp_path, f"s{seed}/kd", "student", "kd", 81.5, seed=seed, teacher=str(ce))
    [row], baselines = report.verdict_rows(report.collect([tmp_path]))
    # Seeds 0 and 1 face LS students averaging 81.0, not the 84.0 of all three seeds.
    assert row["student_vs_ls"] == pytest.approx(0.5) and row["undistillable"] is False
    assert row["ls_student_acc"][0] == 81.0 and baselines[("cifar10", "ls", "cnn")][0] == 84.0
    write_run(tmp_path, "s5/kd", "student", "kd", 81.5, seed=5, teacher=str(ce))  # no LS student of seed 5
    [row], _ = report.verdict_rows(report.collect([tmp_path]))
    assert row["student_vs_ls"] == pytest.approx(81.5 - 84.0) and row["undistillable"] is True
