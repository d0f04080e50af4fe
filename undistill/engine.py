"""The training loop shared by teachers and students: optimizer, schedule, precision, evaluation, progress,
per-epoch metrics, checkpoints and exact resume; a backend (backends.py: DDP, DeepSpeed, Accelerate) wraps and
steps the trained model. It never knows which defense or attack runs: it gets a model to train, an objective
`(logits, y, ref) -> loss` and optionally a `reference`: a module whose output on the batch is `ref`. A frozen teacher or adversary is one (eval mode, no gradient, outside DDP). A
reference may also keep state from the training outputs (CMIM's class centroids): it then has
`observe(logits, y, ctx)`, called after every step, and `start_epoch(model, batches, ctx)`, and its state is
saved for exact resume. An objective with an `epoch` parameter is given the current epoch (0-based). A model
may return several heads as one (heads, batch, classes) tensor, final head first (the skeptical student):
accuracy and any reference's `observe` then read the final head.
"""
import functools
import inspect
import json
import math
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import UserError, backends, checkpoint, data


# The papers' schedules per dataset: epochs, lr milestones, decay factor, weight decay (SGD, lr 0.1).
# mnist5k is the built-in quick dataset, not a paper setting.
SCHEDULES = {
    "mnist5k": (15, "8,12", 0.1, 5e-4),
    "cifar10": (160, "80,120", 0.1, 5e-4),
    "cifar100": (200, "60,120,160", 0.2, 5e-4),
    "tinyimagenet": (200, "60,120,160", 0.2, 5e-4),
    "imagenet": (90, "30,60,80", 0.1, 1e-4),
}
DEFAULT_ARCH = {"mnist5k": "cnn", "cifar10": "resnet18", "cifar100": "resnet18", "tinyimagenet": "resnet18",
                "imagenet": "tv.resnet18"}


def add_arguments(parser):
    g = parser.add_argument_group("optimization (unset options take the papers' settings for --dataset)")
    g.add_argument("--arch", help="network (default per dataset: cnn, resnet18, tv.resnet18 for ImageNet)")
    g.add_argument("--weights", "--init", type=Path, help="initialize the network from a local state_dict file or "
                   "a checkpoint of this project (to fine-tune)")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int, default=128, help="global batch, split across ranks")
    g.add_argument("--opt", choices=["sgd", "adam"], help="default: Adam 1e-3 without decay for the plain CNN "
                   "(as in the papers), SGD otherwise")
    g.add_argument("--lr", type=float)
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--wd", type=float, help="weight decay")
    g.add_argument("--milestones", help="comma-separated epochs where lr is multiplied by --gamma ('' for none)")
    g.add_argument("--gamma", type=float)
    g.add_argument("--warmup-epochs", type=float, default=0.0, help="linear lr warmup (steadies nasty training)")
    g.add_argument("--grad-clip", type=float, default=0.0, help="clip the gradient norm (0: off)")
    g.add_argument("--seed", type=int, default=0)
    g = parser.add_argument_group("run")
    g.add_argument("--output", type=Path, help="run directory (default: runs/<role>-<method>-<arch>-s<seed>)")
    g.add_argument("--resume", action="store_true", help="continue the run in --output from its checkpoint.pt")
    g.add_argument("--overwrite", action="store_true", help="start again even if --output already holds a run")
    backends.add_arguments(g)
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    g.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="auto: bf16 on CUDA")
    g.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"], help="auto: on with CUDA")
    g.add_argument("--compile", action="store_true", help="torch.compile the trained model and the frozen one "
                   "(worth it on CUDA for long runs; the first steps wait for the compiler)")
    g.add_argument("--quiet", action="store_true", help="no progress bars: one line per epoch (batch logs)")
    g.add_argument("--log-every", type=int, default=20, help="steps between progress updates (each one syncs)")


def fill_defaults(args):
    """Fill unset optimization options from the dataset's paper schedule (Adam without decay for the CNN)."""
    epochs, milestones, gamma, wd = SCHEDULES[args.dataset]
    args.arch = args.arch or DEFAULT_ARCH[args.dataset]
    args.opt = args.opt or ("adam" if args.arch == "cnn" else "sgd")
    adam = args.opt == "adam"
    for name, value in (("epochs", epochs), ("milestones", "" if adam else milestones), ("gamma", gamma),
                        ("wd", 0.0 if adam else wd), ("lr", 1e-3 if adam else 0.1)):
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def bind_settings(objective, args):
    """The objective with its keyword-only settings taken from the options of the same name, and those settings."""
    names = [p.name for p in inspect.signature(objective).parameters.values() if p.kind == p.KEYWORD_ONLY]
    settings = {n: getattr(args, n) for n in names}
    return functools.partial(objective, **settings), settings


def learning_rate(args, epoch_progress):
    """lr at a fractional epoch: step decay at the milestones, after an optional linear warmup. A pure
    function of progress, so a resumed run needs no scheduler state."""
    milestones = [int(m) for m in str(args.milestones).split(",") if m.strip()]
    lr = args.lr * args.gamma ** sum(epoch_progress >= m for m in milestones)
    if args.warmup_epochs > 0:
        lr *= min(1.0, epoch_progress / args.warmup_epochs)
    return lr


def make_optimizer(params, args):
    if args.opt == "adam":
        return torch.optim.Adam(params, lr=args.lr, weight_decay=args.wd)
    return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.wd)


RUN_FILES = ("checkpoint.pt", "best.pt", "metrics.jsonl", "summary.json", "command.txt")


def run_directory(args, role, method, arch):
    """The run's directory. Refuses to overwrite a finished or running run unless asked."""
    out = args.output or Path("runs") / f"{role}-{method}-{arch}-s{args.seed}"
    if (out / "checkpoint.pt").exists() and not (args.resume or args.overwrite):
        raise UserError(f"{out} already holds a run: add --resume to continue it, --overwrite to start again, "
                        "or choose another --output")
    return out


def autocast(ctx, args):
    bf16 = args.precision == "bf16" or (args.precision == "auto" and ctx.device.type == "cuda")
    return torch.autocast(ctx.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def channels_last(ctx, args):
    return args.channels_last == "on" or (args.channels_last == "auto" and ctx.device.type == "cuda")


def prepare(model, ctx, args, compile=True):
    model.to(ctx.device)
    if channels_last(ctx, args):
        model.to(memory_format=torch.channels_last)
    if compile and args.compile:
        model.compile()  # in place: the state_dict keys stay those of the plain model
    return model


def to_device(x, y, ctx, args):
    fmt = torch.channels_last if channels_last(ctx, args) and x.dim() == 4 else torch.contiguous_format
    return x.to(ctx.device, non_blocking=True, memory_format=fmt), y.to(ctx.device, non_blocking=True)


def make_loaders(info, args, ctx):
    loader = data.LOADERS[args.loader]
    common = dict(seed=args.seed, workers=args.workers, rank=ctx.rank, world_size=ctx.world_size,
                  pin_memory=ctx.device.type == "cuda", device=ctx.device)
    per_rank = max(1, args.batch_size // ctx.world_size)
    train = loader(info.train, per_rank, train=True, **common)
    if len(train) == 0:
        raise UserError(f"the training set ({len(info.train)} images over {ctx.world_size} ranks) is smaller than "
                        f"one batch of {per_rank}: lower --batch-size")
    return train, loader(info.test, per_rank, train=False, **common)


def device_batches(loader, epoch, ctx, args):
    """The epoch's batches on the device, produced lazily."""
    for x, y in loader.epoch(epoch):
        yield to_device(x, y, ctx, args)


@torch.no_grad()
def evaluate(model, loader, ctx, args):
    """Top-1 accuracy (%) and mean CE over the whole split, all-reduced across ranks."""
    model.eval()
    totals = torch.zeros(3, device=ctx.device, dtype=torch.float64)
    for x, y in device_batches(loader, 0, ctx, args):
        with autocast(ctx, args):
            logits = model(x).float()
        totals += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(),
                               (logits.argmax(1) == y).sum().double(), torch.tensor(len(y), device=ctx.device)])
    loss, correct, n = ctx.all_reduce_sum(totals).tolist()
    return {"acc": 100 * correct / max(n, 1), "loss": loss / max(n, 1)}


def fit(model, objective, reference, info, args, ctx, meta, out):
    """Train `model` (a Classifier) with `objective`; `reference` (or None) maps a batch to the objective's `ref`.

    Writes out/checkpoint.pt every epoch, out/best.pt at the best test accuracy, out/metrics.jsonl (one line per
    epoch) and out/summary.json; returns the summary.
    """
    args.precision = backends.resolve_precision(args)  # DeepSpeed's or Accelerate's config may decide it
    train_loader, test_loader = make_loaders(info, args, ctx)
    prepare(model, ctx, args)
    stateful = hasattr(reference, "observe")
    if reference is not None:
        prepare(reference, ctx, args, compile=not stateful).eval().requires_grad_(False)
    start, best, history, state = 0, -1.0, [], None
    if args.resume and (out / "checkpoint.pt").exists():
        state = checkpoint.load(out / "checkpoint.pt")
        model.net.load_state_dict(state["state_dict"])
        start, best = state["epoch"], state["best_acc"]
        if stateful:
            reference.load_state_dict(state["reference"])
        history = read_metrics(out / "metrics.jsonl")[:start]
        ctx.print(f"resuming {out} after epoch {start} (best test accuracy {best:.2f}%)")
    elif ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:  # only this project's files: --output may point at a directory holding others
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "deepspeed", ignore_errors=True)  # the deepspeed backend's optimizer shards
        (out / "command.txt").write_text(" ".join(sys.argv) + "\n")
    ctx.barrier()
    backend = backends.BACKENDS[args.backend](model, make_optimizer(model.parameters(), args), args, ctx)
    if state is not None:
        backend.load(state, out)

    for epoch in range(start, args.epochs):
        torch.manual_seed(args.seed * 100_003 + epoch)  # in-process randomness replays on resume
        if stateful:
            with autocast(ctx, args):
                model.eval()
                reference.start_epoch(model, device_batches(train_loader, epoch, ctx, args), ctx)
        step_objective = (functools.partial(objective, epoch=epoch)
                          if "epoch" in inspect.signature(objective).parameters else objective)
        stats = train_epoch(backend, step_objective, reference, train_loader, epoch, args, ctx)
        ctx.broadcast_buffers(model)
        stats.update({f"test_{k}": v for k, v in evaluate(model, test_loader, ctx, args).items()})
        stats["epoch"] = epoch + 1
        history.append(stats)
        is_best = stats["test_acc"] > best
        best = max(best, stats["test_acc"])
        ctx.print(f"epoch {epoch + 1}/{args.epochs}  loss {stats['loss']:.4f}  train {stats['train_acc']:.2f}%  "
                  f"test {stats['test_acc']:.2f}% (best {best:.2f}%)  lr {stats['lr']:.4g}  "
                  f"{stats['images_per_s']:.0f} img/s  {stats['time_s']:.1f}s")
        record = dict(meta, epoch=epoch + 1, metrics=stats)
        resume, record["state_dict"] = backend.save(out, record, ctx)
        if ctx.is_main:
            # metrics first: a kill between the two leaves an extra line, which a resume drops, never a gap
            write_metrics(out / "metrics.jsonl", history)
            if is_best:
                checkpoint.save(record, out / "best.pt")
            resume.update(best_acc=best, args=plain(vars(args)))
            if stateful:
                resume["reference"] = reference.state_dict()
            checkpoint.save(dict(record, **resume), out / "checkpoint.pt")
        ctx.barrier()
        backend.saved(out, ctx)

    summary = dict(meta_summary(meta), epochs=args.epochs, best_acc=best,
                   last_acc=history[-1]["test_acc"] if history else None, args=plain(vars(args)))
    if ctx.is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        ctx.print(f"done: last {summary['last_acc']:.2f}%, best {best:.2f}%  -> {out}")
    return summary


def train_epoch(backend, objective, reference, loader, epoch, args, ctx):
    backend.trained.train()
    steps = len(loader)
    totals = torch.zeros(3, device=ctx.device, dtype=torch.float64)  # loss sum, correct, images
    shown = totals.clone()
    bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{args.epochs}", disable=args.quiet or not ctx.is_main,
               leave=False, dynamic_ncols=True, file=sys.stdout)
    start = time.perf_counter()
    for step, (x, y) in enumerate(device_batches(loader, epoch, ctx, args)):
        lr = learning_rate(args, epoch + step / steps)
        backend.set_lr(lr)
        loss, final = train_step(backend, objective, reference, x, y, args, ctx)
        totals += torch.stack([loss.double() * len(y), (final.argmax(1) == y).sum().double(),
                               torch.tensor(len(y), device=ctx.device, dtype=torch.float64)])
        if (step + 1) % args.log_every == 0 or step + 1 == steps:
            # One sync per update: all ranks see the same summed loss, so all stop together if it is not finite.
            current = ctx.all_reduce_sum(totals.clone())
            window = (current - shown).tolist()
            shown = current
            check_finite(window[0], epoch, step)
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{window[0] / window[2]:.4f}", acc=f"{100 * window[1] / window[2]:.1f}%",
                            img_s=f"{current[2].item() / elapsed:.0f}", refresh=False)
        bar.update(1)
    bar.close()
    loss_sum, correct, n = shown.tolist()
    elapsed = time.perf_counter() - start
    return {"loss": loss_sum / n, "train_acc": 100 * correct / n, "lr": lr, "images_per_s": n / elapsed,
            "time_s": elapsed}


def train_step(backend, objective, reference, x, y, args, ctx):
    """One optimizer step on the batch; returns the loss and the final head's logits, both detached."""
    ref = None
    with autocast(ctx, args):
        logits = backend.trained(x)
        if reference is not None:
            with torch.inference_mode():
                ref = reference(x).float()
    if ref is not None:
        ref = ref.clone()  # an inference-mode tensor cannot be saved for backward; its copy can
    loss = objective(logits.float(), y, ref)
    backend.step(loss)
    final = logits[0] if logits.dim() == 3 else logits
    if hasattr(reference, "observe"):
        reference.observe(final, y, ctx)
    return loss.detach(), final.detach()


def check_finite(loss_sum, epoch, step):
    if not math.isfinite(loss_sum):
        raise UserError(f"non-finite loss ({loss_sum}) at epoch {epoch + 1}, step {step + 1}: lower --lr (or "
                        "--omega for nasty), or add --warmup-epochs / --grad-clip; the last checkpoint is intact")


def plain(d):
    """JSON- and weights_only-safe copy of an argparse namespace dict (paths, also in lists, become strings)."""
    def safe(v):
        return str(v) if isinstance(v, Path) else [safe(i) for i in v] if isinstance(v, list) else v
    return {k: safe(v) for k, v in d.items()}


def meta_summary(meta):
    return {k: v for k, v in meta.items() if k != "state_dict"}


def read_metrics(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def write_metrics(path, history):
    # Rewritten whole each epoch (it is tiny), atomically, so a resumed run's file matches an uninterrupted one.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(h) + "\n" for h in history))
    tmp.replace(path)
