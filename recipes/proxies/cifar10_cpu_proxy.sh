#!/usr/bin/env bash
# CPU-sized proxy of the CIFAR-10 tables (Nasty Teacher Table 1, Stingy Teacher Table 1) on the real CIFAR-10.
# The model owner trains on the whole training set: a CE teacher, a nasty teacher against it, a stingy release
# of the CE teacher (plain CNN, Adam 1e-3, seed 0). The attacker holds 1,000 images per class (seed 0 and 1 draw
# different subsets) and trains scratch, LS and KD students (KD from each teacher), plain CNN as well. Writes
# RUN_DIR/verdict.md (python -m undistill.report). Results: recipes/proxies/results/cifar10_cpu_proxy.md
#   bash recipes/proxies/cifar10_cpu_proxy.sh [RUN_DIR] [TEACHER_EPOCHS] [STUDENT_EPOCHS] [extra nasty options]
# (SEEDS, default 0,1: the students'; LAUNCH, SMOKE, CIFAR10_DIR: recipes/lib.sh)
SEEDS=${SEEDS:-0,1}
source "$(dirname "$0")/../lib.sh" proxies/cifar10_cpu_proxy "$@"
student_epochs=${3:-15}
source recipes/proxies/lib.sh

proxy_teachers "${2:-8}" "${@:4}"
cell students/scratch "${student[@]}" --attack scratch
cell students/ls "${student[@]}" --attack ls
for t in ce nasty stingy; do
    cell "students/kd-from-$t" "${student[@]}" --attack kd --teacher "$(teacher "$t")"
done
run_cells
report
