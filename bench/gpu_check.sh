#!/usr/bin/env bash
# One GPU's check, sized for 7 minutes on one H100/H200 (--budget, in seconds): (a) the environment; (b) correctness
# on the device: every method in bf16 against fp32, the host syncs in their steps, a checkpoint read back on the
# CPU, a resume; (c) CIFAR-10 ResNet-18 training throughput at batch 128 and 512: the papers' pipeline against each
# loader, then with compile; the step cost of nasty, CMIM and KD against CE; peak memory; (d) a short Table 1 of
# the Nasty Teacher paper (ResNet-18 teachers: CE, nasty, CMIM, stingy; ResNetC-20 students: scratch, LS, KD from
# each; --epochs) with the paper's numbers beside it. Each step writes its tables (markdown and JSON) into --out as
# soon as it has them, and check.md the seconds and state of each step. The budget left once the data is ready is
# shared out: (b) ends by 15% of it, (c) by 55%, (d) by 95%; a step still running then is stopped, keeps what it
# wrote, and the check goes on. Exit 1 when a check failed or a step did not finish.
#   bash bench/gpu_check.sh --data PATH [--out DIR] [--epochs N] [--budget S]   # PATH: cifar10-jpeg.tar.gz, or
#                                                                                # its folders
#   bash bench/gpu_check.sh --smoke [--out DIR]      # every step at tiny size on the CPU (tests/test_bench.py)
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/gpu_check data="" smoke=0 epochs=5 budget=""
usage="bash bench/gpu_check.sh --data cifar10-jpeg.tar.gz [--out DIR] [--epochs N] [--budget S] | --smoke [--out DIR]"
while [ $# -gt 0 ]; do
    case $1 in
        --data|--out|--epochs|--budget)
            [ $# -ge 2 ] || { echo "error: $1 needs a value ($usage)" >&2; exit 2; }
            printf -v "${1#--}" %s "$2"; shift 2 ;;
        --smoke) smoke=1; shift ;;
        *) echo "error: unknown option $1 ($usage)" >&2; exit 2 ;;
    esac
done
[[ $epochs =~ ^[0-9]+$ ]] && [ "$epochs" -ge 2 ] || {
    echo "error: --epochs $epochs: give 2 or more (the lr steps down after half and three quarters of them)" >&2
    exit 2; }
if [ "$smoke" = 1 ]; then budget=${budget:-900}; else budget=${budget:-420}; fi
[[ $budget =~ ^[1-9][0-9]*$ ]] || { echo "error: --budget $budget: give a whole number of seconds" >&2; exit 2; }
if [ "$smoke" = 0 ]; then
    [ -n "$data" ] || { echo "error: no --data ($usage)" >&2; exit 2; }
    [ -e "$data" ] || { echo "error: --data $data does not exist ($usage)" >&2; exit 2; }
    [ -f "$data" ] || [ -d "$data/train" ] || {
        echo "error: --data $data holds no train/ folder (pass cifar10-jpeg.tar.gz or its folders)" >&2; exit 2; }
fi
mkdir -p "$out"
# no table of an earlier check in --out is taken for this one's
rm -rf "$out"/{env,correctness,throughput*,table1}.{md,json} "$out/table1"
problems=()
printf '| step | seconds | state |\n|---|---|---|\n' > "$out/check.md"
step() { echo "== $1 ($(date +%T), ${SECONDS}s)"; }
# within DEADLINE NAME COMMAND...: run it, stopped by SIGINT at DEADLINE (seconds since the start); its time and
# state go to check.md
within() {
    local deadline=$1 name=$2 rc=0 start=$SECONDS state="not started: its deadline (${1}s) had passed"
    shift 2
    if [ $((deadline - SECONDS)) -gt 0 ]; then
        timeout -s INT -k 10 $((deadline - SECONDS)) "$@" || rc=$?
        case $rc in
            0) state=done ;;
            124|137) state="stopped at its deadline (${deadline}s)" ;;
            *) state="failed (exit $rc)" ;;
        esac
    fi
    [ "$state" = done ] || problems+=("$name: $state")
    echo "| $name | $((SECONDS - start)) | $state |" >> "$out/check.md"
}

if [ "$smoke" = 1 ]; then  # the same steps on the built-in data, tiny, on the CPU
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # tiny models on a shared CPU: more threads only contend
    dataset=(--dataset mnist5k --device cpu)
    # the plain CNN has no stages for the skeptical student's heads: that one student is a ResNetC-20
    correctness=(--arch cnn --heads-arch resnetc20 --subset 2 --test-subset 2 --batch-size 10)
    speed=(--arch cnn --steps 2 --warmup 1 --workers 0 --loaders reference,torchvision,gpu)
    configs="16:off"
    table=(--teacher-arch cnn --student-arch cnn --test-subset 2 -- --subset 2 --epochs 1 --batch-size 10 --workers 0
           --loader gpu)
fi

step "a. environment"
within "$budget" environment python3 - "$out" <<'EOF'
import importlib.metadata, json, os, platform, shutil, subprocess, sys
import torch
cuda = torch.cuda.is_available()
env = {"python": platform.python_version(), "torch": torch.__version__,
       "torchvision": importlib.metadata.version("torchvision"), "cuda": torch.version.cuda,
       "cudnn": torch.backends.cudnn.version() if cuda else None,
       "gpu": torch.cuda.get_device_name() if cuda else None,
       "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
       "driver": None, "cpus": os.cpu_count()}
if cuda and shutil.which("nvidia-smi"):
    env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                   capture_output=True, text=True).stdout.strip() or None
open(f"{sys.argv[1]}/env.json", "w").write(json.dumps(env, indent=2) + "\n")
table = "| item | value |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in env.items())
open(f"{sys.argv[1]}/env.md", "w").write(table)
print(table)
EOF

if [ "$smoke" = 0 ]; then
    step "data: CIFAR-10 unpacked and decoded once (cached beside the images), before the steps' budgets"
    if [ -f "$data" ]; then
        within "$budget" unpack bash datasets/cifar10_from_tar.sh "$out/cifar10" "$data"
        data=$out/cifar10
    fi
    within "$budget" decode python3 -c "import sys; from undistill import datasets; datasets.load('cifar10', \
        sys.argv[1])" "$data"
    dataset=(--dataset cifar10 --data-dir "$data")
    speed=(--arch resnet18 --steps 50 --warmup 10 --workers 8)
    if python3 -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('ffcv') is None)"; then
        # its .beton written once, not by each throughput run
        [ -f "$out/ffcv/test.beton" ] || within "$budget" "write .beton" python3 datasets/write_ffcv.py \
            --dataset cifar10 --data-dir "$data" --out "$out/ffcv"
        speed+=(--ffcv-dir "$out/ffcv")
    fi
    [ ${#problems[@]} -eq 0 ] || { printf 'gpu check stopped, the data is not ready:\n' >&2
                                   printf '  %s\n' "${problems[@]}" >&2; exit 1; }
    correctness=(--arch resnetc20 --subset 20 --test-subset 100 --batch-size 64)
    configs="128:off 512:off 128:on 512:on"
    table=(--teacher-arch resnet18 --student-arch resnetc20 -- --epochs "$epochs"
           --milestones "$((epochs / 2)),$((epochs * 3 / 4))" --loader gpu --workers 8)
fi
rest=$((budget - SECONDS))
end_b=$((SECONDS + rest * 15 / 100)) end_c=$((SECONDS + rest * 55 / 100)) end_d=$((SECONDS + rest * 95 / 100))

step "b. correctness"
within "$end_b" correctness python3 bench/gpu_correctness.py --out "$out" "${dataset[@]}" "${correctness[@]}"

step "c. throughput"
: > "$out/throughput.md"
for config in $configs; do
    batch=${config%:*} compile=${config#*:} extra=()
    # compile changes the step, not the loading: the project's own loader only (the reference is never compiled)
    [ "$compile" = on ] && extra=(--compile --loaders gpu)
    name=throughput-b$batch-compile-$compile
    within "$end_c" "throughput batch $batch, compile $compile" python3 bench/throughput.py "${dataset[@]}" \
        "${speed[@]}" --batch-size "$batch" "${extra[@]}" --json "$out/$name.json" > "$out/$name.md"
    cat "$out/$name.md"
    { echo "### batch $batch, compile $compile"; cat "$out/$name.md"; echo; } >> "$out/throughput.md"
done

step "d. Table 1, shortened"
within "$end_d" "Table 1" python3 bench/gpu_table1.py --out "$out" "${table[@]}" "${dataset[@]}"

step "end: $out"
if [ ${#problems[@]} -gt 0 ]; then
    printf 'gpu check incomplete (%s):\n' "$out/check.md" >&2
    printf '  %s\n' "${problems[@]}" >&2
    exit 1
fi
