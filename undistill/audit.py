"""Can this released model be cloned by distillation? One command plans and runs every attack against a teacher
checkpoint, and answers with the verdict against the label-smoothing student, the tables and the figures.

    python -m undistill.audit runs/quickstart/teacher-nasty/checkpoint.pt --budget quick
    python -m undistill.audit T.pt --data-dir data/cifar10 --reference CE.pt --release full topk label --jobs 4
    python -m undistill.audit --teacher-api owner_api.py:answer --api-output probs --dataset mnist5k

Each attack is a row of the verdict. An attack whose method searches its settings (KD's temperature, HTC's and SCM's
temperature and multiplier, as their papers did) trains one student per setting and seed, and per seed keeps the one
with the best accuracy on a validation split held out of the attacker's images (never the test split). Every student
(one attack setting, one seed, one release of the teacher) is its own run directory under --output: a finished one
is skipped and an unfinished one resumed, so the same command continues an interrupted audit. The students run as
`distill_student.py` processes, --jobs at a time (each under torchrun with --nproc-per-cell), and the report is
written at the end from every finished student under --output: report.md, report.json, the figures (PNG) and
report.html. The verdict and its statistics: undistill/verdict.py.

A black-box API audits as its answers (--teacher-api, undistill/teacher_api.py): the black-box attacks query it
through one cache under --output, so an image any student or the report has sent is never asked again, and the
white-box attacks, which read a teacher's gradients and internals, are skipped (an imported TorchScript module is a
black box too).
"""
import argparse
import collections
import hashlib
import html
import inspect
import math
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import UserError, cells, checkpoint, datasets, distributed, launch, methods, metrics, models, options, runs
from . import teacher_api
from . import verdict as stats
from .report import fmt, mean_std, read_json

BATCH = 128  # the scripts' default batch; a share with fewer than 4 batches of images takes a quarter of them
VALIDATION = 0.2  # of each class's images in the attacker's share, held out to choose an attack's setting on
LEVEL_TEXT = f"{stats.LEVEL:.0%} interval"


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
    # three seeds at least: one seed has no interval, two a t quantile of 12.7
    "quick": Budget(seeds=(0, 1, 2), schedule=0.25, min_epochs=15, share=0.1),
    "standard": Budget(seeds=(0, 1, 2), schedule=1.0, min_epochs=15, share=1.0),
    "full": Budget(seeds=(0, 1, 2, 3, 4), schedule=1.0, min_epochs=15, share=1.0, data_free=True),
}


@dataclass(frozen=True)
class Attack:
    """One row of the audit: students of `method` (with `options`) trained on `share` of the training split against
    `release` (None: a baseline without teacher), one per setting of `grid` ((name, options) pairs: the method's
    search) and seed, the setting of each seed chosen on the validation split."""
    name: str
    method: str
    share: float
    release: str | None = None
    options: tuple = ()
    grid: tuple = (("", ()),)

    def directory(self, out: Path, arch: str, setting: str, seed: int) -> Path:
        return out / (self.release or "baselines") / arch / self.name / setting / f"s{seed}"

    @property
    def definition(self) -> methods.Method:
        return methods.get("attack", self.method)


@dataclass
class Plan:
    teacher: Path | None  # the checkpoint; None where an API answers for the teacher
    out: Path
    record: datasets.DatasetRecord
    releases: dict  # release spec -> checkpoint path of the released teacher
    archs: list
    seeds: list
    epochs: int
    milestones: str
    share: float
    train_size: int = 0  # images in the training split (0: unknown, the scripts' batch for every student)
    owner: dict = field(default_factory=dict)  # the folder dataset's options (datasets.folder_options)
    data: list = field(default_factory=list)  # the data options every student and release gets
    attacks: list = field(default_factory=list)  # every row, baselines first
    chosen: set = field(default_factory=set)  # the names of the rows to run (--attacks), their baselines included
    api: "Api | None" = None
    skipped: dict = field(default_factory=dict)  # white-box attack -> why it does not run against a black box

    @property
    def name(self) -> str:
        return f"--teacher-api {self.api.spec}" if self.api else str(self.teacher)

    def units(self, only_chosen=False):
        """(attack, setting, student architecture, seed, run directory) of every student of the plan."""
        for attack in self.attacks:
            if only_chosen and attack.name not in self.chosen:
                continue
            for setting, _ in attack.grid:
                for arch in self.archs:
                    for seed in self.seeds:
                        yield attack, setting, arch, seed, attack.directory(self.out, arch, setting, seed)

    def images(self, attack):
        """The training images of a student of the attack: its share, less the validation split."""
        return round(self.train_size * attack.share * (1 - VALIDATION))

    def batch(self, attack):
        """The scripts' batch, or a quarter of a small share (a limited-data student must still take steps)."""
        images = self.images(attack)
        return BATCH if not self.train_size or images >= 4 * BATCH else max(1, images // 4)

    def baseline(self, method, share):
        return next(a for a in self.attacks if a.release is None and a.method == method and a.share == share)


@dataclass(frozen=True)
class Api:
    """--teacher-api as the audit passes it on: MODULE:FUNCTION (a .py file's path made absolute, for the students'
    processes), what it answers, the cache every student and the report share, and the file its function is in."""
    spec: str
    output: str
    cache: Path
    source: Path | None

    def teacher(self, num_classes: int) -> teacher_api.ApiTeacher:
        return teacher_api.ApiTeacher(teacher_api.load_function(self.spec), self.spec, self.output, self.cache,
                                      num_classes)

    def options(self) -> list[str]:
        return ["--teacher-api", self.spec, "--api-output", self.output, "--api-cache", str(self.cache)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m undistill.audit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("teacher", type=Path, nargs="?", help="the trained teacher's checkpoint (train_teacher.py); "
                   "none with --teacher-api")
    p.add_argument("--dataset", help="default: the checkpoint's (with --teacher-api: give it)")
    p.add_argument("--data-dir", type=Path, help="dataset root (not needed for the built-in mnist5k)")
    p.add_argument("--split-file", type=Path, help="--dataset folder: the owner's train/test split (docs/data.md)")
    p.add_argument("--image-size", type=int, help="--dataset folder: the size the images are read at (default: "
                   "the teacher's)")
    p.add_argument("--teacher-trained-on", type=Path, help="the teacher's training images, one path per line "
                   "relative to --data-dir: a warning where some are test images")
    p.add_argument("--reference", type=Path, help="a normal (CE) teacher: the owner's cost is measured against it")
    p.add_argument("--student-arch", nargs="+", help="the attacker's architectures (default: the dataset's)")
    p.add_argument("--budget", default="quick", choices=sorted(BUDGETS),
                   help="quick: 3 seeds, a quarter of the schedule, 10%% of the data; standard: 3 seeds, the full "
                        "schedule and data; full: 5 seeds and the data-free attacks")
    p.add_argument("--seeds", help="comma-separated seeds (default: the budget's)")
    p.add_argument("--share", type=float, help="the attacker's share of the training split, in (0, 1] (default: "
                   "the budget's); the limited-data rows take 10%% and 50%% of it")
    p.add_argument("--epochs", type=int, help="student epochs (default: the budget's share of the dataset's "
                   "schedule; the lr milestones scale with it)")
    p.add_argument("--release", nargs="+", default=["full"],
                   help="what the owner's API returns, each audited: full (the checkpoint as given), stingy, and "
                        "the release defenses of train_teacher.py; NAME:OPTION=VALUE sets an option, e.g. "
                        "rounded:decimals=2")
    p.add_argument("--jobs", type=int, default=1, help="students trained at once (processes; the CPU threads are "
                   "shared)")
    p.add_argument("--nproc-per-cell", type=int, default=1, help="run each student under torchrun with this many "
                   "processes (GPUs)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--output", type=Path, help="default: runs/audit-<teacher's run directory name>")
    p.add_argument("--attacks", nargs="+", metavar="ATTACK", help="run only these rows (names as the plan prints "
                   "them, e.g. kd htc), with the baselines they are judged against; the report covers every "
                   "finished row")
    p.add_argument("--overwrite", action="store_true", help="start again where --output holds an audit of another "
                   "teacher or schedule (its runs are deleted)")
    p.add_argument("--plan-only", action="store_true", help="print the plan and its estimated time, run nothing")
    teacher_api.add_arguments(p)
    launch.add_arguments(p, array_seeds=False)
    return p.parse_args(argv)


# ---- the plan

def check(args, teacher):
    """Every option, before anything runs or is written (the teacher: its checkpoint, None for an API)."""
    if args.slurm or args.slurm_local:
        launch.check(args)
    if args.jobs < 1 or args.nproc_per_cell < 1:
        raise UserError("--jobs and --nproc-per-cell must be at least 1")
    if args.share is not None and not 0 < args.share <= 1:
        raise UserError(f"--share {args.share}: give a fraction in (0, 1]")
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs {args.epochs}: give at least 1")
    if teacher is None:
        return
    if teacher["role"] != "teacher":
        raise UserError(f"{args.teacher} is a {teacher['role']}'s checkpoint: audit a teacher")
    if teacher.get("release") and any(spec != "full" for spec in args.release):
        raise UserError(f"{args.teacher} is already a {teacher['release']['name']} release: audit it with "
                        "--release full, or give the trained teacher it was made from")


def schedule(record, budget, epochs):
    """(epochs, milestones): the dataset's schedule, shortened to the budget's share (milestones scale with it)."""
    full = record.schedule.epochs
    epochs = epochs or max(budget.min_epochs, math.ceil(budget.schedule * full))
    scaled = [max(1, round(int(m) * epochs / full)) for m in record.schedule.milestones.split(",") if m]
    return epochs, ",".join(str(m) for m in sorted(set(scaled)) if m < epochs)


def attacks_for(release, record, budget, share, arch_has_stages):
    """The rows an audit runs against one release, each the strongest form its paper allows: KD, HTC and KD
    without labels over their searches, DKD, KD on less data (at the dataset's temperature), the skeptical student
    where the architecture has stages, the adaptive attacker where the release has a decoding, and the data-free
    (white-box) attacks in the full budget."""
    kd = methods.get("attack", "kd")
    tau = ("--tau", f"{kd.default('tau', record.name):g}")
    rows = [Attack("kd", "kd", share, release, grid=tuple(kd.search_runs())),
            Attack("htc", "htc", share, release, grid=tuple(methods.get("attack", "htc").search_runs())),
            Attack("dkd", "dkd", share, release),
            Attack("kd-no-labels", "kd", share, release, ("--no-labels",), tuple(kd.search_runs()))]
    rows += [Attack(f"kd-share{s:g}", "kd", s, release, tau) for s in limited(share)]
    if arch_has_stages:
        rows.append(Attack("skeptical", "skeptical", share, release))
    name = release.split(":")[0]
    if name != "full" and methods.get("defense", name).decode is not None:
        rows.append(Attack("adaptive", "adaptive", share, release,
                           grid=tuple(methods.get("attack", "adaptive").search_runs())))
    if budget.data_free:  # no training image: judged against the LS student of the audit's share
        rows += [Attack(m.name, m.name, share, release) for m in methods.REGISTRY["attack"].values() if m.data_free]
    return rows


def baselines(share):
    """The students without teacher, on every share an attack trains on: LS (the verdict's) and scratch."""
    return [Attack(f"{name}-share{s:g}" if s != share else name, name, s)
            for s in (share, *limited(share)) for name in ("ls", "scratch")]


def limited(share):
    """The limited-data settings: 10% and 50% of the attacker's share (rounded: they name rows and runs)."""
    return [round(share * f, 6) for f in (0.1, 0.5)]


def api_of(args, out):
    """The API of --teacher-api, its function loaded (a bad MODULE:FUNCTION is refused here, before anything is
    written), or None where a checkpoint is audited."""
    if (args.teacher is None) == (args.teacher_api is None):
        raise UserError("give the teacher's checkpoint or --teacher-api MODULE:FUNCTION, one of them")
    if args.teacher_api is None:
        if args.api_cache or args.api_output != "logits":
            raise UserError("--api-output and --api-cache describe --teacher-api: give it, or drop them")
        return None
    if args.dataset is None:
        raise UserError("--teacher-api answers images of a dataset: give --dataset (and --data-dir)")
    if any(spec != "full" for spec in args.release):
        raise UserError("--teacher-api is audited as it answers: drop --release (its answers are the release)")
    fn = teacher_api.load_function(args.teacher_api)
    module, _, function = args.teacher_api.rpartition(":")
    spec = f"{Path(module).absolute()}:{function}" if module.endswith(".py") else args.teacher_api
    source = inspect.getsourcefile(fn)
    return Api(spec, args.api_output, (args.api_cache or out / "api-cache").absolute(),
               Path(source) if source else None)


def make_plan(args):
    # the students' commands run in the package's directory: every path they get is absolute
    default = f"audit-{args.teacher.resolve().parent.name}" if args.teacher else \
        f"audit-api-{Path((args.teacher_api or '').rpartition(':')[0]).stem}"
    out = (args.output or Path("runs") / default).absolute()
    api = api_of(args, out)
    teacher = None if api else checkpoint.load(args.teacher)
    check(args, teacher)
    owner = owner_data(args, args.dataset or teacher["dataset"], teacher)
    record = datasets.record(args.dataset or teacher["dataset"], args.data_dir, **owner)
    budget = BUDGETS[args.budget]
    share = args.share or budget.share
    epochs, milestones = schedule(record, budget, args.epochs)
    archs = args.student_arch or [record.arch]
    releases = {}
    for spec in args.release:
        name = spec.split(":")[0]
        if name != "full" and methods.get("defense", name).release is None:
            raise UserError(f"--release {spec}: {name} is not a release (choose full or one of "
                            f"{', '.join(m for m in methods.names('defense') if methods.get('defense', m).release)})")
        releases[spec] = (args.teacher.absolute() if args.teacher else None) if name == "full" else \
            out / "releases" / spec.replace(":", "_") / "checkpoint.pt"
    seeds = list(budget.seeds) if args.seeds is None else options.parse_seeds(args.seeds, "--seeds")
    plan = Plan(args.teacher and args.teacher.absolute(), out, record, releases, archs, seeds, epochs, milestones,
                share, owner=owner, data=data_options(args, owner), api=api)
    rows = [a for spec in releases for a in attacks_for(spec, record, budget, share, all(map(has_stages, archs)))]
    if api or teacher["arch"] in checkpoint.BLACK_BOX:
        what = "--teacher-api answers only queries" if api else \
            f"{args.teacher} is an imported {checkpoint.BLACK_BOX[teacher['arch']]}"
        plan.skipped = {m.name: f"white-box: it reads the teacher's gradients and internals, and {what}"
                        for m in methods.REGISTRY["attack"].values() if m.access == "white-box"}
        rows = [a for a in rows if a.method not in plan.skipped]
    chosen = rows
    if args.attacks:
        refused = next((a for a in args.attacks if a in plan.skipped), None)
        if refused:
            raise UserError(f"--attacks {refused}: skipped ({plan.skipped[refused]}); choose a black-box attack")
        unknown = sorted(set(args.attacks) - {a.name for a in rows})
        if unknown:
            raise UserError(f"--attacks {unknown[0]}: not an attack of this plan; choose among "
                            f"{', '.join(dict.fromkeys(a.name for a in rows))}")
        chosen = [a for a in rows if a.name in args.attacks]
    plan.attacks = baselines(share) + rows
    shares = {a.share for a in chosen}
    plan.chosen = {a.name for a in chosen} | {a.name for a in baselines(share) if a.share in shares}
    return plan


def owner_data(args, dataset, teacher):
    """The folder dataset's options: the split file, and the size of the teacher's images unless given."""
    given = {"split_file": args.split_file, "image_size": args.image_size}
    if dataset == "folder":
        given["image_size"] = args.image_size or (teacher and teacher["image_size"])  # an API's: the images' own
    return {k: v for k, v in given.items() if v is not None}  # given for another dataset: refused by the record


def data_options(args, owner):
    """Where the students and releases read the data (absolute paths: they run in the package's directory)."""
    line = ["--data-dir", str(args.data_dir.absolute())] if args.data_dir else []
    if owner.get("split_file") is not None:
        line += ["--split-file", str(owner["split_file"].absolute())]
    if owner.get("image_size") is not None:
        line += ["--image-size", str(owner["image_size"])]
    return line


def has_stages(arch):
    return hasattr(models.build(arch, 10), "features")


# ---- running the students

def release_command(spec, plan, path, args):
    """train_teacher.py writing the released checkpoint of one release spec (NAME[:OPTION=VALUE...]); it measures
    the release on the test split, so it reads the data as the students do."""
    name, *settings = spec.split(":")
    options_ = [part for setting in settings for part in (f"--{setting.partition('=')[0]}",
                                                           setting.partition("=")[2])]
    return ["train_teacher.py", "--defense", name, "--from", str(plan.teacher), "--dataset", plan.record.name,
            *options_, "--device", args.device, "--output", str(path.parent), *plan.data]


def run_of(attack, setting, arch, seed, plan, args, out):
    """The student of one attack setting, architecture and seed, as an undistill.cells.Cell."""
    grid = dict(attack.grid)[setting]
    command = ["distill_student.py", "--attack", attack.method, *attack.options, *grid, "--dataset", plan.record.name,
               "--arch", arch, "--seed", str(seed), "--epochs", str(plan.epochs), "--milestones", plan.milestones,
               "--device", args.device, "--quiet", "--output", str(out)]
    if attack.release is not None:
        command += plan.api.options() if plan.api else ["--teacher", str(plan.releases[attack.release])]
    if not attack.definition.data_free:
        command += ["--subset", f"{attack.share:g}", "--validation", f"{VALIDATION:g}"]
        if plan.batch(attack) != BATCH:
            command += ["--batch-size", str(plan.batch(attack))]
    return cells.Cell(tuple(command + plan.data), out, plan.epochs)


def measured_step(plan, device):
    """Seconds of one student training step with a teacher forward, measured here (the plan's first estimate)."""
    device = torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
    record, batch = plan.record, BATCH
    # an API's answers are cached: its students' steps are the student's own (the first queries aside)
    teacher = nn.Identity() if plan.api else checkpoint.load_classifier(plan.teacher)[0]
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
    """Seconds a student's process takes before its first step (Python, torch and the entry script imported),
    measured here."""
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import undistill.distill_student"], check=True)
    return time.perf_counter() - began


class Estimate:
    """Seconds for the students still to run on this machine: each its process start, its training steps and its
    evaluations (a forward pass over the test and validation images, about a third of a step per batch), from a step
    measured here; a white-box student also synthesizes its images (four times the steps, a rough allowance).
    Once a student has run, `calibrated` scales every prediction by how long that one really took: the steps of a
    student in its process, with its share of the cores, are not the step measured here."""

    def __init__(self, plan, info, step_s, start_s, parallel):
        self.plan, self.step_s, self.start_s, self.parallel = plan, step_s, start_s, parallel
        self.eval_batches = math.ceil(len(info.test) / BATCH)
        self.factor = 1.0

    def predicted(self, attack):
        """Seconds for one student of the attack, before calibration."""
        steps = max(1, self.plan.images(attack) // self.plan.batch(attack))
        evaluated = self.eval_batches + math.ceil(self.plan.train_size * attack.share * VALIDATION / BATCH)
        white_box = 4 if attack.definition.access == "white-box" else 1
        return self.start_s + self.plan.epochs * (steps * white_box + evaluated / 3) * self.step_s

    def remaining(self, todo):
        """Wall seconds for the students `todo` (attacks), `parallel` at a time."""
        return self.factor * sum(self.predicted(a) for a in todo) / self.parallel

    def calibrated(self, attack, seconds):
        self.factor = seconds / self.predicted(attack)


def run(plan, args, estimate=None):
    """Write the releases, then every unfinished student of the chosen rows (undistill.cells); True once all have
    run. After the first student, the time left is measured again and printed."""
    out = plan.out
    claim(plan, args)
    for spec, path in plan.releases.items():
        if path not in (plan.teacher, None) and not (path.parent / "summary.json").is_file():
            if cells.execute(release_command(spec, plan, path, args) + ["--overwrite"], out / "logs" / "releases.log"):
                raise UserError(f"the {spec} release failed: see {out / 'logs' / 'releases.log'}")
    units = list(plan.units(only_chosen=True))
    todo = [run_of(attack, setting, arch, seed, plan, args, d) for attack, setting, arch, seed, d in units]
    if args.slurm or args.slurm_local:
        if not cells.submit(todo, args, f"audit-{plan.record.name}", args.job_dir or plan.out / "slurm"):
            print("submitted the students as one array: when they have finished, the same command writes the report",
                  flush=True)
            return False
        return True
    attack_of = {cell.out: attack for cell, (attack, *_) in zip(todo, units)}
    left = [a for cell, (a, *_) in zip(todo, units) if cell.state() != "done"]

    def finished(cell, seconds):
        if estimate is not None and estimate.factor == 1.0:  # the first student to finish calibrates the rest
            estimate.calibrated(attack_of[cell.out], seconds)
            rest = [a for c, (a, *_) in zip(todo, units) if c.state() != "done"]
            print(f"\nmeasured: a student took {seconds:.0f} s here; about {estimate.remaining(rest) / 60:.0f} min "
                  f"left for {len(rest)} students", flush=True)
    cells.run(todo, out, "audit", args.jobs, args.nproc_per_cell, finished=finished if left else None)
    return True


# ---- the report

def student_logits(path, loader, device):
    model, _ = checkpoint.load_classifier(path)
    return logits_of(model.to(device), loader, device)


@torch.no_grad()
def logits_of(model, loader, device):
    return torch.cat([model(x.to(device)).float().cpu() for x, _ in loader])


def measure(plan, args, info):
    """Everything the report says, recomputed from the run summaries and checkpoints of every finished student under
    --output (whichever rows the last command ran) on the test split."""
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    loader = torch.utils.data.DataLoader(info.test, batch_size=256)
    labels = torch.cat([y for _, y in loader])
    owner = plan.api.teacher(plan.record.num_classes) if plan.api else checkpoint.load_classifier(plan.teacher)[0]
    z_teacher = logits_of(owner.to(device), loader, device)  # an API's answers to the test split, cached
    tau = methods.get("attack", "kd").default("tau", plan.record.name)
    report = {"teacher": plan.name, "dataset": plan.record.name, "budget": args.budget,
              "seeds": plan.seeds, "epochs": plan.epochs, "share": plan.share, "validation": VALIDATION, "tau": tau,
              "releases": {}, "rows": [], "search": [], "skipped": plan.skipped}
    if plan.api:  # the images it has answered: one cached answer each
        report["api"] = {"spec": plan.api.spec, "output": plan.api.output,
                         "answered": sum(1 for _ in owner.cache.glob("*/*.pt"))}
    z_reference = None
    if args.reference:
        reference, _ = checkpoint.load_classifier(args.reference)
        z_reference = logits_of(reference.to(device), loader, device)
    temperatures = metrics.parse_temperatures(metrics.DEFAULT_TEMPERATURES)
    for spec, path in plan.releases.items():
        if path is None:  # the API's answers
            z = z_teacher
        elif not path.is_file():
            continue  # a release not written yet: its students have not run either
        else:
            z = logits_of(checkpoint.load_classifier(path)[0].to(device), loader, device)
        cost = owner_cost(z, labels, z_reference, tau, plan.record.num_classes, temperatures)
        report["releases"][spec] = dict(cost, logits=z)
    if z_reference is not None:
        report["reference"] = dict(owner_cost(z_reference, labels, None, tau, plan.record.num_classes,
                                              temperatures), logits=z_reference)
    students = {}  # (attack, setting, arch) -> {seed: what the student measured}
    for attack, setting, arch, seed, directory in plan.units():
        if cells.state(directory, plan.epochs) != "done":
            continue
        summary = read_json(directory / "summary.json")
        z = student_logits(directory / "checkpoint.pt", loader, device)
        clone = metrics.SplitMetrics(tau, reference=True).add(z_teacher, labels, z).value()
        students.setdefault((attack, setting, arch), {})[seed] = {
            "acc": summary["last_acc"], "best": summary["best_acc"], "val": summary.get("last_val_acc"),
            "queries": summary.get("queries", 0), "kl": clone["kl_to_reference"],
            "fidelity": metrics.fidelity(z, z_teacher)}
    chosen = {}  # (attack, arch) -> {seed: the chosen setting's measures, with its name}
    for attack in plan.attacks:
        for arch in plan.archs:
            for seed in plan.seeds:
                found = {s: students.get((attack, s, arch), {}).get(seed) for s, _ in attack.grid}
                if all(v is not None for v in found.values()):  # a search decides once all its settings have run
                    best = runs.chosen({s: v["val"] for s, v in found.items()})
                    chosen.setdefault((attack, arch), {})[seed] = dict(found[best], setting=best)
            for setting, _ in attack.grid if len(attack.grid) > 1 else ():
                by_seed = students.get((attack, setting, arch), {})
                if by_seed:
                    report["search"].append({
                        "release": attack.release, "attack": attack.name, "setting": setting, "student": arch,
                        "acc": mean_std(v["acc"] for v in by_seed.values()),
                        "val": mean_std(v["val"] for v in by_seed.values()),
                        "chosen": sum(chosen.get((attack, arch), {}).get(s, {}).get("setting") == setting
                                      for s in by_seed)})
    report["baselines"] = [row_of(a, arch, by_seed, None, None) for (a, arch), by_seed in chosen.items()
                           if a.release is None]
    report["headroom"] = {}
    for spec in report["releases"]:
        for share in sorted({a.share for a in plan.attacks}, reverse=True):
            for arch in plan.archs:
                ls = {s: v["acc"] for s, v in chosen.get((plan.baseline("ls", share), arch), {}).items()}
                room = stats.headroom(report["releases"][spec]["acc"], ls)
                if room is not None:
                    report["headroom"][f"{spec}|{share:g}|{arch}"] = {
                        "release": spec, "share": share, "student": arch, "teacher": report["releases"][spec]["acc"],
                        "ls": mean_std(ls.values()), "interval": room.as_dict(), "headroom": stats.has_headroom(room)}
    for (attack, arch), by_seed in chosen.items():
        if attack.release is None or attack.release not in report["releases"]:
            continue
        ls = chosen.get((plan.baseline("ls", attack.share), arch), {})
        scratch = chosen.get((plan.baseline("scratch", attack.share), arch), {})
        room = report["headroom"].get(f"{attack.release}|{attack.share:g}|{arch}")
        report["rows"].append(row_of(attack, arch, by_seed, ls, scratch, room))
    report["verdicts"] = {spec: release_sentence(spec, [r for r in report["rows"] if r["release"] == spec],
                                                 plan.seeds)
                          for spec in plan.releases}
    return report, labels


def row_of(attack, arch, by_seed, ls, scratch, room=None):
    """One row of the report: the chosen students' measures over the seeds (mean, std, n), their paired interval to
    the LS students of the same seeds, the outcome (void where the teacher has no headroom over the labels)."""
    accs = {s: v["acc"] for s, v in by_seed.items()}
    row = {"release": attack.release, "attack": attack.name, "method": attack.method, "student": arch,
           "access": attack.definition.access, "share": attack.share, "seeds": sorted(by_seed),
           "chosen": dict(collections.Counter(v["setting"] for v in by_seed.values())) if len(attack.grid) > 1
           else None,
           "acc": mean_std(accs.values()), "best": mean_std(v["best"] for v in by_seed.values()),
           "fidelity": mean_std(v["fidelity"] for v in by_seed.values()),
           "kl": mean_std(v["kl"] for v in by_seed.values()),
           "queries": statistics.fmean(v["queries"] for v in by_seed.values())}
    if ls is None:
        return row
    vs_ls = stats.paired(accs, {s: v["acc"] for s, v in ls.items()})
    vs_scratch = stats.paired(accs, {s: v["acc"] for s, v in scratch.items()})
    outcome = None if vs_ls is None else stats.VOID if room is not None and room["headroom"] is False else \
        vs_ls.outcome
    return dict(row, vs_ls=vs_ls and vs_ls.as_dict(), vs_scratch=vs_scratch and vs_scratch.as_dict(), outcome=outcome)


def release_sentence(spec, rows, seeds):
    """The release's verdict in one sentence, from its rows (stats.release_verdict over the judged ones)."""
    judged = {f"{r['attack']} ({r['student']})": r for r in rows if r.get("outcome") not in (None, stats.VOID)}
    void = [r for r in rows if r.get("outcome") == stats.VOID]
    if not judged:
        if void:
            room = void[0]
            return (f"{spec}: void: the teacher is not clearly better than the LS student at share "
                    f"{room['share']:g} (the labels alone give the attacker as much), so no attack can show "
                    "anything")
        return f"{spec}: no verdict yet (no finished attack with its LS student)"
    intervals = {name: stats.Interval.from_dict(r["vs_ls"]) for name, r in judged.items()}
    found = stats.release_verdict(intervals)
    name, iv = found["attack"], intervals[found["attack"]]
    family = stats.Interval.from_dict(found["family_interval"])
    n, counts, seeds_text = len(judged), found["counts"], f"{len(seeds)} seed{'s' * (len(seeds) > 1)}"
    skipped = f"; {len(void)} void (no headroom at their share)" if void else ""
    if found["outcome"] == stats.INDICATIVE:
        return (f"{spec}: indicative, 1 seed: strongest {name}: {iv.mean:+.2f} points over the LS student (more seeds "
                f"decide: --seeds 0,1,2){skipped}")
    where = (f"{name}: {iv.text()} points over the LS student ({LEVEL_TEXT}, {seeds_text}; "
             f"{family.low:+.2f} to {family.high:+.2f} for the best of {n} attacks)")
    if found["outcome"] == stats.CLONED:
        return f"{spec}: cloned by {where}{skipped}"
    if found["outcome"] == stats.UNDISTILLABLE:
        return f"{spec}: undistillable against all {n} attacks; strongest {where}{skipped}"
    alone = (f", {counts[stats.CLONED]} above 0 alone but not for the best of {n}" if counts[stats.CLONED] else "")
    return (f"{spec}: inconclusive ({counts[stats.UNDISTILLABLE]} of {n} attacks undistillable, "
            f"{counts[stats.INCONCLUSIVE]} inside the seeds' noise{alone}); strongest {where}{skipped}")




def owner_cost(z, labels, z_reference, tau, num_classes, temperatures):
    """What a release costs its owner: accuracy, ECE, NLL, KL to the reference at tau, CMI per temperature."""
    split = metrics.SplitMetrics(tau, reference=z_reference is not None)
    split.add(z, labels, z_reference)
    value = split.value()
    return {"acc": value["acc"], "ece": value["ece"], "nll": value["nll"],
            "kl_to_reference": value.get("kl_to_reference"),
            "cmi": {f"{t:g}": v for t, v in metrics.cmi(z, labels, num_classes, temperatures).items()}}


def interval_text(iv):
    return "-" if iv is None else stats.Interval.from_dict(iv).text()


def markdown(report, figures):
    lines = [f"# Audit of {report['teacher']}", "",
             f"{report['dataset']}, budget {report['budget']}: {report['epochs']} epoch(s) per student, seeds "
             f"{', '.join(map(str, report['seeds']))}, the attacker's share {report['share']:g} of the training "
             f"split ({report['validation']:.0%} of it held out as the attacker's validation split). KL and fidelity "
             f"on the test split, KL at tau {report['tau']:g}.", "",
             *[f"**{w}**\n" for w in report.get("warnings", [])], "## Verdict", ""]
    lines += [f"- {v}" for v in report["verdicts"].values()]
    if report["skipped"]:
        lines += ["", "Not run: " + "; ".join(f"{name} ({why})" for name, why in report["skipped"].items()) + "."]
    if "api" in report:
        api = report["api"]
        lines += ["", f"The teacher is the API `{api['spec']}` ({api['output']}): it answered {api['answered']:,} "
                  "images, each once (its answers cached for every student and this report); `queries` counts the "
                  "images a student sent to it, cached or not."]
    lines += ["", "The verdict reads each student's test accuracy at its last epoch, its setting chosen on the "
              "validation split where the attack searches one; `best` is the best test epoch, what the papers' code "
              "reports, an optimistic figure. `vs LS`: the paired difference to the LS students of the same seeds, "
              f"mean ± std [{LEVEL_TEXT}]: cloned above 0, undistillable at or below 0, inconclusive across it "
              "(undistill/verdict.py).", "", "## Attacks", "",
              "| release | attack | chosen | access | student | share | queries | accuracy | best | vs LS | "
              "vs scratch | fidelity | KL(teacher ‖ student) | outcome |", "|" + "---|" * 14]
    for r in report["rows"]:
        chosen = ", ".join(f"{s} ×{n}" for s, n in r["chosen"].items()) if r["chosen"] else "-"
        lines.append(f"| {r['release']} | {r['attack']} | {chosen} | {r['access']} | {r['student']} | "
                     f"{r['share']:g} | {r['queries']:.3g} | {fmt(r['acc'], count=False)} | "
                     f"{fmt(r['best'], count=False)} | {interval_text(r.get('vs_ls'))} | "
                     f"{interval_text(r.get('vs_scratch'))} | {fmt(r['fidelity'], count=False)} | "
                     f"{fmt(r['kl'], 4, count=False)} | {r.get('outcome') or '?'} |")
    lines += ["", "## Headroom", "", "Is the teacher clearly better than the labels alone? Its accuracy minus the LS "
              "students' over the seeds; where the interval reaches 0 the question is void at that share.", "",
              "| release | share | student | teacher | LS student | teacher - LS | headroom |", "|" + "---|" * 7]
    for room in report["headroom"].values():
        lines.append(f"| {room['release']} | {room['share']:g} | {room['student']} | {room['teacher']:.2f} | "
                     f"{fmt(room['ls'], count=False)} | {interval_text(room['interval'])} | "
                     f"{ {True: 'yes', False: 'no: void', None: '?'}[room['headroom']] } |")
    if report["search"]:
        lines += ["", "## Searches", "", "Every setting of a searched attack: its test and validation accuracy "
                  "(mean ± std over seeds) and how many seeds chose it on the validation split.", "",
                  "| release | attack | setting | student | accuracy | validation | chosen |", "|" + "---|" * 7]
        lines += [f"| {s['release']} | {s['attack']} | {s['setting']} | {s['student']} | {fmt(s['acc'], count=False)}"
                  f" | {fmt(s['val'], count=False)} | {s['chosen']} |" for s in report["search"]]
    lines += ["", "Students without teacher: " + "; ".join(
        f"{b['attack']} {b['student']}: {fmt(b['acc'], count=False)} (best {fmt(b['best'], count=False)})"
        for b in report["baselines"]), "", "## The owner's cost", "",
        "| model | accuracy | ECE | NLL | KL to reference | CMI (T=1 / 4 / 16) |", "|---|---|---|---|---|---|"]
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


def draw(report, plan, info, labels, out):
    """The figures (undistill.figures), each with its caption."""
    from . import figures
    drawn, names = [], list(report["releases"])
    ls_full = next((b for b in report["baselines"] if b["attack"] == "ls"), None)
    scratch_full = next((b for b in report["baselines"] if b["attack"] == "scratch"), None)
    kd = methods.get("attack", "kd")
    temps = list(kd.search["tau"])
    curves = {spec: [next((s["acc"][:2] for s in report["search"] if s["release"] == spec and s["attack"] == "kd"
                           and s["setting"] == f"tau{t:g}"), (math.nan, None)) for t in temps] for spec in names}
    if ls_full is not None and any(not math.isnan(m) for c in curves.values() for m, _ in c):
        drawn.append(("Student accuracy against the attacker's KD temperature; above the LS band, the attack "
                      "clones the teacher", figures.temperature_curve(
                          out / "temperature.png", temps, curves, ls_full["acc"][:2],
                          scratch_full["acc"][:2] if scratch_full else None)))
    budgets = queries_points(report, plan)
    if budgets:
        drawn.append(("Student accuracy and fidelity against the teacher queries it took (KD at the dataset's "
                      "temperature on 10%, 50% and all of the attacker's share), beside the LS students of the same "
                      "images", figures.queries_curve(out / "queries.png", *budgets)))
    tau = report["tau"]
    shown = figures.spread(labels, info.num_classes)
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


def queries_points(report, plan):
    """(curves, baseline) for figures.queries_curve: per release, KD at the dataset's temperature on each share
    (queries, accuracy and fidelity, each (mean, std)); the LS students' accuracy and fidelity at the same shares.
    None unless at least two shares have both."""
    tau = f"tau{report['tau']:g}"
    curves = {}
    for spec in report["releases"]:
        points = [r for r in report["rows"] if r["release"] == spec and r["method"] == "kd" and r["share"] !=
                  plan.share]
        main = [s for s in report["search"] if s["release"] == spec and s["attack"] == "kd" and s["setting"] == tau]
        full = [r for r in report["rows"] if r["release"] == spec and r["attack"] == "kd"]
        if main and full:
            points.append(dict(full[0], acc=main[0]["acc"]))  # the full share's student at the same temperature
        if len(points) >= 2:
            curves[spec] = sorted((p["share"], p["queries"], p["acc"][:2], p["fidelity"][:2]) for p in points)
    baseline = {b["share"]: (b["acc"][:2], b["fidelity"][:2]) for b in report["baselines"] if b["method"] == "ls"}
    return (curves, baseline) if curves else None


def main(args):
    plan = make_plan(args)
    info = datasets.load(plan.record.name, args.data_dir, **plan.owner)  # the split sizes, the test split
    plan.train_size = len(info.train)
    warning = args.teacher_trained_on and datasets.test_overlap(info, args.teacher_trained_on, args.data_dir)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    units = list(plan.units(only_chosen=True))
    left = [a for a, *_, d in units if cells.state(d, plan.epochs) != "done"]
    estimate = None
    if left:  # measured only when there is something to run: a finished audit's report is rewritten at once
        parallel = args.jobs * args.nproc_per_cell
        estimate = Estimate(plan, info, measured_step(plan, args.device), measured_start(), parallel)
        when = (f"about {estimate.remaining(left) / 60:.0f} min here ({estimate.step_s * 1000:.0f} ms per measured "
                f"step, {estimate.start_s:.0f} s per process start, {parallel} at a time; measured again after the "
                "first student)")
    else:
        when = "every student trained: the report only"
    print(f"audit of {plan.name} on {plan.record.name}: {len(units)} students ({len(left)} to run) over "
          f"{len(plan.seeds)} seed(s), {plan.epochs} epochs each, releases {', '.join(plan.releases)}; {when} -> "
          f"{plan.out}", flush=True)
    for attack in plan.attacks:
        if attack.name in plan.chosen:
            search = f", {len(attack.grid)} settings searched" if len(attack.grid) > 1 else ""
            print(f"  {attack.release or 'baseline'}: {attack.name} ({' '.join([attack.method, *attack.options])}, "
                  f"share {attack.share:g}{search}{', white-box' if attack.definition.access == 'white-box' else ''})",
                  flush=True)
    for name, why in plan.skipped.items():
        print(f"  skipped: {name} ({why})", flush=True)
    if args.plan_only:
        return
    if not run(plan, args, estimate):
        return
    report, labels = measure(plan, args, info)
    report["warnings"] = [warning] if warning else []
    drawn = draw(report, plan, info, labels, plan.out)
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


def identity(plan):
    """What the runs under --output were trained for: a student of another teacher or schedule is not this audit's."""
    source = plan.api.source if plan.api else plan.teacher  # an API's function: the file it is defined in
    return {"teacher": plan.name, "teacher_sha256": source and hashlib.sha256(source.read_bytes()).hexdigest(),
            "api_output": plan.api and plan.api.output,
            "dataset": plan.record.name, "epochs": plan.epochs, "milestones": plan.milestones,
            "validation": VALIDATION, **({"split_file_sha256": hashlib.sha256(
                plan.owner["split_file"].read_bytes()).hexdigest()} if plan.owner.get("split_file") else {})}


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


def cli(argv: list[str] | None = None) -> None:
    """The command line (`python -m undistill.audit`, `undistill audit`), with `argv` or sys.argv's."""
    distributed.run(main, parse_args(argv), again="give the same command again: the finished students are kept")


if __name__ == "__main__":
    cli()
