#!/usr/bin/env bash
# Data-free students on the CIFAR-10 CPU proxy: DAFL and DeepInversion plain-CNN students, which never read a training
# image, from the proxy's CE teacher, its nasty teacher and its stingy release (the teachers of
# recipes/cifar10_cpu_proxy.sh, trained here if missing). The Nasty Teacher paper's Table 5 runs DAFL from ResNet-34
# teachers for 2000 epochs on a GPU (normal 92.49, nasty 86.15); this is a CPU-sized look at its direction. A
# finished run is skipped and an unfinished one resumed: rerun the same command. Results: recipes/results/datafree.md
#   bash recipes/cifar10_proxy_datafree.sh [RUN_DIR] [SEEDS]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/cifar10_cpu_proxy}
seeds=${2:-"0"}
run() {  # run OUTPUT SCRIPT OPTIONS...: skipped once OUTPUT holds a finished run
    local dir=$1
    shift
    [ -f "$dir/summary.json" ] || python "$@" --quiet --resume --output "$dir"
}
bash datasets/cifar10_from_shared_tar.sh data/cifar10
data=(--dataset cifar10 --data-dir data/cifar10 --arch cnn)

teachers="$out/teachers"
run "$teachers/ce" train_teacher.py "${data[@]}" --epochs 8 --defense ce
run "$teachers/nasty" train_teacher.py "${data[@]}" --epochs 8 --defense nasty --adversary "$teachers/ce/checkpoint.pt"
run "$teachers/stingy" train_teacher.py "${data[@]}" --defense stingy --from "$teachers/ce/checkpoint.pt"

for seed in $seeds; do
    for t in ce nasty stingy; do
        # DAFL's CIFAR-10 weights and generator; the student on the proxy's Adam 1e-3, 8 epochs of 50 steps of 128
        # latents (its code: 2000 epochs of 120 steps of 1024, SGD 0.1)
        run "$out/datafree-s$seed/dafl-from-$t" distill_student.py "${data[@]}" --seed "$seed" --attack dafl \
            --teacher "$teachers/$t/checkpoint.pt" --epochs 8 --steps-per-epoch 50 --batch-size 128 --opt adam \
            --lr 1e-3 --milestones 6
        # DeepInversion with 200 of its 2000 iterations per batch of 256: a pool of 6 batches filled three an epoch
        run "$out/datafree-s$seed/deepinversion-from-$t" distill_student.py "${data[@]}" --seed "$seed" \
            --attack deepinversion --teacher "$teachers/$t/checkpoint.pt" --epochs 10 --di-iterations 200 \
            --pool-batches 6 --batches-per-epoch 3
    done
done
python -m undistill.report "$out" --markdown "$out/verdict.md" --csv "$out/verdict.csv"
