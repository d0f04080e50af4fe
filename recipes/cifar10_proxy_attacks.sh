#!/usr/bin/env bash
# The attacks that beat the defenses (Jandial et al., Distilling the Undistillable, Table 1, on the CPU proxy): HTC,
# DKD and SCM students on the attacker's 1,000 images per class (seeds 0 and 1, plain CNN, 15 epochs) against the
# proxy's strongest nasty teacher and against the stingy release. SCM's sequence S^2..S^K (default K = 2) is trained
# from the nasty teacher with the same omega (whole CIFAR-10, 8 epochs). SCM is not run against the stingy release:
# the nasty training that builds its sequence needs finite outputs from its adversary. Run after
# recipes/cifar10_cpu_proxy.sh and the nasty sweep, into the same directory. Resumable. Results:
# recipes/results/cifar10_cpu_proxy.md
#   bash recipes/cifar10_proxy_attacks.sh [RUN_DIR] [NASTY_TEACHER_NAME] [ITS_OMEGA] [K]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/cifar10_cpu_proxy}
nasty=${2:-nasty-omega0.1}
omega=${3:-0.1}
k=${4:-2}
data=(--dataset cifar10 --data-dir data/cifar10 --arch cnn --quiet)
attack() {  # ATTACK TEACHER_NAME, for the current seed's students
    python distill_student.py "${common[@]}" --resume --attack "$1" --teacher "$out/teachers/$2/checkpoint.pt" \
        --output "$students/$1-from-$2"
}
for pass in paper-claim others; do  # Jandial et al.'s claim first (HTC, SCM against nasty), then the rest
    for seed in 0 1; do
        students="$out/students-s$seed"
        common=("${data[@]}" --subset 1000 --epochs 15 --seed "$seed")
        if [ "$pass" = paper-claim ]; then
            attack htc "$nasty"
            bash recipes/scm_sequence.sh "$out/teachers/scm-$nasty" "$k" "$out/teachers/$nasty/checkpoint.pt" \
                "${data[@]}" --epochs 8 --omega "$omega" -- "${common[@]}" --output "$students/scm$k-from-$nasty"
        else
            attack dkd "$nasty"
            attack htc stingy
            attack dkd stingy
        fi
    done
done
python -m undistill.report "$out" --markdown "$out/verdict.md" --csv "$out/verdict.csv"
