#!/usr/bin/env bash
# Stingy Teacher: Sparse Logits Suffice to Fail Knowledge Distillation (Ma et al.), Figure 2: KD from three
# modifications of a normal teacher's logits on CIFAR-100 and Tiny-ImageNet: "stingy - sparse" (the top N kept,
# the rest -inf: --variant top), "stingy - smooth" (the top N kept, the rest replaced by their mean: --variant
# smooth), each over the sparse ratio r = N / K, and "reverse" (the top-1 kept, the others' values in reversed
# order: --variant reverse, no ratio); beside them scratch (CE), LS (the verdict's baseline) and KD from the normal
# teacher. The figure's three teacher-student pairs and its grid are not in the text: here a ResNet-18 teacher with
# the paper's students ShuffleNetV2, MobileNetV2 and ResNet-18 (a panel each), and r = 1/K, 0.05, 0.1 (where the
# paper finds the most damage), 0.2 and 0.5, the curve's points. KD at the paper's alpha 0.9 and tau 20; the
# datasets' schedule (SGD 0.1, 200 epochs, x0.2 at 60, 120 and 160). The same RUN_DIR as fig5_cifar100.sh shares
# the cells the two have in common. Ends with fig2_cifar100.png and fig2_tinyimagenet.png and their tables.
#   bash recipes/stingy_teacher/fig2_sparse_smooth_reverse.sh [RUN_DIR]
#        (SEEDS, LAUNCH, SMOKE, CIFAR100_DIR, TINYIMAGENET_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" stingy_teacher/fig2_sparse_smooth_reverse "$@"
students=(shufflenetv2 mobilenetv2 resnet18)
declare -A one_class=([cifar100]=0.01 [tinyimagenet]=0.005)  # r = 1/K

for ds in cifar100 tinyimagenet; do
    for arch in "${students[@]}"; do  # the ResNet-18 one is also the teacher
        cell "$ds/ce/$arch" train_teacher.py --dataset "$ds" --arch "$arch" --defense ce
        cell "$ds/ls/$arch" distill_student.py --dataset "$ds" --arch "$arch" --attack ls
    done
done
run_cells
releases=(reverse)
for variant in top smooth; do
    for r in one-class 0.05 0.1 0.2 0.5; do releases+=("$variant-$r"); done
done
for ds in cifar100 tinyimagenet; do
    for release in "${releases[@]}"; do
        release=${release/one-class/${one_class[$ds]}}
        ratio=()
        [[ $release == reverse ]] || ratio=(--ratio "${release#*-}")
        cell "$ds/stingy/$release" train_teacher.py --dataset "$ds" --defense stingy --from "@$ds/ce/resnet18" \
            --variant "${release%%-*}" "${ratio[@]}"
    done
done
run_cells
for ds in cifar100 tinyimagenet; do
    for arch in "${students[@]}"; do
        for teacher in ce/resnet18 "${releases[@]/#/stingy/}"; do
            teacher=${teacher/one-class/${one_class[$ds]}}
            cell "$ds/kd/${teacher/\//-}/$arch" distill_student.py --dataset "$ds" --arch "$arch" --attack kd \
                --teacher "@$ds/$teacher" --alpha 0.9 --tau 20
        done
    done
done
run_cells
for layout in fig2_cifar100.toml fig2_tinyimagenet.toml; do
    table "$layout"
    figure curve "$layout"
done
