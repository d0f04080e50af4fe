#!/usr/bin/env bash
# Distilling the Undistillable: Learning from a Nasty Teacher (Jandial et al., ECCV 2022), Table 5: students without
# labels (--no-labels: the teacher's term alone). A CE ResNet-18 and a nasty one against it on CIFAR-10 (tau_A 4, omega
# 0.04) and on CIFAR-100 (tau_A 20, omega 0.005; the paper does not name this teacher: ResNet-18, as in its Table 2); a
# CNN student on CIFAR-10 and a ShuffleNetV2 on CIFAR-100, distilled from the nasty teacher by KD (alpha 0.9, tau 4 for
# the CNN, 20 for ShuffleNetV2) and by HTC (alpha 0.9, tau and m searched per seed on a validation split (tau 4, 20, 50,
# 100; m 1, 5, 10, 50)); with labels, the LS students of the verdict.
#   bash recipes/distilling_undistillable/table5.sh [RUN_DIR]
#   (SEEDS, LAUNCH, SMOKE, CIFAR10_DIR, CIFAR100_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" distilling_undistillable/table5 "$@"
declare -A nasty=([cifar10]="--tau 4 --omega 0.04" [cifar100]="--tau 20 --omega 0.005")
declare -A student=([cifar10]=cnn [cifar100]=shufflenetv2)
declare -A kd_tau=([cifar10]=4 [cifar100]=20)

for d in cifar10 cifar100; do
    cell "$d/teachers/resnet18/ce" train_teacher.py --dataset "$d" --arch resnet18 --defense ce
    cell "$d/students/${student[$d]}/ls" distill_student.py --dataset "$d" --arch "${student[$d]}" --attack ls
done
run_cells
for d in cifar10 cifar100; do
    read -ra settings <<< "${nasty[$d]}"
    cell "$d/teachers/resnet18/nasty" train_teacher.py --dataset "$d" --arch resnet18 --defense nasty \
        "${settings[@]}" --adversary "@$d/teachers/resnet18/ce"
done
run_cells
for d in cifar10 cifar100; do
    s=${student[$d]}
    cell "$d/students/$s/resnet18/kd-nasty-no-labels" distill_student.py --dataset "$d" --arch "$s" --attack kd \
        --no-labels --teacher "@$d/teachers/resnet18/nasty" --alpha 0.9 --tau "${kd_tau[$d]}"
    searched "$d/students/$s/resnet18/htc-no-labels" distill_student.py --dataset "$d" --arch "$s" --attack htc \
        --no-labels --teacher "@$d/teachers/resnet18/nasty" --alpha 0.9
done
run_cells
table table5.toml
