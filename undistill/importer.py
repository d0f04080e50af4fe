"""Import a model trained elsewhere as a teacher checkpoint, without training and without changing it.

    python -m undistill.importer resnet18.pth --arch tv.resnet18 --dataset imagenet --data-dir /data/imagenet
    python -m undistill.importer model.safetensors --arch cnn --mean 0.5 --std 0.25 --output runs/imported
    python -m undistill.importer model.pt --image-size 28 --channels 1 --class-order order.txt    # TorchScript
    python -m undistill.importer model.pt2 --trust-pickle --dataset cifar10 --data-dir data/cifar10  # torch.export
    python -m undistill.importer model.onnx --mean 0.5 --std 0.25                 # ONNX (needs onnxruntime)

The source is one of:
  - a state_dict (`torch.save(model.state_dict())`, loaded with weights_only=True; torchvision's published files
    with their old key names included) or a safetensors file, with --arch naming the architecture (a timm model's
    as timm.<name>, e.g. timm.resnet18, where timm is installed);
  - a TorchScript file (`torch.jit.save`): a black box, forward only (white-box attacks refuse it);
  - a torch.export file (`torch.export.save`, .pt2) exported with a dynamic batch dimension, only with
    --trust-pickle (torch.export.load unpickles what the file marks as pickled): traced to TorchScript, a black box;
  - an ONNX file (.onnx) of one input with a dynamic batch dimension: a black box run by onnxruntime (pip install
    onnxruntime), wherever the checkpoint is loaded;
  - a pickled full module (`torch.save(model)`), only with --trust-pickle: unpickling runs the file's code. It is
    kept as its weights with --arch, else traced to TorchScript.

The owner's input convention is part of the model: --mean and --std (of [0, 1] pixels, one value or one per
channel), --image-size (images resized to it), --channels (1: the luminance of RGB) and --class-order (a file, line
i holding the dataset's index of the owner's class i). The checkpoint stores it and the model applies it whenever it
answers. The model is measured on the dataset's test split (top-1, ECE, NLL); the checkpoint is an ordinary teacher
(role teacher, method "imported"): a teacher to distill_student.py, a model to audit, a trained teacher to release
with train_teacher.py --from, a checkpoint to measure with undistill.evaluate.
"""
import argparse
import contextlib
import hashlib
import io
import logging
import re
import warnings
import zipfile
from pathlib import Path

import torch
import torchvision

from . import UserError, checkpoint, datasets, distributed, loaders, models, require, runs
from .evaluate import measure

MAX_ORDER_BYTES = 1 << 20  # a class-order file: one short line per class
FORMATS = {"script": "TorchScript module", "export": "torch.export program", "onnx": "ONNX model"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m undistill.importer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", type=Path, help="the model file: a state_dict .pth, a .safetensors, a TorchScript "
                   "file, a torch.export .pt2, an .onnx, or (with --trust-pickle) a pickled module")
    p.add_argument("--arch", help="the architecture of a state_dict (models.names(): tv.resnet18, cnn, ...; "
                   "timm.<name> where timm is installed); needless for TorchScript, .pt2 and .onnx")
    g = p.add_argument_group("the owner's input convention")
    g.add_argument("--mean", type=float, nargs="+", help="per-channel mean of [0, 1] pixels (default: the dataset's)")
    g.add_argument("--std", type=float, nargs="+", help="per-channel std of [0, 1] pixels (default: the dataset's)")
    g.add_argument("--image-size", type=int, help="the size the model takes (default: the dataset's; --dataset "
                   "folder: the owner's images are read at it)")
    g.add_argument("--channels", type=int, default=3, choices=[1, 3], help="1: the model takes grayscale images")
    g.add_argument("--class-order", type=Path, help="file: line i holds the dataset's index of the owner's class i")
    p.add_argument("--trust-pickle", action="store_true",
                   help="load a pickled full module (torch.save(model)) or a torch.export .pt2: this may run the "
                   "file's code")
    datasets.add_arguments(p, validation=False, convention=False)
    loaders.add_arguments(p)
    g = p.add_argument_group("run")
    g.add_argument("--batch-size", type=int, default=256)
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    g.add_argument("--output", type=Path, help="run directory (default: runs/teacher-imported-<arch>)")
    g.add_argument("--overwrite", action="store_true", help="replace the checkpoint already in --output")
    return p.parse_args(argv)


def read_source(args: argparse.Namespace) -> tuple[str, object]:
    """("script", the TorchScript file's bytes) or ("state", a state_dict) or ("module", an unpickled nn.Module) or
    ("export", a torch.export program's module) or ("onnx", the ONNX file's bytes)."""
    path = args.source
    if not path.is_file():
        raise UserError(f"{path} {'is not a file' if path.exists() else 'does not exist'}: give the model file")
    if path.suffix == ".safetensors":
        st = require("safetensors.torch", "safetensors", "importing a .safetensors file")
        try:
            return "state", st.load_file(path)
        except Exception as e:  # a damaged header or payload: the Rust reader's message says which
            raise UserError(f"{path} is not a readable safetensors file ({first_line(e)})") from None
    if path.suffix == ".onnx":
        return "onnx", path.read_bytes()
    if path.suffix == ".pt2":
        if not args.trust_pickle:
            raise UserError(f"{path} is a torch.export file, and torch.export.load unpickles the weights it marks "
                            "as pickled, which runs code: pass --trust-pickle if you trust the file, or export the "
                            "model to ONNX or TorchScript")
        return "export", load_export(path)
    if zipfile.is_zipfile(path) and is_torchscript(path):
        return "script", path.read_bytes()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        if not args.trust_pickle:
            raise UserError(f"{path} is not a plain tensor file (weights_only loading refuses it): a pickled module "
                            "(torch.save(model)) runs code when loaded; save its state_dict and pass --arch, or "
                            "pass --trust-pickle if you trust the file") from None
        try:  # the owner said they trust the file (--trust-pickle): a full unpickling, which may run its code
            module = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise UserError(f"{path} cannot be loaded ({first_line(e)}): give a state_dict, safetensors or "
                            "TorchScript file") from None
        if not isinstance(module, torch.nn.Module):
            raise UserError(f"{path} holds a {type(module).__name__}, not an nn.Module")
        return "module", module
    return "state", unwrap(state, path)


def load_export(path: Path) -> torch.nn.Module:
    """A torch.export file's program as a module."""
    logger = logging.getLogger("torch.export")  # it logs a damaged file's traceback before it raises
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        return torch.export.load(path).module()
    except Exception as e:  # a damaged archive or graph raises a different type per damage
        raise UserError(f"{path} is not a readable torch.export file ({first_line(e)}): save it with "
                        "torch.export.save") from None
    finally:
        logger.setLevel(level)


def is_torchscript(path: Path) -> bool:
    """torch.jit.save's archive holds the module's code under <name>/code/; torch.save's holds data.pkl only."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.partition("/")[2].startswith("code/") for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


def unwrap(state: object, path: Path) -> dict[str, torch.Tensor]:
    """The bare state_dict: inside a {"state_dict": ...} or {"model": ...} training checkpoint, without DDP's prefix."""
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state_dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


class Published:
    """A loaded state_dict posing as a torchvision weights entry, for torchvision's own loaders that rename the
    old keys of its published files (DenseNet's 'norm.1' -> 'norm1')."""

    def __init__(self, state: dict[str, torch.Tensor]):
        self.state = state

    def get_state_dict(self, **_ignored) -> dict[str, torch.Tensor]:
        return dict(self.state)


def load_state(net: torch.nn.Module, state: dict[str, torch.Tensor], args: argparse.Namespace, classes: int) -> None:
    if isinstance(net, torchvision.models.DenseNet):
        # torchvision's published DenseNet files keep older key names, which its own loader renames; a file that is
        # not one of those either is left to load_weights, which says why its weights do not fit
        with contextlib.suppress(RuntimeError):
            torchvision.models.densenet._load_state_dict(net, Published(state), progress=False)
            return
    models.load_weights(net, state, str(args.source), args.arch, classes)


def build(kind: str, source: object, args: argparse.Namespace, info: datasets.DataInfo,
          size: int) -> tuple[str, torch.nn.Module, dict[str, torch.Tensor]]:
    """(arch, the network, the state_dict the checkpoint stores)."""
    if kind in FORMATS and args.arch not in (None, checkpoint.ONNX if kind == "onnx" else checkpoint.TORCHSCRIPT):
        raise UserError(f"{args.source} is a {FORMATS[kind]}, which carries its architecture: drop --arch")
    if kind == "export":
        source, kind = traced(source, args, size, "export it with a dynamic batch dimension (torch.export.export("
                              "..., dynamic_shapes=({0: torch.export.Dim('batch')},))) or fix --image-size or "
                              "--channels"), "script"
    elif kind == "module" and args.arch is None:  # a module of no known architecture answers as a traced black box
        source, kind = traced(source.eval(), args, size, "pass --arch with its architecture"), "script"
    if kind == "script":
        state = {"script": torch.frombuffer(bytearray(source), dtype=torch.uint8)}
        return checkpoint.TORCHSCRIPT, checkpoint.load_script(state["script"], str(args.source)), state
    if kind == "onnx":
        state = {"onnx": torch.frombuffer(bytearray(source), dtype=torch.uint8)}
        return checkpoint.ONNX, checkpoint.load_onnx(state["onnx"], str(args.source)), state
    if args.arch is None:
        raise UserError(f"{args.source} holds weights without their architecture: pass --arch "
                        "(python -c 'from undistill import models; print(models.names())' lists them)")
    net = models.build(args.arch, info.num_classes)
    load_state(net, source.state_dict() if kind == "module" else source, args, info.num_classes)
    return args.arch, net, net.state_dict()


def traced(module: torch.nn.Module, args: argparse.Namespace, size: int, remedy: str) -> bytes:
    """The TorchScript file of `module`, traced on a batch of 2 images and checked on a batch of 3 and of 1: the
    batch dimension stays free (a program exported with a static batch takes one batch size only)."""
    images = torch.rand(6, args.channels, size, size, generator=torch.Generator().manual_seed(0))
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), checkpoint.quiet_jit(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the answers are checked below instead
            expected = [module(images[:1]), module(images[3:])]
            script = torch.jit.trace(module, images[1:3], check_trace=False)
            faithful = all(torch.equal(script(x), e) for x, e in zip((images[:1], images[3:]), expected))
            torch.jit.save(script, buffer)
    except Exception as e:
        raise UserError(f"{args.source}: its module cannot take batches of {args.channels}x{size}x{size} images "
                        f"or be traced to TorchScript ({first_line(e)}): {remedy}") from None
    if not faithful:
        raise UserError(f"{args.source}: its module does not trace to TorchScript faithfully (its answers depend on "
                        f"Python control flow or a fixed batch size): {remedy}")
    return buffer.getvalue()


def convention(args: argparse.Namespace, info: datasets.DataInfo) -> tuple[list, list, dict | None]:
    """(mean, std, input): the owner's, checked like a checkpoint's claims; input None where it is the dataset's."""
    def bad(what):
        return UserError(f"the input convention has {what}: fix --mean, --std, --image-size or --channels")

    def per_channel(values, default):
        values = list(values or default[:args.channels])
        return values * args.channels if len(values) == 1 else values

    mean, std = per_channel(args.mean, info.mean), per_channel(args.std, info.std)
    checkpoint.check_normalization(mean, std, args.channels, bad)
    owner = {}
    if args.image_size is not None:
        if not 1 <= args.image_size <= checkpoint.MAX_IMAGE_SIZE:
            raise UserError(f"--image-size {args.image_size}: give 1 to {checkpoint.MAX_IMAGE_SIZE}")
        if args.image_size != info.image_size:
            owner["image_size"] = args.image_size
    if args.channels != 3:
        owner["channels"] = args.channels
    if args.class_order is not None:
        owner["class_order"] = class_order(args.class_order, info.num_classes)
    return mean, std, owner or None


def class_order(path: Path, classes: int) -> list[int]:
    if not path.is_file() or path.stat().st_size > MAX_ORDER_BYTES:
        raise UserError(f"--class-order {path} is not a file of at most {MAX_ORDER_BYTES} bytes: give one line "
                        "per class, line i holding the dataset's index of the owner's class i")
    lines = path.read_text(errors="replace").split()
    if not all(re.fullmatch(r"\d{1,6}", line) for line in lines) or \
            sorted(map(int, lines)) != list(range(classes)):
        raise UserError(f"--class-order {path} is not a permutation of 0..{classes - 1}, one index per line: line i "
                        "holds the dataset's index of the owner's class i")
    return [int(line) for line in lines]


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:120]


def main(args: argparse.Namespace) -> dict:
    """Import args.source; returns the checkpoint's description and test metrics (its summary.json)."""
    if args.batch_size < 1 or args.workers < 0:
        raise UserError("--batch-size must be at least 1 and --workers at least 0")
    owner = {"split_file": args.split_file} if args.split_file is not None else {}
    if args.dataset == "folder" and args.image_size is not None:  # the owner's images read at the model's size
        owner["image_size"] = args.image_size
    info = datasets.load(args.dataset, args.data_dir, args.download, args.subset, 0, args.ffcv_dir, train=False,
                         **owner)
    mean, std, owner = convention(args, info)
    kind, source = read_source(args)
    arch, net, state = build(kind, source, args, info, (owner or {}).get("image_size", info.image_size))
    out = args.output or Path("runs") / f"teacher-imported-{arch}"
    if out.exists() and not out.is_dir():
        raise UserError(f"--output {out} is a file, not a directory: choose another --output")
    if (out / "checkpoint.pt").exists() and not args.overwrite:
        raise UserError(f"{out} already holds a checkpoint: add --overwrite to replace it, or choose another --output")
    model = models.Classifier(net, mean, std, owner=owner).eval().requires_grad_(False)
    probe = torch.zeros(2, 3, info.image_size, info.image_size, dtype=torch.uint8)
    try:
        with torch.no_grad():
            answers = model(probe)
    except RuntimeError as e:
        raise UserError(f"{args.source} cannot take {info.name}'s images as the convention gives them "
                        f"({first_line(e)}): fix --image-size or --channels") from None
    if answers.shape != (2, info.num_classes):
        raise UserError(f"{args.source} answers {tuple(answers.shape[1:])} per image, not {info.num_classes} "
                        f"logits ({info.name}'s classes): choose the matching --dataset")

    ctx = distributed.init(args.device)
    evaluation = argparse.Namespace(loader=args.loader, batch_size=args.batch_size, workers=args.workers,
                                    precision="fp32", tau=1.0, ece_bins=15, threshold=1e-3)
    metrics, _ = measure(model.to(ctx.device), None, info.test, info.num_classes, evaluation, ctx, True, None)
    metrics = {f"test_{k}": metrics[k] for k in ("acc", "ece", "nll")}
    settings = {"source": str(args.source), "format": kind,
                "sha256": hashlib.sha256(args.source.read_bytes()).hexdigest()}
    meta = dict(checkpoint.describe(info, arch, "teacher", "imported", settings), mean=mean, std=std, input=owner)
    checkpoint.check_claims(meta, "the imported model")
    summary = dict(meta, best_acc=metrics["test_acc"], last_acc=metrics["test_acc"], metrics=metrics,
                   args=runs.plain(vars(args)))
    with runs.owned(out, ctx):
        ctx.on_main(lambda: (checkpoint.save(dict(meta, epoch=0, metrics=metrics, state_dict=state),
                                             out / "checkpoint.pt"),
                             runs.write_json(out / "summary.json", summary)))
    ctx.print(f"imported {args.source} ({kind}, {arch}) as a {info.name} teacher: test top-1 "
              f"{metrics['test_acc']:.2f}%  ECE {metrics['test_ece']:.4f}  NLL {metrics['test_nll']:.4f}\n"
              f"-> {out / 'checkpoint.pt'}")
    return summary


def cli(argv: list[str] | None = None) -> None:
    """The command line (`python -m undistill.importer`, `undistill import`), with `argv` or sys.argv's."""
    distributed.run(main, parse_args(argv))


if __name__ == "__main__":
    cli()
