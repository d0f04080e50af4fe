#!/usr/bin/env bash
# Do the three loaders train to the same accuracy? Scratch and KD-from-CE students of the CPU proxy (plain CNN,
# 1,000 images per class, 15 epochs, seeds 0 and 1) fed by --loader gpu and --loader ffcv, beside the
# torchvision-loader students of recipes/cifar10_cpu_proxy.sh in RUN_DIR (run that first; its CE teacher is the
# teacher here). They go to OUT_DIR, apart, so that RUN_DIR's report does not average them in. Resumable.
#   bash recipes/cifar10_proxy_loaders.sh [RUN_DIR] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/cifar10_cpu_proxy}
loaders=${2:-runs/cifar10_proxy_loaders}
[ -f data/cifar10/ffcv/train.beton ] || python datasets/write_ffcv.py --dataset cifar10 --data-dir data/cifar10
for seed in 0 1; do
    for loader in gpu ffcv; do
        common=(--dataset cifar10 --data-dir data/cifar10 --arch cnn --quiet --resume --subset 1000 --epochs 15
                --seed "$seed" --loader "$loader")
        python distill_student.py "${common[@]}" --attack scratch --output "$loaders/s$seed/$loader/scratch"
        python distill_student.py "${common[@]}" --attack kd --teacher "$out/teachers/ce/checkpoint.pt" \
            --output "$loaders/s$seed/$loader/kd-from-ce"
    done
done
for seed in 0 1; do
    for run in "$out/students-s$seed"/{scratch,kd-from-ce} "$loaders/s$seed"/*/*; do
        python -c 'import json, sys; s = json.load(open(sys.argv[1] + "/summary.json"))
print(f"{sys.argv[1]}  loader {s[\"args\"][\"loader\"]}  last {s[\"last_acc\"]:.2f}  best {s[\"best_acc\"]:.2f}")' "$run"
    done
done
