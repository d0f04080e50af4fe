#!/usr/bin/env bash
# Undistillable: Making a Nasty Teacher That CANNOT Teach Students (Ma et al., ICLR 2021), the ablation on the
# students' architecture (Table 5 of the camera-ready version): ResNet-18 teachers, normal (CE) and nasty (the
# dataset's tau_A and omega: 4 / 0.04 on CIFAR-10, 20 / 0.005 on CIFAR-100), on CIFAR-10 and CIFAR-100; ResNet-50
# and ResNeXt-29 (8x64d, as the authors' code builds it) students trained from scratch (the baseline row), with label
# smoothing (the verdict's baseline) and by KD from each teacher (alpha 0.9, the dataset's tau_A). Each dataset's
# schedule.
#   bash recipes/nasty_teacher/ablation_students.sh [RUN_DIR]
#   (SEEDS, LAUNCH, SMOKE, CIFAR10_DIR, CIFAR100_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" nasty_teacher/ablation_students "$@"
declare -A kd_tau=([cifar10]=4 [cifar100]=20)
students=(resnet50 resnext29)

for d in cifar10 cifar100; do
    cell "$d/teachers/ce" train_teacher.py --dataset "$d" --arch resnet18 --defense ce
    for s in "${students[@]}"; do
        cell "$d/students/$s/scratch" distill_student.py --dataset "$d" --arch "$s" --attack scratch
        cell "$d/students/$s/ls" distill_student.py --dataset "$d" --arch "$s" --attack ls
    done
done
run_cells
for d in cifar10 cifar100; do
    cell "$d/teachers/nasty" train_teacher.py --dataset "$d" --arch resnet18 --defense nasty \
        --adversary "@$d/teachers/ce"
done
run_cells
for d in cifar10 cifar100; do
    for s in "${students[@]}"; do
        for t in ce nasty; do
            cell "$d/students/$s/kd-$t" distill_student.py --dataset "$d" --arch "$s" --attack kd \
                --teacher "@$d/teachers/$t" --alpha 0.9 --tau "${kd_tau[$d]}"
        done
    done
done
run_cells
table ablation_students.toml
