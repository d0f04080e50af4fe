#!/usr/bin/env bash
# Undistillable: Making a Nasty Teacher That CANNOT Teach Students (Ma et al., ICLR 2021), Table 4: the adversary's
# architecture (Section 4.3), CIFAR-10. CE teachers ResNet-18, plain CNN and ResNeXt-29 are the adversaries of three
# nasty ResNet-18 teachers (the dataset's tau_A 4, omega 0.04); students CNN, ResNetC-20, ResNetC-32 and ResNet-18
# trained from scratch, with label smoothing (the verdict's baseline) and by KD (alpha 0.9, the dataset's tau 4) from
# the normal ResNet-18 and each nasty one. The dataset's schedule: SGD 0.1, 160 epochs, x0.1 at 80 and 120 (the CNN:
# Adam 1e-3).
#   bash recipes/nasty_teacher/table4.sh [RUN_DIR]        (SEEDS, LAUNCH, SMOKE, CIFAR10_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" nasty_teacher/table4 "$@"
data=(--dataset cifar10)
adversaries=(resnet18 cnn resnext29)

for a in "${adversaries[@]}"; do
    cell "teachers/ce-$a" train_teacher.py "${data[@]}" --arch "$a" --defense ce
done
run_cells
for a in "${adversaries[@]}"; do
    cell "teachers/nasty-vs-$a" train_teacher.py "${data[@]}" --arch resnet18 --defense nasty \
        --adversary "@teachers/ce-$a"
done
run_cells
for arch in cnn resnetc20 resnetc32 resnet18; do
    cell "students/$arch/scratch" distill_student.py "${data[@]}" --arch "$arch" --attack scratch
    cell "students/$arch/ls" distill_student.py "${data[@]}" --arch "$arch" --attack ls
    cell "students/$arch/kd-ce" distill_student.py "${data[@]}" --arch "$arch" --attack kd \
        --teacher @teachers/ce-resnet18
    for a in "${adversaries[@]}"; do
        cell "students/$arch/kd-nasty-vs-$a" distill_student.py "${data[@]}" --arch "$arch" --attack kd \
            --teacher "@teachers/nasty-vs-$a"
    done
done
run_cells
table table4.toml
