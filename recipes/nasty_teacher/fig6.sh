#!/usr/bin/env bash
# Undistillable: Making a Nasty Teacher That CANNOT Teach Students (Ma et al., ICLR 2021), Figure 6: images inverted
# by DeepInversion from a normal and a nasty ResNet-34 on CIFAR-10, a column per class. The teachers of Table 5
# (CE; nasty against it with tau_A 4, omega 0.04, the paper's): the same RUN_DIR as table5.sh shares them. The images
# are those a DeepInversion student (ResNet-18, the paper's data-free student) inverts in its first epoch, at the
# attack's settings (batches of 256, 2,000 Adam steps each, targets cycling through the classes). Our choices, which
# the text leaves open: that one epoch (the figure shows images, not the student: it is not evaluated) and three
# images per class. Ends with fig6.png.
#   bash recipes/nasty_teacher/fig6.sh [RUN_DIR]        (SEEDS, LAUNCH, SMOKE, CIFAR10_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" nasty_teacher/fig6 "$@"
data=(--dataset cifar10)

cell cifar10/teachers/ce train_teacher.py "${data[@]}" --arch resnet34 --defense ce
run_cells
cell cifar10/teachers/nasty train_teacher.py "${data[@]}" --arch resnet34 --defense nasty \
    --adversary @cifar10/teachers/ce --tau 4 --omega 0.04
run_cells
for t in ce nasty; do
    cell "cifar10/inverted/$t" distill_student.py "${data[@]}" --arch resnet18 --attack deepinversion \
        --teacher "@cifar10/teachers/$t" --epochs 1
done
run_cells
figure inverted fig6 "${data[@]}" --model "normal ResNet-34=cifar10/inverted/ce" \
    --model "nasty ResNet-34=cifar10/inverted/nasty"
