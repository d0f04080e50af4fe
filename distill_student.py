"""Train a student, from the labels alone or by distilling released teachers: `python distill_student.py --help`.

The code is undistill/distill_student.py (also `undistill distill` once installed); this file keeps the command
and torchrun's `torchrun ... distill_student.py` working from the repository.
"""
from undistill.distill_student import cli, main, parse_args  # noqa: F401 (callers import main and parse_args from here)

if __name__ == "__main__":
    cli()
