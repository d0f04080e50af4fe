#!/usr/bin/env bash
# The attacks that beat the defenses (Jandial et al., Distilling the Undistillable, Table 1, on the CPU proxy): HTC,
# DKD and SCM students on the attacker's 1,000 images per class (seeds 0 and 1, plain CNN, 15 epochs) against the
# proxy's nasty teacher of omega OMEGA (teachers/nasty-omega<OMEGA>, the one recipes/proxies/cifar10_proxy_sweep.sh
# trains; trained here where missing) and against the stingy release. SCM's sequence S^2..S^K (default K = 2) is
# trained from the nasty teacher with the same omega (whole CIFAR-10, 8 epochs, seed 0), each S^i a nasty teacher
# against S^(i-1). SCM is not run against the stingy release: the nasty training that builds its sequence needs
# finite outputs from its adversary. Run into the directory of recipes/proxies/cifar10_cpu_proxy.sh. Results:
# recipes/proxies/results/cifar10_cpu_proxy.md
#   bash recipes/proxies/cifar10_proxy_attacks.sh [RUN_DIR] [OMEGA] [K]
# (SEEDS, default 0,1: the students'; LAUNCH, SMOKE, CIFAR10_DIR: recipes/lib.sh)
SEEDS=${SEEDS:-0,1}
source "$(dirname "$0")/../lib.sh" proxies/cifar10_cpu_proxy "$@"
source recipes/proxies/lib.sh
omega=${2:-0.1}
k=${3:-2}
nasty=nasty-omega$omega

proxy_teachers
cell "teachers/$nasty" train_teacher.py "${data[@]}" --epochs 8 --defense nasty --adversary @teachers/ce \
    --omega "$omega"
run_cells 0
sequence=("$(teacher "$nasty")")
for ((i = 2; i <= k; i++)); do
    cell "teachers/scm-$nasty/s$i" train_teacher.py "${data[@]}" --epochs 8 --defense nasty \
        --adversary "${sequence[-1]}" --omega "$omega"
    run_cells 0
    sequence+=("$(teacher "scm-$nasty/s$i")")
done
# Jandial et al.'s claim first (HTC, SCM against nasty), then the rest
cell "students/htc-from-$nasty" "${student[@]}" --attack htc --teacher "$(teacher "$nasty")"
cell "students/scm$k-from-$nasty" "${student[@]}" --attack scm --teacher "${sequence[@]}"
run_cells
cell "students/dkd-from-$nasty" "${student[@]}" --attack dkd --teacher "$(teacher "$nasty")"
for attack in htc dkd; do
    cell "students/$attack-from-stingy" "${student[@]}" --attack "$attack" --teacher "$(teacher stingy)"
done
run_cells
report
