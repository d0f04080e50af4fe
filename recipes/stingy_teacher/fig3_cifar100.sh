#!/usr/bin/env bash
# Stingy Teacher: Sparse Logits Suffice to Fail Knowledge Distillation (Ma et al.), Figure 3: the test accuracy over
# the epochs of KD students on CIFAR-100. A ResNet-18 teacher, its stingy release at the paper's sparse ratio 0.1,
# KD at the paper's alpha 0.9 and tau 20, the dataset's schedule (SGD 0.1, 200 epochs, x0.2 at 60, 120 and 160).
# Our choices, which the text leaves open: the students ShuffleNetV2 and MobileNetV2 (one panel each) and, beside
# KD from the stingy release, KD from the normal teacher and the student trained from scratch (CE). The same
# RUN_DIR as fig5_cifar100.sh shares every cell. Ends with fig3_cifar100.png (each run's metrics.jsonl, mean over
# the seeds) and the last epoch's table.
#   bash recipes/stingy_teacher/fig3_cifar100.sh [RUN_DIR]        (SEEDS, LAUNCH, SMOKE, CIFAR100_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" stingy_teacher/fig3_cifar100 "$@"
data=(--dataset cifar100)
students=(shufflenetv2 mobilenetv2)

for arch in resnet18 "${students[@]}"; do  # the ResNet-18 is the teacher
    cell "cifar100/ce/$arch" train_teacher.py "${data[@]}" --arch "$arch" --defense ce
done
run_cells
cell cifar100/stingy/top-0.1 train_teacher.py "${data[@]}" --defense stingy --from @cifar100/ce/resnet18 \
    --variant top --ratio 0.1
run_cells
for arch in "${students[@]}"; do
    for teacher in ce/resnet18 stingy/top-0.1; do
        cell "cifar100/kd/${teacher/\//-}/$arch" distill_student.py "${data[@]}" --arch "$arch" --attack kd \
            --teacher "@cifar100/$teacher" --alpha 0.9 --tau 20
    done
done
run_cells
table fig3_cifar100.toml
figure history fig3_cifar100.toml
