"""The registry of methods: every teacher defense and student attack, one `Method` definition each (core.py).

    methods.get("attack", "kd")         the definition
    methods.chosen(args, "attack")      the one a command line chose (its options checked)
    methods.names("defense")            the registered names, in registration order
    methods.register(Method(...))       add one (checked at once: see core.register)

The modules below register the project's methods when this package is imported.
"""
from . import attacks, datafree, defenses  # noqa: F401  (each registers its methods)
from ..options import add_method_arguments, refuse_foreign
from .core import REGISTRY, ROLES, Method, Step, Task, get, register

__all__ = ["Method", "Step", "Task", "get", "chosen", "names", "register", "add_arguments", "ROLES"]


def names(role):
    return list(REGISTRY[role])


def chosen(args, role):
    """The method the command line chose for the role (--defense / --attack), once no option of another method
    of the role was given to it."""
    method = get(role, getattr(args, role))
    refuse_foreign(args, method)
    return method


def add_arguments(parser, role):
    """The role's method choice (--defense / --attack) and every option of its methods."""
    parser.add_argument(f"--{role}", default="ce" if role == "defense" else "scratch", choices=names(role),
                        help="; ".join(f"{m.name}: {m.summary}" for m in REGISTRY[role].values()))
    add_method_arguments(parser, REGISTRY[role].values(),
                         f"{role} settings (unset ones take the papers' values for the method and --dataset)")
