#!/usr/bin/env bash
# Undistillable: Making a Nasty Teacher That CANNOT Teach Students (Ma et al., ICLR 2021), Figure 2: t-SNE of a
# normal and a nasty ResNet-18 on CIFAR-10, (a) of the features before the fully-connected layer (512 wide), (b) of
# the outputs (here their softmax). The teachers of Table 1 (CE; nasty against it with tau_A 4, omega 0.04; the
# dataset's schedule): the same RUN_DIR as table1.sh and fig1.sh shares them. Our choice, which the text leaves open:
# 2,000 test images (perplexity 30). Ends with fig2a.png and fig2b.png.
#   bash recipes/nasty_teacher/fig2.sh [RUN_DIR]        (SEEDS, LAUNCH, SMOKE, CIFAR10_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" nasty_teacher/fig2 "$@"
data=(--dataset cifar10)
teachers=(--model "normal ResNet-18=teachers/ce" --model "nasty ResNet-18=teachers/nasty")

cell teachers/ce train_teacher.py "${data[@]}" --arch resnet18 --defense ce
run_cells
cell teachers/nasty train_teacher.py "${data[@]}" --arch resnet18 --defense nasty --adversary @teachers/ce \
    --tau 4 --omega 0.04
run_cells
figure tsne fig2a "${data[@]}" "${teachers[@]}"
figure tsne fig2b "${data[@]}" "${teachers[@]}" --outputs
