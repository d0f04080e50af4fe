"""Options: declared once with their type, range and default, added to the command line, and resolved per run.

A method (methods/core.py) declares its settings as `Option`s. Methods of one kind share a flag when they share
a setting name (`--tau` is kd's, htc's and dkd's), so every method option is unset (None) on the command line
until `resolve` gives it a value: the one given, else the method's per-dataset value (the papers'), else the
option's default. `resolve` also fills the optimization options from the dataset record's schedule and checks
every value, before anything is written.
"""
import argparse
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from . import UserError, backends


@dataclass(frozen=True)
class Option:
    """One setting of a method: `name` is the keyword its loss, task or release takes, and `--name-with-dashes`
    (or `cli`) on the command line. `default` is its value where neither the command line nor the method's values
    for the dataset set it; `range` an interval such as "[0, 1]" or "(0, inf)"; `parse` turns the given text into
    the value (checked at resolution, so a bad value is one `error:` line); `flag` a switch; `many` one or more."""
    name: str
    help: str
    type: Callable = float
    default: Any = None
    range: str | None = None
    choices: tuple | None = None
    parse: Callable | None = None
    flag: bool = False
    many: bool = False
    cli: str | None = None

    @property
    def flag_name(self):
        return self.cli or "--" + self.name.replace("_", "-")

    def argparse_kwargs(self):
        """How argparse reads it: unset (None) unless given, so that resolution can tell the two apart."""
        if self.flag:
            return dict(action="store_true", default=None)
        kwargs = dict(type=self.type, default=None, choices=self.choices)
        return dict(kwargs, nargs="+", action="extend") if self.many else kwargs

    def check(self, value: Any, owner: str, strict: bool = False) -> Any:
        """The value, parsed and checked against the option's range; `owner` names the method in messages.
        `strict`: a value read from a file rather than the command line, so its type and choices are checked too."""
        if value is None:
            return None
        if strict:
            kinds = (bool,) if self.flag else (int, float) if self.type is float else (self.type,)
            if not isinstance(value, kinds) or (isinstance(value, bool) and not self.flag) or (
                    self.choices is not None and value not in self.choices):
                raise UserError(f"{owner}: {self.flag_name} {value!r} is not "
                                + (f"one of {', '.join(map(str, self.choices))}" if self.choices else
                                   f"a {'switch' if self.flag else self.type.__name__}"))
        if self.parse is not None and isinstance(value, str):
            value = self.parse(value)
        if self.range is not None:
            check_range(self.flag_name, value, self.range, owner)
        return value


def check_range(flag: str, value: Any, interval: str, owner: str = "") -> None:
    """Refuse a number outside `interval` ("[0, 1]", "(0, inf)", ...) with a one-line error naming the option."""
    low, high = (float(v) for v in interval[1:-1].split(","))
    number = isinstance(value, (int, float)) and math.isfinite(value)
    if not (number and (low < value if interval[0] == "(" else low <= value)
            and (value < high if interval[-1] == ")" else value <= high)):
        raise UserError(f"{flag} {value} is outside {interval}{f' for {owner}' if owner else ''}")


def add_method_arguments(parser: argparse.ArgumentParser, methods: Iterable, title: str) -> None:
    """One command-line option per setting name among `methods`, its help naming which methods use it."""
    uses = {}
    for method in methods:
        for option in method.options:
            uses.setdefault(option.name, []).append((method.name, option))
    group = parser.add_argument_group(title)
    for name, pairs in uses.items():
        option = pairs[0][1]
        helps = [f"{m}: {o.help}" + (f" (default {o.default})" if o.default is not None and not o.flag else "")
                 for m, o in pairs]
        group.add_argument(option.flag_name, dest=name, help="; ".join(helps), **option.argparse_kwargs())


# The optimization options: each a range, and what an unset one takes.
RANGES = {"epochs": "[1, inf)", "batch_size": "[1, inf)", "lr": "(0, inf)", "momentum": "[0, 1)",
          "wd": "[0, inf)", "gamma": "(0, inf)", "warmup_epochs": "[0, inf)", "grad_clip": "[0, inf)",
          "workers": "[0, inf)", "log_every": "[1, inf)",
          "max_steps": "[0, inf)"}


def resolve(args: argparse.Namespace, method, record, released: bool = False
            ) -> tuple[argparse.Namespace, dict[str, Any]]:
    """This run's options, as a new namespace (`args` is left as it was), and the method's settings (a dict).

    Every option given on the command line keeps its value. An unset method setting takes the method's value for
    the dataset (`Method.defaults`: the papers' settings, which may also set the student's schedule), else the
    option's default. An unset optimization option takes the method's value, else the dataset's schedule (Adam
    1e-3 without decay for the plain CNN, as in the papers).
    """
    given = vars(args)
    config = argparse.Namespace(**given)
    paper = method.defaults(record.name, released)

    def pick(name, fallback):
        value = given.get(name)
        value = paper.get(name) if value is None else value
        return fallback if value is None else value

    config.arch = pick("arch", record.arch)
    config.opt = pick("opt", "adam" if config.arch == "cnn" else "sgd")
    adam, schedule = config.opt == "adam", record.schedule
    config.epochs = pick("epochs", schedule.epochs)
    config.milestones = parse_milestones(pick("milestones", "" if adam else schedule.milestones))
    config.gamma = pick("gamma", schedule.gamma)
    config.wd = pick("wd", 0.0 if adam else schedule.wd)
    config.lr = pick("lr", 1e-3 if adam else 0.1)
    config.batch_size = pick("batch_size", 128)
    if given.get("scale_lr"):
        config.lr *= config.batch_size / paper.get("batch_size", 128)
    for name, interval in RANGES.items():
        check_range("--" + name.replace("_", "-"), getattr(config, name), interval)
    config.precision = backends.resolve_precision(config)  # DeepSpeed's or Accelerate's config may decide it

    settings = {}
    for option in method.options:
        value = pick(option.name, option.default)
        settings[option.name] = option.check(value, f"--{method.kind} {method.name}")
        setattr(config, option.name, settings[option.name])
    return config, settings


def refuse_foreign(args: argparse.Namespace, method) -> None:
    """Refuse a setting given on the command line that belongs to other methods of the kind, not to `method`."""
    own = {o.name for o in method.options}
    for other in method.siblings():
        for option in other.options:
            if option.name not in own and vars(args).get(option.name) is not None:
                users = [m.name for m in method.siblings() if option.name in {o.name for o in m.options}]
                raise UserError(f"{option.flag_name} is not an option of --{method.kind} {method.name} (it is one of "
                                f"{', '.join(users)})")


def parse_milestones(text: str | list[int]) -> list[int]:
    """'80,120' (or a list) -> [80, 120]: the epochs where the lr is multiplied by --gamma."""
    if isinstance(text, (list, tuple)):
        return list(text)
    try:
        milestones = [int(m) for m in str(text).split(",") if m.strip()]
    except ValueError:
        raise UserError(f"--milestones {text!r}: give comma-separated epochs such as 80,120 ('' for none)") from None
    if any(m < 0 for m in milestones):
        raise UserError(f"--milestones {text!r}: epochs are >= 0")
    return milestones


def parse_seeds(text: str, flag: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]: the seeds of several runs, each once; `flag` names where they were given."""
    try:
        seeds = [int(s) for s in str(text).split(",")]
    except ValueError:
        raise UserError(f"{flag} {text!r}: give comma-separated integers such as 0,1,2") from None
    if len(set(seeds)) != len(seeds):
        raise UserError(f"{flag} {text}: a seed appears twice")
    return seeds
