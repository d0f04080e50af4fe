#!/usr/bin/env bash
# Distilling the Undistillable: Learning from a Nasty Teacher (Jandial et al., ECCV 2022), Table 4: no data
# available. DAFL (Data-Free Learning of Student Networks, Chen et al., ICCV 2019; white-box, no training image) from
# the nasty teacher, with DAFL's own student loss (KL at tau 1: the "Nasty" column) and with HTC's target in its place
# (--attack dafl-htc, m KL(p_tau(teacher) || p_1(student)): the "HTC" column). The paper names neither the dataset,
# the teacher nor HTC's setting for this table; here, as its Table 1 on CIFAR-10: a CE ResNet-18 and a nasty one
# against it (tau_A 4, omega 0.04), students CNN, MobileNetV2 and ShuffleNetV2; HTC at tau 50, m 50 (its Fig. 4
# setting; no search: a data-free run has no validation split to choose on). Both DAFL columns take DAFL's CIFAR-10
# loss weights, generator and student schedule (2000 epochs of 120 steps, batch 1024, SGD 0.1, x0.1 at 800 and
# 1600), the CNN included; the LS students of the verdict learn from the labels, on the dataset's schedule.
#   bash recipes/distilling_undistillable/table4.sh [RUN_DIR]
#   (SEEDS, LAUNCH, SMOKE, CIFAR10_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" distilling_undistillable/table4 "$@"
data=(--dataset cifar10)
students=(cnn mobilenetv2 shufflenetv2)

cell "teachers/resnet18/ce" train_teacher.py "${data[@]}" --arch resnet18 --defense ce
for s in "${students[@]}"; do
    cell "students/$s/ls" distill_student.py "${data[@]}" --arch "$s" --attack ls
done
run_cells
cell "teachers/resnet18/nasty" train_teacher.py "${data[@]}" --arch resnet18 --defense nasty --tau 4 --omega 0.04 \
    --adversary "@teachers/resnet18/ce"
run_cells
for s in "${students[@]}"; do
    cell "students/$s/resnet18/dafl-nasty" distill_student.py "${data[@]}" --arch "$s" --attack dafl \
        --teacher "@teachers/resnet18/nasty"
    cell "students/$s/resnet18/dafl-htc-nasty" distill_student.py "${data[@]}" --arch "$s" --attack dafl-htc \
        --teacher "@teachers/resnet18/nasty" --tau 50 --multiplier 50
done
run_cells
table table4.toml
