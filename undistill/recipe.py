"""What the recipes under recipes/ run on: their cells over the seeds, a smoke mode, and their tables in the papers'
layout. A recipe is a shell script (recipes/lib.sh gives it `cell`, `run_cells` and `table`); this module does
the work behind those three words.

    python -m undistill.recipe run CELLS --out OUT --seeds 0,1,2 [--smoke] [--jobs N | --nproc-per-cell N | --slurm ...]
    python -m undistill.recipe table LAYOUT.toml --out OUT --seeds 0,1,2 [--paper-only]
    python -m undistill.recipe serve      (the requests on standard input, one per line: see serve)

CELLS holds one cell per line: its name (a path below OUT), the entry script and its options, shell-quoted. Each
cell runs once per seed, in OUT/<name>/s<seed>, with `--seed` set (undistill.importer, a model released elsewhere,
imports the same model into each seed's directory); `@NAME` in its options stands for the same seed's
OUT/NAME/s<seed>/checkpoint.pt (a teacher trained by an earlier cell). A line that starts with --search is a
searched cell: its attack's search (Method.search, the settings it does not set itself) first runs in
OUT/<name>/<setting>/s<seed>, each holding out VALIDATION of the training images; per seed, the setting with the
best validation accuracy is recorded in OUT/<name>/search-s<seed>.json and trained again on all the images, in
OUT/<name>/s<seed>. A dataset other than the built-in one is read from $<DATASET>_DIR (CIFAR10_DIR, ...), default
data/<dataset>. Finished cells are skipped and unfinished ones resumed (undistill.cells), so the same recipe
continues after an interruption.

`--smoke` runs every cell tiny: 1 epoch of one step of 2 images, on a synthetic dataset of the same layout
and class count (real image files, written once under OUT/.data), a search over its first two settings only, so a
test can run a recipe end to end on a CPU.

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

from . import UserError, cells, datasets, distributed, launch, methods, options, require, runs, verdict
from .report import fmt, mean_std, read_json

SMOKE = ["--epochs", "1", "--max-steps", "1", "--batch-size", "2", "--workers", "0", "--milestones", ""]
# (train, test) images per class of the synthetic data; default (20, 2): a 10% subset keeps 2 of a class, one to
# train on and one to validate a search on
SMOKE_IMAGES = {"imagenet": (1, 1)}
VALIDATION = 0.1  # of the training images, held out by a searched cell's settings to choose between them on


# ---- the cells

def read_cells(path):
    """[(name, argv, searched)] from a cells file: one shell-quoted line per cell, --search first for a search."""
    found = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            words = shlex.split(line)
            searched = words[0] == "--search"
            name, *argv = words[searched:]
            if not argv or argv[0] not in cells.ENTRY_SCRIPTS:
                raise UserError(f"{path}:{number}: a cell is [--search] NAME "
                                f"{'|'.join(cells.ENTRY_SCRIPTS)} OPTIONS")
            found.append((name, argv, searched))
    return found


def data_dir(name, out, smoke):
    """Where the cells read `name` from: the synthetic copy in smoke mode, else $<NAME>_DIR or data/<name>."""
    record = datasets.record(name)
    if record.built_in:
        return None
    if smoke:
        root = out / ".data" / name
        if not (root / ".complete").is_file():
            synthesize(record, root, *SMOKE_IMAGES.get(name, (20, 2)))
        return root
    variable = f"{name.upper()}_DIR"
    root = Path(os.environ.get(variable, f"data/{name}"))
    if not root.is_dir():
        raise UserError(f"{name}: no data in {root} (set {variable} to the dataset's root; docs/data.md)")
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
    imported = argv[0] == "undistill.importer"  # trains nothing: the model as released, measured on the test split
    extra = ([] if imported else ["--seed", str(seed)]) + ["--output", str(out / name / f"s{seed}")]
    directory = data_dir(parsed.dataset, out, smoke)
    if directory is not None:
        extra += ["--data-dir", str(directory)]
    if device:
        extra += ["--device", device]
    if imported:
        return cells.Cell(tuple(argv + extra + (["--workers", "0"] if smoke else [])), out / name / f"s{seed}", None)
    kind = "defense" if "defense" in vars(parsed) else "attack"
    method = methods.chosen(parsed, kind)
    if smoke:
        extra += [*SMOKE, "--quiet", *method.smoke]  # the method's own tiny settings too (Method.smoke)
    argv += extra
    if method.release is not None:
        return cells.Cell(tuple(argv), out / name / f"s{seed}", None)
    config, _ = options.resolve(script.parse_args(argv[1:]), method, datasets.record(parsed.dataset))
    return cells.Cell(tuple(argv), out / name / f"s{seed}", config.epochs)


def search_of(argv, smoke):
    """A searched cell's settings: its attack's search over the options the cell does not set (two in smoke mode)."""
    if argv[0] != "distill_student.py":
        raise UserError(f"--search {' '.join(argv)}: only a student's attack searches its settings")
    parsed = cells.script(argv[0]).parse_args(argv[1:])
    method = methods.chosen(parsed, "attack")
    given = [o.name for o in method.options if vars(parsed).get(o.name) is not None]
    runs_ = method.search_runs(fixed=given)
    if runs_ == [("", ())]:
        raise UserError(f"--search {' '.join(argv)}: --attack {method.name} searches nothing here (its search: "
                        f"{', '.join(method.search) or 'none'})")
    return runs_[:2] if smoke else runs_


def run_cells(args):
    seeds = options.parse_seeds(args.seeds, "SEEDS")
    todo, searches = [], []
    for name, argv, searched in read_cells(args.cells):
        grid = search_of(argv, args.smoke) if searched else None
        for seed in seeds:
            if grid is None:
                todo.append(expand(name, argv, seed, args.out, args.smoke, args.device))
                continue
            todo += [expand(f"{name}/{setting}", [*argv, *extra, "--validation", f"{VALIDATION:g}"], seed, args.out,
                            args.smoke, args.device) for setting, extra in grid]
            searches.append((name, argv, seed, grid))
    launch_cells(todo, args)
    if searches:  # each search's choice, trained again on all the images
        launch_cells([expand(name, [*argv, *dict(grid)[choose(args.out / name, grid, seed)]], seed, args.out,
                             args.smoke, args.device) for name, argv, seed, grid in searches], args)


def choose(root, grid, seed):
    """The setting of a search kept for one seed (runs.chosen), recorded in root/search-s<seed>.json."""
    validation = {setting: read_json(root / setting / f"s{seed}" / "summary.json").get("last_val_acc")
                  for setting, _ in grid}
    setting = runs.chosen(validation)
    runs.write_json(root / f"search-s{seed}.json", {"chosen": setting, "validation": validation})
    return setting


def launch_cells(todo, args):
    if args.slurm or args.slurm_local:
        launch.check(args)
        # the next cells read what these write: wait for the array (a relaunch after the wait was cut off skips
        # what has finished and resumes the rest)
        cells.submit(todo, args, f"recipe-{args.out.name}", args.job_dir or args.out / "slurm", wait=True)
        return
    # A smoke run's tiny cells one after the other in this process; a real run's each a process of its own (its
    # memory, CUDA context and threads end with it), `jobs` at a time
    here = args.smoke and args.jobs == 1 and args.nproc_per_cell == 1
    cells.run(todo, args.out, args.out.name, args.jobs, args.nproc_per_cell, here=here)


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


def searched(out, name, seeds):
    """{seed: the setting its search chose} for a searched cell (search-s<seed>.json), {} for another."""
    found = {}
    for seed in seeds:
        path = out / name / f"search-s{seed}.json"
        if path.is_file():
            found[seed] = read_json(path)["chosen"]
    return found


def run_name(row, column):
    """The run directory (below OUT) of a row's entry in a column, the row's `keys` applied."""
    return row["cells"].format(column=row.get("keys", {}).get(column, column))


def entry(row, column, out, seeds, baseline, teacher=None):
    """One cell of the table: ours (mean, std, n) at the deciding epoch and the best epoch beside it, its difference
    to the baseline row, the paired interval to the LS students of the same seeds and its outcome (verdict.py; void
    where the teacher is not clearly above those LS students), and the settings a search chose. A row's `keys`
    read a column as another key in its templates, the baseline's included (a "Teacher Self" column: the row's
    teacher architecture)."""
    name = run_name(row, column)
    column = row.get("keys", {}).get(column, column)  # the LS and baseline templates read it the same way
    metric = row.get("metric", "last_acc")
    ours = seeded(out, name, seeds, metric)
    result = {"run": name, "metric": metric, "ours": stat(ours.values()), "best": None, "vs_baseline": None,
              "vs_ls": None, "outcome": None, "chosen": searched(out, name, seeds)}
    if metric == "last_acc" and ours:
        result["best"] = stat(seeded(out, name, seeds, "best_acc").values())
    if baseline is not None and ours:
        base = seeded(out, baseline["cells"].format(column=column), seeds, baseline.get("metric", "last_acc"))
        if base:
            result["vs_baseline"] = statistics.mean(ours.values()) - statistics.mean(base.values())
    if "ls" in row and ours:
        ls = seeded(out, row["ls"].format(column=column), seeds)
        iv = verdict.paired(ours, ls)  # the same seeds: the same data and start
        if iv is not None:
            result["vs_ls"] = iv.as_dict()
            room = verdict.paired(teacher, ls) if teacher else None
            result["outcome"] = verdict.VOID if verdict.has_headroom(room) is False else iv.outcome
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
            teacher = seeded(out, row["teacher"], seeds) if "teacher" in row else {}
            filled["teacher"] = stat(teacher.values()) if teacher else None
            filled["entries"] = [entry(row, key, out, seeds, None if row is baseline else baseline, teacher)
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


SYMBOLS = {verdict.UNDISTILLABLE: "✓", verdict.CLONED: "✗", verdict.INCONCLUSIVE: "≈", verdict.INDICATIVE: "?",
           verdict.VOID: "void", None: ""}


def ours_text(e):
    if e is None or e["ours"] is None:
        return "not run"
    mean, std, n = e["ours"]
    text = number(mean) + (f" ± {number(std)}" if std is not None else "")
    if e["best"] is not None:
        text += f" (best {number(e['best'][0])})"
    if e["vs_baseline"] is not None:
        text += f" ({e['vs_baseline']:+.2f})"
    if e["vs_ls"] is not None:
        text += f" LS {verdict.Interval.from_dict(e['vs_ls']).text()} {SYMBOLS[e['outcome']]}"
    if e["chosen"]:
        text += " [" + ", ".join(f"s{s}: {c}" for s, c in e["chosen"].items()) + "]"
    return text


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
    lines += ["", f"Ours: mean ± std over seeds {seeds} at the last epoch (the deciding one), the best epoch's mean "
              f"beside it (the authors' code reports the best); in parentheses the difference to the "
              f"\"{layout.get('baseline', '-')}\" row. LS: the paired difference to the LS student of the same "
              f"architecture and seeds, mean ± std [{verdict.LEVEL:.0%} interval]: ✓ undistillable (the interval "
              "lies at or below 0), ✗ cloned (above 0), ≈ inconclusive (it straddles 0), ? one seed (indicative), "
              "void: the teacher is not clearly above the LS student. In brackets: the setting each seed's search "
              "chose on its validation split."]
    if layout.get("notes"):
        lines += ["", layout["notes"].strip()]
    return "\n".join(lines) + "\n"


def write_table(args):
    layout = read_layout(args.layout)
    seeds = options.parse_seeds(args.seeds, "SEEDS")
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
    descriptor 3. A smoke run of a recipe (recipes/lib.sh) sends its stages here, so one process, one import of
    torch, serves the whole recipe: its cells take less time than starting Python."""
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
