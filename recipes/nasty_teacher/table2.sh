#!/usr/bin/env bash
# Undistillable: Making a Nasty Teacher That CANNOT Teach Students (Ma et al., ICLR 2021), Table 2: CIFAR-100.
# ResNet-18, ResNet-50 and ResNeXt-29 teachers trained normally (CE) and nasty against their own CE counterpart
# (the dataset's tau_A 20, omega 0.005); students ShuffleNetV2, MobileNetV2, ResNet-18 and "Teacher Self" (the
# teacher's own architecture) trained from scratch, with label smoothing (the verdict's baseline) and by KD from each
# teacher (alpha 0.9, the dataset's tau 20). The dataset's schedule: SGD 0.1, 200 epochs, x0.2 at 60, 120 and 160.
#   bash recipes/nasty_teacher/table2.sh [RUN_DIR]        (SEEDS, LAUNCH, SMOKE, CIFAR100_DIR: recipes/lib.sh)
# Table 3 (table3.sh) is this script on Tiny-ImageNet: TABLE=table3 DATASET=tinyimagenet.
TABLE=${TABLE:-table2}
source "$(dirname "$0")/../lib.sh" "nasty_teacher/$TABLE" "$@"
data=(--dataset "${DATASET:-cifar100}")
teachers=(resnet18 resnet50 resnext29)

for t in "${teachers[@]}"; do
    cell "teachers/ce-$t" train_teacher.py "${data[@]}" --arch "$t" --defense ce
done
run_cells
for t in "${teachers[@]}"; do
    cell "teachers/nasty-$t" train_teacher.py "${data[@]}" --arch "$t" --defense nasty --adversary "@teachers/ce-$t"
done
run_cells
# Teacher Self: ResNet-50 and ResNeXt-29 students of their own teachers (ResNet-18's are the ResNet-18 column)
for arch in shufflenetv2 mobilenetv2 "${teachers[@]}"; do
    cell "students/$arch/scratch" distill_student.py "${data[@]}" --arch "$arch" --attack scratch
    cell "students/$arch/ls" distill_student.py "${data[@]}" --arch "$arch" --attack ls
    case $arch in
        resnet50|resnext29) from=("$arch") ;;
        *) from=("${teachers[@]}") ;;
    esac
    for t in "${from[@]}"; do
        for kind in ce nasty; do
            cell "students/$arch/kd-$kind-$t" distill_student.py "${data[@]}" --arch "$arch" --attack kd \
                --teacher "@teachers/$kind-$t"
        done
    done
done
run_cells
table "$TABLE.toml"
