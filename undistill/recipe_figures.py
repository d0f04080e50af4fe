"""The papers' figures drawn with a recipe's runs (recipes/lib.sh's `figure` word), as PNGs beside its tables:

    python -m undistill.recipe_figures curve LAYOUT.toml --out OUT --seeds 0,1,2
    python -m undistill.recipe_figures history LAYOUT.toml --out OUT --seeds 0,1,2
    python -m undistill.recipe_figures responses NAME --out OUT --seeds 0 --dataset cifar10 --tau 4 \\
        --model normal=teachers/ce --model nasty=teachers/nasty [--smoke]
    python -m undistill.recipe_figures tsne NAME --out OUT --seeds 0 --dataset cifar10 --model ... [--smoke]
    python -m undistill.recipe_figures inverted NAME --out OUT --seeds 0 --dataset cifar10 --model LABEL=RUN ...

curve: a table's layout (recipes/README.md) drawn as the paper's ablation: the layout's columns are the points of
its `[figure]` table's `x` (and `xlabel`, `log`), each row a line of our means (± std over the seeds) and the
paper's numbers dashed where it gives them; rows with the same `panel` share a panel (its name, before a row's
label, is left out of the legend). history: the test accuracy over the epochs (each run's metrics.jsonl), one panel
per column of the layout, a line per row, mean over the seeds. responses: the softmax_tau outputs of the named
models (OUT/RUN/s<first seed>/checkpoint.pt) on the first test image of four classes spread over the label range
(figures.responses). tsne: the t-SNE of the named models' features before their last layer (or of their outputs) on
the test split (figures.tsne, 2,000 of its images); a model RUN+RUN is an ensemble. inverted: the images
DeepInversion students' runs inverted from their teachers (figures.image_grid). Each writes OUT/<name>.png and,
beside it, OUT/<name>.plot.json: the numbers it plots.
"""
import argparse
import statistics
from pathlib import Path

import torch

from . import UserError, checkpoint, datasets, distributed, figures, models, options, recipe, runs


def paper_numbers(row, n):
    values = list(row.get("paper", []))[:n]
    values += ["-"] * (n - len(values))
    return [v if isinstance(v, (int, float)) else None for v in values]


def curve(layout, args):
    """(panels, x, xlabel, log) of a layout's [figure]: a line per row over its columns."""
    spec = layout.get("figure", {})
    x = spec.get("x")
    if x is None or len(x) != len(layout["columns"]):
        raise UserError(f"{args.layout}: a curve needs [figure] x, one number per column ({len(layout['columns'])}; "
                        "recipes/README.md)")
    table = recipe.build_table(layout, args.out, options.parse_seeds(args.seeds, "SEEDS"))
    panels = {}
    for row, filled in zip(layout["rows"], table["rows"]):
        ours = [None if e["ours"] is None else list(e["ours"][:2]) for e in filled["entries"]]
        panel = row.get("panel", "")
        label = row["label"].removeprefix(f"{panel}: ")  # the panel's title names it
        panels.setdefault(panel, []).append([label, ours, paper_numbers(row, len(x))])
    return list(panels.items()), x, spec.get("xlabel", ""), spec.get("log", False)


def history(layout, args):
    """(panels, epochs, "epoch", False): per column a panel, per row the test accuracy of its runs over the epochs,
    mean ± std over the seeds that reached each epoch."""
    seeds = options.parse_seeds(args.seeds, "SEEDS")
    panels, longest = [], 0
    for column, label in layout["columns"]:
        lines = []
        for row in layout["rows"]:
            name = recipe.run_name(row, column)
            per_seed = [[m["test_acc"] for m in runs.read_metrics(args.out / name / f"s{s}")] for s in seeds]
            epochs = max(map(len, per_seed))
            longest = max(longest, epochs)
            points = []
            for e in range(epochs):
                found = [accs[e] for accs in per_seed if len(accs) > e]
                points.append([statistics.mean(found), statistics.stdev(found) if len(found) > 1 else None])
            lines.append([row["label"], points])
        panels.append((label, lines))
    if not longest:
        raise UserError(f"{args.layout}: none of its runs under {args.out} has a metrics.jsonl: run its cells first")
    for _, lines in panels:  # every line over every epoch: a run that ended early leaves a gap
        for line in lines:
            line[1] += [None] * (longest - len(line[1]))
            line.append([None] * longest)
    return panels, list(range(1, longest + 1)), "epoch", False


def test_split(args):
    """The dataset's test split (the synthetic one of a smoke run) and its labels."""
    info = datasets.load(args.dataset, recipe.data_dir(args.dataset, args.out, args.smoke), train=False)
    return info, torch.cat([y for _, y in torch.utils.data.DataLoader(info.test, batch_size=256)])


def trained(args):
    """[(label, model)] of --model LABEL=RUN[+RUN...]: each run's checkpoint of the first seed, as released; several
    runs joined by + answer as their ensemble (the mean of their logits, as SCM's students see them)."""
    seed = options.parse_seeds(args.seeds, "SEEDS")[0]
    found = []
    for given in args.model:
        label, _, joined = given.partition("=")
        members = []
        for run in joined.split("+"):
            path = args.out / run / f"s{seed}" / "checkpoint.pt"
            if not run or not path.is_file():
                raise UserError(f"--model {given}: no checkpoint {path} (LABEL=RUN[+RUN...], runs of this recipe)")
            members.append(checkpoint.load_classifier(path)[0])
        found.append((label, members[0] if len(members) == 1 else models.Ensemble(members)))
    return found


def responses(args):
    """The figure of the named models' softmax_tau outputs; its plotted numbers."""
    info, labels = test_split(args)
    shown = figures.spread(labels, info.num_classes)
    images = torch.stack([info.test[i][0] for i in shown])
    with torch.no_grad():
        panels = [(label, torch.softmax(model(images) / args.tau, 1)) for label, model in trained(args)]
    path = figures.responses(args.out / f"{args.name}.png", panels, None, args.tau, labels=labels[shown],
                             images=images)
    return path, {"tau": args.tau, "images": shown, "labels": labels[shown].tolist(),
                  "panels": [[label, probs.tolist()] for label, probs in panels]}


@torch.no_grad()
def tsne(args):
    """The t-SNE of the named models' features before their last layer (--outputs: of their softmax outputs) on
    the test split; what it embedded."""
    from .methods.datafree import PenultimateFeatures
    info, labels = test_split(args)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    panels = []
    for label, model in trained(args):
        model, found = model.to(device), []
        hook = PenultimateFeatures(model)
        for x, _ in torch.utils.data.DataLoader(info.test, batch_size=256):
            logits = model(x.to(device))
            found.append((logits if args.outputs else hook.value).float().cpu())
        panels.append((label, torch.cat(found)))
    path = figures.tsne(args.out / f"{args.name}.png", panels, labels, features=not args.outputs)
    return path, {"samples": len(labels), "panels": [[label, list(x.shape)] for label, x in panels]}


def inverted(args):
    """The images the named DeepInversion students' runs inverted from their teachers (the pool their checkpoint
    keeps), a column per class; how many of each class it shows."""
    seed = options.parse_seeds(args.seeds, "SEEDS")[0]
    panels = []
    for given in args.model:
        label, _, run = given.partition("=")
        path = args.out / run / f"s{seed}" / "checkpoint.pt"
        pool = (checkpoint.load(path).get("task") or {}) if path.is_file() else {}
        if "images" not in pool:
            raise UserError(f"--model {given}: no inverted images in {path} (LABEL=RUN, a DeepInversion student's "
                            "run of this recipe)")
        panels.append((label, pool["images"], pool["targets"]))
    k = datasets.record(args.dataset).num_classes
    path = figures.image_grid(args.out / f"{args.name}.png", panels, k)
    return path, {"classes": k, "panels": [[label, [int((targets == c).sum()) for c in range(k)]]
                                           for label, _, targets in panels]}


def main(args):
    if args.kind in ("responses", "tsne", "inverted"):
        path, plotted = {"responses": responses, "tsne": tsne, "inverted": inverted}[args.kind](args)
    else:
        layout = recipe.read_layout(args.layout)
        panels, x, xlabel, log = (curve if args.kind == "curve" else history)(layout, args)
        path = figures.curves(args.out / f"{Path(args.layout).stem}.png", panels, x, xlabel, title=layout["title"],
                              log=log)
        plotted = {"x": x, "panels": panels}
    runs.write_json(path.with_suffix(".plot.json"), plotted)
    print(f"figure: {path}", flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m undistill.recipe_figures", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="kind", required=True)
    for kind, what in (("curve", "a layout's rows as lines over its columns ([figure] x)"),
                       ("history", "the test accuracy over the epochs, a panel per column, a line per row")):
        k = sub.add_parser(kind, help=what)
        k.add_argument("layout", type=Path)
    for kind, what in (("responses", "the softmax_tau outputs of trained models on four test images"),
                       ("tsne", "the t-SNE of trained models' features (before their last layer) on the test split"),
                       ("inverted", "the images DeepInversion students' runs inverted, a column per class")):
        r = sub.add_parser(kind, help=what)
        r.add_argument("name", help="the PNG's name in OUT")
        r.add_argument("--dataset", required=True)
        r.add_argument("--model", action="append", required=True, help="LABEL=RUN, RUN a run directory below OUT")
        r.add_argument("--smoke", action="store_true", help="the synthetic data of a smoke run (recipe --smoke)")
    sub.choices["responses"].add_argument("--tau", type=float, required=True)
    sub.choices["tsne"].add_argument("--outputs", action="store_true", help="embed the softmax outputs, not the "
                                     "features")
    for k in sub.choices.values():
        k.add_argument("--out", type=Path, required=True)
        k.add_argument("--seeds", default="0,1,2")
    return p.parse_args(argv)


if __name__ == "__main__":
    distributed.run(main, parse_args())
