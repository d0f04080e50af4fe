#!/usr/bin/env bash
# Stingy Teacher: Sparse Logits Suffice to Fail Knowledge Distillation (Ma et al.), Table 3: Tiny-ImageNet.
# Table 2's teachers, releases and students (table2_cifar100.sh) on Tiny-ImageNet: the nasty teachers at the
# dataset's tau_A 20, omega 0.01, the stingy release keeping the top k = 20 of 200 logits (ratio 0.1), KD at alpha
# 0.9 and tau 20, the dataset's schedule (SGD 0.1, 200 epochs, x0.2 at 60, 120 and 160).
#   bash recipes/stingy_teacher/table3_tinyimagenet.sh [RUN_DIR]
#   (SEEDS, LAUNCH, SMOKE, TINYIMAGENET_DIR: recipes/lib.sh)
TABLE=table3_tinyimagenet DATASET=tinyimagenet exec bash "$(dirname "$0")/table2_cifar100.sh" "$@"
