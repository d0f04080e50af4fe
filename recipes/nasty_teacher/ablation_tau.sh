#!/usr/bin/env bash
# Undistillable: Making a Nasty Teacher That CANNOT Teach Students (Ma et al., ICLR 2021), Figure 4: the KD
# temperature tau_s (Section 4.3). ResNet-18 teachers, normal (CE) and nasty (the dataset's tau_A and omega: 4 / 0.04
# on CIFAR-10, 20 / 0.005 on CIFAR-100); KD students (alpha 0.9) at tau_s 1, 4, 8, 12, 16 and 20 (the paper's range,
# 1 to 20), the plain CNN on CIFAR-10 (the paper's baseline student there) and ShuffleNetV2 on CIFAR-100 (the first
# student of its Table 2), beside LS students of the same architecture, the verdict's baseline. Each dataset's
# schedule (the CNN: Adam 1e-3).
#   bash recipes/nasty_teacher/ablation_tau.sh [RUN_DIR]
#   (SEEDS, LAUNCH, SMOKE, CIFAR10_DIR, CIFAR100_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" nasty_teacher/ablation_tau "$@"
declare -A student=([cifar10]=cnn [cifar100]=shufflenetv2)

for d in cifar10 cifar100; do
    cell "$d/teachers/ce" train_teacher.py --dataset "$d" --arch resnet18 --defense ce
done
run_cells
for d in cifar10 cifar100; do
    cell "$d/teachers/nasty" train_teacher.py --dataset "$d" --arch resnet18 --defense nasty \
        --adversary "@$d/teachers/ce"
done
run_cells
for d in cifar10 cifar100; do
    s=${student[$d]}
    cell "$d/students/ls" distill_student.py --dataset "$d" --arch "$s" --attack ls
    for tau in 1 4 8 12 16 20; do
        for t in ce nasty; do
            cell "$d/students/kd-$t/tau$tau" distill_student.py --dataset "$d" --arch "$s" --attack kd \
                --teacher "@$d/teachers/$t" --tau "$tau"
        done
    done
done
run_cells
table ablation_tau.toml
figure curve ablation_tau.toml
