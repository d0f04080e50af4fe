#!/usr/bin/env bash
# Distilling the Undistillable: Learning from a Nasty Teacher (Jandial et al., ECCV 2022), Table 1, Tiny-ImageNet rows.
# ResNet-18 and ResNet-50 teachers trained normally (CE), nasty ones against them (tau_A 20, omega 0.01) and, from each
# nasty teacher S^1, the sequence of contrastive models S^2..S^4 (S^i a nasty model of the same architecture against
# S^(i-1)); students MobileNetV2 and ShuffleNetV2 trained from scratch (vanilla), with label smoothing (the verdict's
# baseline), by KD from the normal and the nasty teacher (alpha 0.9, tau 20: the paper's setting), by HTC (alpha 0.9;
# tau in 4, 20, 50, 100 and m in 1, 5, 10, 50 searched per seed on a validation split) and by SCM from the ensemble of
# S^1..S^4 (the paper's longest sequence, searched the same way); skeptical MobileNetV2 and ShuffleNetV2 students
# (head 1, tau 20). The dataset's schedule: SGD 0.1, 200 epochs, x0.2 at 60,
# 120 and 160.
#   bash recipes/distilling_undistillable/table1_tinyimagenet.sh [RUN_DIR]
#   (SEEDS, LAUNCH, SMOKE, TINYIMAGENET_DIR: recipes/lib.sh)
# The CIFAR-100 rows' script (table1_cifar100.sh) on Tiny-ImageNet.
TABLE=table1_tinyimagenet DATASET=tinyimagenet exec bash "$(dirname "$0")/table1_cifar100.sh" "$@"
