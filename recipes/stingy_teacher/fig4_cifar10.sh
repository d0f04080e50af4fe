#!/usr/bin/env bash
# Stingy Teacher: Sparse Logits Suffice to Fail Knowledge Distillation (Ma et al.), Figure 4: the responses (softmax
# at tau 4, the paper's) of a normal, a nasty and a stingy ResNet-18 on CIFAR-10 test images. The teachers of
# Table 1 (CE; nasty against it with tau_A 4, omega 0.04; the stingy release of the normal one at ratio 0.2, the top
# 2 of 10 logits; the paper's schedule: SGD 0.1, 200 epochs, x0.2 at 60, 120 and 160): the same RUN_DIR as
# table1_cifar10.sh shares them. Our choice, which the text leaves open: the first test image of four classes
# (airplane, cat, frog, truck). Ends with fig4_cifar10.png.
#   bash recipes/stingy_teacher/fig4_cifar10.sh [RUN_DIR]        (SEEDS, LAUNCH, SMOKE, CIFAR10_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" stingy_teacher/fig4_cifar10 "$@"
data=(--dataset cifar10)
schedule=(--epochs 200 --milestones 60,120,160 --gamma 0.2)

cell ce/resnet18 train_teacher.py "${data[@]}" --arch resnet18 "${schedule[@]}" --defense ce
run_cells
cell nasty/resnet18 train_teacher.py "${data[@]}" --arch resnet18 "${schedule[@]}" --defense nasty \
    --adversary @ce/resnet18 --tau 4 --omega 0.04
cell stingy/resnet18 train_teacher.py "${data[@]}" --defense stingy --from @ce/resnet18 --ratio 0.2
run_cells
figure responses fig4_cifar10 "${data[@]}" --tau 4 --model "normal ResNet-18=ce/resnet18" \
    --model "nasty ResNet-18=nasty/resnet18" --model "stingy ResNet-18=stingy/resnet18"
