#!/usr/bin/env bash
# Undistillable: Making a Nasty Teacher That CANNOT Teach Students (Ma et al., ICLR 2021), Figure 3: the weight omega
# of the self-undermining term (Section 4.3). ResNet-18 teachers on CIFAR-10 and CIFAR-100: omega 0 (the normal, CE
# teacher, also the adversary) and nasty ones at omega 0.005, 0.01, 0.02, 0.04 and 0.1 (the paper's range, 0 to 0.1,
# with both datasets' usual values; the dataset's tau_A, 4 or 20); KD students (alpha 0.9, the dataset's tau) of each,
# the plain CNN on CIFAR-10 (the paper's baseline student there) and ShuffleNetV2 on CIFAR-100 (the first student of
# its Table 2), beside LS students of the same architecture, the verdict's baseline. Each dataset's schedule (the
# CNN: Adam 1e-3).
#   bash recipes/nasty_teacher/ablation_omega.sh [RUN_DIR]
#   (SEEDS, LAUNCH, SMOKE, CIFAR10_DIR, CIFAR100_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" nasty_teacher/ablation_omega "$@"
declare -A student=([cifar10]=cnn [cifar100]=shufflenetv2)
omegas=(0.005 0.01 0.02 0.04 0.1)

for d in cifar10 cifar100; do
    cell "$d/teachers/omega0" train_teacher.py --dataset "$d" --arch resnet18 --defense ce
done
run_cells
for d in cifar10 cifar100; do
    for omega in "${omegas[@]}"; do
        cell "$d/teachers/omega$omega" train_teacher.py --dataset "$d" --arch resnet18 --defense nasty \
            --adversary "@$d/teachers/omega0" --omega "$omega"
    done
done
run_cells
for d in cifar10 cifar100; do
    s=${student[$d]}
    cell "$d/students/ls" distill_student.py --dataset "$d" --arch "$s" --attack ls
    for omega in 0 "${omegas[@]}"; do
        cell "$d/students/kd/omega$omega" distill_student.py --dataset "$d" --arch "$s" --attack kd \
            --teacher "@$d/teachers/omega$omega"
    done
done
run_cells
table ablation_omega.toml
figure curve ablation_omega.toml
