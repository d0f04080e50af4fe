"""A short Table 1 of the Nasty Teacher paper (Ma et al., ICLR 2021): teachers trained with CE, nasty (omega 0.04,
tau_A 4) and CMIM, and the stingy release of the CE one; students from the labels alone (scratch, LS) and distilled
(KD) from each teacher; the verdict table of undistill.report, and the paper's CIFAR-10 numbers beside ours. Part of
bench/gpu_check.sh; writes table1.md and table1.json to --out after every run, so a run cut short still reports
the runs it finished (the paper's comparison, CE and nasty teachers and their students, comes first).

    python bench/gpu_table1.py --out DIR --teacher-arch resnet18 --student-arch resnetc20 -- \\
        --dataset cifar10 --data-dir data/cifar10 --epochs 5 --milestones 2,3 --loader gpu

The options after -- are every run's. Each run goes through its entry script's main() as a user's would, all in
this one process on one loading of the data; the run directories are in --out/table1/.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import distill_student  # noqa: E402
import train_teacher  # noqa: E402
from undistill import datasets, distributed, report, runs  # noqa: E402

# Ma et al., ICLR 2021, Table 1 (CIFAR-10, 200 epochs): a ResNet-18 teacher and a ResNetC-20 student
PAPER = {"teacher-ce": 95.13, "teacher-nasty": 94.56, "scratch": 92.28, "kd-from-ce": 92.49, "kd-from-nasty": 88.01}
ROWS = {"teacher-ce": "teacher, normal (CE)", "teacher-nasty": "teacher, nasty", "scratch": "student without a teacher",
        "kd-from-ce": "student, KD from the normal teacher", "kd-from-nasty": "student, KD from the nasty teacher"}


def plan(teacher_arch, student_arch, runs_dir):
    """(run name, script, options) in the order they run: each teacher before the students it teaches."""
    def teacher(name, *argv):
        return f"teacher-{name}", train_teacher, ["--defense", name, "--arch", teacher_arch, *argv]

    def student(name, *argv):
        return name, distill_student, ["--attack", name.split("-")[0], "--arch", student_arch, *argv]

    def of(name):
        return str(runs_dir / f"teacher-{name}" / "checkpoint.pt")
    return [teacher("ce"), teacher("nasty", "--adversary", of("ce"), "--omega", "0.04", "--tau", "4"),
            student("scratch"), student("ls"), student("kd-from-ce", "--teacher", of("ce")),
            student("kd-from-nasty", "--teacher", of("nasty")),
            teacher("cmim"), student("kd-from-cmim", "--teacher", of("cmim")),
            ("teacher-stingy", train_teacher, ["--defense", "stingy", "--from", of("ce")]),
            student("kd-from-stingy", "--teacher", of("stingy"))]


def write_tables(out, runs_dir, about, archs):
    """The verdict table of the runs finished so far, and the paper's numbers beside ours."""
    found = report.collect([runs_dir]) if runs_dir.is_dir() else []
    rows, baselines = report.verdict_rows(found)
    ours = {Path(r["dir"]).name: r["last_acc"] for r in found}
    side = [f"| model | the paper (resnet18 teachers, resnetc20 students) | here ({archs[0]} teachers, {archs[1]} "
            "students) |", "|---|---|---|",
            *(f"| {ROWS[k]} | {v:.2f} | {ours[k]:.2f} |" if k in ours else f"| {ROWS[k]} | {v:.2f} | - |"
              for k, v in PAPER.items())]
    text = [about, "", report.markdown(rows, baselines), "",
            "Beside the paper (Ma et al., ICLR 2021, Table 1: CIFAR-10, 200 epochs; here the shortened schedule, "
            "last-epoch test accuracy):", "", *side]
    runs.write_text(out / "table1.md", "\n".join(text) + "\n")
    runs.write_json(out / "table1.json", {
        "about": about, "rows": rows,
        "baselines": [{"dataset": d, "method": m, "arch": a, "acc": stat[0], "std": stat[1], "n": stat[2]}
                      for (d, m, a), stat in baselines.items()],
        "paper": {k: {"model": ROWS[k], "paper": v, "here": ours.get(k)} for k, v in PAPER.items()},
        "finished": sorted(ours)})
    return "\n".join(text)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--teacher-arch", default="resnet18")
    p.add_argument("--student-arch", default="resnetc20")
    p.add_argument("--test-subset", type=float, help="images per class (or a fraction) of the test split to "
                   "evaluate on (default: all)")
    p.add_argument("options", nargs=argparse.REMAINDER, help="-- then every run's options")
    args = p.parse_args()
    common = args.options[1:] if args.options[:1] == ["--"] else args.options
    given = train_teacher.parse_args(common)  # the data options, read as the runs will read them
    info = datasets.load(given.dataset, given.data_dir, given.download, given.subset, given.seed, given.ffcv_dir)
    if args.test_subset is not None:
        info = datasets.DataInfo(info.record, info.train, datasets.take_subset(info.test, args.test_subset, 0))
    runs_dir, archs = args.out / "table1", (args.teacher_arch, args.student_arch)
    about = (f"Table 1, shortened: {given.dataset}, epochs: {given.epochs or 'the default'}, "
             f"{len(info.train)} training and {len(info.test)} test images, teachers {args.teacher_arch}, "
             f"students {args.student_arch}")
    for name, script, argv in plan(args.teacher_arch, args.student_arch, runs_dir):
        script.main(script.parse_args([*common, *argv, "--output", str(runs_dir / name), "--overwrite", "--quiet"]),
                    info)
        write_tables(args.out, runs_dir, about, archs)
    print(write_tables(args.out, runs_dir, about, archs))


if __name__ == "__main__":
    distributed.run(lambda _: main(), None)  # a UserError (a bad --data-dir, an option) as one line
