#!/usr/bin/env bash
# Data-free students on the CIFAR-10 CPU proxy: DAFL and DeepInversion plain-CNN students, which never read a training
# image, from the proxy's CE teacher, its nasty teacher and its stingy release (the teachers of
# recipes/cifar10_cpu_proxy.sh, trained here if missing). The Nasty Teacher paper's Table 5 runs DAFL from ResNet-34
# teachers for 2000 epochs on a GPU (normal 92.49, nasty 86.15); this is a CPU-sized look at its direction. A
# finished run is skipped and an unfinished one resumed: rerun the same command. Results: recipes/results/datafree.md
# Once the teachers exist, two invocations with ATTACKS "dafl" and "deepinversion" run side by side.
#   bash recipes/cifar10_proxy_datafree.sh [RUN_DIR] [SEEDS] [ATTACKS]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/cifar10_cpu_proxy}
seeds=${2:-"0"}
attacks=${3:-"dafl deepinversion"}
run() {  # run OUTPUT SCRIPT OPTIONS...: skipped once OUTPUT holds a finished run
    local dir=$1
    shift
    [ -f "$dir/summary.json" ] || python "$@" --quiet --resume --output "$dir"
}
bash datasets/cifar10_from_tar.sh data/cifar10  # unpacked from $CIFAR10_TAR when missing
data=(--dataset cifar10 --data-dir data/cifar10 --arch cnn)

teachers="$out/teachers"
run "$teachers/ce" train_teacher.py "${data[@]}" --epochs 8 --defense ce
run "$teachers/nasty" train_teacher.py "${data[@]}" --epochs 8 --defense nasty --adversary "$teachers/ce/checkpoint.pt"
run "$teachers/stingy" train_teacher.py "${data[@]}" --defense stingy --from "$teachers/ce/checkpoint.pt"

# DAFL's CIFAR-10 weights and generator; the student on the proxy's Adam 1e-3, 6 epochs of 50 steps of 128 latents
# (its code: 2000 epochs of 120 steps of 1024, SGD 0.1). DeepInversion with 200 of its 2000 iterations per batch
# of 256: a pool of 4 batches filled two an epoch.
budget_dafl=(--epochs 6 --steps-per-epoch 50 --batch-size 128 --opt adam --lr 1e-3 --milestones 5)
budget_deepinversion=(--epochs 8 --di-iterations 200 --pool-batches 4 --batches-per-epoch 2)
for seed in $seeds; do
    for attack in $attacks; do
        budget="budget_$attack[@]"
        for t in ce nasty stingy; do
            run "$out/datafree-s$seed/$attack-from-$t" distill_student.py "${data[@]}" --seed "$seed" \
                --attack "$attack" --teacher "$teachers/$t/checkpoint.pt" "${!budget}"
        done
    done
done
python -m undistill.report "$out" --markdown "$out/verdict.md" --csv "$out/verdict.csv"
