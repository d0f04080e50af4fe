#!/usr/bin/env bash
# The main job on the built-in mnist5k data (no download). The model owner trains a CE teacher on all 4,000
# training digits, a nasty teacher against it, and a stingy release of it; the attacker holds 10% of the data
# (40 digits per class) and trains scratch, LS and KD students (KD from each teacher). Then the verdict table
# (RUN_DIR/verdict.md), and the audit of the nasty teacher (python -m undistill.audit: every attack, its report
# and figures, in RUN_DIR/audit-nasty). Results: recipes/quickstart/results/quickstart.md
#   bash recipes/quickstart/quickstart.sh [RUN_DIR]      (default runs/quickstart; SEEDS, default 0; LAUNCH, SMOKE:
#                                                        recipes/lib.sh)
SEEDS=${SEEDS:-0}
source "$(dirname "$0")/../lib.sh" quickstart "$@"
teacher=(--dataset mnist5k --arch cnn --epochs 10)
student=(distill_student.py --dataset mnist5k --arch cnn --epochs 30 --subset 40)

cell teachers/ce train_teacher.py "${teacher[@]}" --defense ce
run_cells 0
cell teachers/nasty train_teacher.py "${teacher[@]}" --defense nasty --adversary @teachers/ce
cell teachers/stingy train_teacher.py --dataset mnist5k --defense stingy --from @teachers/ce
run_cells 0
cell students/scratch "${student[@]}" --attack scratch
cell students/ls "${student[@]}" --attack ls
for t in ce nasty stingy; do
    cell "students/kd-from-$t" "${student[@]}" --attack kd --teacher "$OUT/teachers/$t/s0/checkpoint.pt"
done
run_cells
report
# The owner's question for the nasty teacher, in one command: every attack of the quick audit, its verdict sentence.
# A smoke run audits one of its rows (DKD, beside the baselines) with one seed of one-epoch students.
quick=()
[[ $SMOKE == 1 ]] && quick=(--seeds 0 --epochs 1 --attacks dkd)
audit "$OUT/teachers/nasty/s0/checkpoint.pt" --budget quick --reference "$OUT/teachers/ce/s0/checkpoint.pt" \
    --jobs 2 --device "${DEVICE:-auto}" --overwrite --output "$OUT/audit-nasty" "${quick[@]}"
