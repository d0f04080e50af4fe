#!/usr/bin/env bash
# How strong must a defense be on the CPU proxy? For each value of one of its options: a teacher of that defense
# (whole CIFAR-10, plain CNN, 8 epochs, seed 0; nasty uses the proxy's CE teacher as adversary), measured by
# python -m undistill.evaluate (ECE, CMI per temperature, KL to the CE teacher: the report's ECE and CMI columns),
# then KD students on the attacker's 1,000 images per class (seeds 0 and 1). Run into the directory of
# recipes/proxies/cifar10_cpu_proxy.sh (its teachers are trained here where missing), so the report puts every
# teacher side by side. Options after -- are fixed for every value (and named in the teachers' directories).
#   bash recipes/proxies/cifar10_proxy_sweep.sh RUN_DIR DEFENSE OPTION VALUE [VALUE ...] [-- FIXED OPTIONS]
#   bash recipes/proxies/cifar10_proxy_sweep.sh runs/cifar10_cpu_proxy nasty omega 0.06 0.1
#   bash recipes/proxies/cifar10_proxy_sweep.sh runs/cifar10_cpu_proxy cmim cmi-weight 1 4 16
#   bash recipes/proxies/cifar10_proxy_sweep.sh runs/cifar10_cpu_proxy cmim cmi-weight 4 -- --cmi-agg t2mean
#   bash recipes/proxies/cifar10_proxy_sweep.sh runs/cifar10_cpu_proxy cmim cmi-weight 8 -- --cmi-agg t2mean \
#       --init runs/cifar10_cpu_proxy/teachers/ce/s0/checkpoint.pt --epochs 4       # fine-tune the CE teacher
# (SEEDS, default 0,1: the students'; LAUNCH, SMOKE, CIFAR10_DIR: recipes/lib.sh)
if [[ $# -lt 4 ]]; then
    echo "error: $# arguments (pass RUN_DIR DEFENSE OPTION VALUE [VALUE ...] [-- FIXED OPTIONS])" >&2
    exit 2
fi
SEEDS=${SEEDS:-0,1}
source "$(dirname "$0")/../lib.sh" proxies/cifar10_cpu_proxy "$@"
source recipes/proxies/lib.sh
defense=$2 option=$3
shift 3
values=() fixed=()
while [[ $# -gt 0 && $1 != -- ]]; do values+=("$1"); shift; done
[[ $# -gt 0 ]] && shift && fixed=("$@")
suffix=""  # e.g. -cmi-agg-t2mean; a run's checkpoint is named by its cell: --init .../ce/s0/checkpoint.pt -> -init-ce
for arg in "${fixed[@]}"; do
    if [[ -f $arg ]]; then
        arg=$(dirname "$arg")
        [[ $(basename "$arg") =~ ^s[0-9]+$ ]] && arg=$(dirname "$arg")
        arg=$(basename "$arg")
    fi
    suffix+="-${arg#--}"
done
adversary=()
[[ $defense == nasty ]] && adversary=(--adversary @teachers/ce)

proxy_teachers
names=()
for value in "${values[@]}"; do
    names+=("$defense-$option$value$suffix")
    cell "teachers/${names[-1]}" train_teacher.py "${data[@]}" --epochs 8 --defense "$defense" "${adversary[@]}" \
        "--$option" "$value" "${fixed[@]}"
done
run_cells 0
for name in ce "${names[@]}"; do  # once per teacher
    run=$OUT/teachers/$name/s0
    [[ -f $run/checkpoint.eval.json ]] || evaluate "$run/checkpoint.pt" --reference "$(teacher ce)" "${measure[@]}"
done
for name in "${names[@]}"; do
    cell "students/kd-from-$name" "${student[@]}" --attack kd --teacher "$(teacher "$name")"
done
run_cells
report
