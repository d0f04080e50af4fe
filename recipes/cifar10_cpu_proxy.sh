#!/usr/bin/env bash
# CPU-sized proxy of the CIFAR-10 tables (Nasty Teacher Table 1, Stingy Teacher Table 1) on the real CIFAR-10.
# The model owner trains on the whole training set: a CE teacher, a nasty teacher against it, a stingy release
# of the CE teacher (plain CNN, Adam 1e-3, seed 0). The attacker holds 1,000 images per class (seed 0 and 1 draw
# different subsets) and trains scratch, LS and KD students (KD from each teacher), plain CNN as well.
# About 45 minutes on 2 CPU cores; resumable (rerun the same command). Results: recipes/results/cifar10_cpu_proxy.md
#   bash recipes/cifar10_cpu_proxy.sh [RUN_DIR] [TEACHER_EPOCHS] [STUDENT_EPOCHS] [extra nasty options]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/cifar10_cpu_proxy}
teacher_epochs=${2:-8}
student_epochs=${3:-15}
nasty_extra=("${@:4}")
bash datasets/cifar10_from_tar.sh data/cifar10  # unpacked from $CIFAR10_TAR when missing
data=(--dataset cifar10 --data-dir data/cifar10 --arch cnn --quiet --resume)

teachers="$out/teachers"
python train_teacher.py "${data[@]}" --epochs "$teacher_epochs" --defense ce --output "$teachers/ce"
python train_teacher.py "${data[@]}" --epochs "$teacher_epochs" --defense nasty --adversary "$teachers/ce/checkpoint.pt" \
    "${nasty_extra[@]}" --output "$teachers/nasty"
python train_teacher.py --dataset cifar10 --data-dir data/cifar10 --defense stingy --overwrite \
    --from "$teachers/ce/checkpoint.pt" --output "$teachers/stingy"

for seed in 0 1; do
    students="$out/students-s$seed"
    common=("${data[@]}" --subset 1000 --epochs "$student_epochs" --seed "$seed")
    python distill_student.py "${common[@]}" --attack scratch --output "$students/scratch"
    python distill_student.py "${common[@]}" --attack ls --output "$students/ls"
    for t in ce nasty stingy; do
        python distill_student.py "${common[@]}" --attack kd --teacher "$teachers/$t/checkpoint.pt" \
            --output "$students/kd-from-$t"
    done
done
python -m undistill.report "$out" --markdown "$out/verdict.md" --csv "$out/verdict.csv"
