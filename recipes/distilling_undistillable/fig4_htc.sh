#!/usr/bin/env bash
# Distilling the Undistillable: Learning from a Nasty Teacher (Jandial et al., ECCV 2022), Fig. 4(a), (b) and (d):
# HTC's temperature and multiplier. HTC students (alpha 0.9, the paper's) of nasty teachers: (a) CIFAR-10, a
# ResNet-18 teacher (nasty: tau_A 4, omega 0.04), (b) CIFAR-100, a ResNet-50 teacher (nasty: tau_A 20, omega 0.005),
# both with ShuffleNetV2 students at tau 10, 20, 50 and 100 and m = 50 (the paper's grid); (d) m at tau 50 (the
# paper's). Beside them the LS student (the verdict's baseline) and KD (alpha 0.9, tau 20) from the normal and the
# nasty teacher. Our choices, which the text leaves open: (d) in the setting of (a), at m = 1, 5, 10, 50 and 100.
# The datasets' schedules. The same RUN_DIR as fig4c.sh shares the CIFAR-10 teachers. Ends with fig4a.png,
# fig4b.png and fig4d.png and their tables.
#   bash recipes/distilling_undistillable/fig4_htc.sh [RUN_DIR]
#   (SEEDS, LAUNCH, SMOKE, CIFAR10_DIR, CIFAR100_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" distilling_undistillable/fig4_htc "$@"
declare -A teacher=([cifar10]=resnet18 [cifar100]=resnet50)
declare -A prefix=([cifar10]="" [cifar100]=cifar100/)  # CIFAR-10's runs under fig4c.sh's names
declare -A nasty=([cifar10]="--tau 4 --omega 0.04" [cifar100]="--tau 20 --omega 0.005")

for d in cifar10 cifar100; do
    p=${prefix[$d]} t=${teacher[$d]}
    cell "${p}teachers/$t/ce" train_teacher.py --dataset "$d" --arch "$(arch "$t")" --defense ce
    cell "${p}students/shufflenetv2/ls" distill_student.py --dataset "$d" --arch shufflenetv2 --attack ls
done
run_cells
for d in cifar10 cifar100; do
    p=${prefix[$d]} t=${teacher[$d]}
    # shellcheck disable=SC2086  # the dataset's tau_A and omega, two options each
    cell "${p}teachers/$t/nasty" train_teacher.py --dataset "$d" --arch "$(arch "$t")" --defense nasty ${nasty[$d]} \
        --adversary "@${p}teachers/$t/ce"
done
run_cells
for d in cifar10 cifar100; do
    p=${prefix[$d]} t=${teacher[$d]}
    student=(distill_student.py --dataset "$d" --arch shufflenetv2 --alpha 0.9)
    for kind in ce nasty; do
        cell "${p}students/shufflenetv2/kd-$kind" "${student[@]}" --attack kd --teacher "@${p}teachers/$t/$kind" \
            --tau 20
    done
    settings=(tau10-m50 tau20-m50 tau50-m50 tau100-m50)
    [[ $d == cifar10 ]] && settings+=(tau50-m1 tau50-m5 tau50-m10 tau50-m100)
    for s in "${settings[@]}"; do
        tau=${s%-m*} m=${s#*-m}
        cell "${p}students/shufflenetv2/htc/$s" "${student[@]}" --attack htc --teacher "@${p}teachers/$t/nasty" \
            --tau "${tau#tau}" --multiplier "$m"
    done
done
run_cells
for fig in fig4a fig4b fig4d; do
    table "$fig.toml"
    figure curve "$fig.toml"
done
