#!/usr/bin/env bash
# Towards Undistillable Models by Minimizing Conditional Mutual Information (Ye et al.): the claims of its abstract (the
# only part public; it names no dataset: CIFAR-100 and ResNet-18 teachers, with the MobileNetV2 students of Distilling
# the Undistillable, Jandial et al., ECCV 2022, on CIFAR-100): a CMIM teacher is undistillable by the KD attacks (none
# of its knockoff students beats the LS student of the same architecture), is at least as accurate as the CE teacher,
# and its output clusters are concentrated (low CMI at every temperature). The objective is the project's reconstruction
# (docs/methods.md, cmim): CE + 4 x the T^2-weighted mean of CMI_T over T in 1..32, EMA class centroids. Teachers CE and
# CMIM; for SCM, a sequence of 3 per teacher (S^2, S^3: nasty, tau_A 20, omega 0.005, each against the one before, as
# Jandial et al. build it; they use up to 4). MobileNetV2 students: scratch, LS (the verdict's baseline) and, from each
# teacher, KD (alpha 0.9, tau 20), KD without labels, HTC (tau 50, m 50, alpha 0.9), SCM (the sequence's ensemble, tau
# 20, m tau^2), DKD (alpha 1, beta 8, tau 4) and a skeptical student (head 1, tau 20). Every teacher is then evaluated
# against the CE teacher of its seed (top-1, KL, CMI over the training split). The dataset's schedule: SGD 0.1, 200
# epochs, x0.2 at 60, 120 and 160.
#   bash recipes/cmim/grid.sh [RUN_DIR]        (SEEDS, LAUNCH, SMOKE, DEVICE, CIFAR100_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" cmim/grid "$@"
data=(--dataset cifar100)
teachers=(ce cmim)

cell teachers/ce train_teacher.py "${data[@]}" --arch resnet18 --defense ce
cell teachers/cmim train_teacher.py "${data[@]}" --arch resnet18 --defense cmim --cmi-weight 4 \
    --temperatures 1,2,4,8,16,32 --cmi-agg t2mean --centroids ema
run_cells
for i in 2 3; do  # SCM's sequence: S^i contrasts with S^(i-1), S^1 the teacher itself
    for t in "${teachers[@]}"; do
        if [[ $i == 2 ]]; then previous=$t; else previous=$t-seq$((i - 1)); fi
        cell "teachers/$t-seq$i" train_teacher.py "${data[@]}" --arch resnet18 --defense nasty \
            --adversary "@teachers/$previous" --tau 20 --omega 0.005
    done
    run_cells
done

# each teacher's top-1, KL to the CE teacher and CMI per temperature (the abstract's measure), once per seed
evaluate=(--data-dir "${CIFAR100_DIR:-data/cifar100}" --device "${DEVICE:-auto}")
[[ $SMOKE == 1 ]] && evaluate=(--data-dir "$OUT/.data/cifar100" --device "${DEVICE:-auto}" --workers 0)
for seed in ${SEEDS//,/ }; do
    for t in "${teachers[@]}"; do
        run=$OUT/teachers/$t/s$seed
        [[ -f $run/checkpoint.eval.json ]] || evaluate "$run/checkpoint.pt" \
            --reference "$OUT/teachers/ce/s$seed/checkpoint.pt" --temperatures 1,2,4,8,16,32 "${evaluate[@]}" \
            --output "$run/checkpoint.eval.json"
    done
done

student=(distill_student.py "${data[@]}" --arch mobilenetv2)
cell students/scratch "${student[@]}" --attack scratch
cell students/ls "${student[@]}" --attack ls
for t in "${teachers[@]}"; do
    cell "students/kd/$t" "${student[@]}" --attack kd --teacher "@teachers/$t" --alpha 0.9 --tau 20
    cell "students/kd-nolabels/$t" "${student[@]}" --attack kd --teacher "@teachers/$t" --tau 20 --no-labels
    cell "students/htc/$t" "${student[@]}" --attack htc --teacher "@teachers/$t" --tau 50 --multiplier 50 \
        --alpha 0.9
    cell "students/scm/$t" "${student[@]}" --attack scm \
        --teacher "@teachers/$t" "@teachers/$t-seq2" "@teachers/$t-seq3" --tau 20 --alpha 0.9
    cell "students/dkd/$t" "${student[@]}" --attack dkd --teacher "@teachers/$t" --alpha 1 --beta 8 --tau 4
    cell "students/skeptical/$t" "${student[@]}" --attack skeptical --teacher "@teachers/$t" --kd-head 1 \
        --tau 20 --alpha 0.9
done
run_cells
table grid.toml
table teachers.toml
table cmi.toml
