#!/usr/bin/env bash
# The main job on the built-in mnist5k data (no download). The model owner trains a CE teacher on all 4,000
# training digits, a nasty teacher against it, and a stingy release of it; the attacker holds 10% of the data
# (40 digits per class) and trains scratch, LS and KD students (KD from each teacher). Then the verdict table, and
# the audit of the nasty teacher (python -m undistill.audit: every attack, its report and figures).
#   bash recipes/quickstart.sh [RUN_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/quickstart}
teacher=(--dataset mnist5k --arch cnn --epochs 10 --quiet --overwrite)
student=(--dataset mnist5k --arch cnn --epochs 30 --subset 40 --quiet --overwrite)

python3 train_teacher.py "${teacher[@]}" --defense ce --output "$out/teacher-ce"
python3 train_teacher.py "${teacher[@]}" --defense nasty --adversary "$out/teacher-ce/checkpoint.pt" \
    --output "$out/teacher-nasty"
python3 train_teacher.py --dataset mnist5k --defense stingy --from "$out/teacher-ce/checkpoint.pt" \
    --overwrite --output "$out/teacher-stingy"
python3 distill_student.py "${student[@]}" --attack scratch --output "$out/student-scratch"
python3 distill_student.py "${student[@]}" --attack ls --output "$out/student-ls"
for t in ce nasty stingy; do
    python3 distill_student.py "${student[@]}" --attack kd --teacher "$out/teacher-$t/checkpoint.pt" \
        --output "$out/student-kd-from-$t"
done
python3 -m undistill.report "$out" --markdown "$out/verdict.md" --csv "$out/verdict.csv"
# The owner's question for the nasty teacher, in one command: every attack of the quick audit, its verdict sentence.
python3 -m undistill.audit "$out/teacher-nasty/checkpoint.pt" --budget quick \
    --reference "$out/teacher-ce/checkpoint.pt" --jobs 2 --overwrite --output "$out/audit-nasty"
