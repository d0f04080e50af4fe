"""What a method is, and the contract between a method and the training loop.

A method (a teacher defense or a student attack: its `kind`) is one `Method`: its loss, its options with their
per-dataset defaults, the option naming the frozen model it queries, what it may read of that model (`access`), and
the `Task` that runs it: which models it holds frozen, what else trains beside the model (with its optimizer), where
each epoch's batches come from, and what one step's loss and loss terms are. A release of a trained teacher is a
method too, its definition carrying the logit transform. `methods.register` checks a definition once, at import.

The loop (engine.fit) sees only the `Task` protocol below: no method names, no attribute probing.
"""
import functools
import inspect
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import UserError
from ..options import Option

KINDS = {"defense": "teacher", "attack": "student"}  # a method's kind, and the role of the model it trains


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
class Run:
    """What a task is built from: the method, the loaded data (datasets.DataInfo), the process context
    (distributed.Context), the resolved options and the frozen model it queries (teachers.Queried, or None)."""
    method: "Method"
    info: Any
    ctx: Any
    config: Any
    queried: Any = None

    @property
    def batch_per_rank(self) -> int:
        return self.ctx.per_rank(self.config.batch_size)


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
        self.frozen = [run.queried.model] if run.queried is not None else []

    def reference(self, x):
        return query(self.frozen[0], x) if self.frozen else None

    def epoch(self, model, epoch, split):
        return len(split), split.epoch(epoch)

    def step(self, model, x, y, epoch):
        outputs, ref = model(x), self.reference(x)
        with full_precision(outputs):
            loss, terms = self.loss(outputs.float(), y, ref, epoch)
        return Step(loss, terms, outputs[0] if self.heads else outputs, y)


@dataclass(frozen=True)
class Method:
    """One defense or attack (`kind`). `loss`, `task` (a Task class, built as task(run, bound loss, **settings))
    and `release` take their settings as keyword-only arguments, each one an `Option` of `options`; `register`
    checks that.

    A data-free task (one that makes its own images: DAFL's generator, DeepInversion's inversion) takes the
    student's loss on the teacher's answers to them, `loss(logits, teacher_logits, **settings)`.

    `queries` names the option whose checkpoint(s) the method queries (frozen). `release` (defenses only) makes it
    a release of a trained teacher instead of a training: the logit transform `release(z, **settings)` every
    answer of the released model goes through; `decode(answers, **settings)` is how an attacker who knows the
    release reads them (the adaptive attack). `heads` gives the trained network auxiliary heads. `per_dataset`
    holds the papers' values of unset options per dataset name (they may set the student's schedule too: epochs,
    lr, ...), `for_released` the values that replace them when the queried teacher is a release. `search` is the
    grid of settings an attacker searches (option -> values, as its paper did), one chosen per seed on a
    validation split (the audit, the recipes). `smoke` is what a tiny run of it adds to its command line (the
    recipes' smoke mode, the GPU check)."""
    name: str
    kind: str
    summary: str
    paper: str = ""
    options: tuple[Option, ...] = ()
    loss: Callable | None = None
    task: type = Supervised
    queries: str | None = None
    access: str = "black-box"
    heads: str | None = None
    release: Callable | None = None
    decode: Callable | None = None
    per_dataset: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    for_released: Mapping[str, Any] = field(default_factory=dict)
    search: Mapping[str, tuple] = field(default_factory=dict)
    smoke: tuple[str, ...] = ()

    @property
    def data_free(self) -> bool:
        return not self.task.uses_training_split

    @property
    def role(self) -> str:
        """The role of the model it trains: teacher or student (a checkpoint's `role`)."""
        return KINDS[self.kind]

    def option(self, name: str) -> Option:
        return next(o for o in self.options if o.name == name)

    def siblings(self) -> list["Method"]:
        """Every registered method of the same kind (their options share the command line)."""
        return list(REGISTRY[self.kind].values())

    def defaults(self, dataset: str, released: bool = False) -> dict[str, Any]:
        """The values unset options take on `dataset`: the papers' for it, those for a released teacher over them."""
        return {**self.per_dataset.get(dataset, {}), **(self.for_released if released else {})}

    def default(self, name: str, dataset: str, released: bool = False) -> Any:
        """The value option `name` takes when it is not given: the dataset's, else the option's own default."""
        value = self.defaults(dataset, released).get(name)
        return self.option(name).default if value is None else value

    def bind(self, fn: Callable, settings: Mapping[str, Any]) -> Callable:
        return functools.partial(fn, **{k: settings[k] for k in keyword_settings(fn)})

    def build(self, settings: Mapping[str, Any], run: Run) -> Task:
        """The run's Task, its loss and task given their settings."""
        loss = self.bind(self.loss, settings) if self.loss is not None else None
        return self.bind(self.task, settings)(run, loss)

    def search_runs(self, fixed: Iterable[str] = ()) -> list[tuple[str, tuple[str, ...]]]:
        """Its search as runs: (name, command-line options) per combination of the `search` values, in order, the
        options named in `fixed` left out (a run that sets them itself); [("", ())] when nothing is searched."""
        keys = [k for k in self.search if k not in set(fixed)]
        if not keys:
            return [("", ())]
        return [("-".join(f"{k}{v:g}" for k, v in zip(keys, values)),
                 tuple(part for k, v in zip(keys, values) for part in (self.option(k).flag_name, f"{v:g}")))
                for values in itertools.product(*(self.search[k] for k in keys))]

    def release_entry(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """What a released checkpoint records of its release (`release`): the name and the transform's settings."""
        return {"name": self.name, **{k: settings[k] for k in keyword_settings(self.release)}}


REGISTRY: dict[str, dict[str, Method]] = {kind: {} for kind in KINDS}  # kind -> name -> Method, in order


def register(method: Method) -> Method:
    """Add a method to its kind's registry, once its definition is checked: every keyword-only setting of its
    loss, task and release has an Option, its queried option exists, its per-dataset values name its options (or
    the schedule's), a release is a defense's, and an option it shares with another method of its kind is read the
    same way from the command line. A broken definition fails at import."""
    where = f"{method.kind} {method.name!r}"
    if method.kind not in KINDS:
        raise TypeError(f"{where}: kind must be one of {sorted(KINDS)}")
    if method.name in REGISTRY[method.kind]:
        raise TypeError(f"{where} is already registered")
    if method.access not in ("black-box", "white-box"):
        raise TypeError(f"{where}: access must be black-box or white-box, not {method.access!r}")
    names = {o.name for o in method.options}
    for fn in (method.loss, method.task, method.release, method.decode):
        missing = [s for s in keyword_settings(fn) if s not in names] if fn is not None else []
        if missing:
            raise TypeError(f"{where}: {fn.__name__} takes {', '.join(missing)}, which no Option declares")
    if method.queries is not None and method.queries not in names:
        raise TypeError(f"{where}: queries={method.queries!r} is not one of its options")
    if (method.loss is None) == (method.release is None):
        raise TypeError(f"{where}: give it a loss, or (a release of a trained teacher) a release transform")
    if method.release is not None and (method.kind != "defense" or method.queries is None):
        raise TypeError(f"{where}: a release is a defense that queries the trained teacher it releases")
    if method.decode is not None and method.release is None:
        raise TypeError(f"{where}: only a release decodes its answers")
    for dataset, values in [*method.per_dataset.items(), ("a released teacher", method.for_released),
                            ("its search", method.search)]:
        unknown = sorted(set(values) - names - SCHEDULE)
        if unknown:
            raise TypeError(f"{where}: its values for {dataset} name {', '.join(unknown)}, which is neither one of "
                            "its options nor a schedule option")
    for other in REGISTRY[method.kind].values():
        for mine in method.options:
            for theirs in other.options:
                if mine.name == theirs.name and mine.argparse_kwargs() != theirs.argparse_kwargs():
                    raise TypeError(f"{where}: option {mine.name} is read differently by {other.name}")
    REGISTRY[method.kind][method.name] = method
    return method


# What a method's per-dataset values may set besides its options: the student's schedule (DAFL trains on its own)
SCHEDULE = {"epochs", "batch_size", "opt", "lr", "milestones", "gamma", "wd"}


def get(kind: str, name: str) -> Method:
    if name not in REGISTRY[kind]:
        raise UserError(f"unknown --{kind} {name!r}: choose one of {', '.join(REGISTRY[kind])}")
    return REGISTRY[kind][name]


def release_transform(entry: Mapping[str, Any] | None, num_classes: int, where: str) -> Callable | None:
    """The logit transform a checkpoint's `release` entry names (None: the full logits), once the entry is checked
    as an untrusted file's claim: a registered release, exactly its settings, each of the option's type and in its
    range, and a transform that takes `num_classes` logits (one probe row)."""
    if entry is None:
        return None
    method = REGISTRY["defense"].get(entry.get("name")) if isinstance(entry, Mapping) else None
    if method is None or method.release is None:
        raise UserError(f"{where} names an unknown release {entry!r}: releases are "
                        f"{', '.join(m.name for m in REGISTRY['defense'].values() if m.release)}")
    settings = {k: v for k, v in entry.items() if k != "name"}
    if set(settings) != set(keyword_settings(method.release)):
        raise UserError(f"{where}: its {method.name} release has the settings {sorted(settings)}, not "
                        f"{sorted(keyword_settings(method.release))}: write it again with train_teacher.py")
    for name, value in settings.items():
        method.option(name).check(value, f"{where}'s {method.name} release", strict=True)
    transform = functools.partial(method.release, **settings)
    transform(torch.zeros(1, num_classes))  # a setting that does not fit the classes fails here, with its reason
    return transform


def release_decoder(entry: Mapping[str, Any] | None) -> Callable | None:
    """How an attacker who knows the release a checkpoint's (checked) `release` entry names reads its answers: the
    release's decode with the entry's settings, or None where it has none (the full logits, stingy)."""
    method = REGISTRY["defense"][entry["name"]] if entry else None
    if method is None or method.decode is None:
        return None
    return functools.partial(method.decode, **{k: entry[k] for k in keyword_settings(method.decode)})


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
