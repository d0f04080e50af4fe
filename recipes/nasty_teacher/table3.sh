#!/usr/bin/env bash
# Undistillable: Making a Nasty Teacher That CANNOT Teach Students (Ma et al., ICLR 2021), Table 3: Tiny-ImageNet.
# Table 2's teachers and students (table2.sh) on Tiny-ImageNet: the dataset's tau_A 20, omega 0.01, KD tau 20 and
# schedule (SGD 0.1, 200 epochs, x0.2 at 60, 120 and 160).
#   bash recipes/nasty_teacher/table3.sh [RUN_DIR]        (SEEDS, LAUNCH, SMOKE, TINYIMAGENET_DIR: recipes/lib.sh)
TABLE=table3 DATASET=tinyimagenet exec bash "$(dirname "$0")/table2.sh" "$@"
