#!/usr/bin/env bash
# Undistillable: Making a Nasty Teacher That CANNOT Teach Students (Ma et al., ICLR 2021), Table 5: data-free KD
# (DAFL, white-box), CIFAR-10 and CIFAR-100. A ResNet-34 teacher trained normally (CE) and a nasty one against it,
# with tau_A 4 and omega 0.04 on both datasets (the paper's setting for this table, not CIFAR-100's usual 20 / 0.005);
# ResNet-18 students trained by DAFL from each teacher (no training image; the dataset's DAFL loss weights and the
# authors' student schedule), and ResNet-18 LS students on the training data, the verdict's baseline. Teachers
# follow the dataset's schedule.
#   bash recipes/nasty_teacher/table5.sh [RUN_DIR]
#   (SEEDS, LAUNCH, SMOKE, CIFAR10_DIR, CIFAR100_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" nasty_teacher/table5 "$@"
datasets=(cifar10 cifar100)

for d in "${datasets[@]}"; do
    cell "$d/teachers/ce" train_teacher.py --dataset "$d" --arch resnet34 --defense ce
done
run_cells
for d in "${datasets[@]}"; do
    cell "$d/teachers/nasty" train_teacher.py --dataset "$d" --arch resnet34 --defense nasty \
        --adversary "@$d/teachers/ce" --tau 4 --omega 0.04
done
run_cells
for d in "${datasets[@]}"; do
    cell "$d/students/ls" distill_student.py --dataset "$d" --arch resnet18 --attack ls
    for t in ce nasty; do
        cell "$d/students/dafl-$t" distill_student.py --dataset "$d" --arch resnet18 --attack dafl \
            --teacher "@$d/teachers/$t"
    done
done
run_cells
table table5.toml
