#!/usr/bin/env bash
# Undistillable: Making a Nasty Teacher That CANNOT Teach Students (Ma et al., ICLR 2021), Figure 5(b): the share of
# the training data the student sees (Section 4.3). On CIFAR-10, ResNet-18 teachers trained on all of it, normal (CE)
# and nasty (the dataset's tau_A 4, omega 0.04); plain-CNN students (the paper's baseline student on CIFAR-10)
# distilled (alpha 0.9, the dataset's tau 4) on 10, 30, 50, 70 and 90% of the training images (the paper's range),
# each beside an LS CNN on the same images (same seed, same subset), the verdict's baseline. The dataset's schedule
# (the CNN: Adam 1e-3).
#   bash recipes/nasty_teacher/ablation_data.sh [RUN_DIR]    (SEEDS, LAUNCH, SMOKE, CIFAR10_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" nasty_teacher/ablation_data "$@"
data=(--dataset cifar10)

cell teachers/ce train_teacher.py "${data[@]}" --arch resnet18 --defense ce
run_cells
cell teachers/nasty train_teacher.py "${data[@]}" --arch resnet18 --defense nasty --adversary @teachers/ce
run_cells
for percent in 10 30 50 70 90; do
    share=(--subset "0.$((percent / 10))")
    cell "students/ls/p$percent" distill_student.py "${data[@]}" "${share[@]}" --arch cnn --attack ls
    for t in ce nasty; do
        cell "students/kd-$t/p$percent" distill_student.py "${data[@]}" "${share[@]}" --arch cnn --attack kd \
            --teacher "@teachers/$t"
    done
done
run_cells
table ablation_data.toml
figure curve ablation_data.toml
