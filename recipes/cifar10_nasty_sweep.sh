#!/usr/bin/env bash
# How strong must the nasty term be on the CPU proxy? For each omega: a nasty teacher (whole CIFAR-10, plain CNN)
# against the proxy's CE teacher, then KD students on the attacker's 1,000 images per class (seeds 0 and 1).
# Run after recipes/cifar10_cpu_proxy.sh, into the same directory, so the report puts them side by side.
#   bash recipes/cifar10_nasty_sweep.sh [PROXY_RUN_DIR] [OMEGA ...]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/cifar10_cpu_proxy}
omegas=("${@:2}")
[ ${#omegas[@]} -gt 0 ] || omegas=(0.1)
data=(--dataset cifar10 --data-dir data/cifar10 --arch cnn --quiet --resume)
for omega in "${omegas[@]}"; do
    teacher="$out/teachers/nasty-omega$omega"
    python train_teacher.py "${data[@]}" --epochs 8 --defense nasty --adversary "$out/teachers/ce/checkpoint.pt" \
        --omega "$omega" --output "$teacher"
    for seed in 0 1; do
        python distill_student.py "${data[@]}" --subset 1000 --epochs 15 --seed "$seed" --attack kd \
            --teacher "$teacher/checkpoint.pt" --output "$out/students-s$seed/kd-from-nasty-omega$omega"
    done
done
python -m undistill.report "$out" --markdown "$out/verdict.md" --csv "$out/verdict.csv"
