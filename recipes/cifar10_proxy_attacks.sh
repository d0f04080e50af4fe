#!/usr/bin/env bash
# The attacks that beat the defenses (seed 002 Table 1, on the CPU proxy): HTC, DKD and SCM students on the
# attacker's 1,000 images per class (seeds 0 and 1, plain CNN, 15 epochs) against the proxy's strongest nasty
# teacher and against the stingy release. SCM's sequence S^2, S^3 is trained from the nasty teacher with the
# same omega (whole CIFAR-10, 8 epochs). SCM is not run against the stingy release: the nasty training that
# builds its sequence needs finite outputs from its adversary. Run after recipes/cifar10_cpu_proxy.sh and the
# nasty sweep, into the same directory. Resumable. Results: recipes/results/cifar10_cpu_proxy.md
#   bash recipes/cifar10_proxy_attacks.sh [RUN_DIR] [NASTY_TEACHER_NAME] [ITS_OMEGA]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/cifar10_cpu_proxy}
nasty=${2:-nasty-omega0.1}
omega=${3:-0.1}
data=(--dataset cifar10 --data-dir data/cifar10 --arch cnn --quiet)
for seed in 0 1; do
    students="$out/students-s$seed"
    common=("${data[@]}" --subset 1000 --epochs 15 --seed "$seed")
    for teacher in "$nasty" stingy; do
        for attack in htc dkd; do
            python distill_student.py "${common[@]}" --resume --attack "$attack" \
                --teacher "$out/teachers/$teacher/checkpoint.pt" --output "$students/$attack-from-$teacher"
        done
    done
    bash recipes/scm_sequence.sh "$out/teachers/scm-$nasty" 3 "$out/teachers/$nasty/checkpoint.pt" \
        "${data[@]}" --epochs 8 --omega "$omega" -- "${common[@]}" --output "$students/scm-from-$nasty"
done
python -m undistill.report "$out" --markdown "$out/verdict.md" --csv "$out/verdict.csv"
