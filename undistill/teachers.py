"""What a run queries: the frozen model(s) a method's option names (--teacher, --adversary, --from), loaded as the
black boxes their checkpoints describe (a release answers with its released outputs); several --teacher answer as
one, the mean of their logits (SCM's ensemble). Or a black-box API that answers for the teacher (--teacher-api,
teacher_api.py)."""
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from . import UserError, checkpoint, datasets, models, teacher_api
from .methods import Method
from .options import Option


@dataclass
class Queried:
    """The frozen model(s) one option names: their paths, the model that answers for them, their checkpoints."""
    option: Option
    paths: list[Path]
    model: nn.Module
    checkpoints: list[dict[str, Any]]
    api: str | None = None  # --teacher-api's MODULE:FUNCTION, where an API answers instead of checkpoints
    api_output: str = "logits"

    @property
    def released(self) -> bool:
        """Its answers are a release's, not full logits (an API's probabilities or labels are)."""
        return any(c.get("release") for c in self.checkpoints) or self.api_output != "logits"

    @property
    def name(self) -> str:
        return f"--teacher-api {self.api}" if self.api else str(self.paths[0])

    def check_compatible(self, info) -> None:
        for path, ckpt in zip(self.paths, self.checkpoints):
            checkpoint.check_compatible(ckpt, info, f"{self.option.flag_name} {path}")

    def settings(self) -> dict[str, Any]:
        """How the run names them in its settings: the path, or for several the paths and the ensemble's size."""
        if self.api:
            return {self.option.name: f"api:{self.api}", "api_output": self.api_output}
        paths = [str(p) for p in self.paths]
        if len(paths) == 1:
            return {self.option.name: paths[0]}
        return {self.option.name: paths, "ensemble": len(paths)}


def load(method: Method, args) -> Queried | None:
    """The frozen model(s) the method's `queries` option names, on the CPU, or None for a method that queries none."""
    if method.queries is None:
        if getattr(args, "teacher_api", None):
            raise UserError(f"--{method.kind} {method.name} queries no teacher: drop --teacher-api")
        return None
    option = method.option(method.queries)
    value = getattr(args, option.name, None)
    if getattr(args, "teacher_api", None):
        if value:
            raise UserError(f"give {option.flag_name} or --teacher-api, not both")
        return api(method, option, args)
    if not value:
        raise UserError(f"--{method.kind} {method.name} needs {option.flag_name} CKPT ({option.help})")
    paths = [Path(p) for p in (value if isinstance(value, list) else [value])]
    loaded = [checkpoint.load_classifier(p) for p in paths]
    for path, (_, ckpt) in zip(paths, loaded):
        if method.access == "white-box" and ckpt["arch"] in checkpoint.BLACK_BOX:
            raise UserError(f"--{method.kind} {method.name} is white-box (it reads the teacher's internals), but "
                            f"{path} is an imported {checkpoint.BLACK_BOX[ckpt['arch']]}, a black box: choose a "
                            "black-box attack")
    members = [model for model, _ in loaded]
    return Queried(option, paths, members[0] if len(members) == 1 else models.Ensemble(members),
                   [ckpt for _, ckpt in loaded])


def api(method: Method, option: Option, args) -> Queried:
    """--teacher-api as the queried teacher, refused by the attacks that read more than its answers."""
    if method.access == "white-box":
        raise UserError(f"--{method.kind} {method.name} is white-box (it reads the teacher's gradients and "
                        "internals), but --teacher-api answers only queries: choose a black-box attack")
    cache = args.api_cache or (args.output or Path("runs")) / "api-cache"
    model = teacher_api.ApiTeacher(teacher_api.load_function(args.teacher_api), args.teacher_api, args.api_output,
                                   cache, datasets.record(args.dataset, args.data_dir,
                                                          **datasets.folder_options(args)).num_classes)
    return Queried(option, [], model, [], args.teacher_api, args.api_output)
