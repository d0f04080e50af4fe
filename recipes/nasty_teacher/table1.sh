#!/usr/bin/env bash
# Undistillable: Making a Nasty Teacher That CANNOT Teach Students (Ma et al., ICLR 2021), Table 1: CIFAR-10.
# A ResNet-18 teacher trained normally (CE) and a nasty one against it (tau_A 4, omega 0.04); students CNN,
# ResNetC-20, ResNetC-32 and ResNet-18 trained from scratch, with label smoothing (the verdict's baseline) and by
# KD (alpha 0.9, tau 4) from each teacher. The dataset's schedule: SGD 0.1, 160 epochs, x0.1 at 80 and 120.
#   bash recipes/nasty_teacher/table1.sh [RUN_DIR]        (SEEDS, LAUNCH, SMOKE, CIFAR10_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" nasty_teacher/table1 "$@"
data=(--dataset cifar10)

cell teachers/ce train_teacher.py "${data[@]}" --arch resnet18 --defense ce
run_cells
cell teachers/nasty train_teacher.py "${data[@]}" --arch resnet18 --defense nasty --adversary @teachers/ce \
    --tau 4 --omega 0.04
run_cells
for arch in cnn resnetc20 resnetc32 resnet18; do
    cell "students/$arch/scratch" distill_student.py "${data[@]}" --arch "$arch" --attack scratch
    cell "students/$arch/ls" distill_student.py "${data[@]}" --arch "$arch" --attack ls
    for t in ce nasty; do
        cell "students/$arch/kd-$t" distill_student.py "${data[@]}" --arch "$arch" --attack kd \
            --teacher "@teachers/$t" --alpha 0.9 --tau 4
    done
done
run_cells
table table1.toml
