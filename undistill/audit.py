"""Can this released model be cloned by distillation? One command plans and runs every attack against a teacher
checkpoint, and answers with the verdict against the label-smoothing student, the tables and the figures.

    python -m undistill.audit runs/quickstart/teacher-nasty/checkpoint.pt --budget quick
    python -m undistill.audit T.pt --data-dir data/cifar10 --reference CE.pt --release full topk label --jobs 4

Each cell (a student trained by one attack, one seed, against one release of the teacher) is its own run
directory under --output: a finished cell is skipped and an unfinished one resumed, so running the same command
again after an interruption continues. The cells run as `distill_student.py` processes, --jobs at a time (each
under torchrun with --nproc-per-cell), and the report is written at the end: report.md, report.json, the
figures (PNG) and report.html (report.md as one page, with its figures). Undistillable means the student
distilled from the teacher does not beat the LS student of the same architecture trained on the same data without
the teacher.
"""
import argparse
import hashlib
import html
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import UserError, cells, checkpoint, datasets, distributed, launch, metrics, models, runs
from .report import fmt, mean_std, read_json

ROOT = Path(__file__).resolve().parents[1]
KD_TEMPERATURES = (1.0, 2.0, 4.0, 8.0, 20.0)  # the attacker's sweep, with the dataset's own KD temperature added
BATCH = 128  # the scripts' default batch; a cell with fewer than 4 batches of images takes a quarter of them


@dataclass(frozen=True)
class Budget:
    """How much an audit runs: seeds, the share of the dataset's schedule each student trains, the attacker's
    share of the training split, and whether the data-free (white-box) attacks run."""
    seeds: tuple
    schedule: float
    min_epochs: int
    share: float
    data_free: bool = False


BUDGETS = {
    "quick": Budget(seeds=(0,), schedule=0.25, min_epochs=15, share=0.1),
    "standard": Budget(seeds=(0, 1), schedule=1.0, min_epochs=15, share=1.0),
    "full": Budget(seeds=(0, 1, 2), schedule=1.0, min_epochs=15, share=1.0, data_free=True),
}


@dataclass(frozen=True)
class Cell:
    """One student: `attack` with `options`, trained on `share` of the training split, against `release` (None:
    a baseline without teacher)."""
    name: str
    attack: str
    options: tuple = ()
    share: float = 1.0
    release: str | None = None
    temperature: float | None = None  # the KD temperature, for the temperature figure
    white_box: bool = False

    def directory(self, out, arch, seed):
        return out / (self.release or "baselines") / arch / self.name / f"s{seed}"


@dataclass
class Plan:
    teacher: Path
    out: Path
    record: datasets.DatasetRecord
    releases: dict  # release spec -> checkpoint path of the released teacher
    archs: list
    seeds: list
    epochs: int
    milestones: str
    train_size: int = 0  # images in the training split (0: unknown, the scripts' batch for every cell)
    cells: list = field(default_factory=list)

    def units(self):
        """(cell, student architecture, seed, run directory) of every student the audit trains."""
        for cell in self.cells:
            for arch in self.archs:
                for seed in self.seeds:
                    yield cell, arch, seed, cell.directory(self.out, arch, seed)

    def batch(self, cell):
        """The scripts' batch, or a quarter of a small share (a limited-data cell must still take steps)."""
        images = round(self.train_size * cell.share)
        return BATCH if not self.train_size or images >= 4 * BATCH else max(1, images // 4)

    def baseline(self, attack, share):
        return next((c for c in self.cells if c.attack == attack and c.share == share), None)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m undistill.audit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("teacher", type=Path, help="the trained teacher's checkpoint (train_teacher.py)")
    p.add_argument("--dataset", help="default: the checkpoint's")
    p.add_argument("--data-dir", type=Path, help="dataset root (not needed for the built-in mnist5k)")
    p.add_argument("--reference", type=Path, help="a normal (CE) teacher: the owner's cost is measured against it")
    p.add_argument("--student-arch", nargs="+", help="the attacker's architectures (default: the dataset's)")
    p.add_argument("--budget", default="quick", choices=sorted(BUDGETS),
                   help="quick: 1 seed, a quarter of the schedule, 10%% of the data; standard: 2 seeds, the full "
                        "schedule and data; full: 3 seeds and the data-free attacks")
    p.add_argument("--seeds", help="comma-separated seeds (default: the budget's)")
    p.add_argument("--share", type=float, help="the attacker's share of the training split, in (0, 1] (default: "
                   "the budget's); the limited-data cells take 10%% and 50%% of it")
    p.add_argument("--epochs", type=int, help="student epochs (default: the budget's share of the dataset's "
                   "schedule; the lr milestones scale with it)")
    p.add_argument("--release", nargs="+", default=["full"],
                   help="what the owner's API returns, each audited: full (the checkpoint as given), stingy, and "
                        "the release defenses of train_teacher.py; NAME:OPTION=VALUE sets an option, e.g. "
                        "rounded:decimals=2")
    p.add_argument("--jobs", type=int, default=1, help="cells run at once (processes; the CPU threads are shared)")
    p.add_argument("--nproc-per-cell", type=int, default=1, help="run each cell under torchrun with this many "
                   "processes (GPUs)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--output", type=Path, help="default: runs/audit-<teacher's run directory name>")
    p.add_argument("--attacks", nargs="+", metavar="CELL", help="run only these attack cells (names as the plan "
                   "prints them, e.g. kd-t4 htc), with the baselines they are judged against")
    p.add_argument("--overwrite", action="store_true", help="start again where --output holds an audit of another "
                   "teacher or schedule (its runs are deleted)")
    p.add_argument("--plan-only", action="store_true", help="print the plan and its estimated time, run nothing")
    launch.add_arguments(p, array_seeds=False)
    return p.parse_args(argv)


# ---- the plan

def check(args, teacher):
    """Every option, before anything runs or is written."""
    if args.slurm or args.slurm_local:
        launch.check(args)
    if args.jobs < 1 or args.nproc_per_cell < 1:
        raise UserError("--jobs and --nproc-per-cell must be at least 1")
    if args.share is not None and not 0 < args.share <= 1:
        raise UserError(f"--share {args.share}: give a fraction in (0, 1]")
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs {args.epochs}: give at least 1")
    if teacher["role"] != "teacher":
        raise UserError(f"{args.teacher} is a {teacher['role']}'s checkpoint: audit a teacher")
    if teacher.get("release") and any(spec != "full" for spec in args.release):
        raise UserError(f"{args.teacher} is already a {teacher['release']['name']} release: audit it with "
                        "--release full, or give the trained teacher it was made from")


def seeds_of(args, budget):
    if args.seeds is None:
        return list(budget.seeds)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise UserError(f"--seeds {args.seeds!r}: give comma-separated integers such as 0,1,2") from None
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {args.seeds}: a seed appears twice")
    return seeds


def schedule(record, budget, epochs):
    """(epochs, milestones): the dataset's schedule, shortened to the budget's share (milestones scale with it)."""
    full = record.schedule.epochs
    epochs = epochs or max(budget.min_epochs, math.ceil(budget.schedule * full))
    scaled = [max(1, round(int(m) * epochs / full)) for m in record.schedule.milestones.split(",") if m]
    return epochs, ",".join(str(m) for m in sorted(set(scaled)) if m < epochs)


def cells_for(release, record, budget, share, arch_has_stages):
    """The attacks an audit runs against one release: KD over the temperature grid, HTC, DKD, KD without labels,
    KD on less data, the skeptical student where the architecture has stages, the data-free attacks (full)."""
    tau = record.papers.get("kd", {}).get("tau", 4.0)
    cells = [Cell(f"kd-t{t:g}", "kd", ("--tau", f"{t:g}"), share, release, t)
             for t in sorted({*KD_TEMPERATURES, tau})]
    cells += [Cell("htc", "htc", (), share, release), Cell("dkd", "dkd", (), share, release),
              Cell(f"kd-t{tau:g}-no-labels", "kd", ("--tau", f"{tau:g}", "--no-labels"), share, release)]
    cells += [Cell(f"kd-t{tau:g}-share{s:g}", "kd", ("--tau", f"{tau:g}"), s, release) for s in limited(share)]
    if arch_has_stages:
        cells.append(Cell("skeptical", "skeptical", (), share, release))
    if budget.data_free:  # no training image: judged against the LS student of the audit's share
        cells += [Cell("dafl", "dafl", (), share, release, white_box=True),
                  Cell("deepinversion", "deepinversion", (), share, release, white_box=True)]
    return cells


def baselines(share):
    """The students without teacher, on every share an attack trains on: LS (the verdict's) and scratch."""
    return [Cell(f"{name}-share{s:g}" if s != share else name, name, (), s)
            for s in (share, *limited(share)) for name in ("ls", "scratch")]


def limited(share):
    """The limited-data settings: 10% and 50% of the attacker's share (rounded: they name cells and runs)."""
    return [round(share * f, 6) for f in (0.1, 0.5)]


def make_plan(args):
    teacher = checkpoint.load(args.teacher)
    check(args, teacher)
    record = datasets.record(args.dataset or teacher["dataset"])
    budget = BUDGETS[args.budget]
    share = args.share or budget.share
    epochs, milestones = schedule(record, budget, args.epochs)
    archs = args.student_arch or [record.arch]
    out = args.output or Path("runs") / f"audit-{args.teacher.resolve().parent.name}"
    releases = {}
    for spec in args.release:
        name = spec.split(":")[0]
        releases[spec] = args.teacher if name == "full" else out / "releases" / spec.replace(":", "_") / \
            "checkpoint.pt"
    plan = Plan(args.teacher, out, record, releases, archs, seeds_of(args, budget), epochs, milestones)
    attacks = [c for spec in releases for c in cells_for(spec, record, budget, share,
                                                          all(has_stages(a) for a in archs))]
    if args.attacks:
        unknown = sorted(set(args.attacks) - {c.name for c in attacks})
        if unknown:
            raise UserError(f"--attacks {unknown[0]}: not a cell of this plan; choose among "
                            f"{', '.join(dict.fromkeys(c.name for c in attacks))}")
        attacks = [c for c in attacks if c.name in args.attacks]
    shares = {c.share for c in attacks}
    plan.cells = [c for c in baselines(share) if c.share in shares] + attacks
    return plan


def has_stages(arch):
    return hasattr(models.build(arch, 10), "features")


# ---- running the cells

def release_command(spec, plan, path, args):
    """train_teacher.py writing the released checkpoint of one release spec (NAME[:OPTION=VALUE...]); it measures
    the release on the test split, so it reads the data as the students do."""
    name, *settings = spec.split(":")
    options = [part for setting in settings for part in (f"--{setting.partition('=')[0]}",
                                                          setting.partition("=")[2])]
    return ["train_teacher.py", "--defense", name, "--from", str(plan.teacher), "--dataset", plan.record.name,
            *options, "--device", args.device, "--output", str(path.parent), *data_option(args)]


def run_of(cell, arch, seed, plan, args, out):
    """The student of one cell, architecture and seed, as an undistill.cells.Cell."""
    command = ["distill_student.py", "--attack", cell.attack, *cell.options, "--dataset", plan.record.name,
               "--arch", arch, "--seed", str(seed), "--epochs", str(plan.epochs), "--milestones", plan.milestones,
               "--device", args.device, "--quiet", "--output", str(out)]
    if cell.release is not None:
        command += ["--teacher", str(plan.releases[cell.release])]
    if cell.attack not in ("dafl", "deepinversion"):
        command += ["--subset", f"{cell.share:g}"]
        if plan.batch(cell) != BATCH:
            command += ["--batch-size", str(plan.batch(cell))]
    return cells.Cell(tuple(command + data_option(args)), out, plan.epochs)


def data_option(args):
    return ["--data-dir", str(args.data_dir)] if args.data_dir else []


def measured_step(plan, device):
    """Seconds of one student training step with a teacher forward, measured here (the plan's estimate)."""
    device = torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
    record, batch = plan.record, 128
    teacher, _ = checkpoint.load_classifier(plan.teacher)
    student = models.Classifier(models.build(plan.archs[0], record.num_classes), record.mean, record.std)
    teacher.to(device), student.to(device)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01)
    x = torch.randint(0, 256, (batch, 3, record.image_size, record.image_size), dtype=torch.uint8, device=device)
    y = torch.randint(0, record.num_classes, (batch,), device=device)
    times = []
    for _ in range(4):
        began = time.perf_counter()
        with torch.no_grad():
            teacher(x)
        loss = torch.nn.functional.cross_entropy(student(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    return statistics.median(times[1:])  # the first pays for allocation and kernel selection


def measured_start():
    """Seconds a cell's process takes before its first step (Python, torch and the entry script imported),
    measured here."""
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import distill_student"], cwd=cells.ROOT, check=True)
    return time.perf_counter() - began


def estimate(plan, step_s, start_s, args, info):
    """Seconds for the whole audit on this machine: every cell still to run, its process start and every step,
    and its evaluation (a forward pass, about a third of a training step). A white-box cell also synthesizes its
    images: counted as four times the steps, a rough allowance."""
    total, test_steps = 0.0, math.ceil(len(info.test) / 128)
    for cell, _, _, out in plan.units():
        if cells.state(out, plan.epochs) != "done":
            total += start_s
            steps = max(1, round(len(info.train) * cell.share) // plan.batch(cell))
            total += plan.epochs * (steps + test_steps / 3) * step_s * (4 if cell.white_box else 1)
    return total / (args.jobs * args.nproc_per_cell)


def identity(plan):
    """What the runs under --output were trained for: a cell of another teacher or schedule is not this audit's."""
    return {"teacher": str(plan.teacher), "teacher_sha256": hashlib.sha256(plan.teacher.read_bytes()).hexdigest(),
            "dataset": plan.record.name, "epochs": plan.epochs, "milestones": plan.milestones}


def claim(plan, args):
    """Mark --output as this audit's (audit.json), refusing one that holds another audit unless --overwrite."""
    marker, ours = plan.out / "audit.json", identity(plan)
    if plan.out.exists() and not plan.out.is_dir():
        raise UserError(f"--output {plan.out} is a file, not a directory: choose another --output")
    if marker.is_file():
        theirs = read_json(marker)  # a damaged one: one line naming it
        different = next((k for k in ours if theirs.get(k) != ours[k]), None)
        if different is None:
            return
        if not args.overwrite:
            raise UserError(f"{plan.out} holds an audit with another {different} ({theirs.get(different)}): "
                            "continue it with its own teacher and options, or start again with --overwrite")
        shutil.rmtree(plan.out)
    elif plan.out.is_dir() and any(plan.out.iterdir()):
        raise UserError(f"--output {plan.out} holds files that are not an audit: choose another --output")
    plan.out.mkdir(parents=True, exist_ok=True)
    runs.write_json(marker, ours)


def run(plan, args):
    """Write the releases, then every unfinished cell (undistill.cells); True once all have run."""
    out = plan.out
    claim(plan, args)
    for spec, path in plan.releases.items():
        if path != plan.teacher and not (path.parent / "summary.json").is_file():
            if cells.execute(release_command(spec, plan, path, args) + ["--overwrite"], out / "logs" / "releases.log"):
                raise UserError(f"the {spec} release failed: see {out / 'logs' / 'releases.log'}")
    todo = [run_of(cell, arch, seed, plan, args, d) for cell, arch, seed, d in plan.units()]
    if args.slurm or args.slurm_local:
        if not cells.submit(todo, args, f"audit-{plan.record.name}", args.job_dir or plan.out / "slurm"):
            print("submitted the cells as one array: when they have finished, the same command writes the report",
                  flush=True)
            return False
        return True
    cells.run(todo, out, "audit", args.jobs, args.nproc_per_cell)
    return True


# ---- the report

def student_logits(path, loader, device):
    model, _ = checkpoint.load_classifier(path)
    return logits_of(model.to(device), loader, device)


@torch.no_grad()
def logits_of(model, loader, device):
    return torch.cat([model(x.to(device)).float().cpu() for x, _ in loader])


def paired(values, baseline):
    """mean and std over seeds of value - baseline (the same seed's), or of the value against the baseline mean
    where a seed has no baseline."""
    return mean_std(v - baseline.get(s, statistics.mean(baseline.values())) for s, v in values.items())


def measure(plan, args, info):
    """Everything the report says, recomputed from the run summaries and the checkpoints on the test split."""
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    loader = torch.utils.data.DataLoader(info.test, batch_size=256)
    labels = torch.cat([y for _, y in loader])
    owner, _ = checkpoint.load_classifier(plan.teacher)
    z_teacher = logits_of(owner.to(device), loader, device)
    tau = plan.record.papers.get("kd", {}).get("tau", 4.0)
    report = {"teacher": str(plan.teacher), "dataset": plan.record.name, "budget": args.budget,
              "seeds": plan.seeds, "epochs": plan.epochs, "tau": tau, "releases": {}, "cells": []}
    z_reference = None
    if args.reference:
        reference, _ = checkpoint.load_classifier(args.reference)
        z_reference = logits_of(reference.to(device), loader, device)
    temperatures = metrics.parse_temperatures(metrics.DEFAULT_TEMPERATURES)
    for spec, path in plan.releases.items():
        released, _ = checkpoint.load_classifier(path)
        z = logits_of(released.to(device), loader, device)
        cost = owner_cost(z, labels, z_reference, tau, plan.record.num_classes, temperatures)
        report["releases"][spec] = dict(cost, logits=z)
    if z_reference is not None:
        report["reference"] = dict(owner_cost(z_reference, labels, None, tau, plan.record.num_classes,
                                              temperatures), logits=z_reference)
    summaries = {}
    for cell, arch, seed, directory in plan.units():
        if cells.state(directory, plan.epochs) != "done":
            continue
        summary = json.loads((directory / "summary.json").read_text())
        z = student_logits(directory / "checkpoint.pt", loader, device)
        clone = metrics.SplitMetrics(tau, reference=True).add(z_teacher, labels, z).value()
        summaries.setdefault((cell, arch), {})[seed] = {
            "acc": summary["last_acc"], "fidelity": 100 * float((z.argmax(1) == z_teacher.argmax(1)).double().mean()),
            "kl": clone["kl_to_reference"]}
    for (cell, arch), by_seed in summaries.items():
        if cell.release is None:
            continue
        ls = summaries.get((plan.baseline("ls", cell.share), arch), {})
        scratch = summaries.get((plan.baseline("scratch", cell.share), arch), {})
        accs = {s: v["acc"] for s, v in by_seed.items()}
        row = {"release": cell.release, "attack": cell.name, "method": cell.attack, "student": arch,
               "access": "white-box" if cell.white_box else "black-box", "share": cell.share,
               "temperature": cell.temperature, "seeds": sorted(by_seed), "acc": mean_std(accs.values()),
               "fidelity": mean_std(v["fidelity"] for v in by_seed.values()),
               "kl": mean_std(v["kl"] for v in by_seed.values()),
               "ls": mean_std(v["acc"] for v in ls.values()) if ls else None,
               "scratch": mean_std(v["acc"] for v in scratch.values()) if scratch else None,
               "vs_ls": paired(accs, {s: v["acc"] for s, v in ls.items()}) if ls else None,
               "vs_scratch": paired(accs, {s: v["acc"] for s, v in scratch.items()}) if scratch else None}
        row["undistillable"] = None if row["vs_ls"] is None else row["vs_ls"][0] <= 0
        report["cells"].append(row)
    report["baselines"] = [{"attack": c.name, "student": a, "share": c.share, "acc": mean_std(v["acc"]
                            for v in by_seed.values())} for (c, a), by_seed in summaries.items() if c.release is None]
    report["verdicts"] = {spec: verdict(spec, [r for r in report["cells"] if r["release"] == spec], plan.seeds)
                          for spec in plan.releases}
    return report, labels


def owner_cost(z, labels, z_reference, tau, num_classes, temperatures):
    """What a release costs its owner: accuracy, ECE, NLL, KL to the reference at tau, CMI per temperature."""
    split = metrics.SplitMetrics(tau, reference=z_reference is not None)
    split.add(z, labels, z_reference)
    value = split.value()
    return {"acc": value["acc"], "ece": value["ece"], "nll": value["nll"],
            "kl_to_reference": value.get("kl_to_reference"),
            "cmi": {f"{t:g}": v for t, v in metrics.cmi(z, labels, num_classes, temperatures).items()}}


def verdict(spec, rows, seeds):
    """One sentence: undistillable against N of M attacks, or cloned by the strongest."""
    judged = [r for r in rows if r["undistillable"] is not None]
    if not judged:
        return f"{spec}: no verdict yet (no finished attack with its LS student)"
    strongest = max(judged, key=lambda r: r["vs_ls"][0])
    held = sum(r["undistillable"] for r in judged)
    margin = fmt(strongest["vs_ls"], sign=True, count=False)
    seeds_text = f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
    if held == len(judged):
        return (f"{spec}: undistillable against {held} of {len(judged)} attacks over {seeds_text}; strongest "
                f"attack {strongest['attack']} ({strongest['student']}): {margin} points over the LS student")
    return (f"{spec}: cloned by {len(judged) - held} of {len(judged)} attacks over {seeds_text}; strongest "
            f"{strongest['attack']} ({strongest['student']}): {margin} points over the LS student")


def markdown(report, figures):
    lines = [f"# Audit of {report['teacher']}", "",
             f"{report['dataset']}, budget {report['budget']} ({report['epochs']} epoch(s) per student, seeds "
             f"{', '.join(map(str, report['seeds']))}); KL and fidelity on the test split, KL at tau "
             f"{report['tau']:g}.", "", "## Verdict", ""]
    lines += [f"- {v}" for v in report["verdicts"].values()]
    lines += ["", "## Attacks", "", "| release | attack | access | student | share | accuracy | vs LS | vs scratch "
              "| fidelity | KL(teacher ‖ student) | undistillable |", "|" + "---|" * 11]
    for r in report["cells"]:
        mark = {True: "**yes**", False: "no", None: "?"}[r["undistillable"]]
        lines.append(f"| {r['release']} | {r['attack']} | {r['access']} | {r['student']} | {r['share']:g} | "
                     f"{fmt(r['acc'], count=False)} | {fmt(r['vs_ls'], sign=True, count=False)} | "
                     f"{fmt(r['vs_scratch'], sign=True, count=False)} | {fmt(r['fidelity'], count=False)} | "
                     f"{fmt(r['kl'], 4, count=False)} | {mark} |")
    lines += ["", "Students without teacher: " + "; ".join(
        f"{b['attack']} {b['student']}: {fmt(b['acc'], count=False)}" for b in report["baselines"]), "",
        "## The owner's cost", "", "| model | accuracy | ECE | NLL | KL to reference | CMI (T=1 / 4 / 16) |",
        "|---|---|---|---|---|---|"]
    models_ = [(f"release {spec}", cost) for spec, cost in report["releases"].items()]
    if "reference" in report:
        models_.append(("reference", report["reference"]))
    for name, cost in models_:
        kl = "-" if cost["kl_to_reference"] is None else f"{cost['kl_to_reference']:.4f}"
        cmi = " / ".join(f"{cost['cmi'].get(t, math.nan):.4f}" for t in ("1", "4", "16"))
        lines.append(f"| {name} | {cost['acc']:.2f} | {cost['ece']:.4f} | {cost['nll']:.4f} | {kl} | {cmi} |")
    if figures:
        lines += ["", "## Figures"] + [f"\n![{caption}]({path.name})  \n{caption}" for caption, path in figures]
    return "\n".join(lines) + "\n"


STYLE = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;line-height:1.4}"
         "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.2em .5em;text-align:right}"
         "th:first-child,td:first-child{text-align:left}img{max-width:100%}")


def page(text, title):
    """report.md as one HTML page to open in a browser or send on (its figures beside it), through Python-Markdown;
    None where that package is missing (a bare GPU image): the report itself does not need it."""
    try:
        import markdown as python_markdown
    except ImportError:
        return None
    body = python_markdown.markdown(text, extensions=["tables"])
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")


def draw(report, info, labels, out):
    """The figures (undistill.figures), each with its caption."""
    from . import figures
    drawn, names = [], list(report["releases"])
    temps = sorted({r["temperature"] for r in report["cells"] if r["temperature"] is not None})
    base = [b for b in report["baselines"] if b["share"] == max(c["share"] for c in report["cells"])]
    # the figures take (mean, std) pairs
    ls = next((b["acc"][:2] for b in base if b["attack"] == "ls"), None)
    scratch = next((b["acc"][:2] for b in base if b["attack"] == "scratch"), None)
    if temps and ls is not None:
        curves = {spec: [next((r["acc"][:2] for r in report["cells"] if r["release"] == spec and r["temperature"] == t
                               and r["method"] == "kd" and "no-labels" not in r["attack"] and r["share"] ==
                               max(c["share"] for c in report["cells"])), (math.nan, None)) for t in temps]
                  for spec in names}
        drawn.append(("Student accuracy against the attacker's KD temperature; above the LS band, the attack "
                      "clones the teacher", figures.temperature_curve(out / "temperature.png", temps, curves, ls,
                                                                     scratch)))
    tau = report["tau"]
    # the first test image of four classes spread over the label range (the split is sorted by class)
    shown = [int((labels == c).nonzero()[0]) for c in torch.linspace(0, info.num_classes - 1, 4).round().long()
             if (labels == c).any()]
    panels = [(f"teacher ({spec})", torch.softmax(report["releases"][spec]["logits"][shown] / tau, 1))
              for spec in names]
    if "reference" in report:
        panels.append(("reference", torch.softmax(report["reference"]["logits"][shown] / tau, 1)))
    images = torch.stack([info.test[i][0] for i in shown])
    drawn.append((f"Responses (softmax at tau {tau:g}) to test images of {len(shown)} classes",
                  figures.responses(out / "responses.png", panels, None, tau, labels=labels[shown],
                                    images=images)))
    outputs = [(f"teacher ({spec})", report["releases"][spec]["logits"]) for spec in names]
    if "reference" in report:
        outputs.append(("reference", report["reference"]["logits"]))
    drawn.append(("t-SNE of the outputs on the test split, coloured by class",
                  figures.tsne(out / "tsne.png", outputs, labels)))
    drawn.append(("Reliability diagrams (accuracy per confidence bin) on the test split",
                  figures.reliability(out / "reliability.png", [(n, torch.softmax(z, 1), labels) for n, z in outputs])))
    return drawn


def main(args):
    plan = make_plan(args)
    info = datasets.load(plan.record.name, args.data_dir)  # the split sizes for the estimate; the test split
    plan.train_size = len(info.train)
    units = list(plan.units())
    left = sum(cells.state(d, plan.epochs) != "done" for *_, d in units)
    if left:  # measured only when there is something to run: a finished audit's report is rewritten at once
        step_s, start_s = measured_step(plan, args.device), measured_start()
        when = (f"about {estimate(plan, step_s, start_s, args, info) / 60:.0f} min here ({step_s * 1000:.0f} ms per "
                f"measured step, {start_s:.0f} s per process start, {args.jobs} at a time)")
    else:
        when = "every student trained: the report only"
    print(f"audit of {args.teacher} on {plan.record.name}: {len(plan.cells)} cells x {len(plan.archs)} "
          f"architecture(s) x {len(plan.seeds)} seed(s) = {len(units)} students ({left} to run), {plan.epochs} "
          f"epochs each, releases {', '.join(plan.releases)}; {when} -> {plan.out}", flush=True)
    for cell in plan.cells:
        print(f"  {cell.release or 'baseline'}: {cell.name} ({' '.join([cell.attack, *cell.options])}, share "
              f"{cell.share:g}{', white-box' if cell.white_box else ''})", flush=True)
    if args.plan_only:
        return
    if not run(plan, args):
        return
    report, labels = measure(plan, args, info)
    drawn = draw(report, info, labels, plan.out)
    text = markdown(report, drawn)
    runs.write_text(plan.out / "report.md", text)
    runs.write_json(plan.out / "report.json", without_logits(report))
    shared = page(text, f"Audit of {report['teacher']}")
    if shared is None:
        print("report.html not written: pip install markdown", flush=True)
    else:
        runs.write_text(plan.out / "report.html", shared)
    print("\n".join(report["verdicts"].values()) + f"\nreport: {plan.out / 'report.md'}", flush=True)


def without_logits(report):
    """The report as JSON: the logits kept for the figures left out."""
    if isinstance(report, dict):
        return {k: without_logits(v) for k, v in report.items() if k != "logits"}
    if isinstance(report, (list, tuple)):
        return [without_logits(v) for v in report]
    return report


if __name__ == "__main__":
    distributed.run(main, parse_args())
