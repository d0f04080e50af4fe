#!/usr/bin/env bash
# Distilling the Undistillable: Learning from a Nasty Teacher (Jandial et al., ECCV 2022), Fig. 1 and Fig. 5: a
# ResNet-18 on CIFAR-10, normal (CE), nasty against it (tau_A 4, omega 0.04) and the first two models of SCM's
# sequence, Seq-1 = S^2 (nasty against the nasty teacher) and Seq-2 = S^3 (against S^2). Fig. 1: their softmax
# outputs and the ensemble of Seq-1 and Seq-2 that SCM distills from; Fig. 5: t-SNE of their features before the
# fully-connected layer. The runs of table1_cifar10.sh (the same RUN_DIR shares them). Our choices, which the text
# leaves open: Fig. 1 at tau 4 on the first test image of four classes; Fig. 5 on 2,000 test images. Ends with
# fig1.png and fig5.png.
#   bash recipes/distilling_undistillable/fig1_fig5.sh [RUN_DIR]     (SEEDS, LAUNCH, SMOKE, CIFAR10_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" distilling_undistillable/fig1_fig5 "$@"
data=(--dataset cifar10)
t=teachers/resnet18

cell "$t/ce" train_teacher.py "${data[@]}" --arch resnet18 --defense ce
run_cells
previous=ce
for s in nasty s2 s3; do  # each nasty against the one before (the dataset's tau_A and omega)
    cell "$t/$s" train_teacher.py "${data[@]}" --arch resnet18 --defense nasty --adversary "@$t/$previous"
    run_cells
    previous=$s
done
figure responses fig1 "${data[@]}" --tau 4 --model "nasty teacher=$t/nasty" --model "Seq-1=$t/s2" \
    --model "Seq-2=$t/s3" --model "ensemble of Seq-1, Seq-2=$t/s2+$t/s3" --model "normal teacher=$t/ce"
figure tsne fig5 "${data[@]}" --model "normal teacher=$t/ce" --model "nasty teacher=$t/nasty" --model "Seq-1=$t/s2" \
    --model "Seq-2=$t/s3"
