#!/usr/bin/env bash
# Stingy Teacher: Sparse Logits Suffice to Fail Knowledge Distillation (Ma et al.), Table 1: CIFAR-10.
# A ResNet-18 teacher trained normally (CE), a nasty one against it (the Nasty Teacher settings: tau_A 4, omega
# 0.04) and the stingy release of the normal one (top k = 2 of 10 logits, ratio 0.2: 0.1 would leave a hard label);
# students CNN, ResNetC-20, ResNetC-32 and ResNet-18 trained from scratch (CE: the baseline row; the paper's ResNet-18
# baseline is its normal teacher, one run), with label smoothing (the verdict's baseline) and by KD from each
# teacher at the paper's alpha 0.9 and tau 20. The paper's schedule: SGD 0.1, 200 epochs, x0.2 at 60, 120 and 160;
# the CNN as in the Nasty Teacher paper: Adam 1e-3, 100 epochs.
#   bash recipes/stingy_teacher/table1_cifar10.sh [RUN_DIR]        (SEEDS, LAUNCH, SMOKE, CIFAR10_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" stingy_teacher/table1_cifar10 "$@"
data=(--dataset cifar10)
schedule() {  # the options of the schedule that trains $1
    if [[ $1 == cnn ]]; then echo --epochs 100; else echo --epochs 200 --milestones 60,120,160 --gamma 0.2; fi
}

for arch in cnn resnetc20 resnetc32 resnet18; do
    cell "ce/$arch" train_teacher.py "${data[@]}" --arch "$arch" $(schedule "$arch") --defense ce
    cell "ls/$arch" distill_student.py "${data[@]}" --arch "$arch" $(schedule "$arch") --attack ls
done
run_cells
cell nasty/resnet18 train_teacher.py "${data[@]}" --arch resnet18 $(schedule resnet18) --defense nasty \
    --adversary @ce/resnet18 --tau 4 --omega 0.04
cell stingy/resnet18 train_teacher.py "${data[@]}" --defense stingy --from @ce/resnet18 --ratio 0.2
run_cells
for arch in cnn resnetc20 resnetc32 resnet18; do
    for t in ce nasty stingy; do
        cell "kd/$t-resnet18/$arch" distill_student.py "${data[@]}" --arch "$arch" $(schedule "$arch") --attack kd \
            --teacher "@$t/resnet18" --alpha 0.9 --tau 20
    done
done
run_cells
table table1_cifar10.toml
