#!/usr/bin/env bash
# Distilling the Undistillable: Learning from a Nasty Teacher (Jandial et al., ECCV 2022), Table 1, CIFAR-10 rows. A
# ResNet-18 teacher trained normally (CE), a nasty one against it (tau_A 4, omega 0.04) and, from the nasty teacher S^1,
# the sequence of contrastive models S^2..S^4 (S^i a nasty model of the same architecture against S^(i-1)); students
# CNN, MobileNetV2 and ShuffleNetV2 trained from scratch (vanilla), with label smoothing (the verdict's baseline), by KD
# from the normal and the nasty teacher (alpha 0.9; tau 4 for the CNN, 20 for the others: the paper's setting), by HTC
# (alpha 0.9, tau and m searched per seed on a validation split (tau 4, 20, 50, 100; m 1, 5, 10, 50)) and by SCM from
# the ensemble of S^1..S^4 (the paper's longest sequence, alpha 0.9, tau and m searched as HTC's); skeptical
# MobileNetV2 and ShuffleNetV2 students (head 1, tau 20; the skeptical student needs a network with stages and a
# pooled linear head, so not the CNN). The dataset's schedule: SGD 0.1, 160 epochs, x0.1 at 80 and 120;
# the CNN Adam 1e-3, 100 epochs.
#   bash recipes/distilling_undistillable/table1_cifar10.sh [RUN_DIR]
#   (SEEDS, LAUNCH, SMOKE, CIFAR10_DIR: recipes/lib.sh)
# The CIFAR-100 rows' script (table1_cifar100.sh) on CIFAR-10.
TABLE=table1_cifar10 DATASET=cifar10 exec bash "$(dirname "$0")/table1_cifar100.sh" "$@"
