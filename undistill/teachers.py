"""What a run queries: the frozen model(s) a method's option names (--teacher, --adversary, --from), loaded as the
black boxes their checkpoints describe (a release answers with its released outputs); several --teacher answer as
one, the mean of their logits (SCM's ensemble)."""
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from . import UserError, checkpoint, models
from .methods import Method
from .options import Option


@dataclass
class Queried:
    """The frozen model(s) one option names: their paths, the model that answers for them, their checkpoints."""
    option: Option
    paths: list[Path]
    model: nn.Module
    checkpoints: list[dict[str, Any]]

    @property
    def released(self) -> bool:
        return any(c.get("release") for c in self.checkpoints)

    def check_compatible(self, info) -> None:
        for path, ckpt in zip(self.paths, self.checkpoints):
            checkpoint.check_compatible(ckpt, info, f"{self.option.flag_name} {path}")

    def settings(self) -> dict[str, Any]:
        """How the run names them in its settings: the path, or for several the paths and the ensemble's size."""
        paths = [str(p) for p in self.paths]
        if len(paths) == 1:
            return {self.option.name: paths[0]}
        return {self.option.name: paths, "ensemble": len(paths)}


def load(method: Method, args) -> Queried | None:
    """The frozen model(s) the method's `queries` option names, on the CPU, or None for a method that queries none."""
    if method.queries is None:
        return None
    option = method.option(method.queries)
    value = getattr(args, option.name, None)
    if not value:
        raise UserError(f"--{method.kind} {method.name} needs {option.flag_name} CKPT ({option.help})")
    paths = [Path(p) for p in (value if isinstance(value, list) else [value])]
    loaded = [checkpoint.load_classifier(p) for p in paths]
    for path, (_, ckpt) in zip(paths, loaded):
        if method.access == "white-box" and ckpt["arch"] == checkpoint.TORCHSCRIPT:
            raise UserError(f"--{method.kind} {method.name} is white-box (it reads the teacher's internals), but "
                            f"{path} is an imported TorchScript module, a black box: choose a black-box attack")
    members = [model for model, _ in loaded]
    return Queried(option, paths, members[0] if len(members) == 1 else models.Ensemble(members),
                   [ckpt for _, ckpt in loaded])
