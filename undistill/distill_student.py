"""Train a student, from the labels alone or by distilling released teachers.

    python distill_student.py --attack ls                      # the label-smoothing baseline on mnist5k
    python distill_student.py --attack kd --teacher runs/teacher-nasty-cnn-s0/checkpoint.pt
    python distill_student.py --attack htc --teacher runs/teacher-nasty-cnn-s0/checkpoint.pt --no-labels
    python distill_student.py --attack scm --teacher runs/nasty/checkpoint.pt runs/nasty-2/checkpoint.pt
    python distill_student.py --attack dafl --teacher runs/teacher-ce-cnn-s0/checkpoint.pt    # data-free
    python distill_student.py --attack kd --teacher-api owner_api.py:answer --api-output probs  # a black-box API
    torchrun --nproc_per_node=8 distill_student.py --dataset cifar100 --data-dir DATA --attack kd --teacher ...

The teachers are black boxes, their logits as released, except for the white-box attacks (dafl, deepinversion),
which also read gradients and internals of the teacher. With several --teacher the attack distills from the mean of
their logits; the first is the model attacked (the one the results are reported against).
"""
import argparse

import torch

from undistill import UserError, checkpoint, datasets, distributed, engine, launch, loaders, methods, models, \
    options, runs, teacher_api, teachers


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    methods.add_arguments(p, "attack")
    teacher_api.add_arguments(p)
    datasets.add_arguments(p)
    loaders.add_arguments(p)
    engine.add_arguments(p)
    launch.add_arguments(p)
    return p.parse_args(argv)


def main(args, info=None):
    """`info`: the dataset as datasets.load gives it for these args (a data-free attack's with the training split
    withheld), when a caller that runs many methods has loaded it once (bench/gpu_correctness.py, gpu_table1.py);
    else it is loaded here."""
    method = methods.chosen(args, "attack")
    teacher = teachers.load(method, args)  # None for the students without a teacher (scratch, ls)
    config, settings = options.resolve(args, method, datasets.record(args.dataset),
                                       released=teacher is not None and teacher.released)
    if method.data_free and (config.subset is not None or config.validation is not None):
        raise UserError(f"--{'subset' if config.subset is not None else 'validation'}: --attack {method.name} is "
                        "data-free, it reads no training image")
    ctx = distributed.init(config.device)
    if info is None:
        info = datasets.load(config.dataset, config.data_dir, config.download, config.subset, config.seed,
                             config.ffcv_dir, train=not method.data_free, validation=config.validation,
                             **datasets.folder_options(config))
    if teacher is not None:
        teacher.check_compatible(info)
        settings.update(teacher.settings())

    torch.manual_seed(config.seed)  # the same initialization for the same seed, on every run
    net = models.build(config.arch, info.num_classes, config.weights, method.heads, info.image_size)
    student = models.Classifier(net, info.mean, info.std)
    task = method.build(settings, methods.Run(method, info, ctx, config, teacher))
    meta = checkpoint.describe(info, config.arch, "student", method.name, settings, heads=method.heads,
                               access=method.access)
    engine.fit(student, task, info=info, config=config, ctx=ctx, meta=meta,
               out=runs.directory(config, "student", method.name, config.arch))


def cli(argv: list[str] | None = None) -> None:
    """The command line (`python distill_student.py`, `undistill distill`), with `argv` or sys.argv's."""
    launch.main(main, parse_args(argv))


if __name__ == "__main__":
    cli()
