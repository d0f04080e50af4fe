"""Measure a checkpoint's released outputs: top-1, calibration, likelihood, sparsity, KL to a reference, and CMI.

    python -m undistill.evaluate runs/teacher-ce-cnn-s0/checkpoint.pt
    python -m undistill.evaluate runs/stingy/checkpoint.pt --reference runs/teacher-ce-cnn-s0/checkpoint.pt
    python -m undistill.evaluate runs/nasty/checkpoint.pt runs/scm/s2/checkpoint.pt --reference runs/ce/checkpoint.pt
    torchrun --nproc_per_node=8 -m undistill.evaluate runs/in/ce/checkpoint.pt --data-dir /data/imagenet

The model is loaded as a black box (`checkpoint.load_classifier`): a release is measured on the outputs its users
see (a stingy release's sparse logits, an API release's log-probabilities); several checkpoints are measured as
their ensemble, the mean of their logits (what an SCM student distills from). On each split of --split (default:
test), in eval mode and without augmentation: top-1 (%), ECE (--ece-bins equal-width confidence bins), NLL (nats;
inf when some label gets probability exactly 0, as a stingy or top-k release does for labels outside its top k;
`label_excluded` is the fraction of such images), sparsity at --tau (mean number of classes with probability >
--threshold, mean entropy), and with --reference KL(model || reference) at --tau (batchmean). CMI_T
(metrics.CMIAccumulator) for each of --temperatures over --cmi-split (default: the whole training set, without
augmentation; with --subset, its per-class subset).
ImageNet's training images then go through the validation transform (resize 256, center crop 224).

Prints a summary and writes JSON (default: `<checkpoint stem>.eval.json` beside the checkpoint). Python's json
writes an infinite NLL or KL as `Infinity` (which Python reads back).
"""
import argparse
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from . import UserError, checkpoint, datasets, distributed, loaders, metrics, models, releases, runs
from .metrics import CMIAccumulator, SplitMetrics


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m undistill.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, nargs="+", help="checkpoint written by train_teacher.py or "
                   "distill_student.py; several: their ensemble (the mean of their logits)")
    p.add_argument("--reference", type=Path, help="checkpoint to measure KL(model || reference) against")
    g = p.add_argument_group("measurements")
    g.add_argument("--split", default="test", choices=["test", "train", "both"],
                   help="split(s) for top-1, ECE, NLL, sparsity and KL")
    g.add_argument("--cmi-split", default="train", choices=["train", "test", "none"],
                   help="split whose CMI is measured (train: the whole training set, without augmentation)")
    g.add_argument("--temperatures", default=metrics.DEFAULT_TEMPERATURES, help="CMI temperatures, comma-separated")
    g.add_argument("--tau", type=float, default=4.0, help="temperature of the sparsity and KL measurements")
    g.add_argument("--threshold", type=float, default=1e-3, help="sparsity: count classes above this probability")
    g.add_argument("--ece-bins", type=int, default=15)
    datasets.add_arguments(p, validation=False)
    loaders.add_arguments(p)
    p.set_defaults(dataset=None)  # default: the checkpoint's dataset
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=0, help="which images --subset picks")
    g.add_argument("--batch-size", type=int, default=256, help="global batch, split across ranks")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    g.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"],
                   help="forward precision (auto: bf16 on CUDA); measurements are always accumulated in float64")
    g.add_argument("--output", type=Path, help="JSON file (default: <checkpoint stem>.eval.json beside it)")
    return p.parse_args(argv)


def temperature_key(t):
    return f"{t:g}"


def check_args(args):
    temps = metrics.parse_temperatures(args.temperatures)
    for name in ("tau", "threshold"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"--{name} {value} must be a positive number")
    for name in ("batch_size", "ece_bins"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if args.workers < 0:
        raise UserError("--workers must be >= 0")
    return temps


@torch.no_grad()
def measure(model, reference, dataset, num_classes, args, ctx, want_metrics, temps):
    """One pass over `dataset`: (SplitMetrics value or None, {T: CMI} or None), all-reduced across ranks."""
    loader = loaders.LOADERS[args.loader](dataset, ctx.per_rank(args.batch_size), train=False, seed=0,
                                          workers=args.workers, rank=ctx.rank, world_size=ctx.world_size,
                                          pin_memory=ctx.device.type == "cuda", device=ctx.device)
    split = SplitMetrics(args.tau, args.ece_bins, args.threshold, reference is not None, ctx.device)
    cmi = CMIAccumulator(num_classes, temps, ctx.device) if temps else None
    bf16 = args.precision == "bf16" or (args.precision == "auto" and ctx.device.type == "cuda")
    autocast = (lambda: torch.autocast(ctx.device.type, dtype=torch.bfloat16)) if bf16 else nullcontext
    for x, y in loader.epoch(0):
        x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
        if y.numel() and (y.min() < 0 or y.max() >= num_classes):
            raise UserError(f"labels outside 0..{num_classes - 1} in the data: check --dataset")
        with autocast():
            logits = model(x).float()
            ref = reference(x).float() if reference is not None and want_metrics else None
        if want_metrics:
            split.add(logits, y, ref)
        if cmi is not None:
            cmi.add(logits, y)
    metrics = split.reduce(ctx.all_reduce_sum).value() if want_metrics else None
    return metrics, (cmi.reduce(ctx.all_reduce_sum).value() if cmi is not None else None)


def main(args):
    """Evaluate args.checkpoint; returns the result dict (also written to the JSON file on rank 0)."""
    temps = check_args(args)
    ctx = distributed.init(args.device)
    loaded = [checkpoint.load_classifier(path) for path in args.checkpoint]
    model, ckpt = loaded[0]  # an ensemble is described by its first member
    if len(loaded) > 1:
        model = models.Ensemble([m for m, _ in loaded]).eval()
    dataset = args.dataset or ckpt["dataset"]
    if dataset not in datasets.DATASETS:
        raise UserError(f"{args.checkpoint[0]} was trained on {dataset!r}, which this version cannot load: "
                        f"pass --dataset ({', '.join(sorted(datasets.DATASETS))})")
    owner = datasets.folder_options(args)
    if dataset == "folder":  # the owner's images at the size the model was trained on, unless given
        owner.setdefault("image_size", ckpt["image_size"])
    info = datasets.load(dataset, args.data_dir, args.download, args.subset, args.seed, args.ffcv_dir, **owner)
    for path, (_, member) in zip(args.checkpoint, loaded):
        checkpoint.check_compatible(member, info, f"checkpoint {path}")
    reference = None
    if args.reference is not None:
        reference, ref_ckpt = checkpoint.load_classifier(args.reference)
        checkpoint.check_compatible(ref_ckpt, info, "--reference")
        reference.to(ctx.device)
    model.to(ctx.device)

    splits = ["test", "train"] if args.split == "both" else [args.split]
    views = {"test": info.test, "train": datasets.unaugmented(info.train, info.test)}
    result = {"checkpoint": " + ".join(map(str, args.checkpoint)),
              "reference": str(args.reference) if args.reference else None,
              "model": {k: ckpt.get(k) for k in ("arch", "dataset", "num_classes", "role", "method", "settings",
                                                 "release", "epoch")},
              "settings": {"tau": args.tau, "threshold": args.threshold, "ece_bins": args.ece_bins,
                           "temperatures": temps, "cmi_split": args.cmi_split, "subset": args.subset,
                           "precision": args.precision, "world_size": ctx.world_size}}
    start = time.perf_counter()
    for name in dict.fromkeys(splits + ([args.cmi_split] if args.cmi_split != "none" else [])):
        metrics, cmi = measure(model, reference, views[name], info.num_classes, args, ctx, name in splits,
                               temps if name == args.cmi_split else None)
        if metrics is not None:
            result[name] = metrics
        if cmi is not None:
            result["cmi"] = {temperature_key(t): v for t, v in cmi.items()}
    result["time_s"] = time.perf_counter() - start

    out = args.output or args.checkpoint[0].with_name(f"{args.checkpoint[0].stem}.eval.json")
    ctx.on_main(lambda: write(out, result))
    ctx.print(summary(result, info, out))
    return result


def write(out, result):
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(runs.cannot_write(out.parent, e)) from None
    runs.write_json(out, result)


def summary(result, info, out):
    m = result["model"]
    release = m.get("release")
    lines = [f"{result['checkpoint']}: {m.get('role')} {m.get('method')} {m.get('arch')} on {info.name}"
             + (f", released {releases.describe(release)}" if release else "")]
    tau, threshold = result["settings"]["tau"], result["settings"]["threshold"]
    for name in ("test", "train"):
        if name in result:
            r = result[name]
            line = (f"{name} ({r['images']} images): top-1 {r['acc']:.2f}%  ECE {r['ece']:.4f}  NLL {r['nll']:.4f}"
                    + (f" ({100 * r['label_excluded']:.1f}% of labels at probability 0)" if r["label_excluded"]
                       else "")
                    + f"  tau={tau:g}: {r['active_classes']:.2f} classes > {threshold:g}, entropy "
                      f"{r['entropy']:.4f} nats")
            if "kl_to_reference" in r:
                line += f"  KL(model||reference) {r['kl_to_reference']:.4f}"
            lines.append(line)
    if "cmi" in result:
        lines.append(f"CMI over {result['settings']['cmi_split']}: "
                     + "  ".join(f"T={t} {v:.4g}" for t, v in result["cmi"].items()))
    lines.append(f"-> {out}")
    return "\n".join(lines)


def cli(argv: list[str] | None = None) -> None:
    """The command line (`python -m undistill.evaluate`, `undistill evaluate`), with `argv` or sys.argv's."""
    distributed.run(main, parse_args(argv))


if __name__ == "__main__":
    cli()
