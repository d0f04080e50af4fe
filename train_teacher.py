"""Train a teacher with a defense against distillation, or release a trained one as a stingy teacher.

    python train_teacher.py                                   # CE teacher on the built-in mnist5k
    python train_teacher.py --defense nasty --adversary runs/teacher-ce-cnn-s0/checkpoint.pt
    python train_teacher.py --defense stingy --from runs/teacher-ce-cnn-s0/checkpoint.pt --ratio 0.2
    torchrun --nproc_per_node=8 train_teacher.py --dataset cifar100 --data-dir DATA --defense nasty ...
"""
import argparse
import json
from pathlib import Path

import torch

from undistill import UserError, checkpoint, data, distributed, engine, launch, metrics, models
from undistill.defenses import (DEFENSES, FROZEN_MODEL, NASTY_SETTINGS, STINGY_RATIO, STINGY_VARIANTS,
                                ClassCentroids, stingy_k)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--defense", default="ce", choices=[*DEFENSES, "stingy"])
    g = p.add_argument_group("defense settings (unset ones take the papers' values for --dataset)")
    g.add_argument("--smoothing", type=float, default=0.1, help="ls: label smoothing epsilon")
    g.add_argument("--adversary", type=Path, help="nasty: checkpoint of the normally trained (ce) adversary")
    g.add_argument("--omega", type=float, help="nasty: weight of the KL term")
    g.add_argument("--tau", type=float, help="nasty: temperature tau_A")
    # lambda 4 with t2mean: the best trade-off of the CIFAR-10 CPU proxy sweep (recipes/results/cifar10_cpu_proxy.md)
    g.add_argument("--cmi-weight", type=float, default=4.0, help="cmim: lambda, the weight of the CMI term")
    g.add_argument("--temperatures", default=metrics.DEFAULT_TEMPERATURES, help="cmim: the temperature grid")
    g.add_argument("--cmi-agg", default="t2mean", choices=["mean", "max", "t2mean"],
                   help="cmim: how the grid's CMI terms combine (t2mean: mean of T^2 CMI_T)")
    g.add_argument("--centroids", default="ema", choices=["ema", "epoch"],
                   help="cmim: class centroids from an EMA of each step's outputs, or a full pass per epoch")
    g.add_argument("--centroid-momentum", type=float, default=0.9, help="cmim: EMA momentum of the centroids")
    g.add_argument("--from", dest="source", type=Path, help="stingy: checkpoint of the trained teacher to release")
    g.add_argument("--ratio", type=float, help="stingy: keep k = floor(ratio * classes) logits per sample")
    g.add_argument("--variant", default="top", choices=sorted(STINGY_VARIANTS),
                   help="stingy: top (the paper's), smooth, reverse, least (its ablations)")
    data.add_arguments(p)
    engine.add_arguments(p)
    launch.add_arguments(p)
    args = engine.fill_defaults(p.parse_args(argv))
    tau, omega = NASTY_SETTINGS[args.dataset]
    args.tau = tau if args.tau is None else args.tau
    args.omega = omega if args.omega is None else args.omega
    args.ratio = STINGY_RATIO[args.dataset] if args.ratio is None else args.ratio
    return args


def main(args):
    ctx = distributed.init(args.device)
    info = data.load(args.dataset, args.data_dir, args.download, args.subset, args.seed, args.ffcv_dir)

    if args.defense == "stingy":  # no training: wrap a trained teacher so that it only ever emits sparse logits
        return release_stingy(args, info, ctx)

    reference = None
    if args.defense in FROZEN_MODEL:
        path = getattr(args, FROZEN_MODEL[args.defense])
        if path is None:
            raise UserError(f"--defense {args.defense} needs --{FROZEN_MODEL[args.defense]} CKPT "
                            "(a teacher trained with --defense ce)")
        reference, ckpt = checkpoint.load_classifier(path)
        checkpoint.check_compatible(ckpt, info, FROZEN_MODEL[args.defense])
        if ckpt.get("release"):  # its -inf logits make the KL to it infinite
            raise UserError(f"{path} is a {ckpt['release']['name']} release, whose sparse logits give an infinite "
                            f"KL: pass the teacher it wraps ({ckpt['settings'].get('from')}) as --adversary")
    elif args.defense == "cmim":  # its reference: class centroids, not a model
        args.temperatures = metrics.parse_temperatures(args.temperatures)
        reference = ClassCentroids(info.num_classes, args.temperatures, args.centroids, args.centroid_momentum)

    torch.manual_seed(args.seed)  # the same initialization for the same seed, on every run
    net = models.build(args.arch, info.num_classes, args.weights)
    model = models.Classifier(net, info.mean, info.std)
    objective, settings = engine.bind_settings(DEFENSES[args.defense], args)
    if args.defense in FROZEN_MODEL:
        settings[FROZEN_MODEL[args.defense]] = str(path)
    if args.defense == "cmim":
        settings.update(centroids=args.centroids, centroid_momentum=args.centroid_momentum)
    meta = checkpoint.describe(info, args.arch, "teacher", args.defense, settings)
    out = engine.run_directory(args, "teacher", args.defense, args.arch)
    engine.fit(model, objective, reference, info, args, ctx, meta, out)


def release_stingy(args, info, ctx):
    if args.source is None:
        raise UserError("--defense stingy needs --from CKPT (the trained teacher to release)")
    model, source = checkpoint.load_classifier(args.source)
    checkpoint.check_compatible(source, info, "--from teacher")
    if not 0 < args.ratio <= 1:
        raise UserError(f"--ratio {args.ratio} must be in (0, 1]")
    k = stingy_k(args.ratio, info.num_classes)
    release = {"name": "stingy", "variant": args.variant, "ratio": args.ratio, "k": k}
    model.release = checkpoint.release_transform(release)
    out = engine.run_directory(args, "teacher", "stingy", source["arch"])
    _, test_loader = engine.make_loaders(info, args, ctx)
    metrics = {f"test_{k}": v for k, v in engine.evaluate(engine.prepare(model, ctx, args), test_loader, ctx,
                                                          args).items()}
    settings = {"ratio": args.ratio, "k": k, "variant": args.variant, "from": str(args.source)}
    meta = checkpoint.describe(info, source["arch"], "teacher", "stingy", settings, release)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        checkpoint.save(dict(meta, epoch=source["epoch"], metrics=metrics, state_dict=source["state_dict"]),
                        out / "checkpoint.pt")
        summary = dict(engine.meta_summary(meta), best_acc=metrics["test_acc"], last_acc=metrics["test_acc"],
                       args=engine.plain(vars(args)))
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    ctx.print(f"released stingy-{args.variant} teacher (k={k} of {info.num_classes} logits): test accuracy "
              f"{metrics['test_acc']:.2f}%  -> {out / 'checkpoint.pt'}")


if __name__ == "__main__":
    launch.main(main, parse_args())
