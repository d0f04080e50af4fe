#!/usr/bin/env bash
# Undistillable: Making a Nasty Teacher That CANNOT Teach Students (Ma et al., ICLR 2021), Figure 1: the responses
# (softmax at a temperature) of a normal and a nasty ResNet-18 on CIFAR-10 test images, the image beside them. The
# teachers of Table 1 (CE; nasty against it with tau_A 4, omega 0.04; the dataset's schedule): the same RUN_DIR as
# table1.sh shares them. Our choices, which the text leaves open: tau 4 (the nasty training's tau_A) and the first
# test image of four classes (airplane, cat, frog, truck), one per row where the paper puts two. Ends with fig1.png.
#   bash recipes/nasty_teacher/fig1.sh [RUN_DIR]        (SEEDS, LAUNCH, SMOKE, CIFAR10_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" nasty_teacher/fig1 "$@"
data=(--dataset cifar10)

cell teachers/ce train_teacher.py "${data[@]}" --arch resnet18 --defense ce
run_cells
cell teachers/nasty train_teacher.py "${data[@]}" --arch resnet18 --defense nasty --adversary @teachers/ce \
    --tau 4 --omega 0.04
run_cells
figure responses fig1 "${data[@]}" --tau 4 --model "normal ResNet-18=teachers/ce" \
    --model "nasty ResNet-18=teachers/nasty"
