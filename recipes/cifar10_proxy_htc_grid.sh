#!/usr/bin/env bash
# HTC over part of Jandial et al.'s search space (m in {1, 5, 10, 50}, tau in {4, 20, 50, 100}, alpha in 0.1..0.9)
# against one teacher of the CPU proxy: one student per "TAU M ALPHA" triple and seed, on the attacker's
# 1,000 images per class (plain CNN, 15 epochs). Run after recipes/cifar10_cpu_proxy.sh, into the same directory.
# Resumable. Results: recipes/results/cifar10_cpu_proxy.md
#   bash recipes/cifar10_proxy_htc_grid.sh RUN_DIR TEACHER_NAME "SEEDS" "TAU M ALPHA" ...
#   e.g. bash recipes/cifar10_proxy_htc_grid.sh runs/cifar10_cpu_proxy nasty-omega0.1 "0 1" "50 1 0.9" "20 5 0.9"
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1 teacher=$2 seeds=$3
shift 3
for setting in "$@"; do
    read -r tau m alpha <<<"$setting"
    for seed in $seeds; do
        python distill_student.py --dataset cifar10 --data-dir data/cifar10 --arch cnn --quiet --resume \
            --subset 1000 --epochs 15 --seed "$seed" --attack htc --tau "$tau" --multiplier "$m" --alpha "$alpha" \
            --teacher "$out/teachers/$teacher/checkpoint.pt" \
            --output "$out/students-s$seed/htc-t$tau-m$m-a$alpha-from-$teacher"
    done
done
python -m undistill.report "$out" --markdown "$out/verdict.md" --csv "$out/verdict.csv"
