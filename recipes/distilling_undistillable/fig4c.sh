#!/usr/bin/env bash
# Distilling the Undistillable: Learning from a Nasty Teacher (Jandial et al., ECCV 2022), Fig. 4(c): learning from the
# nasty teacher with 10, 30, 50, 70 and 90% of the training data. The figure does not name its setting: here that of
# Fig. 4(a), a ResNet-18 teacher on CIFAR-10 (CE, and nasty against it with tau_A 4, omega 0.04) and a ShuffleNetV2
# student, trained on each fraction (--subset, the same images for every student of a seed) by KD from the normal and
# the nasty teacher (alpha 0.9, tau 20) and by HTC from the nasty one (alpha 0.9, tau and m searched per seed on a
# validation split (tau 4, 20, 50, 100; m 1, 5, 10, 50)), with LS students on the same fraction for the verdict. The
# teachers see all the data. Ends with fig4c.png and its table.
#   bash recipes/distilling_undistillable/fig4c.sh [RUN_DIR]      (SEEDS, LAUNCH, SMOKE, CIFAR10_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" distilling_undistillable/fig4c "$@"
data=(--dataset cifar10)
fractions=(0.1 0.3 0.5 0.7 0.9)

cell teachers/resnet18/ce train_teacher.py "${data[@]}" --arch resnet18 --defense ce
for f in "${fractions[@]}"; do
    cell "students/shufflenetv2/subset$f/ls" distill_student.py "${data[@]}" --arch shufflenetv2 --attack ls \
        --subset "$f"
done
run_cells
cell teachers/resnet18/nasty train_teacher.py "${data[@]}" --arch resnet18 --defense nasty --tau 4 --omega 0.04 \
    --adversary @teachers/resnet18/ce
for f in "${fractions[@]}"; do
    cell "students/shufflenetv2/subset$f/kd-ce" distill_student.py "${data[@]}" --arch shufflenetv2 --attack kd \
        --subset "$f" --teacher @teachers/resnet18/ce --alpha 0.9 --tau 20
done
run_cells
for f in "${fractions[@]}"; do
    cell "students/shufflenetv2/subset$f/kd-nasty" distill_student.py "${data[@]}" --arch shufflenetv2 --attack kd \
        --subset "$f" --teacher @teachers/resnet18/nasty --alpha 0.9 --tau 20
    searched "students/shufflenetv2/subset$f/htc" distill_student.py "${data[@]}" --arch shufflenetv2 \
        --attack htc --subset "$f" --teacher @teachers/resnet18/nasty --alpha 0.9
done
run_cells
table fig4c.toml
figure curve fig4c.toml
