"""What the recipes under recipes/ run on: their cells over the seeds, a smoke mode, and their tables in the papers'
layout. A recipe is a shell script (recipes/lib.sh gives it `cell`, `run_cells` and `table`); this module does
the work behind those three words.

    python -m undistill.recipe run CELLS --out OUT --seeds 0,1,2 [--smoke] [--jobs N | --nproc-per-cell N | --slurm ...]
    python -m undistill.recipe table LAYOUT.toml --out OUT --seeds 0,1,2 [--paper-only]
    python -m undistill.recipe serve      (the requests on standard input, one per line: see serve)

CELLS holds one cell per line: its name (a path below OUT), the entry script and its options, shell-quoted. Each
cell runs once per seed, in OUT/<name>/s<seed>, with `--seed` set; `@NAME` in its options stands for the same
seed's OUT/NAME/s<seed>/checkpoint.pt (a teacher trained by an earlier cell). A dataset other than the built-in
one is read from $<DATASET>_DIR (CIFAR10_DIR, ...), default data/<dataset>. Finished cells are skipped and
unfinished ones resumed (undistill.cells), so the same recipe continues after an interruption.

`--smoke` runs every cell tiny: 1 epoch of one step of 2 images, on a synthetic dataset of the same layout
and class count (real image files, written once under OUT/.data), so a test can run a recipe end to end on a CPU.

A layout (TOML) is a paper's table: its columns, and per row the run directories of its entries, the LS students
that decide the undistillable verdict, and the paper's numbers; see recipes/README.md.
"""
import argparse
import importlib
import os
import shlex
import statistics
import sys
from pathlib import Path

import torch

from . import UserError, cells, datasets, distributed, launch, methods, options, require, runs
from .report import fmt, mean_std, read_json

SMOKE = ["--epochs", "1", "--max-steps", "1", "--batch-size", "2", "--workers", "0", "--milestones", ""]
SMOKE_METHODS = {  # the data-free attacks synthesize before they train: a few of their own steps too
    "dafl": ["--steps-per-epoch", "2", "--latent-dim", "8"],
    "deepinversion": ["--di-batch", "4", "--di-iterations", "2", "--pool-batches", "1", "--batches-per-epoch", "1"],
    # a 2-step adversary's eval-mode logits are huge, and the unbounded -KL step would leave a deep nasty teacher
    # (ResNet-34) with non-finite outputs, which a student distilled from it then stops on
    "nasty": ["--grad-clip", "1"],
}
SMOKE_IMAGES = {"imagenet": (1, 1)}  # (train, test) images per class of the synthetic data; default (10, 2)


# ---- the cells

def read_cells(path):
    """[(name, argv)] from a cells file: one shell-quoted line per cell."""
    found = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            name, *argv = shlex.split(line)
            if not argv or argv[0] not in ("train_teacher.py", "distill_student.py"):
                raise UserError(f"{path}:{number}: a cell is NAME train_teacher.py|distill_student.py OPTIONS")
            found.append((name, argv))
    return found


def data_dir(name, out, smoke):
    """Where the cells read `name` from: the synthetic copy in smoke mode, else $<NAME>_DIR or data/<name>."""
    record = datasets.record(name)
    if record.built_in:
        return None
    if smoke:
        root = out / ".data" / name
        if not (root / ".complete").is_file():
            synthesize(record, root, *SMOKE_IMAGES.get(name, (10, 2)))
        return root
    variable = f"{name.upper()}_DIR"
    root = Path(os.environ.get(variable, f"data/{name}"))
    if not root.is_dir():
        raise UserError(f"{name}: no data in {root} (set {variable} to the dataset's root; README, Data)")
    return root


def synthesize(record, root, train, test):
    """A dataset of `record`'s layout and class count: random images written as real files (PNG; JPEG for
    ImageNet), `train` and `test` per class."""
    from PIL import Image
    generator = torch.Generator().manual_seed(0)
    size = 32 if record.name == "imagenet" else record.image_size  # ImageNet's reader resizes and crops

    def write(path, n):
        path.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = torch.randint(0, 256, (size, size, 3), generator=generator, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(path / (f"{i}.JPEG" if record.name == "imagenet" else f"{i}.png"))

    classes = [f"n{c:08d}" for c in range(record.num_classes)]
    if record.name == "tinyimagenet":
        annotations = []
        for c in classes:
            write(root / "train" / c / "images", train)
        for c in classes:
            write(root / "val" / "images" / c, test)
        for c in classes:
            for f in sorted((root / "val" / "images" / c).iterdir()):
                f.rename(root / "val" / "images" / f"{c}_{f.name}")
                annotations.append(f"{c}_{f.name}\t{c}\t0\t0\t{size}\t{size}")
            (root / "val" / "images" / c).rmdir()
        (root / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    else:
        for split, n in (("train", train), ("val" if record.name == "imagenet" else "test", test)):
            for c in classes:
                write(root / split / c, n)
    (root / ".complete").write_text("")


def expand(name, argv, seed, out, smoke, device=None):
    """One cell's command for one seed: its seed, run directory, data, @references, smoke options."""
    argv = [str(out / ref[1:] / f"s{seed}" / "checkpoint.pt") if ref.startswith("@") else ref for ref in argv]
    script = cells.script(argv[0])
    parsed = script.parse_args(argv[1:])
    kind = "defense" if "defense" in vars(parsed) else "attack"
    method = methods.chosen(parsed, kind)
    extra = ["--seed", str(seed), "--output", str(out / name / f"s{seed}")]
    directory = data_dir(parsed.dataset, out, smoke)
    if directory is not None:
        extra += ["--data-dir", str(directory)]
    if device:
        extra += ["--device", device]
    if smoke:
        extra += [*SMOKE, "--quiet", *SMOKE_METHODS.get(method.name, [])]
    argv += extra
    if method.release is not None:
        return cells.Cell(tuple(argv), out / name / f"s{seed}", None)
    config, _ = options.resolve(script.parse_args(argv[1:]), method, datasets.record(parsed.dataset))
    return cells.Cell(tuple(argv), out / name / f"s{seed}", config.epochs)


def run_cells(args):
    seeds = parse_seeds(args.seeds)
    todo = [expand(name, argv, seed, args.out, args.smoke, args.device) for name, argv in read_cells(args.cells)
            for seed in seeds]
    if args.slurm or args.slurm_local:
        launch.check(args)
        # the next cells read what these write: wait for the array (a relaunch after the wait was cut off skips
        # what has finished and resumes the rest)
        cells.submit(todo, args, f"recipe-{args.out.name}", args.job_dir or args.out / "slurm", wait=True)
        return
    here = args.jobs == 1 and args.nproc_per_cell == 1
    cells.run(todo, args.out, args.out.name, args.jobs, args.nproc_per_cell, here=here)


def parse_seeds(text):
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise UserError(f"seeds {text!r}: give comma-separated integers such as 0,1,2 (SEEDS=0,1,2)") from None
    if len(set(seeds)) != len(seeds):
        raise UserError(f"seeds {text}: a seed appears twice")
    return seeds


# ---- the table

def read_layout(path):
    # Python 3.11's TOML reader; on 3.10, the package it came from
    toml = importlib.import_module("tomllib") if sys.version_info >= (3, 11) else require(
        "tomli", "tomli", "a recipe's table layout on Python 3.10")
    try:
        layout = toml.loads(Path(path).read_text())
    except (OSError, toml.TOMLDecodeError) as e:
        raise UserError(f"cannot read the table layout {path} ({e})") from None
    for key in ("title", "columns", "rows"):
        if key not in layout:
            raise UserError(f"{path}: a table layout needs {key} (recipes/README.md)")
    return layout


def value(run_dir, metric):
    """A run's number: a summary field (last_acc, best_acc), or eval:<path> in its checkpoint.eval.json."""
    if metric.startswith("eval:"):
        found = read_json(run_dir / "checkpoint.eval.json")
        for key in metric[5:].split("."):
            found = found[key]
        return found
    return read_json(run_dir / "summary.json")[metric]


def seeded(out, name, seeds, metric="last_acc"):
    """{seed: the metric} over the seeds whose run of `name` has finished."""
    found = {}
    for seed in seeds:
        run_dir = out / name / f"s{seed}"
        if (run_dir / "summary.json").is_file():
            found[seed] = value(run_dir, metric)
    return found


def stat(values):
    values = list(values)
    return mean_std(values) if values else None


def entry(row, column, out, seeds, baseline):
    """One cell of the table: ours (mean, std, n), its difference to the baseline row, the verdict. A row's `keys`
    read a column as another key in its templates, the baseline's included (a "Teacher Self" column: the row's
    teacher architecture)."""
    column = row.get("keys", {}).get(column, column)
    name = row["cells"].format(column=column)
    ours = seeded(out, name, seeds, row.get("metric", "last_acc"))
    result = {"run": name, "ours": stat(ours.values()), "vs_baseline": None, "undistillable": None}
    if baseline is not None and ours:
        base = seeded(out, baseline["cells"].format(column=column), seeds, baseline.get("metric", "last_acc"))
        if base:
            result["vs_baseline"] = statistics.mean(ours.values()) - statistics.mean(base.values())
    if "ls" in row and ours:
        ls = seeded(out, row["ls"].format(column=column), seeds)
        paired = [s for s in ours if s in ls]  # the LS students of the same seeds: the same data and start
        if paired:
            diff = statistics.mean(ours[s] - ls[s] for s in paired)
            result.update(vs_ls=diff, undistillable=diff <= 0)
    return result


def build_table(layout, out, seeds, paper_only=False):
    """The layout filled with this project's numbers (none with paper_only) beside the paper's."""
    columns = [tuple(c) for c in layout["columns"]]
    rows = layout["rows"]
    baseline = next((r for r in rows if r["label"] == layout.get("baseline")), None)
    table = {"title": layout["title"], "source": layout.get("source", ""), "seeds": seeds, "columns": columns,
             "rows": []}
    for row in rows:
        filled = {"label": row["label"], "paper": row.get("paper", []), "paper_teacher": row.get("paper_teacher"),
                  "teacher": None, "entries": []}
        if not paper_only:
            if "teacher" in row:
                filled["teacher"] = stat(seeded(out, row["teacher"], seeds).values())
            filled["entries"] = [entry(row, key, out, seeds, None if row is baseline else baseline)
                                 for key, _ in columns]
        table["rows"].append(filled)
    return table


def paper_text(values, i, base):
    v = values[i] if i < len(values) else "-"
    if not isinstance(v, (int, float)):
        return str(v)
    b = base[i] if base and i < len(base) and isinstance(base[i], (int, float)) else None
    return f"{v:.2f}" + (f" ({v - b:+.2f})" if b is not None else "")


def number(v):
    """Two decimals, as the papers print accuracies; a small measure (a CMI, a KL: below 0.1) in 3 significant
    digits, which two decimals would round to 0.00."""
    return f"{v:.3g}" if 0 < abs(v) < 0.1 else f"{v:.2f}"


def ours_text(e):
    if e is None or e["ours"] is None:
        return "not run"
    mean, std, n = e["ours"]
    text = number(mean) + (f" ± {number(std)}" if std is not None else "")
    if e["vs_baseline"] is not None:
        text += f" ({e['vs_baseline']:+.2f})"
    return text + {True: " ✓", False: " ✗", None: ""}[e["undistillable"]]


def markdown(table, layout):
    has_teacher = any("teacher" in r for r in layout["rows"])
    base = next((r.get("paper", []) for r in layout["rows"] if r["label"] == layout.get("baseline")), None)
    header = [layout.get("corner", "")] + (["teacher (ours)", "teacher (paper)"] if has_teacher else [])
    header += [f"{label} ({who})" for _, label in table["columns"] for who in ("ours", "paper")]
    lines = [f"### {table['title']}", ""]
    if table["source"]:
        lines += [table["source"], ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for layout_row, row in zip(layout["rows"], table["rows"]):
        cells_ = [row["label"]]
        if has_teacher:
            t = row["teacher"]
            teacher = "-" if "teacher" not in layout_row else "not run" if t is None else fmt(t, count=False)
            pt = row["paper_teacher"]
            cells_ += [teacher, "-" if pt is None else pt if isinstance(pt, str) else f"{pt:.2f}"]
        for i in range(len(table["columns"])):
            e = row["entries"][i] if row["entries"] else None
            cells_ += [ours_text(e), paper_text(row["paper"], i, None if row["label"] == layout.get("baseline")
                                                 else base)]
        lines.append("| " + " | ".join(cells_) + " |")
    seeds = ", ".join(map(str, table["seeds"]))
    lines += ["", f"Ours: mean ± std over seeds {seeds}; in parentheses the difference to the "
              f"\"{layout.get('baseline', '-')}\" row. ✓ undistillable: the student does not beat the LS student "
              "of the same architecture and seeds; ✗ it does (cloned)."]
    if layout.get("notes"):
        lines += ["", layout["notes"].strip()]
    return "\n".join(lines) + "\n"


def write_table(args):
    layout = read_layout(args.layout)
    seeds = parse_seeds(args.seeds)
    table = build_table(layout, args.out, seeds, args.paper_only)
    text = markdown(table, layout)
    print(text, flush=True)
    if not args.paper_only:
        stem = Path(args.layout).stem
        runs.write_text(args.out / f"{stem}.md", text)
        runs.write_json(args.out / f"{stem}.json", table)


def serve():
    """Run the requests on standard input, one per line, shell-quoted: a module of this package and its arguments
    (`recipe run CELLS ...`, `recipe table ...`, `evaluate ...`), each answered with its exit code on file
    descriptor 3. A recipe (recipes/lib.sh) sends its stages here, so one process, one import of torch, serves the
    whole recipe: a smoke run's cells take less time than starting Python."""
    with open(3, "w") as answers:
        for line in sys.stdin:
            name, *argv = shlex.split(line)
            module = importlib.import_module(f"{__package__}.{name}")
            try:
                distributed.run(module.main, module.parse_args(argv))
                code = 0
            except SystemExit as e:  # a UserError's exit 2, argparse's, a signal's
                code = e.code if isinstance(e.code, int) else 1
            print(code, file=answers, flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m undistill.recipe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a recipe's cells over the seeds")
    r.add_argument("cells", type=Path)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--seeds", default="0,1,2")
    r.add_argument("--smoke", action="store_true", help="every cell tiny, on synthetic data")
    r.add_argument("--jobs", type=int, default=1, help="cells at once, as processes (1: one after the other here)")
    r.add_argument("--nproc-per-cell", type=int, default=1, help="run each cell under torchrun with this many "
                   "processes (GPUs)")
    r.add_argument("--device", choices=["auto", "cpu", "cuda"], help="every cell's --device (with --slurm: cpu "
                   "asks for no GPU)")
    launch.add_arguments(r, array_seeds=False)
    t = sub.add_parser("table", help="write a recipe's table in the paper's layout")
    t.add_argument("layout", type=Path)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--seeds", default="0,1,2")
    t.add_argument("--paper-only", action="store_true", help="the paper's numbers alone (ours: not run)")
    sub.add_parser("serve", help="run the requests on standard input, each answered with its exit code on file "
                   "descriptor 3 (recipes/lib.sh)")
    return p.parse_args(argv)


def main(args):
    if args.command == "run":
        if args.jobs < 1 or args.nproc_per_cell < 1:
            raise UserError("--jobs and --nproc-per-cell must be at least 1")
        run_cells(args)
    elif args.command == "table":
        write_table(args)
    else:
        serve()


if __name__ == "__main__":
    distributed.run(main, parse_args())
