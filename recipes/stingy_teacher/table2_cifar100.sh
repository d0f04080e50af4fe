#!/usr/bin/env bash
# Stingy Teacher: Sparse Logits Suffice to Fail Knowledge Distillation (Ma et al.), Table 2: CIFAR-100.
# ResNet-18, ResNet-50 and ResNeXt-29 teachers, each trained normally (CE), nasty against its normal self (the
# Nasty Teacher settings for the dataset: tau_A 20, omega 0.005) and released stingy (top k = 10 logits, ratio
# 0.1); students ShuffleNetV2, MobileNetV2, ResNet-18 and the teacher's own architecture (Teacher Self) trained
# from scratch (CE: the baseline row, the normal teachers themselves where the architecture is one), with label
# smoothing (the verdict's baseline) and by KD from each teacher at the paper's alpha 0.9 and tau 20. The
# dataset's schedule, the paper's: SGD 0.1, 200 epochs, x0.2 at 60, 120 and 160. One table per teacher
# architecture (its Teacher Self column is that architecture).
#   bash recipes/stingy_teacher/table2_cifar100.sh [RUN_DIR]   (SEEDS, LAUNCH, SMOKE, CIFAR100_DIR: recipes/lib.sh)
# Table 3 (table3_tinyimagenet.sh) is this script on Tiny-ImageNet: TABLE=table3_tinyimagenet DATASET=tinyimagenet.
TABLE=${TABLE:-table2_cifar100}
source "$(dirname "$0")/../lib.sh" "stingy_teacher/$TABLE" "$@"
data=(--dataset "${DATASET:-cifar100}")
teachers=(resnet18 resnet50 resnext29)

for arch in shufflenetv2 mobilenetv2 "${teachers[@]}"; do
    cell "ce/$arch" train_teacher.py "${data[@]}" --arch "$arch" --defense ce
    cell "ls/$arch" distill_student.py "${data[@]}" --arch "$arch" --attack ls
done
run_cells
kd() {  # kd TEACHER_RUN STUDENT_ARCH
    cell "kd/${1/\//-}/$2" distill_student.py "${data[@]}" --arch "$2" --attack kd --teacher "@$1" --alpha 0.9 --tau 20
}
students() {  # the students of teacher $1: the paper's three, and the teacher's architecture
    echo shufflenetv2 mobilenetv2 resnet18
    [[ $1 == resnet18 ]] || echo "$1"
}
for t in "${teachers[@]}"; do
    cell "nasty/$t" train_teacher.py "${data[@]}" --arch "$t" --defense nasty --adversary "@ce/$t"
    cell "stingy/$t" train_teacher.py "${data[@]}" --defense stingy --from "@ce/$t" --ratio 0.1
    for s in $(students "$t"); do kd "ce/$t" "$s"; done
done
run_cells
for t in "${teachers[@]}"; do
    for s in $(students "$t"); do kd "nasty/$t" "$s"; kd "stingy/$t" "$s"; done
done
run_cells
for t in "${teachers[@]}"; do
    table "${TABLE}_$t.toml"
done
