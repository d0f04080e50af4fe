#!/usr/bin/env bash
# Data-free students on the CIFAR-10 CPU proxy: DAFL and DeepInversion plain-CNN students, which never read a training
# image, from the proxy's CE teacher, its nasty teacher and its stingy release (the teachers of
# recipes/cifar10_cpu_proxy.sh, trained here if missing). The Nasty Teacher paper's Table 5 runs DAFL from ResNet-34
# teachers for 2000 epochs on a GPU (normal 92.49, nasty 86.15); this is a CPU-sized look at its direction, with the
# students' budget in the arguments. Resumable: rerun the same command. Results: recipes/results/datafree.md
#   bash recipes/cifar10_proxy_datafree.sh [RUN_DIR] [SEEDS] [DAFL_EPOCHS] [INVERSION_EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/cifar10_cpu_proxy}
seeds=${2:-"0"}
dafl_epochs=${3:-10}
inversion_epochs=${4:-10}
bash datasets/cifar10_from_shared_tar.sh data/cifar10
data=(--dataset cifar10 --data-dir data/cifar10 --arch cnn --quiet --resume)

teachers="$out/teachers"
python train_teacher.py "${data[@]}" --epochs 8 --defense ce --output "$teachers/ce"
python train_teacher.py "${data[@]}" --epochs 8 --defense nasty --adversary "$teachers/ce/checkpoint.pt" \
    --output "$teachers/nasty"
python train_teacher.py --dataset cifar10 --data-dir data/cifar10 --defense stingy --overwrite --quiet \
    --from "$teachers/ce/checkpoint.pt" --output "$teachers/stingy"

for seed in $seeds; do
    students="$out/datafree-s$seed"
    for t in ce nasty stingy; do
        # DAFL's CIFAR-10 weights and generator; the student on Adam 1e-3 (the proxy's CNN schedule), 60 steps of
        # 128 an epoch instead of 120 of 1024 for 2000 epochs
        python distill_student.py "${data[@]}" --seed "$seed" --attack dafl --teacher "$teachers/$t/checkpoint.pt" \
            --epochs "$dafl_epochs" --steps-per-epoch 60 --batch-size 128 --opt adam --lr 1e-3 --milestones "" \
            --output "$students/dafl-from-$t"
        # DeepInversion with 200 of its 2000 iterations per batch of 256, two batches an epoch
        python distill_student.py "${data[@]}" --seed "$seed" --attack deepinversion \
            --teacher "$teachers/$t/checkpoint.pt" --epochs "$inversion_epochs" --di-iterations 200 \
            --output "$students/deepinversion-from-$t"
    done
done
python -m undistill.report "$out" --markdown "$out/verdict.md" --csv "$out/verdict.csv"
