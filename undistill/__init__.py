"""undistill: train teachers that resist knowledge-distillation stealing, and attack them."""


class UserError(Exception):
    """A problem with the user's input (paths, options, checkpoints): reported as one line, exit code 2."""
