#!/usr/bin/env bash
# Data-free students on the CIFAR-10 CPU proxy: DAFL and DeepInversion plain-CNN students, which never read a training
# image, from the proxy's CE teacher, its nasty teacher and its stingy release (the teachers of
# recipes/proxies/cifar10_cpu_proxy.sh, trained here if missing). The Nasty Teacher paper's Table 5 runs DAFL from
# ResNet-34 teachers for 2000 epochs on a GPU (normal 92.49, nasty 86.15); this is a CPU-sized look at its
# direction. Results: recipes/proxies/results/datafree.md. Once the teachers exist, two invocations with ATTACKS
# "dafl" and "deepinversion" run side by side.
#   bash recipes/proxies/cifar10_proxy_datafree.sh [RUN_DIR] [ATTACKS]
# (SEEDS, default 0; LAUNCH, SMOKE, CIFAR10_DIR: recipes/lib.sh)
SEEDS=${SEEDS:-0}
source "$(dirname "$0")/../lib.sh" proxies/cifar10_cpu_proxy "$@"
source recipes/proxies/lib.sh
attacks=${2:-"dafl deepinversion"}

proxy_teachers
# DAFL's CIFAR-10 weights and generator; the student on the proxy's Adam 1e-3, 6 epochs of 50 steps of 128 latents
# (its code: 2000 epochs of 120 steps of 1024, SGD 0.1). DeepInversion with 200 of its 2000 iterations per batch
# of 256: a pool of 4 batches filled two an epoch.
budget_dafl=(--epochs 6 --steps-per-epoch 50 --batch-size 128 --opt adam --lr 1e-3 --milestones 5)
budget_deepinversion=(--epochs 8 --di-iterations 200 --pool-batches 4 --batches-per-epoch 2)
for attack in $attacks; do
    budget="budget_$attack[@]"
    for t in ce nasty stingy; do
        cell "datafree/$attack-from-$t" distill_student.py "${data[@]}" --attack "$attack" --teacher "$(teacher "$t")" \
            "${!budget}"
    done
done
run_cells
report
