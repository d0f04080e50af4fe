"""Train a teacher with a defense against distillation, or release a trained one (stingy, topk, rounded, label,
reverse-sigmoid, noise).

    python train_teacher.py                                   # CE teacher on the built-in mnist5k
    python train_teacher.py --defense nasty --adversary runs/teacher-ce-cnn-s0/checkpoint.pt
    python train_teacher.py --defense stingy --from runs/teacher-ce-cnn-s0/checkpoint.pt --ratio 0.2
    python train_teacher.py --defense rounded --from runs/teacher-ce-cnn-s0/checkpoint.pt --decimals 2
    torchrun --nproc_per_node=8 train_teacher.py --dataset cifar100 --data-dir DATA --defense nasty ...
"""
import argparse
import sys

import torch

from undistill import (checkpoint, datasets, distributed, engine, launch, loaders, methods, models, options,
                       releases, runs, teachers)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    methods.add_arguments(p, "defense")
    datasets.add_arguments(p)
    loaders.add_arguments(p)
    engine.add_arguments(p)
    launch.add_arguments(p)
    return p.parse_args(argv)


def main(args, info=None):
    """`info`: the dataset as datasets.load gives it for these args, when a caller that runs many methods has
    loaded it once (bench/gpu_correctness.py, gpu_table1.py); else it is loaded here."""
    method = methods.chosen(args, "defense")
    queried = teachers.load(method, args)  # the adversary (nasty), or the trained teacher to release
    config, settings = options.resolve(args, method, datasets.record(args.dataset))
    ctx = distributed.init(config.device)
    if info is None:  # a release reads no training image
        info = datasets.load(config.dataset, config.data_dir, config.download, config.subset, config.seed,
                             config.ffcv_dir, train=method.release is None, validation=config.validation,
                             **datasets.folder_options(config))
    if queried is not None:
        queried.check_compatible(info)
        settings.update(queried.settings())
    if method.release is not None:  # no training: the trained teacher, wrapped so that it emits only its release
        return release(method, settings, queried, info, config, ctx)

    if config.weights is not None and args.lr is None and ctx.is_main:
        print(f"warning: --init {config.weights}: the from-scratch lr {config.lr:g} can undo what it learned; "
              f"fine-tune with --lr {config.lr / 10:g}", file=sys.stderr, flush=True)
    convention = checkpoint.convention(config.weights)  # an imported model reads its images as its owner's did
    torch.manual_seed(config.seed)  # the same initialization for the same seed, on every run
    net = models.build(config.arch, info.num_classes, config.weights, image_size=info.image_size)
    model = models.Classifier(net, convention.get("mean", info.mean), convention.get("std", info.std),
                              owner=convention.get("input"))
    task = method.build(settings, methods.Run(method, info, ctx, config, queried))
    meta = dict(checkpoint.describe(info, config.arch, "teacher", method.name, settings), **convention)
    engine.fit(model, task, info=info, config=config, ctx=ctx, meta=meta,
               out=runs.directory(config, "teacher", method.name, config.arch))


def release(method, settings, source, info, config, ctx):
    ckpt, model = source.checkpoints[0], source.model
    released = method.release_entry(settings)
    model.release = methods.release_transform(released, info.num_classes, f"--defense {method.name}")
    out = runs.directory(config, "teacher", method.name, ckpt["arch"])
    test = engine.make_loader(info.test, config, ctx, train=False)
    metrics = {f"test_{k}": v for k, v in engine.evaluate(engine.prepare(model, ctx, config), test, ctx,
                                                          config).items()}
    # an imported teacher keeps its owner's normalization and input convention
    meta = dict(checkpoint.describe(info, ckpt["arch"], "teacher", method.name, settings, released),
                **checkpoint.carried(ckpt))
    summary = dict(meta, best_acc=metrics["test_acc"], last_acc=metrics["test_acc"], args=runs.plain(vars(config)))
    with runs.owned(out, ctx):
        ctx.on_main(lambda: (checkpoint.save(dict(meta, epoch=ckpt["epoch"], metrics=metrics,
                                                  state_dict=ckpt["state_dict"]), out / "checkpoint.pt"),
                             runs.write_json(out / "summary.json", summary)))
    ctx.print(f"released a {releases.describe(released)} teacher ({info.num_classes} classes): test accuracy "
              f"{metrics['test_acc']:.2f}%  -> {out / 'checkpoint.pt'}")


def cli(argv: list[str] | None = None) -> None:
    """The command line (`python train_teacher.py`, `undistill train-teacher`), with `argv` or sys.argv's."""
    launch.main(main, parse_args(argv))


if __name__ == "__main__":
    cli()
