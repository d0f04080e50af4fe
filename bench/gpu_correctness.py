"""Correctness on the device: every registered defense and attack for one short epoch in bf16 and in fp32 (their mean
losses and loss terms must agree within --tolerance), a checkpoint written there read back on the CPU, and a resumed
run against an uninterrupted one. Part of bench/gpu_check.sh; writes correctness.md and correctness.json to --out.

    python bench/gpu_correctness.py --out DIR --dataset cifar10 --data-dir data/cifar10 [--subset 50]

Each method runs through its entry script's main() as a user would run it (one process, --loader gpu), on
--subset images per class, the teacher / adversary being a CE teacher trained first in fp32.
"""
import argparse
import json
import sys
import tempfile
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import distill_student  # noqa: E402
import train_teacher  # noqa: E402
from undistill import UserError, checkpoint, methods, runs  # noqa: E402

SCRIPTS = {"defense": train_teacher, "attack": distill_student}
# A data-free attack's epoch is its own budget, not the subset's: a few of its steps
SHORT = {"dafl": ["--steps-per-epoch", "4"],
         "deepinversion": ["--di-iterations", "4", "--pool-batches", "1", "--batches-per-epoch", "1"]}


def train(role, name, common, out, extra=()):
    """Run the method; its first epoch's metrics (a release: its summary, it trains nothing)."""
    script = SCRIPTS[role]
    script.main(script.parse_args([*common, f"--{role}", name, *extra, "--output", str(out), "--overwrite",
                                   "--quiet"]))
    if not (out / "metrics.jsonl").exists():
        return json.loads((out / "summary.json").read_text())
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[0])


def disagreement(a, b):
    """Largest difference between two epochs' loss and loss terms, relative to max(|fp32 value|, 0.1)."""
    pairs = [(a["loss"], b["loss"]), *((a["terms"][k], b["terms"][k]) for k in a["terms"])]
    return max(abs(x - y) / max(abs(x), 0.1) for x, y in pairs)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--data-dir")
    p.add_argument("--arch", default="resnetc20", help="one architecture for every model (auxiliary heads too)")
    p.add_argument("--subset", default="50", help="images per class (or a fraction) of each run")
    p.add_argument("--batch-size", default="64")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--tolerance", type=float, default=0.05, help="largest relative bf16-fp32 disagreement")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-correctness-"))
    base = ["--dataset", args.dataset, *(["--data-dir", args.data_dir] if args.data_dir else []), "--device",
            args.device, "--arch", args.arch, "--batch-size", args.batch_size, "--epochs", "1", "--loader", "gpu",
            "--workers", "0", "--opt", "adam", "--lr", "1e-3", "--milestones", ""]
    common = [*base, "--subset", args.subset]
    rows, results = [], {}

    teacher = work / "teacher" / "checkpoint.pt"
    train("defense", "ce", [*common, "--precision", "fp32"], teacher.parent)
    for role in ("defense", "attack"):
        for method in methods.REGISTRY[role].values():
            frozen = [method.option(method.frozen).flag_name, str(teacher)] if method.frozen else []
            # a data-free attack reads no training image: no --subset, a few of its own steps instead
            data = common if method.task.uses_training_split else base
            try:
                fp32, bf16 = (train(role, method.name, [*data, "--precision", p], work / p / method.name,
                                    [*frozen, *SHORT.get(method.name, [])]) for p in ("fp32", "bf16"))
                gap = abs(fp32["last_acc"] - bf16["last_acc"]) / 100 if method.release else disagreement(fp32, bf16)
                verdict = "ok" if gap <= args.tolerance else "DIFFERS"
            except (UserError, RuntimeError) as e:
                traceback.print_exc()
                gap, verdict = None, f"failed: {str(e).splitlines()[0][:100]}"
            results[f"{role} {method.name}"] = {"gap": gap, "verdict": verdict}
            rows.append(f"| {role} {method.name} | {'-' if gap is None else f'{gap:.4f}'} | {verdict} |")

    # A checkpoint written on the device answers the same on the CPU
    device_model, ckpt = checkpoint.load_classifier(teacher)
    x = torch.randint(0, 256, (16, 3, ckpt["image_size"], ckpt["image_size"]), dtype=torch.uint8)
    on_cpu = device_model(x)
    device = "cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu"
    on_device = device_model.to(device)(x.to(device)).cpu()
    results["checkpoint device->cpu max |logit diff|"] = (on_cpu - on_device).abs().max().item()

    # Resume: 2 epochs whole against 1 epoch, then --resume to 2
    resumed = [*common, "--precision", "fp32", "--epochs", "2"]
    train("defense", "ce", resumed, work / "whole")
    train("defense", "ce", [*common, "--precision", "fp32"], work / "part")
    train("defense", "ce", [*resumed, "--resume"], work / "part")
    a, b = (runs.load_tensors(work / d / "checkpoint.pt", "checkpoint")["state_dict"] for d in ("whole", "part"))
    results["resume max |weight diff|"] = max((a[k].float() - b[k].float()).abs().max().item() for k in a)

    table = "\n".join([f"Correctness on {device} ({torch.cuda.get_device_name() if device == 'cuda' else 'no GPU'}), "
                       f"{args.dataset} {args.arch}, {args.subset} images per class, one epoch; tolerance "
                       f"{args.tolerance} (largest |bf16 - fp32| / max(|fp32|, 0.1) over the loss and its terms)",
                       "", "| method | bf16 vs fp32 | verdict |", "|---|---|---|", *rows, "",
                       f"checkpoint written on {device}, read on the CPU: max |logit difference| "
                       f"{results['checkpoint device->cpu max |logit diff|']:.3g}",
                       f"resume after epoch 1 against an uninterrupted run: max |weight difference| "
                       f"{results['resume max |weight diff|']:.3g} (0: bit-identical)"])
    (args.out / "correctness.md").write_text(table + "\n")
    (args.out / "correctness.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table)


if __name__ == "__main__":
    main()
