#!/usr/bin/env bash
# One GPU's check, sized for a few minutes on one H100/H200: (a) the environment, (b) correctness on the device
# (every method in bf16 against fp32, a checkpoint read back on the CPU, a resume), (c) CIFAR-10 ResNet-18 training
# throughput (the papers' pipeline against each loader, batch 128 and 512, with and without compile, the step cost
# of each defense and attack, peak memory), (d) a short Table 1 of the Nasty Teacher paper (ResNet-18 teachers: CE,
# nasty, CMIM, stingy; ResNetC-20 students: scratch, LS, KD from each) with the paper's numbers beside it. Each step
# writes its table (markdown and JSON) into --out as soon as it is done, so a run cut short still reports.
#   bash bench/gpu_check.sh --data PATH [--out DIR] [--epochs N]   # PATH: cifar10-jpeg.tar.gz, or its folders
#   bash bench/gpu_check.sh --smoke [--out DIR]      # every step at tiny size on the CPU (tests/test_bench.py)
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/gpu_check data="" smoke=0 epochs=8
usage="bash bench/gpu_check.sh --data cifar10-jpeg.tar.gz [--out DIR] [--epochs N] | --smoke [--out DIR]"
while [ $# -gt 0 ]; do
    case $1 in
        --data) data=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --epochs) epochs=$2; shift 2 ;;
        --smoke) smoke=1; shift ;;
        *) echo "error: unknown option $1 ($usage)" >&2; exit 2 ;;
    esac
done
mkdir -p "$out"
step() { echo "== $1 ($(date +%T))"; }

if [ "$smoke" = 1 ]; then  # the same steps on the built-in data, tiny, on the CPU
    dataset=(--dataset mnist5k --device cpu)
    correctness=(--subset 5 --batch-size 10)
    speed=(--arch cnn --steps 2 --warmup 1 --workers 0 --loaders reference,torchvision,gpu --step-loader gpu)
    batches="16" compiles="off"
    teacher_arch=cnn student_arch=cnn table=(--subset 5 --epochs 1 --batch-size 10 --workers 0)
else
    [ -n "$data" ] || { echo "error: no --data ($usage)" >&2; exit 2; }
    if [ -f "$data" ]; then  # the archive: unpacked once into --out
        bash datasets/cifar10_from_shared_tar.sh "$out/cifar10" "$data"
        data=$out/cifar10
    fi
    [ -d "$data/train" ] || { echo "error: $data holds no train/ folder (pass cifar10-jpeg.tar.gz or its folders)" >&2
                              exit 2; }
    dataset=(--dataset cifar10 --data-dir "$data")
    correctness=(--subset 50 --batch-size 64)
    speed=(--arch resnet18 --steps 50 --warmup 10 --workers 8)
    batches="128 512" compiles="off on"
    teacher_arch=resnet18 student_arch=resnetc20
    table=(--epochs "$epochs" --milestones "$((epochs / 2)),$((epochs * 3 / 4))" --loader gpu --workers 8)
fi

step "a. environment"
python - "$out" <<'EOF'
import json, platform, sys
import torch, torchvision
cuda = torch.cuda.is_available()
env = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
       "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
       "gpu": torch.cuda.get_device_name() if cuda else None,
       "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
       "cpus": __import__("os").cpu_count()}
if cuda:
    import subprocess
    env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                   capture_output=True, text=True).stdout.strip() or None
open(f"{sys.argv[1]}/env.json", "w").write(json.dumps(env, indent=2) + "\n")
table = "| item | value |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in env.items())
open(f"{sys.argv[1]}/env.md", "w").write(table)
print(table)
EOF

step "b. correctness"
python bench/gpu_correctness.py --out "$out" "${dataset[@]}" "${correctness[@]}"

step "c. throughput"
: > "$out/throughput.md"
for batch in $batches; do
    for compile in $compiles; do
        name=throughput-b$batch-compile-$compile
        python bench/throughput.py "${dataset[@]}" "${speed[@]}" --batch-size "$batch" \
            $([ "$compile" = on ] && echo --compile) --json "$out/$name.json" | tee "$out/$name.md"
        { echo "### batch $batch, compile $compile"; cat "$out/$name.md"; echo; } >> "$out/throughput.md"
    done
done

step "d. Table 1, shortened"
runs=$out/table1
teacher=("${dataset[@]}" "${table[@]}" --arch "$teacher_arch" --quiet --overwrite)
student=("${dataset[@]}" "${table[@]}" --arch "$student_arch" --quiet --overwrite)
python train_teacher.py "${teacher[@]}" --defense ce --output "$runs/teacher-ce"
python train_teacher.py "${teacher[@]}" --defense nasty --adversary "$runs/teacher-ce/checkpoint.pt" \
    --output "$runs/teacher-nasty"
python train_teacher.py "${teacher[@]}" --defense cmim --output "$runs/teacher-cmim"
python train_teacher.py "${dataset[@]}" --defense stingy --from "$runs/teacher-ce/checkpoint.pt" --quiet --overwrite \
    --output "$runs/teacher-stingy"
for attack in scratch ls; do
    python distill_student.py "${student[@]}" --attack $attack --output "$runs/$attack"
done
for t in ce nasty cmim stingy; do
    python distill_student.py "${student[@]}" --attack kd --teacher "$runs/teacher-$t/checkpoint.pt" \
        --output "$runs/kd-from-$t"
done
python -m undistill.report "$runs" --markdown "$out/table1.md" --csv "$out/table1.csv"
cat >> "$out/table1.md" <<'EOF'

The paper (Ma et al., ICLR 2021, Table 1, CIFAR-10, 200 epochs): ResNet-18 teacher 95.13 (normal) / 94.56 (nasty);
ResNetC-20 student 92.28 without a teacher, 92.49 from the normal teacher, 88.01 from the nasty one.
EOF
step "done: $out"
