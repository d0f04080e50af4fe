#!/usr/bin/env bash
# Data-free students on the built-in mnist5k (CPU-sized): DAFL and DeepInversion plain-CNN students, which never read a
# training image, from a CE teacher, a nasty teacher against it and a stingy release of it (the teachers of
# recipes/quickstart.sh), beside an LS student trained on every training image. The direction of the Nasty Teacher
# paper's Table 5 (a nasty teacher lowers the data-free student) is measured here, not assumed. Resumable: rerun
# the same command. Results: recipes/results/datafree.md
#   bash recipes/datafree_mnist5k.sh [RUN_DIR] [SEEDS] [DAFL_EPOCHS] [INVERSION_EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/datafree_mnist5k}
seeds=${2:-"0 1"}
dafl_epochs=${3:-15}
inversion_epochs=${4:-16}
teacher=(--dataset mnist5k --arch cnn --epochs 10 --quiet --resume)

python train_teacher.py "${teacher[@]}" --defense ce --output "$out/teacher-ce"
python train_teacher.py "${teacher[@]}" --defense nasty --adversary "$out/teacher-ce/checkpoint.pt" \
    --output "$out/teacher-nasty"
python train_teacher.py --dataset mnist5k --defense stingy --from "$out/teacher-ce/checkpoint.pt" --overwrite \
    --quiet --output "$out/teacher-stingy"

for seed in $seeds; do
    student=(--dataset mnist5k --arch cnn --seed "$seed" --quiet --resume)
    python distill_student.py "${student[@]}" --attack ls --output "$out/s$seed/ls"
    for t in ce nasty stingy; do
        # DAFL's MNIST settings (batch 512, Adam 2e-3, latent 100), fewer steps than its 200 epochs of 120
        python distill_student.py "${student[@]}" --attack dafl --teacher "$out/teacher-$t/checkpoint.pt" \
            --epochs "$dafl_epochs" --steps-per-epoch 40 --batch-size 256 --output "$out/s$seed/dafl-from-$t"
        # DeepInversion's settings but 200 of its 2000 iterations per batch: a pool of 16 batches of 256, two a
        # epoch, distilled at tau 3
        python distill_student.py "${student[@]}" --attack deepinversion --teacher "$out/teacher-$t/checkpoint.pt" \
            --epochs "$inversion_epochs" --di-iterations 200 --output "$out/s$seed/deepinversion-from-$t"
    done
done
python -m undistill.report "$out" --markdown "$out/verdict.md" --csv "$out/verdict.csv"
