#!/usr/bin/env bash
# Distilling the Undistillable: Learning from a Nasty Teacher (Jandial et al., ECCV 2022), Table 1, CIFAR-100 rows.
# ResNet-18 and ResNet-50 teachers trained normally (CE), nasty ones against them (tau_A 20, omega 0.005) and, from each
# nasty teacher S^1, the sequence of contrastive models S^2..S^4 (S^i a nasty model of the same architecture against
# S^(i-1)); students CNN, MobileNetV2 and ShuffleNetV2 trained from scratch (vanilla), with label smoothing (the
# verdict's baseline), by KD from the normal and the nasty teacher (alpha 0.9; tau 4 for the CNN, 20 for the others: the
# paper's setting), by HTC (alpha 0.9, tau and m searched per seed on a validation split (tau 4, 20, 50, 100; m 1, 5,
# 10, 50)) and by SCM from the ensemble of S^1..S^4 (the paper's longest sequence, alpha 0.9, tau and m searched as
# HTC's); skeptical MobileNetV2 and ShuffleNetV2 students (head 1, tau 20; the skeptical student needs a network
# with stages and a pooled linear head, so not the CNN). The dataset's schedule: SGD 0.1, 200 epochs, x0.2 at 60, 120
# and 160; the CNN Adam 1e-3, 100 epochs.
#   bash recipes/distilling_undistillable/table1_cifar100.sh [RUN_DIR]
#   (SEEDS, LAUNCH, SMOKE, CIFAR100_DIR: recipes/lib.sh)
# The CIFAR-10 and Tiny-ImageNet rows (table1_cifar10.sh, table1_tinyimagenet.sh) are this script with TABLE and
# DATASET set: the dataset's tau_A and omega, on CIFAR-10 the ResNet-18 teacher alone, on Tiny-ImageNet no CNN (it
# takes 32 px images only).
TABLE=${TABLE:-table1_cifar100}
source "$(dirname "$0")/../lib.sh" "distilling_undistillable/$TABLE" "$@"
dataset=${DATASET:-cifar100}
data=(--dataset "$dataset")
nasty=(--defense nasty)  # the dataset's tau_A and omega
teachers=(resnet18)
[[ $dataset == cifar10 ]] || teachers+=(resnet50)
students=(mobilenetv2 shufflenetv2)
[[ $dataset == tinyimagenet ]] || students=(cnn "${students[@]}")
kd_tau() { if [[ $1 == cnn ]]; then echo 4; else echo 20; fi; }

for t in "${teachers[@]}"; do
    cell "teachers/$t/ce" train_teacher.py "${data[@]}" --arch "$(arch "$t")" --defense ce
done
for s in "${students[@]}"; do
    cell "students/$s/scratch" distill_student.py "${data[@]}" --arch "$s" --attack scratch
    cell "students/$s/ls" distill_student.py "${data[@]}" --arch "$s" --attack ls
done
run_cells
for t in "${teachers[@]}"; do
    cell "teachers/$t/nasty" train_teacher.py "${data[@]}" --arch "$(arch "$t")" "${nasty[@]}" \
        --adversary "@teachers/$t/ce"
    for s in "${students[@]}"; do
        cell "students/$s/$t/kd-ce" distill_student.py "${data[@]}" --arch "$s" --attack kd \
            --teacher "@teachers/$t/ce" --alpha 0.9 --tau "$(kd_tau "$s")"
    done
done
run_cells
for i in 2 3 4; do  # S^i contrasts with S^(i-1), a stage each; the nasty teachers' students train beside S^2
    for t in "${teachers[@]}"; do
        previous=$([[ $i == 2 ]] && echo nasty || echo "s$((i - 1))")
        cell "teachers/$t/s$i" train_teacher.py "${data[@]}" --arch "$(arch "$t")" "${nasty[@]}" \
            --adversary "@teachers/$t/$previous"
        [[ $i == 2 ]] || continue
        for s in "${students[@]}"; do
            cell "students/$s/$t/kd-nasty" distill_student.py "${data[@]}" --arch "$s" --attack kd \
                --teacher "@teachers/$t/nasty" --alpha 0.9 --tau "$(kd_tau "$s")"
            searched "students/$s/$t/htc" distill_student.py "${data[@]}" --arch "$s" --attack htc \
                --teacher "@teachers/$t/nasty" --alpha 0.9
        done
        for s in mobilenetv2 shufflenetv2; do  # the students with stages (the plain CNN's head is no pooled linear)
            cell "students/$s/$t/skeptical" distill_student.py "${data[@]}" --arch "$s" --attack skeptical \
                --teacher "@teachers/$t/nasty" --alpha 0.9 --tau 20
        done
    done
    run_cells
done
for t in "${teachers[@]}"; do
    for s in "${students[@]}"; do
        searched "students/$s/$t/scm-k4" distill_student.py "${data[@]}" --arch "$s" --attack scm \
            --teacher "@teachers/$t/nasty" "@teachers/$t/s2" "@teachers/$t/s3" "@teachers/$t/s4" --alpha 0.9
    done
done
run_cells
table "$TABLE.toml"
table "${TABLE}_skeptical.toml"
