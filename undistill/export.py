"""Export a checkpoint as one self-contained model file: what its users run, release and normalization inside.

    python -m undistill.export runs/teacher-stingy-cnn-s0/checkpoint.pt --output stingy.pt
    python -m undistill.export runs/teacher-topk-cnn-s0/checkpoint.pt --output topk.onnx     # needs onnx

The file takes a batch of uint8 images (N, 3, H, W) at the checkpoint's image size and returns what the checkpoint
answers: a release's released outputs (a stingy release's sparse logits, an API release's log-probabilities), an
imported model's answers under its owner's input convention. `.onnx` writes ONNX (pip install onnx), any other
name TorchScript (`torch.jit.load(path)`; the project imports either back with undistill.importer). The model is
traced once and checked on other images: it is written only where it answers exactly as the checkpoint.
"""
import argparse
import warnings
from pathlib import Path

import torch

from . import UserError, checkpoint, distributed, require, runs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m undistill.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="a checkpoint of this project (a release, a teacher, a student)")
    p.add_argument("--output", type=Path, required=True, help="the model file: .onnx for ONNX, else TorchScript")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    return p.parse_args(argv)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal, -inf where -inf (a release's absent classes), NaN nowhere."""
    return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


def main(args: argparse.Namespace) -> Path:
    if args.output.exists() and not args.overwrite:
        raise UserError(f"--output {args.output} exists: add --overwrite to replace it, or choose another --output")
    model, ckpt = checkpoint.load_classifier(args.checkpoint)
    size = ckpt["image_size"]
    images = torch.randint(0, 256, (5, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    traced_on, checked_on = images[:2], images[2:]  # another batch size too: the batch dimension must stay free
    onnx = args.output.suffix == ".onnx"
    if onnx:
        require("onnx", "onnx", "an .onnx --output")
    with torch.no_grad(), checkpoint.quiet_jit(), warnings.catch_warnings():
        expected = model(checked_on)
        try:
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # of the constants it keeps (a release's k):
            traced = torch.jit.trace(model, traced_on, check_trace=False)  # fixed per checkpoint, checked below
        except RuntimeError as e:  # the tracer refuses some operations (the noise release's bit view)
            raise UserError(f"{args.checkpoint} cannot be traced to TorchScript (the tracer fails: "
                            f"{str(e).strip().splitlines()[0][:100]}): nothing written") from None
        if not same(traced(checked_on), expected):
            raise UserError(f"{args.checkpoint} does not trace to TorchScript faithfully (its answers depend on "
                            "Python control flow): nothing written")
        if onnx:  # from the traced module: the ONNX exporter cannot trace into an imported TorchScript module
            try:
                warnings.simplefilter("ignore")  # its deprecation and the graphs of its warnings: the file is checked
                runs.atomic_write(args.output, lambda tmp: torch.onnx.export(
                    traced, (traced_on,), str(tmp), input_names=["images"], output_names=["outputs"], dynamo=False,
                    dynamic_axes={"images": {0: "batch"}, "outputs": {0: "batch"}}))
            except torch.onnx.errors.OnnxExporterError as e:  # an operator ONNX lacks (an antialiased resize)
                raise UserError(f"{args.checkpoint} cannot be exported to ONNX ({str(e).strip().splitlines()[0][:120]})"
                                ": export it to TorchScript (--output a .pt file); nothing written") from None
        else:
            runs.atomic_write(args.output, lambda tmp: torch.jit.save(traced, str(tmp)))
    what = ckpt.get("release") and ckpt["release"]["name"] or ckpt["method"]
    print(f"exported {args.checkpoint} ({what}, {ckpt['arch']}, uint8 images of {size}x{size} in) as "
          f"{'ONNX' if onnx else 'TorchScript'} -> {args.output}")
    return args.output


def cli(argv: list[str] | None = None) -> None:
    """The command line (`python -m undistill.export`, `undistill export`), with `argv` or sys.argv's."""
    distributed.run(main, parse_args(argv))


if __name__ == "__main__":
    cli()
