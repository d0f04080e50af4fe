#!/usr/bin/env bash
# HTC over part of Jandial et al.'s search space (m in {1, 5, 10, 50}, tau in {4, 20, 50, 100}, alpha in 0.1..0.9)
# against one teacher of the CPU proxy (teachers/TEACHER_NAME of RUN_DIR: nasty, stingy, or one the sweep trained):
# one student per "TAU M ALPHA" triple and seed, on the attacker's 1,000 images per class (plain CNN, 15 epochs).
# Run into the directory of recipes/proxies/cifar10_cpu_proxy.sh (its teachers are trained here where missing).
# Results: recipes/proxies/results/cifar10_cpu_proxy.md
#   bash recipes/proxies/cifar10_proxy_htc_grid.sh RUN_DIR TEACHER_NAME "TAU M ALPHA" ...
#   e.g. SEEDS=0,1 bash recipes/proxies/cifar10_proxy_htc_grid.sh runs/cifar10_cpu_proxy nasty-omega0.1 "50 1 0.9"
# (SEEDS, default 0,1: the students'; LAUNCH, SMOKE, CIFAR10_DIR: recipes/lib.sh)
if [[ $# -lt 3 ]]; then
    echo "error: $# arguments (pass RUN_DIR TEACHER_NAME \"TAU M ALPHA\" [\"TAU M ALPHA\" ...])" >&2
    exit 2
fi
SEEDS=${SEEDS:-0,1}
source "$(dirname "$0")/../lib.sh" proxies/cifar10_cpu_proxy "$@"
source recipes/proxies/lib.sh
name=$2
shift 2

proxy_teachers
for setting in "$@"; do
    read -r tau m alpha <<< "$setting"
    cell "students/htc-t$tau-m$m-a$alpha-from-$name" "${student[@]}" --attack htc --tau "$tau" --multiplier "$m" \
        --alpha "$alpha" --teacher "$(teacher "$name")"
done
run_cells
report
