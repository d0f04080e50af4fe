"""Train a teacher with a defense against distillation, or release a trained one: `python train_teacher.py --help`.

The code is undistill/train_teacher.py (also `undistill train-teacher` once installed); this file keeps the
command and torchrun's `torchrun ... train_teacher.py` working from the repository.
"""
from undistill.train_teacher import cli, main, parse_args  # noqa: F401 (callers import main and parse_args from here)

if __name__ == "__main__":
    cli()
