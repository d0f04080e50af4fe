"""Collect run summaries into the verdict table: is each teacher undistillable?

    python -m undistill.report runs/quickstart [more run dirs ...] [--csv table.csv] [--markdown table.md]

Teachers whose run directory holds `checkpoint.eval.json` (written by `python -m undistill.evaluate`) also get
their ECE and CMI at `--cmi-temperature`.

A teacher is undistillable against an attack when the student distilled from it does not beat the
label-smoothing (ls) student of the same architecture, trained on the same data without any teacher, beyond the
seeds' noise (undistill/verdict.py: cloned, undistillable, inconclusive, or indicative with one seed; void where the
teacher is not clearly better than the LS student). Each row says what the attack could read of the teacher:
black-box (its released logits) or white-box (gradients and internals too: the data-free attacks), so rows of the
two threat models are never mixed. Runs that differ only in --seed are averaged (mean ± std); the students are
compared with the LS students of the same seeds when all of those exist (a paired interval), else with all LS
students (Welch's interval).
"""
import argparse
import csv
import json
import re
import statistics
from pathlib import Path

from . import UserError, distributed
from . import verdict as stats

# What the table reads of a summary.json, checked so a damaged one is named, not a KeyError
SUMMARY_FIELDS = {"role": str, "method": str, "dataset": str, "arch": str, "last_acc": (int, float)}


def read_json(path, fields=None):
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read {path} as JSON ({e}): delete it, or rerun what wrote it") from None
    if not isinstance(value, dict) or any(not isinstance(value.get(k), t) for k, t in (fields or {}).items()):
        raise UserError(f"{path} is not a run summary (it needs {', '.join(fields or {})}): delete it, or rerun "
                        "the run with --resume")
    return value


def collect(roots):
    """Every summary.json below the given directories, with the run directory attached."""
    runs = []
    for root in roots:
        for path in sorted(Path(root).rglob("summary.json")):
            run = dict(read_json(path, SUMMARY_FIELDS), dir=str(path.parent.resolve()))
            measured = path.parent / "checkpoint.eval.json"
            if measured.is_file():
                run["eval"] = read_json(measured)
            runs.append(run)
    return runs


PATH_SETTINGS = {"adversary", "from", "teacher"}  # which run a model came from, not how it was made


def method_name(run):
    """The method and its settings, e.g. nasty(omega=0.04,tau=4.0): runs that differ only in seed share it."""
    # Paths say which run a model came from, and switches that are off (no_labels=False) add nothing.
    settings = {k: v for k, v in (run.get("settings") or {}).items() if k not in PATH_SETTINGS and v is not False}
    text = ",".join(f"{k}={'/'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in settings.items())
    return f"{run['method']}({text})" if text else run["method"]


def teacher_name(run):
    """e.g. `cmim(...) cnn`; a fine-tuned teacher also names its start, `cmim(...)+init=ce cnn`, so that it is
    not averaged with a teacher of the same settings trained from scratch."""
    weights = (run.get("args") or {}).get("weights")
    if weights:
        path = Path(weights)  # a run's checkpoint is named by its run directory, other files by their stem
        if path.name in ("checkpoint.pt", "best.pt"):
            # a recipe's cell keeps a run per seed (teachers/ce/s0): the cell names it
            path = path.parent.parent if re.fullmatch(r"s\d+", path.parent.name) else path.parent
            weights = f"+init={path.name}"
        else:
            weights = f"+init={path.stem}"
    return f"{method_name(run)}{weights or ''} {run['arch']}"


def seed(run):
    return (run.get("args") or {}).get("seed")


def mean_std(values):
    """(mean, std or None, n) of the values: the seeds of one setting."""
    values = list(values)
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None), len(values)


def fmt(stat, digits=2, sign=False, count=True):
    """`mean ± std (n=N)` of a mean_std, `mean` alone for one value, `-` for none; `sign`: +/- on the mean."""
    if stat is None:
        return "-"
    mean, std, n = stat
    text = f"{mean:{'+' if sign else ''}.{digits}f}"
    return text if std is None else f"{text} ± {std:.{digits}f}" + (f" (n={n})" if count else "")


def measured(teacher_runs, cmi_temperature):
    """Mean test ECE and CMI at the temperature over the teacher runs that were evaluated, or None."""
    evals = [t["eval"] for t in teacher_runs if "eval" in t]
    ece = [e["test"]["ece"] for e in evals if "test" in e]
    cmi = [e["cmi"][key] for e in evals for key in (e.get("cmi") or {}) if float(key) == cmi_temperature]
    return (statistics.mean(ece) if ece else None), (statistics.mean(cmi) if cmi else None)


def verdict_rows(runs, cmi_temperature=4.0):
    """One row per (teacher, attack, student architecture), accuracies averaged over seeds."""
    teachers = {r["dir"]: r for r in runs if r["role"] == "teacher"}
    baselines, ls_by_seed = {}, {}
    for r in runs:
        if r["role"] == "student" and r["method"] in ("ls", "scratch"):
            baselines.setdefault((r["dataset"], r["method"], r["arch"]), []).append(r["last_acc"])
            if r["method"] == "ls":
                ls_by_seed.setdefault((r["dataset"], r["arch"]), {}).setdefault(seed(r), []).append(r["last_acc"])
    groups, teacher_runs = {}, {}
    for r in runs:
        if r["role"] != "student" or "teacher" not in (r.get("settings") or {}):
            continue
        attacked = r["settings"]["teacher"]  # several teachers (an ensemble): the first is the one attacked
        attacked = attacked[0] if isinstance(attacked, list) else attacked
        teacher = teachers.get(str(Path(attacked).resolve().parent))
        if teacher is None:
            continue  # its teacher's run is not among the collected directories
        key = (r["dataset"], teacher_name(teacher), method_name(r), r["arch"], r.get("access") or "black-box")
        groups.setdefault(key, []).append((seed(r), r["last_acc"], r.get("best_acc", r["last_acc"])))
        teacher_runs.setdefault(key, {})[teacher["dir"]] = teacher
    ce_teachers = {}
    for t in teachers.values():
        if t["method"] == "ce":
            ce_teachers.setdefault((t["dataset"], t["arch"]), []).append(t["last_acc"])
    rows = []
    for (dataset, teacher, attack, arch, access), seeded in sorted(groups.items()):
        student, ls = mean_std([acc for _, acc, _ in seeded]), baselines.get((dataset, "ls", arch))
        t_runs = list(teacher_runs[(dataset, teacher, attack, arch, access)].values())
        t_acc = mean_std([t["last_acc"] for t in t_runs])
        # Against the LS students of the same seeds (the same data subsets and initializations) when they all
        # exist: a paired comparison, free of the spread between seeds that the students do not share.
        same_seeds = ls_by_seed.get((dataset, arch), {})
        vs_ls = room = None
        if ls and all(s is not None and s in same_seeds for s, _, _ in seeded):
            ls_of = {s: statistics.mean(same_seeds[s]) for s, _, _ in seeded}
            vs_ls = stats.interval(acc - ls_of[s] for s, acc, _ in seeded)
            ls, room = [ls_of[s] for s, _, _ in seeded], stats.headroom(t_acc[0], ls_of)
        elif ls:
            vs_ls, room = stats.unpaired([acc for _, acc, _ in seeded], ls), stats.headroom(t_acc[0], dict(
                enumerate(ls)))
        ece, cmi = measured(t_runs, cmi_temperature)
        ce = ce_teachers.get((dataset, teacher.split()[-1]))
        outcome = None if vs_ls is None else stats.VOID if stats.has_headroom(room) is False else vs_ls.outcome
        rows.append({
            "dataset": dataset, "teacher": teacher, "teacher_acc": t_acc,
            "teacher_vs_ce": t_acc[0] - statistics.mean(ce) if ce else None, "teacher_ece": ece, "teacher_cmi": cmi,
            "attack": attack, "access": access, "student": arch, "student_acc": student,
            "student_best": mean_std([best for _, _, best in seeded]), "ls_student_acc": mean_std(ls) if ls else None,
            "vs_ls": vs_ls and vs_ls.as_dict(), "headroom": room and room.as_dict(), "outcome": outcome,
        })
    return rows, {k: mean_std(v) for k, v in baselines.items()}


def markdown(rows, baselines):
    lines = ["| dataset | teacher | teacher acc | vs CE teacher | ECE | CMI | attack | access | student | student acc "
             "| best epoch | vs LS student | verdict |", "|" + "---|" * 13]
    for r in rows:
        verdict = {stats.UNDISTILLABLE: "**undistillable**", None: "? (no ls student)"}.get(r["outcome"], r["outcome"])
        ece, cmi = (("-" if v is None else f"{v:.4f}") for v in (r["teacher_ece"], r["teacher_cmi"]))
        vs_ls = "-" if r["vs_ls"] is None else stats.Interval.from_dict(r["vs_ls"]).text()
        lines.append(f"| {r['dataset']} | {r['teacher']} | {fmt(r['teacher_acc'])} | {signed(r['teacher_vs_ce'])} "
                     f"| {ece} | {cmi} | {r['attack']} | {r['access']} | {r['student']} | {fmt(r['student_acc'])} "
                     f"| {fmt(r['student_best'], count=False)} | {vs_ls} | {verdict} |")
    lines += ["", "Accuracies: last epoch (best epoch: the papers' convention, optimistic); the verdict reads the "
              f"last. vs LS student: mean ± std [{stats.LEVEL:.0%} interval] over seeds (undistill/verdict.py); void: "
              "the teacher is not clearly better than the LS student."]
    if baselines:
        lines.append("")
        lines.append("Baselines (no teacher): " + "; ".join(
            f"{method} {arch} on {dataset}: {fmt(stat)}"
            for (dataset, method, arch), stat in sorted(baselines.items())))
    return "\n".join(lines)


def signed(x):
    return "-" if x is None else f"{x:+.2f}"


def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "teacher", "teacher_acc", "teacher_acc_std", "teacher_vs_ce", "teacher_ece",
                    "teacher_cmi", "attack", "access", "student", "student_acc", "student_acc_std", "student_best",
                    "seeds", "ls_student_acc", "vs_ls", "vs_ls_low", "vs_ls_high", "verdict"])
        for r in rows:
            s, t, d = r["student_acc"], r["teacher_acc"], r["vs_ls"] or {}
            w.writerow([r["dataset"], r["teacher"], f"{t[0]:.4f}", t[1] or "", r["teacher_vs_ce"], r["teacher_ece"],
                        r["teacher_cmi"], r["attack"], r["access"], r["student"], f"{s[0]:.4f}", s[1] or "",
                        f"{r['student_best'][0]:.4f}", s[2], r["ls_student_acc"][0] if r["ls_student_acc"] else "",
                        d.get("mean", ""), d.get("low", ""), d.get("high", ""), r["outcome"] or ""])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="directories searched for summary.json files")
    p.add_argument("--csv", type=Path, help="also write the table as CSV")
    p.add_argument("--markdown", type=Path, help="also write the table as markdown")
    p.add_argument("--cmi-temperature", type=float, default=4.0, help="which temperature's CMI the table shows")
    return p.parse_args(argv)


def main(args):
    runs = collect(args.runs)
    if not runs:
        raise UserError(f"no summary.json under {', '.join(map(str, args.runs))}: point at run directories")
    rows, baselines = verdict_rows(runs, args.cmi_temperature)
    table = markdown(rows, baselines)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    if args.csv:
        write_csv(rows, args.csv)


def cli(argv: list[str] | None = None) -> None:
    """The command line (`python -m undistill.report`, `undistill report`), with `argv` or sys.argv's."""
    distributed.run(main, parse_args(argv))


if __name__ == "__main__":
    cli()
