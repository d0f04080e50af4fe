#!/usr/bin/env bash
# How strong must the nasty term be on the CPU proxy (plain CNN, 1,000 CIFAR-10 images per class)? For each
# omega: a nasty teacher against the proxy's CE teacher of seed 0, its KL to that teacher, and a KD student.
# Run after recipes/cifar10_cpu_proxy.sh (it reuses its CE teacher and LS student).
#   bash recipes/cifar10_nasty_sweep.sh [PROXY_RUN_DIR] [EPOCHS] [OMEGA ...]
set -euo pipefail
cd "$(dirname "$0")/.."
proxy=${1:-runs/cifar10_cpu_proxy}
epochs=${2:-15}
omegas=("${@:3}")
[ ${#omegas[@]} -gt 0 ] || omegas=(0.2 1.0)
ce="$proxy/s0/teacher-ce/checkpoint.pt"
common=(--dataset cifar10 --data-dir data/cifar10 --subset 1000 --arch cnn --epochs "$epochs" --seed 0 --quiet --resume)
for omega in "${omegas[@]}"; do
    run="$proxy/nasty-sweep/omega$omega"
    python train_teacher.py "${common[@]}" --defense nasty --adversary "$ce" --omega "$omega" --output "$run/teacher-nasty"
    python -m undistill.evaluate "$run/teacher-nasty/checkpoint.pt" --reference "$ce" --data-dir data/cifar10 \
        --cmi-split none --output "$run/teacher-nasty/eval.json"
    python distill_student.py "${common[@]}" --attack kd --teacher "$run/teacher-nasty/checkpoint.pt" \
        --output "$run/student-kd-from-nasty"
done
python -m undistill.report "$proxy/s0" "$proxy/nasty-sweep"
