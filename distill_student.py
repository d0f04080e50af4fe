"""Train a student, from the labels alone or by distilling a released teacher used as a black box (logits only).

    python distill_student.py --attack ls                      # the label-smoothing baseline on mnist5k
    python distill_student.py --attack kd --teacher runs/teacher-nasty-cnn-s0/checkpoint.pt
    torchrun --nproc_per_node=8 distill_student.py --dataset cifar100 --data-dir DATA --attack kd --teacher ...
"""
import argparse
from pathlib import Path

import torch

from undistill import UserError, checkpoint, data, distributed, engine, models
from undistill.attacks import ATTACKS, KD_TAU, NEEDS_TEACHER, STINGY_TAU


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--attack", default="scratch", choices=list(ATTACKS))
    p.add_argument("--teacher", type=Path, help="checkpoint written by train_teacher.py (any defense)")
    g = p.add_argument_group("attack settings")
    g.add_argument("--alpha", type=float, default=0.9, help="kd: weight of the distillation term")
    g.add_argument("--tau", type=float, help="kd: temperature (default: the papers' for --dataset; 20 for stingy)")
    g.add_argument("--smoothing", type=float, default=0.1, help="ls: label smoothing epsilon")
    data.add_arguments(p)
    engine.add_arguments(p)
    return engine.fill_defaults(p.parse_args(argv))


def main(args):
    ctx = distributed.init(args.device)
    info = data.load(args.dataset, args.data_dir, args.download, args.subset, args.seed)

    teacher = None
    if args.attack in NEEDS_TEACHER:
        if args.teacher is None:
            raise UserError(f"--attack {args.attack} needs --teacher CKPT (written by train_teacher.py)")
        teacher, ckpt = checkpoint.load_classifier(args.teacher)  # queried in eval mode, without gradient
        checkpoint.check_compatible(ckpt, info, "teacher")
        if args.tau is None:
            args.tau = STINGY_TAU if ckpt.get("release") else KD_TAU[args.dataset]

    torch.manual_seed(args.seed)  # the same initialization for the same seed, on every run
    net = models.build(args.arch, info.num_classes, args.weights)
    student = models.Classifier(net, info.mean, info.std)
    objective, settings = engine.bind_settings(ATTACKS[args.attack], args)
    if teacher is not None:
        settings["teacher"] = str(args.teacher)
    meta = checkpoint.describe(info, args.arch, "student", args.attack, settings)
    out = engine.run_directory(args, "student", args.attack, args.arch)
    engine.fit(student, objective, teacher, info, args, ctx, meta, out)


if __name__ == "__main__":
    distributed.run(main, parse_args())
