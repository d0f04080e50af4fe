"""The registry of methods: every teacher defense and student attack, one `Method` definition each (core.py).

    methods.get("attack", "kd")         the definition
    methods.chosen(args, "attack")      the one a command line chose (its options checked)
    methods.names("defense")            the registered names, in registration order
    methods.register(Method(...))       add one (checked at once: see core.register)
    methods.release_transform(entry, K) the transform a released checkpoint's `release` entry names

The modules below register the project's methods when this package is imported.
"""
import argparse

from . import attacks, datafree, defenses  # noqa: F401  (each registers its methods)
from ..options import add_method_arguments, refuse_foreign
from .core import KINDS, REGISTRY, Method, Run, Step, Task, get, register, release_transform

__all__ = ["Method", "Run", "Step", "Task", "get", "chosen", "names", "register", "add_arguments",
           "release_transform", "KINDS"]


def names(kind: str) -> list[str]:
    return list(REGISTRY[kind])


def chosen(args: argparse.Namespace, kind: str) -> Method:
    """The method the command line chose of the kind (--defense / --attack), once no option of another method of
    the kind was given to it."""
    method = get(kind, getattr(args, kind))
    refuse_foreign(args, method)
    return method


def add_arguments(parser: argparse.ArgumentParser, kind: str) -> None:
    """The kind's method choice (--defense / --attack) and every option of its methods."""
    parser.add_argument(f"--{kind}", default="ce" if kind == "defense" else "scratch", choices=names(kind),
                        help="; ".join(f"{m.name}: {m.summary}" for m in REGISTRY[kind].values()))
    add_method_arguments(parser, REGISTRY[kind].values(),
                         f"{kind} settings (unset ones take the papers' values for the method and --dataset)")
