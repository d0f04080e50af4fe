"""What a method is, and the contract between a method and the training loop.

A method (a teacher defense or a student attack) is one `Method`: its loss, its options with their per-dataset
defaults, the frozen model it queries, what it may read of that model (`access`), and the `Task` that runs it:
which models it holds frozen, what else trains beside the model (with its optimizer), where each epoch's batches
come from, and what one step's loss and loss terms are. `methods.register` checks a definition once, at import.

The loop (engine.fit) sees only the `Task` protocol below: no method names, no attribute probing.
"""
import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import UserError, checkpoint, models
from ..options import Option

ROLES = {"defense": "teacher", "attack": "student"}  # a method's role, and the role of the model it trains


@dataclass
class Step:
    """What one training step produced: the loss to minimize, its terms (each a scalar, logged per epoch), and the
    trained model's final-head logits with the labels its training accuracy is counted against (the data's labels;
    the teacher's own on synthesized images)."""
    loss: torch.Tensor
    terms: dict
    logits: torch.Tensor
    labels: torch.Tensor

    def detached(self):
        return Step(self.loss.detach(), {k: v.detach() for k, v in self.terms.items()}, self.logits.detach(),
                    self.labels)


class Split(Protocol):
    """The training split as the loop hands it to a task: `len()` batches per epoch, each on the device."""

    def __len__(self) -> int: ...

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


class Task(Protocol):
    """How a method trains a model, as the loop (engine.fit) calls it.

    `frozen`: models queried without gradient to their weights; the loop moves them to the device and keeps them
    in eval mode, outside the backend (DDP, DeepSpeed). `trained_beside`: (module, optimizer) pairs that train
    with the model (a generator): the backend steps them with the model's loss. `uses_training_split`: False for a
    data-free method, whose runs never build a loader over the training split."""
    frozen: Sequence[nn.Module] = ()
    trained_beside: Sequence[tuple[nn.Module, torch.optim.Optimizer]] = ()
    uses_training_split: bool = True

    def epoch(self, model: nn.Module, epoch: int, split: Split | None) -> tuple[int, Iterable]:
        """Called before each epoch, under the run's autocast: the epoch's number of steps and its batches
        (x, y), on the device. Any per-epoch work (a pass over the data, synthesizing images) happens here."""

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int) -> Step:
        """One step's loss on the batch, under the run's autocast; `model` is the trained model as the backend
        wraps it. The loop then back-propagates the loss and steps every optimizer."""

    def after_step(self, step: Step) -> None:
        """Called after the optimizer step with the step's detached outputs (CMIM's centroids follow them)."""

    def state_dict(self) -> dict:
        """What the task must keep for an exact resume, saved in checkpoint.pt beside the model (empty: none)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`'s output on --resume."""


@dataclass
class Frozen:
    """The frozen model(s) an option names (--teacher, --adversary, --from), loaded as the released black boxes
    their checkpoints describe; several --teacher answer as one, the mean of their logits."""
    option: Option
    paths: list
    model: nn.Module
    checkpoints: list

    @property
    def released(self):
        return any(c.get("release") for c in self.checkpoints)

    def check_compatible(self, info):
        for path, ckpt in zip(self.paths, self.checkpoints):
            checkpoint.check_compatible(ckpt, info, f"{self.option.flag_name} {path}")

    def settings(self):
        """How the run names them in its settings: the path, or for several the paths and the ensemble's size."""
        paths = [str(p) for p in self.paths]
        if len(paths) == 1:
            return {self.option.name: paths[0]}
        return {self.option.name: paths, "ensemble": len(paths)}


@dataclass
class Run:
    """What a task is built from: the method, the loaded data, the process context, the resolved options and the
    frozen model (or None)."""
    method: "Method"
    info: Any
    ctx: Any
    config: Any
    frozen: Frozen | None = None

    @property
    def batch_per_rank(self):
        return max(1, self.config.batch_size // self.ctx.world_size)


def query(model, x):
    """A frozen model's float logits on x, computed without autograd."""
    with torch.inference_mode():
        logits = model(x).float()
    return logits.clone()  # an inference-mode tensor cannot be saved for backward; its copy can


def full_precision(x):
    """Losses are computed in float32 even inside the run's bf16 autocast."""
    return torch.autocast(x.device.type, enabled=False)


class Supervised(Task):
    """Learns from the training split's batches: the trained model's outputs, what they are compared with on the
    same batch (`reference`: the frozen model's logits, or None), and the method's loss
    `loss(outputs, y, reference, epoch) -> (loss, {term: value})`. With auxiliary heads the outputs are
    (heads, batch, classes), final head first, and the accuracy reads the final head."""

    def __init__(self, run, loss):
        self.loss, self.heads = loss, run.method.heads is not None
        self.frozen = [run.frozen.model] if run.frozen is not None else []

    def reference(self, x):
        return query(self.frozen[0], x) if self.frozen else None

    def epoch(self, model, epoch, split):
        return len(split), split.epoch(epoch)

    def step(self, model, x, y, epoch):
        outputs, ref = model(x), self.reference(x)
        with full_precision(outputs):
            loss, terms = self.loss(outputs.float(), y, ref, epoch)
        return Step(loss, terms, outputs[0] if self.heads else outputs, y)


def default_paper_values(method, record, released):
    """The dataset record's settings for the method, under its name (record.papers)."""
    return record.papers.get(method.name, {})


@dataclass(frozen=True)
class Method:
    """One defense or attack. `loss`, `task` (a Task class, built as task(run, bound loss, **settings)) and
    `release` take their settings as keyword-only arguments, each one an `Option` of `options`; `register`
    checks that. `frozen` names the option whose checkpoint(s) the method queries, `release` (defenses only)
    makes it a release of a trained teacher instead of a training (stingy), `heads` gives the trained network
    auxiliary heads, `defaults(method, record, released)` the per-dataset values of unset options."""
    name: str
    role: str
    summary: str
    paper: str = ""
    options: tuple = ()
    loss: Callable | None = None
    task: type = Supervised
    frozen: str | None = None
    access: str = "black-box"
    heads: str | None = None
    release: Callable | None = None
    defaults: Callable = default_paper_values

    @property
    def data_free(self):
        return not self.task.uses_training_split

    def option(self, name):
        return next(o for o in self.options if o.name == name)

    def siblings(self):
        """Every registered method of the same role (their options share the command line)."""
        return list(REGISTRY[self.role].values())

    def paper_values(self, record, released):
        return self.defaults(self, record, released)

    def bind(self, fn, settings):
        return functools.partial(fn, **{k: settings[k] for k in keyword_settings(fn)})

    def build(self, settings, info, ctx, config, frozen=None):
        """The run's Task, its loss and task given their settings."""
        loss = self.bind(self.loss, settings) if self.loss is not None else None
        return self.bind(self.task, settings)(Run(self, info, ctx, config, frozen), loss)

    def load_frozen(self, args):
        """The frozen model(s) its `frozen` option names, on the CPU, or None for a method that queries none."""
        if self.frozen is None:
            return None
        option = self.option(self.frozen)
        value = getattr(args, option.name, None)
        if not value:
            raise UserError(f"--{self.role} {self.name} needs {option.flag_name} CKPT ({option.help})")
        paths = [Path(p) for p in (value if isinstance(value, list) else [value])]
        loaded = [checkpoint.load_classifier(p) for p in paths]
        members = [model for model, _ in loaded]
        return Frozen(option, paths, members[0] if len(members) == 1 else models.Ensemble(members),
                      [ckpt for _, ckpt in loaded])


REGISTRY = {role: {} for role in ROLES}  # role -> name -> Method, in registration order


def register(method):
    """Add a method to its role's registry, once its definition is checked: every keyword-only setting of its
    loss, task and release has an Option, its frozen option exists, and an option it shares with another method
    of its role is read the same way from the command line. A broken definition fails at import."""
    where = f"{method.role} {method.name!r}"
    if method.role not in ROLES:
        raise TypeError(f"{where}: role must be one of {sorted(ROLES)}")
    if method.name in REGISTRY[method.role]:
        raise TypeError(f"{where} is already registered")
    if method.access not in ("black-box", "white-box"):
        raise TypeError(f"{where}: access must be black-box or white-box, not {method.access!r}")
    names = {o.name for o in method.options}
    for fn in (method.loss, method.task, method.release):
        missing = [s for s in keyword_settings(fn) if s not in names] if fn is not None else []
        if missing:
            raise TypeError(f"{where}: {fn.__name__} takes {', '.join(missing)}, which no Option declares")
    if method.frozen is not None and method.frozen not in names:
        raise TypeError(f"{where}: frozen={method.frozen!r} is not one of its options")
    if (method.loss is None) == (method.release is None):
        raise TypeError(f"{where}: give it a loss, or (a release of a trained teacher) a release function")
    for other in REGISTRY[method.role].values():
        for mine in method.options:
            for theirs in other.options:
                if mine.name == theirs.name and mine.argparse_kwargs() != theirs.argparse_kwargs():
                    raise TypeError(f"{where}: option {mine.name} is read differently by {other.name}")
    REGISTRY[method.role][method.name] = method
    return method


def get(role, name):
    if name not in REGISTRY[role]:
        raise UserError(f"unknown --{role} {name!r}: choose one of {', '.join(REGISTRY[role])}")
    return REGISTRY[role][name]


def keyword_settings(fn):
    """The keyword-only parameters of a loss, task or release: the settings it takes from the options."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    return [p.name for p in inspect.signature(target).parameters.values() if p.kind == p.KEYWORD_ONLY]


def kl(p_logits, q_logits, tau):
    """KL(softmax_tau(p) || softmax_tau(q)), summed over classes and averaged over the batch ("batchmean").

    Gradient reaches both sides. Probabilities (not log-probabilities) are passed as the target so that a
    teacher's -inf logits (stingy) give p = 0 and contribute exactly 0 (PyTorch uses xlogy for p log p).
    """
    return F.kl_div(F.log_softmax(q_logits / tau, dim=1), F.softmax(p_logits / tau, dim=1), reduction="batchmean")


def ce(logits, y, ref=None, epoch=0):
    """Cross entropy: a normal teacher, or a student from the labels alone."""
    loss = F.cross_entropy(logits, y)
    return loss, {"ce": loss}


def ls(logits, y, ref=None, epoch=0, *, smoothing):
    """CE against (1 - eps) one-hot + eps / K uniform (Szegedy et al., 2016)."""
    loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
    return loss, {"ce": loss}


SMOOTHING = Option("smoothing", "label smoothing epsilon", default=0.1, range="[0, 1)")
