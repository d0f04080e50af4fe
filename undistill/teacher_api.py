"""A black-box API as the teacher: `--teacher-api module:function` instead of `--teacher CKPT`.

The function takes a batch of uint8 images (N, C, H, W, a CPU tensor) and returns, per image, what the API answers
(`--api-output`): `logits`, `probs` (probabilities) or `labels` (class indices), as a tensor or anything
torch.as_tensor reads. The student sees logits: the logits as given, log p for probabilities (-inf where p = 0, as
the API releases of train_teacher.py answer), for a label 0 at the label and -inf elsewhere.

Every answer is cached by the SHA-256 of its image's bytes, one file per image under
`<--api-cache>/<module.function>-<output>/` (default --api-cache: `<--output>/api-cache`), so a rerun, a resumed
run or a second attack given the same --api-cache does not query the API again for an image it has answered.
`module` is an importable module (the working directory included) or a .py file.
"""
import argparse
import hashlib
import importlib
import importlib.util
import math
import os
import re
import sys
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import UserError, runs

OUTPUTS = ("logits", "probs", "labels")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("teacher API (black box)")
    g.add_argument("--teacher-api", metavar="MODULE:FUNCTION", help="query this function instead of a --teacher "
                   "checkpoint: uint8 images NCHW in, --api-output out (module: importable, or a .py file)")
    g.add_argument("--api-output", default="logits", choices=OUTPUTS, help="what --teacher-api returns per image")
    g.add_argument("--api-cache", type=Path, help="where its answers are cached by image content (default: "
                   "<--output>/api-cache); give one directory to several runs to query each image once")


def load_function(spec: str) -> Callable:
    module_name, sep, function = spec.rpartition(":")
    if not sep or not module_name or not function.isidentifier():
        raise UserError(f"--teacher-api {spec!r}: give MODULE:FUNCTION (a module or a .py file, and a function)")
    try:
        if module_name.endswith(".py"):
            location = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
            if location is None or not Path(module_name).is_file():
                raise ImportError(f"no file {module_name}")
            module = importlib.util.module_from_spec(location)
            location.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:  # the owner's module beside the command, as `python -m` would find it
                sys.path.append(os.getcwd())
            module = importlib.import_module(module_name)
    except ImportError as e:
        raise UserError(f"--teacher-api {spec}: cannot import {module_name} ({e})") from None
    fn = getattr(module, function, None)
    if not callable(fn):
        raise UserError(f"--teacher-api {spec}: {module_name} has no function {function}")
    return fn


def to_logits(answers: torch.Tensor, output: str, num_classes: int) -> torch.Tensor:
    """The logits the student sees for the API's answers (module docstring)."""
    if output == "labels":
        return torch.full((len(answers), num_classes), -math.inf).scatter(1, answers.long().view(-1, 1), 0.0)
    answers = answers.float()
    return answers.log() if output == "probs" else answers


class ApiTeacher(nn.Module):
    """The API as a frozen model: uint8 images in (on any device), logits out (on the images' device). `queried`
    counts the images the API itself was asked about (the cache's misses)."""

    def __init__(self, fn: Callable, spec: str, output: str, cache: Path, num_classes: int):
        super().__init__()
        self.fn, self.spec, self.output, self.num_classes = fn, spec, output, num_classes
        self.cache = Path(cache) / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', Path(spec).name)}-{output}"
        self.queried = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8:
            raise UserError(f"--teacher-api {self.spec} answers uint8 images; this attack sends {x.dtype} ones: "
                            "choose an attack that queries the training images")
        images = x.cpu().contiguous()
        keys = [hashlib.sha256(image.numpy().tobytes()).hexdigest() for image in images]
        rows = [self.cached(key) for key in keys]
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            for i, row in zip(missing, self.ask(images[missing])):
                rows[i] = row
                path = self.cache / keys[i][:2] / f"{keys[i]}.pt"
                path.parent.mkdir(parents=True, exist_ok=True)
                runs.atomic_write(path, lambda tmp, row=row: torch.save(row.clone(), tmp))
        return torch.stack(rows).to(x.device)

    def cached(self, key: str) -> torch.Tensor | None:
        path = self.cache / key[:2] / f"{key}.pt"
        if not path.is_file():
            return None
        row = runs.load_tensors(path, f"the cached answer of --teacher-api {self.spec}")
        if not isinstance(row, torch.Tensor) or row.shape != (self.num_classes,):
            raise UserError(f"{path} is not a cached answer of {self.num_classes} logits: remove {self.cache}")
        return row

    def ask(self, images: torch.Tensor) -> torch.Tensor:
        """The API's logits for the images it has not answered yet, checked: one row or label per image."""
        self.queried += len(images)
        try:
            answers = torch.as_tensor(self.fn(images))
        except Exception as e:  # the owner's function: whatever it raises is its answer's fault, not ours
            raise UserError(f"--teacher-api {self.spec} failed on a batch of {len(images)} images "
                            f"({type(e).__name__}: {str(e).strip()[:120]})") from None
        expected = (len(images),) if self.output == "labels" else (len(images), self.num_classes)
        if tuple(answers.shape) != expected:
            raise UserError(f"--teacher-api {self.spec} answered a {tuple(answers.shape)} tensor for {len(images)} "
                            f"images; --api-output {self.output} expects {expected}")
        if self.output == "labels" and (answers.is_floating_point() or answers.min() < 0 or
                                        answers.max() >= self.num_classes):
            raise UserError(f"--teacher-api {self.spec} answered labels outside 0..{self.num_classes - 1}")
        if self.output == "probs" and (answers.min() < 0 or answers.max() > 1 or answers.isnan().any()):
            raise UserError(f"--teacher-api {self.spec} answered probabilities outside [0, 1]: check --api-output")
        return to_logits(answers, self.output, self.num_classes)
