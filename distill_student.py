"""Train a student, from the labels alone or by distilling released teachers used as black boxes (logits only).

    python distill_student.py --attack ls                      # the label-smoothing baseline on mnist5k
    python distill_student.py --attack kd --teacher runs/teacher-nasty-cnn-s0/checkpoint.pt
    python distill_student.py --attack htc --teacher runs/teacher-nasty-cnn-s0/checkpoint.pt --no-labels
    python distill_student.py --attack scm --teacher runs/nasty/checkpoint.pt runs/nasty-2/checkpoint.pt
    torchrun --nproc_per_node=8 distill_student.py --dataset cifar100 --data-dir DATA --attack kd --teacher ...

With several --teacher the attack distills from the mean of their logits; the first is the model attacked
(the one the results are reported against).
"""
import argparse
import inspect
from pathlib import Path

import torch

from undistill import UserError, checkpoint, data, distributed, engine, launch, models
from undistill.attacks import ATTACKS, NEEDS_TEACHER, STUDENT_HEADS, default_settings


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--attack", default="scratch", choices=list(ATTACKS))
    p.add_argument("--teacher", type=Path, nargs="+", action="extend",
                   help="checkpoint(s) written by train_teacher.py (any defense); several: their logits' mean")
    g = p.add_argument_group("attack settings (unset: the papers' values for the attack and --dataset)")
    g.add_argument("--alpha", type=float, help="weight of the teacher term (kd/htc/scm/skeptical 0.9, dkd: TCKD 1.0)")
    g.add_argument("--tau", type=float, help="temperature (kd/scm/skeptical: 4 on CIFAR-10 and ImageNet, 20 on "
                   "CIFAR-100 and Tiny-ImageNet, 20 for a stingy teacher; htc 50; dkd 4)")
    g.add_argument("--multiplier", type=float, help="htc/scm: weight m of the KL term (htc 50; scm tau^2, i.e. KD)")
    g.add_argument("--no-labels", action="store_true", help="kd/htc/scm: the attacker has no labels (no CE term)")
    g.add_argument("--beta", type=float, default=8.0, help="dkd: weight of the non-target term (NCKD)")
    g.add_argument("--dkd-warmup", type=int, default=20, help="dkd: epochs over which the KD terms ramp up")
    g.add_argument("--kd-head", type=int, default=1, choices=[0, 1, 2, 3], help="skeptical: the head the teacher "
                   "is distilled into (0 final, 1 after stage 3, 2 after stage 2, 3 after stage 1)")
    g.add_argument("--kd-delay", type=int, default=0, help="skeptical: epochs of final-head CE before distilling")
    g.add_argument("--smoothing", type=float, default=0.1, help="ls: label smoothing epsilon")
    data.add_arguments(p)
    engine.add_arguments(p)
    launch.add_arguments(p)
    return engine.fill_defaults(p.parse_args(argv))


def main(args):
    if args.no_labels and "no_labels" not in inspect.signature(ATTACKS[args.attack]).parameters:
        raise UserError(f"--attack {args.attack} uses the labels; --no-labels works with kd, htc and scm")
    ctx = distributed.init(args.device)
    info = data.load(args.dataset, args.data_dir, args.download, args.subset, args.seed, args.ffcv_dir)

    teacher, stingy = None, False
    if args.attack in NEEDS_TEACHER:
        if not args.teacher:
            raise UserError(f"--attack {args.attack} needs --teacher CKPT (written by train_teacher.py)")
        members = []
        for path in args.teacher:
            member, ckpt = checkpoint.load_classifier(path)  # queried in eval mode, without gradient
            checkpoint.check_compatible(ckpt, info, f"teacher {path}")
            members.append(member)
            stingy = stingy or bool(ckpt.get("release"))
        teacher = members[0] if len(members) == 1 else models.Ensemble(members)
    for name, value in default_settings(args.attack, args.dataset, stingy).items():
        if getattr(args, name) is None:
            setattr(args, name, value)

    torch.manual_seed(args.seed)  # the same initialization for the same seed, on every run
    heads = STUDENT_HEADS.get(args.attack)
    student = models.Classifier(models.build(args.arch, info.num_classes, args.weights, heads), info.mean, info.std)
    objective, settings = engine.bind_settings(ATTACKS[args.attack], args)
    if teacher is not None:
        settings["teacher"] = [str(p) for p in args.teacher] if len(args.teacher) > 1 else str(args.teacher[0])
        if len(args.teacher) > 1:
            settings["ensemble"] = len(args.teacher)
    meta = checkpoint.describe(info, args.arch, "student", args.attack, settings, heads=heads)
    out = engine.run_directory(args, "student", args.attack, args.arch)
    engine.fit(student, objective, teacher, info, args, ctx, meta, out)


if __name__ == "__main__":
    launch.main(main, parse_args())
