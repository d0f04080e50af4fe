#!/usr/bin/env bash
# How strong must a defense be on the CPU proxy? For each value of one of its options: a teacher of that defense
# (whole CIFAR-10, plain CNN, 8 epochs, seed 0; nasty uses the proxy's CE teacher as adversary), then KD students
# on the attacker's 1,000 images per class (seeds 0 and 1). Run after recipes/cifar10_cpu_proxy.sh, into the same
# directory, so the report puts every teacher side by side. Resumable (rerun the same command).
# Options after -- are fixed for every value (and named in the teachers' directories).
#   bash recipes/cifar10_proxy_sweep.sh RUN_DIR DEFENSE OPTION VALUE [VALUE ...] [-- FIXED OPTIONS]
#   bash recipes/cifar10_proxy_sweep.sh runs/cifar10_cpu_proxy nasty omega 0.06 0.1
#   bash recipes/cifar10_proxy_sweep.sh runs/cifar10_cpu_proxy cmim cmi-weight 1 4 16
#   bash recipes/cifar10_proxy_sweep.sh runs/cifar10_cpu_proxy cmim cmi-weight 4 -- --cmi-agg t2mean
#   bash recipes/cifar10_proxy_sweep.sh runs/cifar10_cpu_proxy cmim cmi-weight 8 -- --cmi-agg t2mean \
#       --init runs/cifar10_cpu_proxy/teachers/ce/checkpoint.pt --epochs 4       # fine-tune the CE teacher
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 4 ] || { echo "usage: $0 RUN_DIR DEFENSE OPTION VALUE [VALUE ...] [-- FIXED OPTIONS]" >&2; exit 2; }
out=$1 defense=$2 option=$3
shift 3
values=() fixed=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do values+=("$1"); shift; done
[ $# -gt 0 ] && shift && fixed=("$@")
suffix=""  # e.g. -cmi-agg-t2mean; a checkpoint is named by its run directory: --init .../ce/checkpoint.pt -> -init-ce
for arg in "${fixed[@]}"; do
    [ -f "$arg" ] && arg=$(basename "$(dirname "$arg")")
    suffix+="-${arg#--}"
done
data=(--dataset cifar10 --data-dir data/cifar10 --arch cnn --quiet --resume)
defense_args=(--defense "$defense")
[ "$defense" = nasty ] && defense_args+=(--adversary "$out/teachers/ce/checkpoint.pt")
# ECE, CMI per temperature and KL to the CE teacher, once per teacher (the report's ECE and CMI columns)
evaluate() {
    [ -f "$1/checkpoint.eval.json" ] || python -m undistill.evaluate "$1/checkpoint.pt" --data-dir data/cifar10 \
        --reference "$out/teachers/ce/checkpoint.pt"
}
evaluate "$out/teachers/ce"
for value in "${values[@]}"; do
    name="$defense-$option$value$suffix"
    teacher="$out/teachers/$name"
    python train_teacher.py "${data[@]}" --epochs 8 "${defense_args[@]}" "--$option" "$value" "${fixed[@]}" \
        --output "$teacher"
    evaluate "$teacher"
    for seed in 0 1; do
        python distill_student.py "${data[@]}" --subset 1000 --epochs 15 --seed "$seed" --attack kd \
            --teacher "$teacher/checkpoint.pt" --output "$out/students-s$seed/kd-from-$name"
    done
done
python -m undistill.report "$out" --markdown "$out/verdict.md" --csv "$out/verdict.csv"
