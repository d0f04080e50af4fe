#!/usr/bin/env bash
# Do the three loaders train to the same accuracy? Scratch and KD-from-CE students of the CPU proxy (plain CNN,
# 1,000 images per class, 15 epochs, seeds 0 and 1) fed by --loader gpu and --loader ffcv, beside the
# torchvision-loader students of recipes/proxies/cifar10_cpu_proxy.sh in PROXY_DIR (run that first; its CE teacher
# is the teacher here; a smoke run trains its own). They go to RUN_DIR, apart, so that PROXY_DIR's report does not
# average them in; the last lines print every student's loader and accuracy. Results:
# recipes/proxies/results/throughput.md
#   bash recipes/proxies/cifar10_proxy_loaders.sh [RUN_DIR] [PROXY_DIR]
# (SEEDS, default 0,1; LAUNCH, SMOKE, CIFAR10_DIR: recipes/lib.sh)
SEEDS=${SEEDS:-0,1}
source "$(dirname "$0")/../lib.sh" proxies/cifar10_proxy_loaders "$@"
source recipes/proxies/lib.sh
if [[ $SMOKE == 1 ]]; then proxy=$OUT; proxy_teachers; else proxy=${2:-runs/proxies/cifar10_cpu_proxy}; fi
ce=$proxy/teachers/ce/s0/checkpoint.pt
if [[ ! -f $ce ]]; then
    echo "error: no CE teacher at $ce (run bash recipes/proxies/cifar10_cpu_proxy.sh $proxy first)" >&2
    exit 2
fi
[[ -f $data_dir/ffcv/train.beton ]] || python3 datasets/write_ffcv.py --dataset cifar10 --data-dir "$data_dir"

for loader in gpu ffcv; do
    cell "$loader/scratch" "${student[@]}" --loader "$loader" --attack scratch
    cell "$loader/kd-from-ce" "${student[@]}" --loader "$loader" --attack kd --teacher "$ce"
done
run_cells
for seed in ${SEEDS//,/ }; do
    for run in "$proxy"/students/{scratch,kd-from-ce}/s"$seed" "$OUT"/{gpu,ffcv}/{scratch,kd-from-ce}/s"$seed"; do
        [[ -f $run/summary.json ]] && python3 -c 'import json, sys; s = json.load(open(sys.argv[1] + "/summary.json"))
loader, last, best = s["args"]["loader"], s["last_acc"], s["best_acc"]
print(f"{sys.argv[1]}  loader {loader}  last {last:.2f}  best {best:.2f}")' "$run"
    done
done
