#!/usr/bin/env bash
# Distilling the Undistillable: Learning from a Nasty Teacher (Jandial et al., ECCV 2022), Table 3: how far the nasty
# teacher and the SCM ensemble are from the normal teacher, KL(model || normal teacher) on the test split. Per
# column, a normally trained (CE) teacher, a nasty one against it and the sequence S^2..S^4 (each a nasty model of
# the same architecture against the one before): CIFAR-10 ResNet-18 (tau_A 4, omega 0.04), CIFAR-100 ResNet-18 and
# ResNet-50 (tau_A 20, omega 0.005). The ensemble is Table 1's, the mean logits of S^1..S^4; its measurement is
# written beside its last member (s4/s<seed>/checkpoint.eval.json, which names the four checkpoints). The paper
# does not give the KL's temperature: it is measured on the softmax as released (tau 1).
#   bash recipes/distilling_undistillable/table3.sh [RUN_DIR]
#   (SEEDS, LAUNCH, SMOKE, CIFAR10_DIR, CIFAR100_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" distilling_undistillable/table3 "$@"
columns=(cifar10/resnet18 cifar100/resnet18 cifar100/resnet50)
nasty() {  # COLUMN: its dataset's nasty settings
    if [[ $1 == cifar10/* ]]; then echo --defense nasty --tau 4 --omega 0.04; else
        echo --defense nasty --tau 20 --omega 0.005; fi
}
checkpoint() { echo "$OUT/$c/$1/s$seed/checkpoint.pt"; }  # NAME: the current column's and seed's run
train() {  # COLUMN NAME OPTIONS...
    local column=$1 name=$2
    shift 2
    cell "$column/$name" train_teacher.py --dataset "${column%/*}" --arch "$(arch "${column#*/}")" "$@"
}

for c in "${columns[@]}"; do train "$c" ce --defense ce; done
run_cells
for c in "${columns[@]}"; do train "$c" nasty $(nasty "$c") --adversary "@$c/ce"; done
run_cells
for i in 2 3 4; do
    previous=$([[ $i == 2 ]] && echo nasty || echo "s$((i - 1))")
    for c in "${columns[@]}"; do train "$c" "s$i" $(nasty "$c") --adversary "@$c/$previous"; done
    run_cells
done
for c in "${columns[@]}"; do
    dataset=${c%/*}
    if [[ $SMOKE == 1 ]]; then data_dir=$OUT/.data/$dataset; else
        variable=${dataset^^}_DIR; data_dir=${!variable:-data/$dataset}; fi
    for seed in ${SEEDS//,/ }; do
        for model in nasty s4; do  # s4: the ensemble S^1..S^4
            eval_json=$OUT/$c/$model/s$seed/checkpoint.eval.json
            [[ -f $eval_json ]] && continue
            members=("$(checkpoint nasty)")
            [[ $model == s4 ]] && members+=("$(checkpoint s2)" "$(checkpoint s3)" "$(checkpoint s4)")
            evaluate "${members[@]}" --reference "$(checkpoint ce)" --tau 1 --cmi-split none \
                --data-dir "$data_dir" --workers 0 --device "${DEVICE:-auto}" --output "$eval_json"
        done
    done
done
table table3.toml
