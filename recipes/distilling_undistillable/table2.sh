#!/usr/bin/env bash
# Distilling the Undistillable: Learning from a Nasty Teacher (Jandial et al., ECCV 2022), Table 2: SCM on CIFAR-100
# against the nasty ResNet-18 (tau_A 20, omega 0.005, against a CE ResNet-18). (a) the architecture of the sequence: S^2
# a nasty ShuffleNetV2 against the ResNet-18 S^1, the students distilled from the ensemble of S^1 and S^2, beside
# vanilla and nasty-KD students; (b) its length: ResNet-18 sequences S^1..S^k, k = 2, 3, 4. Students CNN and
# ShuffleNetV2; KD with alpha 0.9, tau 4 (CNN) or 20 (ShuffleNetV2); SCM with alpha 0.9, its tau and m searched per seed
# on a validation split. The cells are named as in table1_cifar100.sh: run both into one RUN_DIR to train their common
# runs once.
#   bash recipes/distilling_undistillable/table2.sh [RUN_DIR]       (SEEDS, LAUNCH, SMOKE, CIFAR100_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" distilling_undistillable/table2 "$@"
data=(--dataset cifar100)
nasty=(--defense nasty --tau 20 --omega 0.005)
students=(cnn shufflenetv2)
kd_tau() { if [[ $1 == cnn ]]; then echo 4; else echo 20; fi; }
scm() {  # STUDENT NAME TEACHERS...: an SCM student of the ensemble of TEACHERS, tau and m searched
    local s=$1 name=$2
    shift 2
    searched "students/$s/resnet18/$name" distill_student.py "${data[@]}" --arch "$s" --attack scm --teacher "$@" \
        --alpha 0.9
}

cell teachers/resnet18/ce train_teacher.py "${data[@]}" --arch resnet18 --defense ce
for s in "${students[@]}"; do
    cell "students/$s/scratch" distill_student.py "${data[@]}" --arch "$s" --attack scratch
    cell "students/$s/ls" distill_student.py "${data[@]}" --arch "$s" --attack ls
done
run_cells
cell teachers/resnet18/nasty train_teacher.py "${data[@]}" --arch resnet18 "${nasty[@]}" \
    --adversary @teachers/resnet18/ce
run_cells
cell teachers/resnet18/s2 train_teacher.py "${data[@]}" --arch resnet18 "${nasty[@]}" \
    --adversary @teachers/resnet18/nasty
cell teachers/shufflenetv2/s2 train_teacher.py "${data[@]}" --arch shufflenetv2 "${nasty[@]}" \
    --adversary @teachers/resnet18/nasty
for s in "${students[@]}"; do
    cell "students/$s/resnet18/kd-nasty" distill_student.py "${data[@]}" --arch "$s" --attack kd \
        --teacher @teachers/resnet18/nasty --alpha 0.9 --tau "$(kd_tau "$s")"
done
run_cells
cell teachers/resnet18/s3 train_teacher.py "${data[@]}" --arch resnet18 "${nasty[@]}" --adversary @teachers/resnet18/s2
for s in "${students[@]}"; do
    scm "$s" scm-k2 @teachers/resnet18/nasty @teachers/resnet18/s2
    scm "$s" scm-shufflenetv2 @teachers/resnet18/nasty @teachers/shufflenetv2/s2
done
run_cells
cell teachers/resnet18/s4 train_teacher.py "${data[@]}" --arch resnet18 "${nasty[@]}" --adversary @teachers/resnet18/s3
for s in "${students[@]}"; do
    scm "$s" scm-k3 @teachers/resnet18/nasty @teachers/resnet18/s2 @teachers/resnet18/s3
done
run_cells
for s in "${students[@]}"; do
    scm "$s" scm-k4 @teachers/resnet18/nasty @teachers/resnet18/s2 @teachers/resnet18/s3 @teachers/resnet18/s4
done
run_cells
table table2a.toml
table table2b.toml
