#!/usr/bin/env bash
# The main job on the built-in mnist5k data (no download): a CE teacher, a nasty teacher trained against it,
# a stingy release of the CE teacher; then scratch, LS and KD students (KD from each teacher), and the verdict
# table. About 6 minutes on 2 CPU cores.
#   bash recipes/quickstart.sh [RUN_DIR] [EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/quickstart}
epochs=${2:-10}
common=(--dataset mnist5k --arch cnn --epochs "$epochs" --quiet --overwrite)

python train_teacher.py "${common[@]}" --defense ce --output "$out/teacher-ce"
python train_teacher.py "${common[@]}" --defense nasty --adversary "$out/teacher-ce/checkpoint.pt" \
    --output "$out/teacher-nasty"
python train_teacher.py --dataset mnist5k --defense stingy --from "$out/teacher-ce/checkpoint.pt" \
    --overwrite --output "$out/teacher-stingy"
python distill_student.py "${common[@]}" --attack scratch --output "$out/student-scratch"
python distill_student.py "${common[@]}" --attack ls --output "$out/student-ls"
for t in ce nasty stingy; do
    python distill_student.py "${common[@]}" --attack kd --teacher "$out/teacher-$t/checkpoint.pt" \
        --output "$out/student-kd-from-$t"
done
python -m undistill.report "$out" --markdown "$out/verdict.md" --csv "$out/verdict.csv"
