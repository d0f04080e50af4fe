#!/usr/bin/env bash
# Undistillable: Making a Nasty Teacher That CANNOT Teach Students (Ma et al., ICLR 2021), Figure 5(a): the KD
# weight alpha (Section 4.3). On CIFAR-10, ResNet-18 teachers, normal (CE) and nasty (the dataset's tau_A 4, omega
# 0.04); plain-CNN students (the paper's baseline student on CIFAR-10) distilled at the dataset's tau 4 with alpha
# 0.1, 0.3, 0.5, 0.7, 0.9 and 1.0 (the paper's range, 0.1 to 1.0), beside an LS CNN, the verdict's baseline. The
# dataset's schedule (the CNN: Adam 1e-3).
#   bash recipes/nasty_teacher/ablation_alpha.sh [RUN_DIR]   (SEEDS, LAUNCH, SMOKE, CIFAR10_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" nasty_teacher/ablation_alpha "$@"
data=(--dataset cifar10)

cell teachers/ce train_teacher.py "${data[@]}" --arch resnet18 --defense ce
run_cells
cell teachers/nasty train_teacher.py "${data[@]}" --arch resnet18 --defense nasty --adversary @teachers/ce
run_cells
cell students/ls distill_student.py "${data[@]}" --arch cnn --attack ls
for alpha in 0.1 0.3 0.5 0.7 0.9 1.0; do
    for t in ce nasty; do
        cell "students/kd-$t/alpha$alpha" distill_student.py "${data[@]}" --arch cnn --attack kd \
            --teacher "@teachers/$t" --alpha "$alpha"
    done
done
run_cells
table ablation_alpha.toml
figure curve ablation_alpha.toml
