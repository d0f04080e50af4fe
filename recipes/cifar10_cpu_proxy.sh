#!/usr/bin/env bash
# CPU-sized proxy of the CIFAR-10 tables (Nasty Teacher Table 1, Stingy Teacher Table 1): the real CIFAR-10 with
# 1,000 training images per class, the papers' plain CNN (Adam 1e-3) as teacher and student, seeds 0 and 1.
# Teachers: CE, nasty (against the CE teacher), stingy release of the CE teacher. Students: scratch, LS, and KD
# from each teacher. Under an hour on 2 CPU cores; results in recipes/results/cifar10_cpu_proxy.md.
#   bash recipes/cifar10_cpu_proxy.sh [RUN_DIR] [EPOCHS] [extra nasty options, e.g. --omega 0.08]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/cifar10_cpu_proxy}
epochs=${2:-15}
nasty_extra=("${@:3}")
bash datasets/cifar10_from_shared_tar.sh data/cifar10
for seed in 0 1; do
    run="$out/s$seed"
    common=(--dataset cifar10 --data-dir data/cifar10 --subset 1000 --arch cnn --epochs "$epochs" --seed "$seed"
            --quiet --resume)
    python train_teacher.py "${common[@]}" --defense ce --output "$run/teacher-ce"
    python train_teacher.py "${common[@]}" --defense nasty --adversary "$run/teacher-ce/checkpoint.pt" \
        "${nasty_extra[@]}" --output "$run/teacher-nasty"
    python train_teacher.py --dataset cifar10 --data-dir data/cifar10 --defense stingy --overwrite \
        --from "$run/teacher-ce/checkpoint.pt" --output "$run/teacher-stingy"
    python distill_student.py "${common[@]}" --attack scratch --output "$run/student-scratch"
    python distill_student.py "${common[@]}" --attack ls --output "$run/student-ls"
    for t in ce nasty stingy; do
        python distill_student.py "${common[@]}" --attack kd --teacher "$run/teacher-$t/checkpoint.pt" \
            --output "$run/student-kd-from-$t"
    done
done
python -m undistill.report "$out" --markdown "$out/verdict.md" --csv "$out/verdict.csv"
