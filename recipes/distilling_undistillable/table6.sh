#!/usr/bin/env bash
# Distilling the Undistillable: Learning from a Nasty Teacher (Jandial et al., ECCV 2022), Table 6: SCM as a defense.
# Teachers: a CE one, a nasty one against it (Nasty KD), S^2, a nasty model of the same architecture trained against
# the nasty teacher (Ours: the paper takes the first or second model of its sequence), and the nasty teacher
# early-stopped at S^2's accuracy (Nasty KD ES: the nasty training cut after the first epoch whose test accuracy,
# averaged over the seeds, reaches S^2's; the learning-rate schedule is the full run's, so this is that run's state
# at that epoch). CIFAR-10: ResNet-18 teachers (tau_A 4, omega 0.04), students CNN, MobileNetV2 and ShuffleNetV2;
# CIFAR-100: ResNet-50 teachers (tau_A 20, omega 0.005), students CNN and MobileNetV2. Each student by KD from each
# teacher (alpha 0.9, tau 4 for the CNN, 20 for the others); the LS students decide the verdict.
#   bash recipes/distilling_undistillable/table6.sh [RUN_DIR]
#   (SEEDS, LAUNCH, SMOKE, CIFAR10_DIR, CIFAR100_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" distilling_undistillable/table6 "$@"
declare -A teacher=([cifar10]=resnet18 [cifar100]=resnet50)
declare -A nasty=([cifar10]="--defense nasty --tau 4 --omega 0.04" [cifar100]="--defense nasty --tau 20 --omega 0.005")
declare -A students=([cifar10]="cnn mobilenetv2 shufflenetv2" [cifar100]="cnn mobilenetv2")
kd_tau() { if [[ $1 == cnn ]]; then echo 4; else echo 20; fi; }
es_epochs() {  # DIR: the first epoch at which the nasty run's test accuracy reaches S^2's, over the seeds' means
    python3 - "$OUT/$1" "$SEEDS" <<'PY'
import json, statistics, sys
from pathlib import Path
root, seeds = Path(sys.argv[1]), sys.argv[2].split(",")
target = statistics.mean(json.loads((root / "s2" / f"s{s}" / "summary.json").read_text())["last_acc"] for s in seeds)
curves = [[json.loads(line)["test_acc"] for line in (root / "nasty" / f"s{s}" / "metrics.jsonl").open()]
          for s in seeds]
means = [statistics.mean(epoch) for epoch in zip(*curves)]
print(next((e for e, acc in enumerate(means, 1) if acc >= target), len(means)))
PY
}

for d in cifar10 cifar100; do
    cell "$d/teachers/${teacher[$d]}/ce" train_teacher.py --dataset "$d" --arch "$(arch "${teacher[$d]}")" --defense ce
    for s in ${students[$d]}; do
        cell "$d/students/$s/ls" distill_student.py --dataset "$d" --arch "$s" --attack ls
    done
done
run_cells
for d in cifar10 cifar100; do
    t=${teacher[$d]}
    read -ra settings <<< "${nasty[$d]}"
    cell "$d/teachers/$t/nasty" train_teacher.py --dataset "$d" --arch "$(arch "$t")" "${settings[@]}" \
        --adversary "@$d/teachers/$t/ce"
done
run_cells
for d in cifar10 cifar100; do
    t=${teacher[$d]}
    read -ra settings <<< "${nasty[$d]}"
    cell "$d/teachers/$t/s2" train_teacher.py --dataset "$d" --arch "$(arch "$t")" "${settings[@]}" \
        --adversary "@$d/teachers/$t/nasty"
done
run_cells
for d in cifar10 cifar100; do
    t=${teacher[$d]}
    read -ra settings <<< "${nasty[$d]}"
    cell "$d/teachers/$t/nasty-es" train_teacher.py --dataset "$d" --arch "$(arch "$t")" "${settings[@]}" \
        --adversary "@$d/teachers/$t/ce" --epochs "$(es_epochs "$d/teachers/$t")"
done
run_cells
for d in cifar10 cifar100; do
    t=${teacher[$d]}
    for s in ${students[$d]}; do
        for from in ce nasty nasty-es s2; do
            cell "$d/students/$s/$t/kd-$from" distill_student.py --dataset "$d" --arch "$s" --attack kd \
                --teacher "@$d/teachers/$t/$from" --alpha 0.9 --tau "$(kd_tau "$s")"
        done
    done
done
run_cells
table table6_cifar10.toml
table table6_cifar100.toml
