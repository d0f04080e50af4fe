"""Correctness on the device: every registered defense and attack for a few steps in bf16 and in fp32 (their mean
losses and loss terms must agree within --tolerance; a release, its test accuracy), the host syncs inside their
bf16 steps (none allowed; bench/syncs.py), a checkpoint written there read back on the CPU, and a resumed run against
an uninterrupted one. Part of bench/gpu_check.sh; writes correctness.md
and correctness.json to --out (again after each check, so a run cut short still reports), and exits 1 when a check
fails.

    python bench/gpu_correctness.py --out DIR --dataset cifar10 --data-dir data/cifar10 [--subset 20]

Every run goes through its entry script's main() as a user's would (one epoch, --loader gpu), all in this one
process on one loading of the data: --subset images per class to train on, --test-subset to evaluate on. The frozen
model of the methods that query one is a CE teacher trained first, in fp32.
"""
import argparse
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path

# Read when CUDA starts: cuBLAS is deterministic only with this workspace setting (the resume check needs it)
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import distill_student  # noqa: E402
import train_teacher  # noqa: E402
from syncs import Syncs  # noqa: E402
from undistill import checkpoint, datasets, distributed, methods, runs  # noqa: E402
from undistill.methods.attacks import Decoded  # noqa: E402

SCRIPTS = {"defense": train_teacher, "attack": distill_student}
CHECKPOINT_LIMIT = 1e-3  # fp32 on both sides: only the order of floating-point sums differs
COMPARED = {False: "bf16 vs fp32: mean loss and terms, relative", True: "bf16 vs fp32: test accuracy, as a fraction"}


def short(method, batch_size):
    """A method's own tiny settings (a data-free attack's epoch is its own budget, not the subset's), the images
    of an inverted batch filling one training batch. The noise release draws its noise from the bits of the logits,
    which bf16 changes: at a vanishing sigma the two precisions compare its deterministic part (a release path that
    runs and keeps the argmax). DAFL with HTC's target at its tau 50 and m 50 sums 5 x entropy and 50 x a KL of
    about 0.07 into a loss near 0: the difference of two large terms magnifies bf16's rounding of the logits beyond
    any tolerance, so its path is compared at tau 4 and m 1."""
    own = {"deepinversion": ["--di-batch", str(batch_size)], "noise": ["--sigma", "1e-6"],
           "dafl-htc": ["--tau", "4", "--multiplier", "1"]}
    return [*method.smoke, *own.get(method.name, [])]


def train(method, argv, out, data):
    """Run the method through its script's main() on the loaded data; its first epoch's metrics (a release: its
    summary, it trains nothing)."""
    script = SCRIPTS[method.kind]
    script.main(script.parse_args([*argv, f"--{method.kind}", method.name, "--output", str(out), "--overwrite",
                                   "--quiet"]), data[method.task.uses_training_split])
    if not (out / "metrics.jsonl").exists():
        return json.loads((out / "summary.json").read_text())
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[0])


def disagreement(a, b):
    """Largest difference between two epochs' loss and loss terms, relative to max(|fp32 value|, 0.1)."""
    pairs = [(a["loss"], b["loss"]), *((a["terms"][k], b["terms"][k]) for k in a["terms"])]
    return max(abs(x - y) / max(abs(x), 0.1) for x, y in pairs)


def number(x):
    return "-" if x is None else f"{x:.3g}"


class Report:
    """The checks so far, as correctness.md and correctness.json in `out`, rewritten after each one."""

    def __init__(self, out, header):
        self.out, self.header, self.checks = out, header, {}

    def add(self, name, what, measured, limit, verdict=None):
        if verdict is None:
            verdict = "ok" if measured <= limit else "DIFFERS"
        self.checks.pop(name, None)  # a check measured again moves to the end
        self.checks[name] = {"compared": what, "measured": measured, "limit": limit, "verdict": verdict}
        rows = [f"| {k} | {c['compared']} | {number(c['measured'])} | {number(c['limit'])} | {c['verdict']} |"
                for k, c in self.checks.items()]
        print(rows[-1], flush=True)
        table = [self.header, "", "| check | compared | measured | limit | verdict |", "|---|---|---|---|---|", *rows]
        runs.write_text(self.out / "correctness.md", "\n".join(table) + "\n")
        runs.write_json(self.out / "correctness.json", {"about": self.header, "checks": self.checks})

    @property
    def failed(self):
        return [k for k, c in self.checks.items() if c["verdict"] != "ok"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--arch", default="resnetc20", help="the architecture of every model")
    p.add_argument("--heads-arch", help="of a student with auxiliary heads (skeptical: a CIFAR ResNet or "
                   "MobileNetV2; default --arch)")
    p.add_argument("--subset", type=float, default=20, help="images per class (or a fraction) to train on")
    p.add_argument("--test-subset", type=float, help="images per class (or a fraction) of the test split to "
                   "evaluate on (default: all)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--tolerance", type=float, default=0.05, help="largest relative bf16-fp32 disagreement")
    args = p.parse_args()
    device = distributed.init(args.device).device
    args.out.mkdir(parents=True, exist_ok=True)
    full = datasets.load(args.dataset, args.data_dir, subset=args.subset)  # seed 0, the runs' default --seed
    test = full.test if args.test_subset is None else datasets.take_subset(full.test, args.test_subset, 0)
    withheld = datasets.Withheld(f"the training split of {args.dataset} is withheld from a data-free run")
    data = {True: datasets.DataInfo(full.record, full.train, test),
            False: datasets.DataInfo(full.record, withheld, test)}
    report = Report(args.out, f"Correctness on {device} "
                    f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'no GPU'}): {args.dataset} "
                    f"{args.arch}{f' ({args.heads_arch} with heads)' if args.heads_arch else ''}, {args.subset:g} "
                    f"training images per class, {len(test)} test images, one epoch of batch {args.batch_size}, "
                    "--loader gpu. Relative: |bf16 - fp32| / max(|fp32|, 0.1).")
    base = ["--dataset", args.dataset, *(["--data-dir", str(args.data_dir)] if args.data_dir else []),
            "--device", args.device, "--batch-size", str(args.batch_size), "--epochs", "1", "--loader", "gpu",
            "--workers", "0", "--opt", "adam", "--lr", "1e-3", "--milestones", ""]
    subset = ["--subset", str(args.subset)]
    common = [*base, "--arch", args.arch, *subset]

    with tempfile.TemporaryDirectory(prefix="gpu-correctness-") as tmp:
        work = Path(tmp)
        teacher = work / "teacher" / "checkpoint.pt"
        train(methods.get("defense", "ce"), [*common, "--precision", "fp32"], teacher.parent, data)
        syncs = {}  # of each method's bf16 run
        for kind in ("defense", "attack"):
            for method in methods.REGISTRY[kind].values():
                # the adaptive attacker reads a release through its decoding: the top-k release written above
                queried = work / "fp32" / "topk" / "checkpoint.pt" if method.task is Decoded else teacher
                frozen = [method.option(method.queries).flag_name, str(queried)] if method.queries else []
                # a data-free attack reads no training image: no --subset, a few of its own steps instead
                argv = [*base, *(subset if method.task.uses_training_split else []), *short(method, args.batch_size),
                        "--arch", (args.heads_arch or args.arch) if method.heads else args.arch, *frozen]
                what = COMPARED[method.release is not None]
                try:
                    fp32 = train(method, [*argv, "--precision", "fp32"], work / "fp32" / method.name, data)
                    with Syncs(device) as synced:
                        bf16 = train(method, [*argv, "--precision", "bf16"], work / "bf16" / method.name, data)
                    syncs[f"{kind} {method.name}"] = synced
                except Exception as e:  # the method's verdict; the others still run
                    traceback.print_exc()
                    report.add(f"{kind} {method.name}", what, None, args.tolerance,
                               f"failed: {str(e).splitlines()[0][:100]}")
                    continue
                gap = abs(fp32["last_acc"] - bf16["last_acc"]) / 100 if method.release else disagreement(fp32, bf16)
                report.add(f"{kind} {method.name}", what, gap, args.tolerance)
                # after each method, below its row: a run stopped at its deadline still reports the ones so far
                waits = {name: counted for name, counted in syncs.items() if counted.found}
                report.add("syncs", f"host syncs per training step, bf16 runs of the {len(syncs)} methods above: "
                           "the most of any", max(counted.per_step for counted in syncs.values()), 0.0,
                           "; ".join(f"{name} {counted.per_step:.3g} ({', '.join(counted.found)})"
                                     for name, counted in waits.items()) or "ok")

        # The teacher's checkpoint, written on the device, loads on the CPU and answers as it does on the device
        model, _ = checkpoint.load_classifier(teacher)
        x = test.images[:64]
        with torch.no_grad():
            on_cpu = model(x)
            torch.backends.cudnn.allow_tf32 = False  # fp32 on both sides: TF32 convolutions differ by design
            on_device = model.to(device)(x.to(device)).cpu()
        report.add("checkpoint", f"written on {device.type}, read on the CPU: logits, relative to the largest",
                   ((on_cpu - on_device).abs().max() / on_cpu.abs().max().clamp_min(1)).item(), CHECKPOINT_LIMIT)

        # Resume: 2 epochs whole against 1 epoch, then --resume to 2; deterministic kernels, so that any difference
        # is the resume's (atomic adds that may remain only warn)
        torch.use_deterministic_algorithms(True, warn_only=True)
        ce, whole = methods.get("defense", "ce"), [*common, "--epochs", "2"]
        train(ce, whole, work / "whole", data)
        train(ce, common, work / "part", data)
        train(ce, [*whole, "--resume"], work / "part", data)
        a, b = (runs.load_tensors(work / d / "checkpoint.pt", "checkpoint")["state_dict"] for d in ("whole", "part"))
        report.add("resume", f"resumed after epoch 1 against uninterrupted, on {device.type}: max |weight difference|",
                   max((a[k].float() - b[k].float()).abs().max().item() for k in a), 0.0)

    if report.failed:
        print(f"correctness: {len(report.failed)} check(s) failed: {', '.join(report.failed)} "
              f"(see {args.out / 'correctness.md'})", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    distributed.run(lambda _: main(), None)  # a UserError (a bad --data-dir, --subset) as one line
