import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Tiny, fast settings for end-to-end runs on the built-in data: 200 training images, one worker-free loader.
TINY = ["--dataset", "mnist5k", "--arch", "cnn", "--subset", "20", "--batch-size", "50", "--workers", "0",
        "--quiet", "--log-every", "2"]


def run_script(*argv, nproc=None, check=True):
    """Run an entry script as a user would (python, or torchrun with gloo), from the repository root."""
    cmd = [sys.executable, *argv] if nproc is None else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *argv]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def ce_teacher(tmp_path_factory):
    """A CE teacher trained for one short epoch, shared by the tests that need a checkpoint."""
    import train_teacher
    out = tmp_path_factory.mktemp("runs") / "teacher-ce"
    train_teacher.main(train_teacher.parse_args([*TINY, "--epochs", "1", "--output", str(out)]))
    return out / "checkpoint.pt"
