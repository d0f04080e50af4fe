#!/usr/bin/env bash
# Data-free students on the built-in mnist5k (CPU-sized): DAFL and DeepInversion plain-CNN students, which never read a
# training image, from a CE teacher, a nasty teacher against it and a stingy release of it (the teachers of
# recipes/quickstart.sh), beside an LS student trained on every training image. The direction of the Nasty Teacher
# paper's Table 5 (a nasty teacher lowers the data-free student) is measured here, not assumed. A finished run is
# skipped and an unfinished one resumed: rerun the same command, or run seeds side by side once the teachers exist.
# Results: recipes/results/datafree.md
#   bash recipes/datafree_mnist5k.sh [RUN_DIR] [SEEDS]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/datafree_mnist5k}
seeds=${2:-"0 1"}
run() {  # run OUTPUT SCRIPT OPTIONS...: skipped once OUTPUT holds a finished run
    local dir=$1
    shift
    [ -f "$dir/summary.json" ] || python "$@" --quiet --resume --output "$dir"
}

teacher=(--dataset mnist5k --arch cnn --epochs 10)
run "$out/teacher-ce" train_teacher.py "${teacher[@]}" --defense ce
run "$out/teacher-nasty" train_teacher.py "${teacher[@]}" --defense nasty --adversary "$out/teacher-ce/checkpoint.pt"
run "$out/teacher-stingy" train_teacher.py --dataset mnist5k --defense stingy --from "$out/teacher-ce/checkpoint.pt"

for seed in $seeds; do
    student=(--dataset mnist5k --arch cnn --seed "$seed")
    run "$out/s$seed/ls" distill_student.py "${student[@]}" --attack ls
    for t in ce nasty stingy; do
        # DAFL's defaults for mnist5k (datasets.py) on a CPU budget: 8 epochs of 50 steps of 128 latents (its code:
        # 200 of 120 of 512), the student's Adam lr divided by 10 for the last 2
        run "$out/s$seed/dafl-from-$t" distill_student.py "${student[@]}" --attack dafl \
            --teacher "$out/teacher-$t/checkpoint.pt" --epochs 8 --steps-per-epoch 50 --batch-size 128 --milestones 6
        # DeepInversion's settings with 200 of its 2000 iterations per batch of 256: a pool of 6 batches filled
        # three an epoch, then distilled at tau 3 for 10 epochs in all
        run "$out/s$seed/deepinversion-from-$t" distill_student.py "${student[@]}" --attack deepinversion \
            --teacher "$out/teacher-$t/checkpoint.pt" --epochs 10 --di-iterations 200 --pool-batches 6 \
            --batches-per-epoch 3
    done
done
python -m undistill.report "$out" --markdown "$out/verdict.md" --csv "$out/verdict.csv"
