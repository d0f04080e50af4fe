"""`undistill COMMAND ...`: the installed console script, one subcommand per entry point.

    undistill train-teacher --defense nasty --adversary runs/ce/checkpoint.pt
    undistill distill --attack kd --teacher runs/nasty/checkpoint.pt
    undistill audit runs/nasty/checkpoint.pt --budget quick
    undistill import model.pth --arch tv.resnet18 --dataset imagenet --data-dir /data/imagenet
    undistill report runs/ --markdown verdict.md
    undistill evaluate runs/nasty/checkpoint.pt
    undistill export runs/stingy/checkpoint.pt --output stingy.pt

`undistill COMMAND --help` prints the command's options. Each is also `python -m undistill.<module>`; the
repository's train_teacher.py and distill_student.py are the first two, for torchrun.
"""
import importlib
import sys

COMMANDS = {  # subcommand -> (module, what it does)
    "train-teacher": ("train_teacher", "train a teacher with a defense, or release a trained one"),
    "distill": ("distill_student", "train a student: a baseline, or an attack on a teacher"),
    "audit": ("audit", "every attack against one teacher: can it be cloned?"),
    "import": ("importer", "a model trained elsewhere as a teacher checkpoint, without training"),
    "report": ("report", "run summaries -> the verdict table"),
    "evaluate": ("evaluate", "a checkpoint's accuracy, calibration, sparsity and CMI, as JSON"),
    "export": ("export", "a checkpoint as one TorchScript or ONNX file, its release and normalization inside"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    return "\n".join([__doc__.strip(), "", "commands:",
                      *(f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items())])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r} (choose one of {', '.join(COMMANDS)}: undistill --help)",
              file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(f"undistill.{COMMANDS[argv[0]][0]}")
    sys.argv = [f"undistill {argv[0]}", *argv[1:]]  # what the command's own usage lines name
    module.cli(argv[1:])


if __name__ == "__main__":
    main()
