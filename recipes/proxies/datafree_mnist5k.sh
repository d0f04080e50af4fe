#!/usr/bin/env bash
# Data-free students on the built-in mnist5k (CPU-sized): DAFL and DeepInversion plain-CNN students, which never read a
# training image, from a CE teacher, a nasty teacher against it and a stingy release of it (seed 0, as the teachers
# of recipes/quickstart/quickstart.sh), beside an LS student trained on every training image. The direction of the
# Nasty Teacher paper's Table 5 (a nasty teacher lowers the data-free student) is measured here, not assumed. Writes
# RUN_DIR/verdict.md. Results: recipes/proxies/results/datafree.md
#   bash recipes/proxies/datafree_mnist5k.sh [RUN_DIR]
# (SEEDS, default 0,1: the students'; LAUNCH, SMOKE: recipes/lib.sh)
SEEDS=${SEEDS:-0,1}
source "$(dirname "$0")/../lib.sh" proxies/datafree_mnist5k "$@"
data=(--dataset mnist5k --arch cnn)

cell teachers/ce train_teacher.py "${data[@]}" --epochs 10 --defense ce
run_cells 0
cell teachers/nasty train_teacher.py "${data[@]}" --epochs 10 --defense nasty --adversary @teachers/ce
cell teachers/stingy train_teacher.py --dataset mnist5k --defense stingy --from @teachers/ce
run_cells 0

cell students/ls distill_student.py "${data[@]}" --attack ls
for t in ce nasty stingy; do
    teacher=$OUT/teachers/$t/s0/checkpoint.pt
    # DAFL's defaults for mnist5k (datasets.py) on a CPU budget: 8 epochs of 50 steps of 128 latents (its code:
    # 200 of 120 of 512), the student's Adam lr divided by 10 for the last 2
    cell "students/dafl-from-$t" distill_student.py "${data[@]}" --attack dafl --teacher "$teacher" --epochs 8 \
        --steps-per-epoch 50 --batch-size 128 --milestones 6
    # DeepInversion's settings with 200 of its 2000 iterations per batch of 256: a pool of 6 batches filled
    # three an epoch, then distilled at tau 3 for 10 epochs in all
    cell "students/deepinversion-from-$t" distill_student.py "${data[@]}" --attack deepinversion --teacher "$teacher" \
        --epochs 10 --di-iterations 200 --pool-batches 6 --batches-per-epoch 3
done
run_cells
report
