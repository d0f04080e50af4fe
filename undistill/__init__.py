"""undistill: train teachers that resist knowledge-distillation stealing, and attack them."""
import importlib


class UserError(Exception):
    """A problem with the user's input (paths, options, checkpoints): reported as one line, exit code 2."""


def require(module, package, needed_by, install=None):
    """An optional package, imported where it is used: a machine without it runs everything else, and what needs
    it stops with one line naming the pip package (`install`: what to pip install, default the package)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise UserError(f"{needed_by} needs {package}, which is not installed here ({e}): pip install "
                        f"{install or package}") from None
