#!/usr/bin/env bash
# Stingy Teacher: Sparse Logits Suffice to Fail Knowledge Distillation (Ma et al.), Figure 6: the KD temperature.
# CIFAR-100, a ResNet-18 teacher (the paper's), its stingy release at the sparse ratio r = 0.1 (the paper's), KD
# students at tau 1 to 20 (the paper's range) with alpha 0.9 (the paper's), from the stingy release and from the
# normal teacher, beside LS students (the verdict's baseline); the dataset's schedule (SGD 0.1, 200 epochs, x0.2 at
# 60, 120 and 160). Our choices, which the text leaves open: the students ShuffleNetV2 and MobileNetV2 (the paper's
# lightweight CIFAR-100 students, one panel each) and the grid tau 1, 4, 8, 12, 16, 20. The same RUN_DIR as
# fig5_cifar100.sh shares the teacher, its release and the LS students. Ends with fig6_cifar100.png.
#   bash recipes/stingy_teacher/fig6_cifar100.sh [RUN_DIR]        (SEEDS, LAUNCH, SMOKE, CIFAR100_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" stingy_teacher/fig6_cifar100 "$@"
data=(--dataset cifar100)
students=(shufflenetv2 mobilenetv2)

cell cifar100/ce/resnet18 train_teacher.py "${data[@]}" --arch resnet18 --defense ce
for arch in "${students[@]}"; do
    cell "cifar100/ls/$arch" distill_student.py "${data[@]}" --arch "$arch" --attack ls
done
run_cells
cell cifar100/stingy/top-0.1 train_teacher.py "${data[@]}" --defense stingy --from @cifar100/ce/resnet18 \
    --variant top --ratio 0.1
run_cells
for arch in "${students[@]}"; do
    for tau in 1 4 8 12 16 20; do
        for teacher in ce/resnet18 stingy/top-0.1; do
            cell "cifar100/kd-tau$tau/${teacher/\//-}/$arch" distill_student.py "${data[@]}" --arch "$arch" \
                --attack kd --teacher "@cifar100/$teacher" --alpha 0.9 --tau "$tau"
        done
    done
done
run_cells
table fig6_cifar100.toml
figure curve fig6_cifar100.toml
