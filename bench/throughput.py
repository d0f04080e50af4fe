"""Training throughput, side by side on one machine: the loaders against a reference pipeline written like the
papers' code (VITA-Group Nasty-Teacher: PIL transforms in DataLoader workers, fp32), and the step cost of each
defense and attack relative to a CE step. Not part of the test suite.

    python bench/throughput.py                                                  # CPU, small: mnist5k, plain CNN
    python bench/throughput.py --dataset cifar10 --data-dir data/cifar10 --arch resnet18 --steps 200   # one GPU

Every number is images per second of full training steps (data, forward, loss, backward, optimizer) after
--warmup steps, on the project's own step (`engine.train_step` with each method's task) with its precision and
memory format
(bf16 and channels_last on CUDA; --compile adds torch.compile). The frozen adversary / teacher is a randomly
initialized copy of --arch: the cost of a step does not depend on what the weights have learned.
"""
import argparse
import atexit
import functools
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torchvision.transforms as T  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from undistill import backends, datasets, distributed, engine, loaders, methods, metrics, models, options  # noqa: E402
from undistill.teachers import Queried  # noqa: E402


class PILImages(Dataset):
    """The reference pipeline's dataset: a PIL image per item, transformed one by one in the workers."""

    def __init__(self, tensors, transform):
        self.images, self.labels, self.transform = tensors.images, tensors.labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i].permute(1, 2, 0).numpy())), int(self.labels[i])


def forever(batches_of_epoch):
    epoch = 0
    while True:
        yield from batches_of_epoch(epoch)
        epoch += 1


def reference_batches(info, args, ctx):
    """Float batches, normalized on the CPU per image (RandomCrop(pad 4) + flip + ToTensor + Normalize)."""
    transform = T.Compose([T.RandomCrop(info.image_size, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(info.mean, info.std)])
    loader = DataLoader(PILImages(info.train, transform), args.batch_size, shuffle=True, drop_last=True,
                        num_workers=args.workers, pin_memory=ctx.device.type == "cuda")
    return forever(lambda _: ((x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True))
                              for x, y in loader))


def project_batches(name, info, args, ctx):
    loader = loaders.LOADERS[name](info.train, args.batch_size, train=True, seed=0, workers=args.workers, rank=0,
                                   world_size=1, pin_memory=ctx.device.type == "cuda", device=ctx.device)
    return forever(engine.DeviceLoader(loader, ctx, args).epoch)


def images_per_s(step, batches, args, ctx):
    for _ in range(args.warmup):
        step(*next(batches))
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step(*next(batches))
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    return args.steps * args.batch_size / (time.perf_counter() - start)


def classifier(info, args, ctx):
    net = models.build(args.arch, info.num_classes)
    return engine.prepare(models.Classifier(net, info.mean, info.std), ctx, args)


def task(kind, name, settings, info, args, ctx, frozen=None):
    """The method's task as a run builds it, `frozen` (a model) standing for the checkpoint it would load."""
    method = methods.get(kind, name)
    queried = Queried(method.option(method.queries), ["(random)"], frozen, [{}]) if method.queries else None
    return method.build(settings, methods.Run(method, info, ctx, args, queried))


def training_step(model, task, args, ctx):
    backend = backends.DDP(model.train(), engine.make_optimizer(model.parameters(), args), args, ctx)
    return functools.partial(engine.train_step, backend, task, epoch=0, config=args, ctx=ctx)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (workers start, kernels tune)")
    installed = [name for name in sorted(loaders.LOADERS) if name != "ffcv" or importlib.util.find_spec("ffcv")]
    p.add_argument("--loaders", default=",".join(["reference", *installed]),
                   help="comma-separated: reference and any of --loader's choices (default: all, ffcv if installed)")
    p.add_argument("--step-loader", default="gpu", help="the loader feeding the defense/attack comparison")
    p.add_argument("--json", type=Path, help="also write every number to this JSON file")
    datasets.add_arguments(p)
    loaders.add_arguments(p)
    engine.add_arguments(p)
    cli = p.parse_args()
    args, _ = options.resolve(cli, methods.get("defense", "ce"), datasets.record(cli.dataset))
    ctx = distributed.init(args.device)
    info = datasets.load(args.dataset, args.data_dir, args.download, args.subset, args.seed, args.ffcv_dir)
    beton = info.train.beton.path
    if "ffcv" in [*args.loaders.split(","), args.step_loader] and not (beton and beton.is_file()) \
            and args.dataset != "imagenet":  # small enough to write on the spot; ImageNet's loader says how
        tmp = Path(tempfile.mkdtemp(prefix="bench-ffcv-"))
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
        print(f"no train.beton in --ffcv-dir (default <data-dir>/ffcv): writing a temporary one in {tmp}")
        full = datasets.load(args.dataset, args.data_dir, args.download, ffcv_dir=tmp)
        loaders.import_ffcv().write(full.train, full.train.beton.path, workers=max(args.workers, 1))
        info = datasets.load(args.dataset, args.data_dir, args.download, args.subset, args.seed, tmp)
    torch.manual_seed(0)
    print(f"{args.dataset} {args.arch}, batch {args.batch_size}, {args.steps} steps after {args.warmup}, "
          f"device {ctx.device}, {args.workers} workers")

    # Loaders, all on a CE step. The reference runs the bare network on pre-normalized floats in fp32.
    plain = argparse.Namespace(**dict(vars(args), precision="fp32", channels_last="off"))
    loader_ips, ce = {}, task("defense", "ce", {}, info, args, ctx)
    for name in args.loaders.split(","):
        if name == "reference":
            net = models.build(args.arch, info.num_classes).to(ctx.device)
            step, batches = training_step(net, ce, plain, ctx), reference_batches(info, args, ctx)
        else:
            step, batches = training_step(classifier(info, args, ctx), ce, args, ctx), \
                project_batches(name, info, args, ctx)
        loader_ips[name] = images_per_s(step, batches, args, ctx)
    base = loader_ips.get("reference")
    print("\n| loader (CE step) | images/s | vs reference |\n|---|---|---|")
    for name, ips in loader_ips.items():
        print(f"| {name} | {ips:.0f} | {f'{ips / base:.2f}x' if base else '-'} |")

    # Defenses and attacks on the same loader: the cost of one step relative to a CE step.
    batches = project_batches(args.step_loader, info, args, ctx)
    frozen = classifier(info, args, ctx).eval().requires_grad_(False)
    temps = metrics.parse_temperatures(metrics.DEFAULT_TEMPERATURES)
    tasks = {
        "ce": ce,
        "nasty": task("defense", "nasty", dict(omega=0.04, tau=4.0), info, args, ctx, frozen),
        "cmim": task("defense", "cmim", dict(cmi_weight=4.0, temperatures=temps, cmi_agg="t2mean", centroids="ema",
                                             centroid_momentum=0.9), info, args, ctx),
        "kd": task("attack", "kd", dict(alpha=0.9, tau=4.0, no_labels=False), info, args, ctx, frozen),
    }
    step_ips = {name: images_per_s(training_step(classifier(info, args, ctx), t, args, ctx), batches, args, ctx)
                for name, t in tasks.items()}

    @torch.inference_mode()
    def teacher_forward(x, y):
        with engine.autocast(ctx, args):
            frozen(x)
    forward_ips = images_per_s(teacher_forward, batches, args, ctx)
    print(f"\n| step ({args.step_loader} loader) | images/s | step time vs CE |\n|---|---|---|")
    for name, ips in step_ips.items():
        print(f"| {name} | {ips:.0f} | {step_ips['ce'] / ips:.2f}x |")
    print(f"\nteacher forward alone: {forward_ips:.0f} images/s; bound for a KD step: 1 + teacher-forward share = "
          f"{1 + step_ips['ce'] / forward_ips:.2f}x a CE step")
    peak = torch.cuda.max_memory_allocated() / 2**30 if ctx.device.type == "cuda" else None
    if peak is not None:
        print(f"peak GPU memory: {peak:.2f} GiB")
    if args.json:
        args.json.write_text(json.dumps({"loader_images_per_s": loader_ips, "step_images_per_s": step_ips,
                                         "teacher_forward_images_per_s": forward_ips, "peak_gpu_memory_gib": peak,
                                         "batch_size": args.batch_size, "compile": args.compile,
                                         "arch": args.arch, "dataset": args.dataset}, indent=2) + "\n")


if __name__ == "__main__":
    distributed.run(lambda _: main(), None)  # a UserError (e.g. no ImageNet .beton) as one line
