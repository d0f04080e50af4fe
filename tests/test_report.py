"""The verdict table: pairing students with their teachers, averaging seeds, and the verdict with its interval."""
import json

import pytest

from undistill import report


def write_run(root, name, role, method, acc, arch="cnn", weights=None, seed=None, best=None, **settings):
    run = root / name
    run.mkdir(parents=True)
    summary = {"role": role, "method": method, "arch": arch, "dataset": "cifar10", "last_acc": acc,
               "best_acc": acc if best is None else best, "settings": settings, "args": {"weights": weights,
                                                                                       "seed": seed}}
    (run / "summary.json").write_text(json.dumps(summary))
    return run / "checkpoint.pt"


def table(tmp_path, kd_accs, ls_accs=(80.0, 81.0, 82.0), teacher=90.0):
    ce = write_run(tmp_path, "teacher-ce", "teacher", "ce", teacher)
    for seed, acc in enumerate(ls_accs):
        write_run(tmp_path, f"s{seed}/student-ls", "student", "ls", acc, seed=seed, smoothing=0.1)
    for seed, acc in enumerate(kd_accs):
        write_run(tmp_path, f"s{seed}/student-kd", "student", "kd", acc, seed=seed, best=acc + 1, teacher=str(ce),
                  alpha=0.9, tau=4.0)
    return report.verdict_rows(report.collect([tmp_path]))


@pytest.mark.parametrize("kd_accs, outcome", [
    ((80.0, 81.0, 82.0), "undistillable"),   # a tie with the LS students of the same seeds: [0, 0]
    ((82.0, 83.0, 84.0), "cloned"),          # +2 on every seed
    ((81.0, 80.0, 82.5), "inconclusive"),    # d = +1, -1, +0.5: a positive mean inside the noise
    ((78.0, 79.5, 79.0), "undistillable"),   # d = -2, -1.5, -3
    ((85.0,), "indicative")])                # one seed: no interval
def test_the_verdict_is_the_paired_interval_to_the_ls_students(tmp_path, kd_accs, outcome):
    [row], _ = table(tmp_path, kd_accs)
    diffs = [k - ls for k, ls in zip(kd_accs, (80.0, 81.0, 82.0))]
    assert row["outcome"] == outcome and row["vs_ls"]["mean"] == pytest.approx(sum(diffs) / len(diffs))
    assert row["student_best"][0] == pytest.approx(sum(kd_accs) / len(kd_accs) + 1)  # the best epoch beside
    assert row["teacher"] == "ce cnn" and row["teacher_vs_ce"] == 0
    assert row["attack"] == "kd(alpha=0.9,tau=4.0)"


def test_a_teacher_no_better_than_the_ls_students_voids_the_verdict(tmp_path):
    [row], _ = table(tmp_path, (84.0, 85.0, 86.0), teacher=81.5)  # teacher - LS = +1.5, +0.5, -0.5
    assert row["vs_ls"]["outcome"] == "cloned" and row["outcome"] == "void"
    assert row["headroom"]["low"] < 0 < row["headroom"]["high"]


def test_seeds_are_averaged_with_their_spread(tmp_path):
    _, baselines = table(tmp_path, (70.0,), ls_accs=(80.0, 82.0))
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
            "| 60.00 | 60.00 | -20.00 (1 seed) | indicative |") in text
    report.write_csv(rows, tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text().splitlines()[1].endswith(",-20.0,,,indicative")


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


def test_a_teacher_fine_tuned_from_a_recipes_cell_is_named_by_the_cell_not_its_seed(tmp_path):
    ce = write_run(tmp_path, "teachers/ce/s0", "teacher", "ce", 90.0)
    tuned = write_run(tmp_path, "teachers/cmim/s0", "teacher", "cmim", 87.0, weights=str(ce), cmi_weight=8.0)
    write_run(tmp_path, "students/ls/s0", "student", "ls", 80.0)
    write_run(tmp_path, "students/kd/s0", "student", "kd", 84.0, teacher=str(tuned))
    [row], _ = report.verdict_rows(report.collect([tmp_path]))
    assert row["teacher"] == "cmim(cmi_weight=8.0)+init=ce cnn"


def test_students_are_compared_with_the_ls_students_of_their_own_seeds(tmp_path):
    ce = write_run(tmp_path, "ce", "teacher", "ce", 99.0)
    for seed, acc in enumerate([80.0, 82.0, 90.0]):
        write_run(tmp_path, f"s{seed}/ls", "student", "ls", acc, seed=seed)
    for seed in (0, 1):
        write_run(tmp_path, f"s{seed}/kd", "student", "kd", 81.5, seed=seed, teacher=str(ce))
    [row], baselines = report.verdict_rows(report.collect([tmp_path]))
    # Seeds 0 and 1 face LS students averaging 81.0, not the 84.0 of all three seeds.
    assert row["vs_ls"]["mean"] == pytest.approx(0.5) and row["outcome"] == "inconclusive"
    assert row["ls_student_acc"][0] == 81.0 and baselines[("cifar10", "ls", "cnn")][0] == 84.0
    write_run(tmp_path, "s5/kd", "student", "kd", 81.5, seed=5, teacher=str(ce))  # no LS student of seed 5
    [row], _ = report.verdict_rows(report.collect([tmp_path]))
    assert row["vs_ls"]["mean"] == pytest.approx(81.5 - 84.0) and row["outcome"] == "inconclusive"  # Welch's
