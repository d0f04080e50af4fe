"""How the trained model is wrapped, stepped and checkpointed: torch DDP (the default), DeepSpeed or Accelerate.

The frozen teacher or adversary never goes through a backend: it stays a plain module on the device (ZeRO-3 with
a frozen model inside crashes, and it has nothing to train). A module a method trains beside the model (DAFL's
generator) is stepped by the ddp backend with the model's loss, its gradients averaged over the ranks. Every
backend writes the same run files; the only difference is where the optimizer state lives: in checkpoint.pt
(ddp, accelerate) or in DeepSpeed's own sharded checkpoint beside it (deepspeed/<tag>/, named by checkpoint.pt so
the two always agree).
"""
import json
import logging
import os
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from . import UserError, require

DEFAULT_DEEPSPEED_CONFIG = Path(__file__).resolve().parent / "configs" / "deepspeed" / "zero2.json"


def add_arguments(group):
    group.add_argument("--backend", default="ddp", choices=list(BACKENDS),
                       help="ddp: torch DDP under torchrun (or one process); deepspeed: ZeRO from --deepspeed-config; "
                            "accelerate: under `accelerate launch --config_file ...`")
    group.add_argument("--deepspeed-config", type=Path, default=DEFAULT_DEEPSPEED_CONFIG,
                       help="DeepSpeed JSON: ZeRO stage (1-3) and precision (torch_autocast bf16); batch size, "
                            "optimizer and lr come from this script's options")


def resolve_precision(args):
    """The run's precision: DeepSpeed's config or Accelerate's launch config decide it for those backends (whose
    packages must then be installed: checked here, before the run writes anything)."""
    if args.backend == "deepspeed":  # read before the import, which takes seconds: a bad file is told at once
        config = read_deepspeed_config(args.deepspeed_config)
    if args.backend != "ddp":
        require(args.backend, args.backend, f"--backend {args.backend}")
    if args.backend == "deepspeed":
        autocast = config.get("torch_autocast", {})
        chosen = "bf16" if autocast.get("enabled") else "fp32"
        where = str(args.deepspeed_config)
    elif args.backend == "accelerate":
        mixed = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
        if mixed not in ("no", "bf16"):
            raise UserError(f"accelerate's mixed_precision is {mixed}; this project trains in bf16 or fp32: set "
                            "mixed_precision: bf16 or no in the accelerate config")
        chosen = "bf16" if mixed == "bf16" else "fp32"
        where = "the accelerate config (mixed_precision)"
    else:
        return args.precision
    if args.precision not in ("auto", chosen):
        raise UserError(f"--precision {args.precision} contradicts {where} ({chosen}): drop --precision")
    return chosen


def read_deepspeed_config(path):
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read --deepspeed-config {path} as JSON ({e})") from None
    if not isinstance(config, dict):
        raise UserError(f"--deepspeed-config {path} holds a JSON {type(config).__name__}, not an object")
    stage = config.get("zero_optimization", {}).get("stage", 0)
    if stage not in (1, 2, 3):
        raise UserError(f"{path} sets ZeRO stage {stage}; the deepspeed backend needs stage 1, 2 or 3 "
                        "(for plain data parallel use --backend ddp)")
    for key in ("optimizer", "scheduler"):
        if key in config:
            raise UserError(f"{path} sets \"{key}\": remove it; --opt, --lr and the schedule options set it here")
    # bf16/fp16 modes turn the weights themselves to 16 bits (BatchNorm then fails on the CPU); autocast keeps fp32.
    for key in ("bf16", "fp16"):
        if config.get(key, {}).get("enabled"):
            raise UserError(f"{path} enables \"{key}\": use \"torch_autocast\": {{\"enabled\": true, \"dtype\": "
                            "\"bfloat16\"}} for mixed precision (fp32 weights, bf16 compute)")
    autocast = config.get("torch_autocast", {})
    if autocast.get("enabled") and autocast.get("dtype", "bfloat16") not in ("bfloat16", "torch.bfloat16"):
        raise UserError(f"{path}: torch_autocast dtype {autocast['dtype']}; this project trains in bfloat16 or fp32")
    return config


def check_supported(args, beside):
    """Only the ddp backend steps modules trained beside the model. Checked before the run writes anything."""
    if beside and args.backend != "ddp":
        raise UserError(f"--backend {args.backend} trains one model, and this method trains another beside it (a "
                        "generator): use --backend ddp")


class DDP:
    """torch DDP over the ranks, or the bare model in a single process. `beside`: (module, optimizer) pairs that
    train with the model's loss; their gradients are averaged over the ranks before their optimizers step."""

    def __init__(self, model, optimizer, args, ctx, beside=()):
        self.model, self.optimizer, self.grad_clip, self.beside, self.ctx = model, optimizer, args.grad_clip, \
            list(beside), ctx
        self.trained = (DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda"
                                                else None) if ctx.world_size > 1 else model)

    def set_lr(self, lr):
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self, loss):
        optimizers = [self.optimizer] + [opt for _, opt in self.beside]
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for module, _ in self.beside:
            self.ctx.all_reduce_mean([p.grad for p in module.parameters() if p.grad is not None])
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        for opt in optimizers:
            opt.step()

    def save(self, out, record, ctx):
        """Collective. `record`: the checkpoint's description, epoch and metrics. Returns the resume entries for
        checkpoint.pt and the network's weights (on rank 0)."""
        return {"optimizer": self.optimizer.state_dict()}, self.model.net.state_dict()

    def load(self, state, out):
        if "optimizer" not in state:
            raise UserError(f"{out} was trained with --backend {state['args'].get('backend', 'ddp')}: resume it "
                            "with that")
        self.optimizer.load_state_dict(state["optimizer"])

    def saved(self, out, ctx):
        """Called on every rank once checkpoint.pt is written."""


class Accelerate(DDP):
    """Accelerate's prepare() wraps the model (DDP) and the optimizer; the launch config sets devices and ranks."""

    def __init__(self, model, optimizer, args, ctx, beside=()):
        Accelerator = require("accelerate", "accelerate", "--backend accelerate").Accelerator
        self.model, self.grad_clip = model, args.grad_clip
        # cpu=True: without it a CUDA-less machine has each rank train alone, without an error.
        self.accelerator = Accelerator(cpu=ctx.device.type == "cpu", mixed_precision="bf16" if args.precision ==
                                       "bf16" else "no")
        if self.accelerator.num_processes != ctx.world_size:
            raise UserError(f"accelerate sees {self.accelerator.num_processes} processes but the launcher started "
                            f"{ctx.world_size}: launch with `accelerate launch --config_file ...` or torchrun")
        self.trained, self.optimizer = self.accelerator.prepare(model, optimizer)

    def step(self, loss):
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        if self.grad_clip > 0:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()


class DeepSpeed:
    """A DeepSpeed engine around the model and this script's torch optimizer. Each epoch is saved as DeepSpeed's
    sharded checkpoint and converted to the project's format (fp32 weights), so every other command loads it."""

    def __init__(self, model, optimizer, args, ctx, beside=()):
        deepspeed = require("deepspeed", "deepspeed", "--backend deepspeed")
        deepspeed.utils.logger.setLevel(logging.WARNING)  # its per-step INFO lines would drown the progress
        if not dist.is_initialized():  # a single `python` process: DeepSpeed needs a process group all the same
            for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"),
                                ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(free_port()))):
                os.environ.setdefault(name, value)
            dist.init_process_group("nccl" if ctx.device.type == "cuda" else "gloo", rank=0, world_size=1)
        config = read_deepspeed_config(args.deepspeed_config)
        per_rank = ctx.per_rank(args.batch_size)
        # This script's options decide these (DeepSpeed would otherwise clip gradients at norm 1 by default).
        for key, value, option in (("train_micro_batch_size_per_gpu", per_rank, "--batch-size"),
                                   ("gradient_accumulation_steps", 1, "--batch-size"),
                                   ("train_batch_size", per_rank * ctx.world_size, "--batch-size"),
                                   ("gradient_clipping", args.grad_clip, "--grad-clip")):
            if config.setdefault(key, value) != value:
                raise UserError(f"{args.deepspeed_config} sets {key} {config[key]}, but {option} makes it {value} "
                                f"here: remove it from the config")
        config.setdefault("zero_allow_untested_optimizer", True)  # a torch optimizer: no JIT-compiled DeepSpeed op
        config.setdefault("steps_per_print", 10 ** 9)
        self.model = model
        self.trained, self.optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)

    def set_lr(self, lr):
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self, loss):
        self.trained.backward(loss)
        self.trained.step()

    def save(self, out, record, ctx):
        tag = self.tag = f"epoch{record['epoch']}"
        self.trained.save_checkpoint(str(out / "deepspeed"), tag=tag)
        ctx.barrier()
        if not ctx.is_main:
            return {}, None
        # The shards describe themselves, so that `python -m undistill.backends` can convert any of them.
        (out / "deepspeed" / tag / DESCRIPTION).write_text(json.dumps(record) + "\n")
        return {"deepspeed_tag": tag}, convert(out / "deepspeed", tag)["state_dict"]

    def load(self, state, out):
        if "deepspeed_tag" not in state:
            raise UserError(f"{out} was trained with --backend {state['args'].get('backend', 'ddp')}: resume it "
                            "with that")
        path, _ = self.trained.load_checkpoint(str(out / "deepspeed"), tag=state["deepspeed_tag"])
        if path is None:
            raise UserError(f"{out / 'deepspeed' / state['deepspeed_tag']} is missing: the DeepSpeed checkpoint "
                            "that checkpoint.pt names cannot be resumed (start again with --overwrite)")

    def saved(self, out, ctx):
        if ctx.is_main:  # only now may the previous epoch's shards go: checkpoint.pt no longer names them
            for old in (out / "deepspeed").glob("epoch*"):
                if old.name != self.tag:
                    shutil.rmtree(old, ignore_errors=True)
        ctx.barrier()


DESCRIPTION = "undistill.json"


def convert(directory, tag=None):
    """A DeepSpeed checkpoint of this project (any ZeRO stage, any number of ranks) as the project's own
    checkpoint dict: the description saved beside the shards, and the fp32 master weights of the network."""
    zero_to_fp32 = require("deepspeed.utils.zero_to_fp32", "deepspeed", "converting a DeepSpeed checkpoint")
    directory = Path(directory)
    if tag is None and (directory / "latest").is_file():
        tag = (directory / "latest").read_text().strip()
    if tag is None or not (directory / tag / DESCRIPTION).is_file():
        raise UserError(f"{directory} holds no DeepSpeed checkpoint written by this project (expected "
                        f"<tag>/{DESCRIPTION} and a 'latest' file, or pass --tag)")
    record = json.loads((directory / tag / DESCRIPTION).read_text())
    # The converter prints and draws a bar for every shard: keep the run's log readable.
    with open(os.devnull, "w") as null, redirect_stdout(null), redirect_stderr(null):
        full = zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint(str(directory), tag)
    weights = {k[len("net."):]: v.float() if v.is_floating_point() else v
               for k, v in full.items() if k.startswith("net.")}  # the bare network, as in every checkpoint
    return dict(record, state_dict=weights)


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BACKENDS = {"ddp": DDP, "deepspeed": DeepSpeed, "accelerate": Accelerate}


if __name__ == "__main__":
    import argparse
    import sys

    from .checkpoint import save
    p = argparse.ArgumentParser(prog="python -m undistill.backends", description="Convert a DeepSpeed checkpoint "
                                "written by --backend deepspeed (RUN_DIR/deepspeed) to this project's checkpoint "
                                "format, loadable by every command (--teacher, --adversary, evaluate).")
    p.add_argument("directory", type=Path, help="the DeepSpeed checkpoint directory, e.g. RUN_DIR/deepspeed")
    p.add_argument("output", type=Path, help="the checkpoint file to write, e.g. teacher.pt")
    p.add_argument("--tag", help="which saved tag (default: the 'latest' file's)")
    a = p.parse_args()
    try:
        ckpt = convert(a.directory, a.tag)
    except UserError as e:
        sys.exit(f"error: {e}")
    save(ckpt, a.output)
    print(f"{a.directory} (epoch {ckpt['epoch']}, {ckpt['role']} {ckpt['method']}) -> {a.output}")
