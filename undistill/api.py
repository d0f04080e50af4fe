"""The commands as Python functions, for a notebook: each takes what its command line takes, as keyword arguments
(`epochs=1` for `--epochs 1`, `attacks=["kd", "dkd"]` for `--attacks kd dkd`, `no_labels=True` for a flag), runs
in this process from any working directory, and returns its results as data (docs/python.md).

A teacher is a checkpoint's path or an nn.Module: a module is imported first (undistill.importer, traced to
TorchScript into <output>/teacher/: it must take images (N, 3, H, W) of values in [0, 255] and return logits;
`convention` passes the importer's --mean, --std, --image-size, --channels or --class-order). The audit also takes
a function that answers queries, a black-box API (`api_output="probs"` for --api-output): one defined at the top of
a .py file, which the students' processes import from there. Bad input raises undistill.UserError, with the one
line the command would print.
"""
import io
import json
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from . import UserError, audit as audit_command, checkpoint, datasets, distill_student, evaluate as evaluate_command
from . import importer, train_teacher as train_teacher_command

Teacher = str | Path | nn.Module


def argv(options: dict[str, Any]) -> list[str]:
    """Keyword arguments as a command line: a list is several values, True a flag, False and None nothing."""
    line = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            line.append(flag)
        elif value is not None and value is not False:
            line += [flag, *map(str, value if isinstance(value, (list, tuple)) else [value])]
    return line


def checkpoint_of(teacher: Teacher, where: Path, options: dict[str, Any], **convention: Any) -> Path:
    """A checkpoint's path as given; a module imported into `where` (traced on one image of the dataset's size), on
    the data `options` name (dataset, data_dir, split_file, image_size: the command's)."""
    if isinstance(teacher, (str, Path)):
        return Path(teacher)
    if not isinstance(teacher, nn.Module):
        raise UserError(f"a teacher is a checkpoint's path or an nn.Module, not a {type(teacher).__name__}: a "
                        "function that answers queries goes to audit(), or to distill(teacher_api='module:function')")
    data = {name: options.get(name) for name in ("data_dir", "split_file", "image_size")}
    dataset = options.get("dataset") or "mnist5k"
    size = datasets.record(dataset, **data).image_size
    if not size:
        raise UserError(f"--dataset {dataset} needs --data-dir (data_dir=...): the images the module is traced on")
    buffer = io.BytesIO()
    with torch.no_grad(), checkpoint.quiet_jit():
        torch.jit.save(torch.jit.trace(teacher.eval(), torch.full((1, 3, size, size), 128.0)), buffer)
    where.mkdir(parents=True, exist_ok=True)
    (where / "module.pt").write_bytes(buffer.getvalue())
    # the module normalizes its images itself: the importer's normalization is the identity on [0, 255]
    # the folder dataset's --image-size is the importer's, the size the module takes
    defaults = {"mean": [0.0], "std": [1 / 255], **data}
    importer.main(importer.parse_args([str(where / "module.pt"), "--dataset", dataset, "--workers", "0",
                                       "--output", str(where / "imported"), "--overwrite",
                                       *argv({**defaults, **convention})]))
    return where / "imported" / "checkpoint.pt"


def api_spec(fn: Callable) -> str:
    """--teacher-api's FILE.py:FUNCTION for a function the students' processes can import: one defined at the top
    of a module file (not a notebook's or a script's __main__, which would run again)."""
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    name = getattr(fn, "__name__", "")
    source = getattr(module, "__file__", None)
    if module is None or module.__name__ == "__main__" or getattr(module, name, None) is not fn or \
            source is None or not source.endswith(".py"):
        raise UserError(f"the teacher {name or type(fn).__name__} is not a function at the top of a .py file: "
                        "define it in one and import it from there (the students' processes import it)")
    return f"{Path(source).absolute()}:{name}"


def audit(teacher: Teacher | Callable, *, output: str | Path, convention: dict[str, Any] | None = None,
          **options: Any) -> dict[str, Any]:
    """`undistill audit`: the report (report.json's content: releases, rows, baselines, verdicts). `teacher` may be
    a function that answers queries (`api_output`: what it returns; `dataset`: what it answers on)."""
    output = Path(output).absolute()
    if callable(teacher) and not isinstance(teacher, nn.Module):
        given = ["--teacher-api", api_spec(teacher)]
    else:
        given = [str(checkpoint_of(teacher, output / "teacher", options, **(convention or {})))]
    audit_command.main(audit_command.parse_args([*given, "--output", str(output / "audit"), *argv(options)]))
    return json.loads((output / "audit" / "report.json").read_text())


def release(teacher: Teacher, name: str, *, output: str | Path, **settings: Any) -> dict[str, Any]:
    """`undistill train-teacher --defense NAME --from TEACHER`: the release's summary (its checkpoint is
    <output>/checkpoint.pt)."""
    output = Path(output).absolute()
    path = checkpoint_of(teacher, output / "teacher", settings)
    train_teacher_command.main(train_teacher_command.parse_args(
        ["--defense", name, "--from", str(path), "--output", str(output), *argv(settings)]))
    return json.loads((output / "summary.json").read_text())


def train_teacher(*, output: str | Path, **options: Any) -> dict[str, Any]:
    """`undistill train-teacher`: the run's summary.json."""
    train_teacher_command.main(train_teacher_command.parse_args(["--output", str(output), *argv(options)]))
    return json.loads((Path(output) / "summary.json").read_text())


def distill(*, output: str | Path, teacher: Teacher | None = None, **options: Any) -> dict[str, Any]:
    """`undistill distill`: the student's summary.json."""
    output = Path(output).absolute()
    given = [] if teacher is None else [
        "--teacher", str(checkpoint_of(teacher, output / "teacher", options))]
    distill_student.main(distill_student.parse_args([*given, "--output", str(output), *argv(options)]))
    return json.loads((output / "summary.json").read_text())


def evaluate(*checkpoints: str | Path, **options: Any) -> dict[str, Any]:
    """`undistill evaluate`: the measurements (top-1, ECE, NLL, sparsity, KL, CMI)."""
    return evaluate_command.main(evaluate_command.parse_args([*map(str, checkpoints), *argv(options)]))
