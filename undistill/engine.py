"""The training loop shared by teachers and students: optimizer, schedule, precision, evaluation, progress, loss
terms, per-epoch metrics, checkpoints and exact resume; a backend (backends.py: DDP, DeepSpeed, Accelerate) wraps
and steps the trained model.

It never knows which defense or attack runs: it trains `model` (a models.Classifier) with a `methods.Task`
(methods/core.py), which says which models it queries frozen, what trains beside the model, where each epoch's
batches come from, and what one step's loss and loss terms are.
"""
import argparse
import itertools
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import UserError, backends, checkpoint, runs
from .datasets import DataInfo
from .distributed import Context
from .loaders import LOADERS
from .methods import Task
from .models import Classifier


def add_arguments(parser):
    g = parser.add_argument_group("optimization (unset options take the papers' settings for --dataset)")
    g.add_argument("--arch", help="network (default per dataset: cnn, resnet18, tv.resnet18 for ImageNet)")
    g.add_argument("--weights", "--init", type=Path, help="initialize the network from a local state_dict file or "
                   "a checkpoint of this project (to fine-tune)")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int, help="global batch, split across ranks (default 128)")
    g.add_argument("--opt", choices=["sgd", "adam"], help="default: Adam 1e-3 without decay for the plain CNN "
                   "(as in the papers), SGD otherwise")
    g.add_argument("--lr", type=float)
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--wd", type=float, help="weight decay")
    g.add_argument("--milestones", help="comma-separated epochs where lr is multiplied by --gamma ('' for none)")
    g.add_argument("--gamma", type=float)
    g.add_argument("--scale-lr", action="store_true", help="multiply the lr by --batch-size over the batch it is "
                   "set for (the paper's, else 128): the linear scaling rule of 'Accurate, Large Minibatch SGD' "
                   "(Goyal et al., 2017), for large batches on a GPU; pair it with --warmup-epochs, as they do")
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
    g.add_argument("--max-steps", type=int, default=0, help="train at most this many steps per epoch and evaluate "
                   "on at most this many test batches: smoke runs of a recipe (0: all)")


def learning_rate(config: argparse.Namespace, epoch_progress: float) -> float:
    """lr at a fractional epoch: step decay at the milestones, after an optional linear warmup. A pure
    function of progress, so a resumed run needs no scheduler state."""
    lr = config.lr * config.gamma ** sum(epoch_progress >= m for m in config.milestones)
    if config.warmup_epochs > 0:
        lr *= min(1.0, epoch_progress / config.warmup_epochs)
    return lr


def make_optimizer(params, config):
    if config.opt == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.wd)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.wd)


def autocast(ctx, config):
    bf16 = config.precision == "bf16" or (config.precision == "auto" and ctx.device.type == "cuda")
    return torch.autocast(ctx.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def channels_last(ctx, config):
    return config.channels_last == "on" or (config.channels_last == "auto" and ctx.device.type == "cuda")


def prepare(model, ctx, config):
    model.to(ctx.device)
    if channels_last(ctx, config):
        model.to(memory_format=torch.channels_last)
    if config.compile:
        model.compile()  # in place: the state_dict keys stay those of the plain model
    return model


class DeviceLoader:
    """A loader whose batches arrive on the device, in the run's memory format."""

    def __init__(self, loader, ctx, config):
        self.loader, self.ctx = loader, ctx
        self.format = torch.channels_last if channels_last(ctx, config) else torch.contiguous_format

    def __len__(self):
        return len(self.loader)

    def epoch(self, epoch):
        for x, y in self.loader.epoch(epoch):
            fmt = self.format if x.dim() == 4 else torch.contiguous_format
            yield (x.to(self.ctx.device, non_blocking=True, memory_format=fmt),
                   y.to(self.ctx.device, non_blocking=True))


def make_loader(dataset, config, ctx, train):
    per_rank = ctx.per_rank(config.batch_size)
    loader = LOADERS[config.loader](dataset, per_rank, train=train, seed=config.seed, workers=config.workers,
                                    rank=ctx.rank, world_size=ctx.world_size, pin_memory=ctx.device.type == "cuda",
                                    device=ctx.device)
    if train and len(loader) == 0:
        raise UserError(f"the training set ({len(dataset)} images over {ctx.world_size} ranks) is smaller than "
                        f"one batch of {per_rank}: lower --batch-size")
    return DeviceLoader(loader, ctx, config)


@torch.no_grad()
def evaluate(model, loader, ctx, config):
    """Top-1 accuracy (%) and mean CE over the whole split (a DeviceLoader), all-reduced across ranks."""
    model.eval()
    totals = torch.zeros(3, device=ctx.device, dtype=torch.float64)
    for x, y in capped(loader.epoch(0), config.max_steps):
        with autocast(ctx, config):
            logits = model(x).float()
        totals += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(),
                               (logits.argmax(1) == y).sum().double(),
                               torch.full((), len(y), device=ctx.device, dtype=torch.float64)])
    loss, correct, n = ctx.all_reduce_sum(totals).tolist()
    return {"acc": 100 * correct / max(n, 1), "loss": loss / max(n, 1)}


def fit(model: Classifier, task: Task, *, info: DataInfo, config: argparse.Namespace, ctx: Context,
        meta: dict[str, Any], out: Path) -> dict[str, Any]:
    """Train `model` with `task` on `info`'s splits, with the resolved options `config`, in the process context
    `ctx`; `meta` is what its checkpoints say it is (checkpoint.describe). Writes out/checkpoint.pt every epoch,
    out/best.pt at the best test accuracy, out/metrics.jsonl (one line per epoch, with the loss terms) and
    out/summary.json; returns the summary. One process at a time may write `out` (runs.owned).
    """
    with runs.owned(out, ctx):
        return fit_owned(model, task, info, config, ctx, meta, out)


class Queries:
    """The images a run sends to the models it queries (its teacher, with augmentations and synthesized batches),
    counted on the host as they are sent (no device sync) and summed over the ranks once per epoch."""

    def __init__(self, frozen):
        self.sent = 0
        for model in frozen:
            model.register_forward_pre_hook(self.count)

    def count(self, module, inputs):
        self.sent += len(inputs[0])

    def epoch(self, ctx):
        """The images sent by all ranks since the last call."""
        sent, self.sent = self.sent, 0
        return int(ctx.all_reduce_sum(torch.tensor([sent], dtype=torch.float64, device=ctx.device)).item())


def fit_owned(model, task, info, config, ctx, meta, out):
    backends.check_supported(config, task.trained_beside)
    train = make_loader(info.train, config, ctx, train=True) if task.uses_training_split else None
    test = make_loader(info.test, config, ctx, train=False)
    val = make_loader(info.val, config, ctx, train=False) if info.val is not None else None
    queries = Queries(task.frozen)
    prepare(model, ctx, config)
    for frozen in task.frozen:
        prepare(frozen, ctx, config).eval().requires_grad_(False)
    start, best, history, state = 0, -1.0, [], None
    if config.resume and (out / "checkpoint.pt").exists():
        state = checkpoint.load(out / "checkpoint.pt")
        same_run(state, meta, config, out)
        model.net.load_state_dict(state["state_dict"])
        task.load_state_dict(state.get("task", {}))
        start, best = state["epoch"], state["best_acc"]
        history = runs.read_metrics(out)[:start]
        ctx.print(f"resuming {out} after epoch {start} (best test accuracy {best:.2f}%)")
    else:
        if config.resume:
            ctx.print(f"--resume: {out} holds no checkpoint.pt, so a new run starts there")
        ctx.on_main(lambda: runs.start(out))
    backend = backends.BACKENDS[config.backend](model, make_optimizer(model.parameters(), config), config, ctx,
                                                task.trained_beside)
    if state is not None:
        backend.load(state, out)

    for epoch in range(start, config.epochs):
        torch.manual_seed(config.seed * 100_003 + epoch)  # in-process randomness replays on resume
        began = time.perf_counter()
        with autocast(ctx, config):
            steps, batches = task.epoch(model, epoch, train)
        if config.max_steps:
            steps, batches = min(steps, config.max_steps), capped(batches, config.max_steps)
        if steps < 1:
            raise UserError(f"epoch {epoch + 1} has no training step (fewer images than one batch): lower "
                            "--batch-size")
        stats = train_epoch(backend, task, steps, batches, epoch, config, ctx)
        stats["time_s"] = time.perf_counter() - began  # with the task's own work (synthesis, a centroid pass)
        stats["queries"] = queries.epoch(ctx)
        ctx.broadcast_buffers(model)
        if val is not None:
            stats.update({f"val_{k}": v for k, v in evaluate(model, val, ctx, config).items()})
        stats.update({f"test_{k}": v for k, v in evaluate(model, test, ctx, config).items()})
        stats["epoch"] = epoch + 1
        history.append(stats)
        is_best = stats["test_acc"] > best
        best = max(best, stats["test_acc"])
        terms = "".join(f"  {k} {v:.4g}" for k, v in stats["terms"].items())
        validated = f"  val {stats['val_acc']:.2f}%" if val is not None else ""
        ctx.print(f"epoch {epoch + 1}/{config.epochs}  loss {stats['loss']:.4f}{terms}  train {stats['train_acc']:.2f}%"
                  f"{validated}  test {stats['test_acc']:.2f}% (best {best:.2f}%)  lr {stats['lr']:.4g}  "
                  f"{stats['images_per_s']:.0f} img/s  {stats['time_s']:.1f}s")
        saved = dict(meta, epoch=epoch + 1, metrics=stats)
        resume, saved["state_dict"] = backend.save(out, saved, ctx)
        resume.update(best_acc=best, args=runs.plain(vars(config)))
        ctx.on_main(lambda: save(out, history, saved, dict(resume, task=task.state_dict()), is_best))
        backend.saved(out, ctx)

    summary = dict(meta, epochs=config.epochs, **results(history), args=runs.plain(vars(config)))
    ctx.on_main(lambda: runs.write_json(out / "summary.json", summary))
    ctx.print(f"done: last {summary['last_acc']:.2f}%, best {best:.2f}%  -> {out}")
    return summary


def results(history: list[dict[str, Any]]) -> dict[str, Any]:
    """What a run's summary says of its epochs: the test accuracy at the last and at the best epoch (the papers'
    code reports the best), the best epoch, the validation accuracy at the last epoch and the test accuracy at the
    epoch of the best validation accuracy (when it has a validation split), and the teacher queries in all."""
    best = max(history, key=lambda h: h["test_acc"])
    found = {"last_acc": history[-1]["test_acc"], "best_acc": best["test_acc"], "best_epoch": best["epoch"],
             "queries": sum(h.get("queries", 0) for h in history)}
    if "val_acc" in history[-1]:
        chosen = max(history, key=lambda h: h["val_acc"])  # the first of equals: the earliest such epoch
        found.update(last_val_acc=history[-1]["val_acc"], val_epoch=chosen["epoch"], val_chosen_acc=chosen["test_acc"])
    return found


def save(out, history, saved, resume, is_best):
    # metrics first: a kill between the two leaves an extra line, which a resume drops, never a gap
    runs.write_metrics(out, history)
    if is_best:
        checkpoint.save(saved, out / "best.pt")
    checkpoint.save(dict(saved, **resume), out / "checkpoint.pt")


IDENTITY = ("role", "method", "arch", "dataset", "num_classes", "settings")  # what makes a run this run
IDENTITY_OPTIONS = ("seed", "subset", "validation", "weights")


def same_run(state, meta, config, out):
    """Refuse to resume a checkpoint written with other settings: the run would be labelled with ours."""
    theirs, ours = {k: state.get(k) for k in IDENTITY}, {k: meta[k] for k in IDENTITY}
    theirs.update({k: (state.get("args") or {}).get(k) for k in IDENTITY_OPTIONS})
    ours.update(runs.plain({k: getattr(config, k) for k in IDENTITY_OPTIONS}))
    for key in ours:
        if theirs[key] != ours[key]:
            raise UserError(f"{out} holds a run with {key} {theirs[key]}, not {ours[key]}: resume it with its own "
                            "options, or start again with --overwrite")


def capped(batches, max_steps):
    """The first `max_steps` batches (all with 0)."""
    return itertools.islice(batches, max_steps or None)


class Tally:
    """The epoch's sums on the device (loss, correct predictions, images, each loss term, image-weighted), so that a
    step adds to them without waiting for the device; `update` all-reduces them, the one host sync of a progress
    update."""

    def __init__(self, names, device):
        self.names = names
        self.sums = torch.zeros(3 + len(names), device=device, dtype=torch.float64)
        self.shown = [0.0] * len(self.sums)

    def add(self, out):
        n = len(out.labels)
        # torch.full, not torch.tensor: a tensor made from a Python number is copied to the device and waited for
        self.sums += torch.stack([out.loss.double() * n, (out.logits.argmax(1) == out.labels).sum().double(),
                                  torch.full((), n, device=self.sums.device, dtype=torch.float64),
                                  *(out.terms[k].double() * n for k in self.names)])

    def update(self, ctx):
        """The sums over all ranks since the previous update, and since the epoch began."""
        current = ctx.all_reduce_sum(self.sums.clone()).tolist()
        window = [now - before for now, before in zip(current, self.shown)]
        self.shown = current
        return window, current


def train_epoch(backend, task, steps, batches, epoch, config, ctx):
    """One epoch of `steps` steps; returns its mean loss, loss terms, training accuracy (all-reduced), last lr and
    images per second of the steps."""
    backend.trained.train()
    tally = None
    bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{config.epochs}", disable=config.quiet or not ctx.is_main,
               leave=False, dynamic_ncols=True, file=sys.stdout)
    start = time.perf_counter()
    for step, (x, y) in enumerate(batches):
        lr = learning_rate(config, epoch + step / steps)
        backend.set_lr(lr)
        out = train_step(backend, task, x, y, epoch, config, ctx)
        tally = tally or Tally(list(out.terms), ctx.device)
        tally.add(out)
        if (step + 1) % config.log_every == 0 or step + 1 == steps:
            # All ranks see the same summed loss, so all stop together if it is not finite.
            window, total = tally.update(ctx)
            check_finite(window[0], epoch, step)
            bar.set_postfix(loss=f"{window[0] / window[2]:.4f}", **{k: f"{v / window[2]:.4g}" for k, v in
                                                                    zip(tally.names, window[3:])},
                            acc=f"{100 * window[1] / window[2]:.1f}%",
                            img_s=f"{total[2] / (time.perf_counter() - start):.0f}", refresh=False)
        bar.update(1)
    bar.close()
    loss_sum, correct, n, *term_sums = tally.shown
    elapsed = time.perf_counter() - start
    return {"loss": loss_sum / n, "terms": dict(zip(tally.names, (v / n for v in term_sums))),
            "train_acc": 100 * correct / n, "lr": lr, "images_per_s": n / elapsed}


def train_step(backend, task, x, y, epoch, config, ctx):
    """One optimizer step on the batch; returns the task's Step, detached."""
    with autocast(ctx, config):
        out = task.step(backend.trained, x, y, epoch)
    backend.step(out.loss)
    out = out.detached()
    task.after_step(out)
    return out


def check_finite(loss_sum, epoch, step):
    if not math.isfinite(loss_sum):
        raise UserError(f"non-finite loss ({loss_sum}) at epoch {epoch + 1}, step {step + 1}: lower --lr (or "
                        "--omega for nasty), or add --warmup-epochs / --grad-clip; the last checkpoint is intact")
