#!/usr/bin/env bash
# Stingy Teacher: Sparse Logits Suffice to Fail Knowledge Distillation (Ma et al.), Figure 5: CIFAR-100, sparse
# logits kept from the top N classes ("top logits", the stingy teacher) against the top-1 class and the N - 1
# smallest ("least logits"), over the sparse ratio r = N / K. The figure's teacher, students and grid are not in the
# text: here the ResNet-18 teacher of its temperature ablation (Figure 6), the paper's students ShuffleNetV2,
# MobileNetV2 and ResNet-18, and r = 1/K (both variants keep the top-1 alone: one release), 0.05, 0.1 (where the
# paper finds the most damage), 0.2 and 0.5; beside them scratch (CE), LS (the verdict's baseline) and KD from the
# normal teacher. KD at the paper's alpha 0.9 and tau 20; the dataset's schedule (SGD 0.1, 200 epochs, x0.2 at 60,
# 120 and 160). The same RUN_DIR as fig2_sparse_smooth_reverse.sh shares the cells the two have in common.
#   bash recipes/stingy_teacher/fig5_cifar100.sh [RUN_DIR]        (SEEDS, LAUNCH, SMOKE, CIFAR100_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" stingy_teacher/fig5_cifar100 "$@"
data=(--dataset cifar100)
students=(shufflenetv2 mobilenetv2 resnet18)

for arch in "${students[@]}"; do  # the ResNet-18 one is also the teacher
    cell "cifar100/ce/$arch" train_teacher.py "${data[@]}" --arch "$arch" --defense ce
    cell "cifar100/ls/$arch" distill_student.py "${data[@]}" --arch "$arch" --attack ls
done
run_cells
releases=(top-0.01)
for r in 0.05 0.1 0.2 0.5; do releases+=("top-$r" "least-$r"); done
for release in "${releases[@]}"; do
    cell "cifar100/stingy/$release" train_teacher.py "${data[@]}" --defense stingy --from @cifar100/ce/resnet18 \
        --variant "${release%-*}" --ratio "${release#*-}"
done
run_cells
for arch in "${students[@]}"; do
    for teacher in ce/resnet18 "${releases[@]/#/stingy/}"; do
        cell "cifar100/kd/${teacher/\//-}/$arch" distill_student.py "${data[@]}" --arch "$arch" --attack kd \
            --teacher "@cifar100/$teacher" --alpha 0.9 --tau 20
    done
done
run_cells
table fig5_cifar100.toml
