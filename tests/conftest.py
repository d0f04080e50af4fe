import atexit
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from argparse import Namespace
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]

# Under pytest-xdist (the default: pyproject.toml), the workers share the machine's cores: each worker's torch and the
# processes its tests start (through the environment) get their share, so that kernels do not spin against each other.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    torch.set_num_threads(_threads)

# xdist (--dist loadscope) hands whole modules to the workers, so that a module's fixtures are built once. The tests
# named here share none with their module and take minutes of one core each (the recipes' smoke runs): each is a
# unit of its own, so that both workers take them instead of one holding them all to the end.
SPREAD = ("test_every_recipe_runs_in_smoke_mode_and_writes_the_papers_table",
          "test_a_killed_recipe_continues_to_the_table_of_an_uninterrupted_one",
          "test_a_proxys_teachers_train_for_seed_0_alone_and_its_students_of_every_seed_read_them",
          "test_the_scm_tool_trains_the_sequence_each_against_the_last_then_the_student_of_all",
          "test_the_multinode_tool_runs_a_script_under_torchrun_on_one_node")
# The longest modules, longest first: the workers take the units in collection order, so that they finish together.
LONGEST_FIRST = ("test_recipes.py", "test_backends.py", "test_audit.py", "test_slurm.py", "test_datafree.py",
                 "test_scripts.py", "test_ffcv.py", "test_launch.py", "test_faults.py", "test_imagenet.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.hookimpl(optionalhook=True)  # xdist's hook: unknown where xdist is not loaded
def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Scheduler(LoadScopeScheduling):
        def _split_scope(self, nodeid):  # xdist's own hook for a unit's scope (requirements.txt pins xdist)
            spread = nodeid.split("::")[-1].split("[")[0] in SPREAD
            return nodeid if spread else super()._split_scope(nodeid)
    return Scheduler(config, log)


# Tiny, fast settings for end-to-end runs on the built-in data: 200 training images, one worker-free loader.
TINY = ["--dataset", "mnist5k", "--arch", "cnn", "--subset", "20", "--batch-size", "50", "--workers", "0",
        "--quiet", "--log-every", "2"]


def script_env():
    """A test command's environment: one thread (the same arithmetic in every run), the repository importable."""
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def run_script(*argv, nproc=None, check=True):
    """Run an entry script as a user would (`python SCRIPT.py ...`, `python -m MODULE ...`, or torchrun with gloo),
    from the repository root. The first two fork from a process that has imported torch (FORKS)."""
    cmd = [sys.executable, *argv] if nproc is None else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *argv]
    if nproc is None and (argv[0] == "-m" or argv[0].endswith(".py")):
        proc = FORKS.run(cmd, timeout=600)
    else:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=script_env(), timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


class Forks:
    """This pytest process's fork servers (tests/forkserver.py): a command forks from one, started with
    run_script's environment, instead of importing torch anew. One server per command running at the same time,
    for the environment of the latest command (a test may set its own): a command in another environment closes
    the idle servers of the one before. PATH is not part of that: the imports never read it, so a test that puts a
    fake sbatch first on it keeps the servers, and its commands get it as the rest of their environment."""

    def __init__(self):
        self.idle, self.key, self.lock = [], None, threading.Lock()
        atexit.register(self.close)

    def run(self, cmd, timeout):
        env = script_env()
        env.pop("PYTEST_CURRENT_TEST", None)  # pytest's name of the running test: not the command's environment
        key = sorted((k, v) for k, v in env.items() if k != "PATH")
        with self.lock:
            if key != self.key:
                self.close()
                self.key = key
            server = self.idle.pop() if self.idle else None
        if server is None:
            server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "forkserver.py")], cwd=ROOT, env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        with tempfile.TemporaryDirectory() as where:
            out, err = Path(where) / "stdout", Path(where) / "stderr"
            server.stdin.write(json.dumps({"argv": cmd[1:], "env": env, "stdout": str(out), "stderr": str(err),
                                           "timeout": timeout}) + "\n")
            server.stdin.flush()
            answer = server.stdout.readline()
            assert answer, f"the fork server ended (exit {server.wait()}) while running {' '.join(cmd)}"
            proc = subprocess.CompletedProcess(cmd, int(answer), out.read_text(), err.read_text())
        with self.lock:
            if key == self.key:
                self.idle.append(server)
            else:  # the environment changed meanwhile
                server.stdin.close()
                server.wait()
        return proc

    def close(self):
        """End the idle servers (at the end of their input)."""
        for server in self.idle:
            server.stdin.close()
            server.wait()
        self.idle = []


FORKS = Forks()


def killed_and_resumed(cmd, out, seed):
    """Start `cmd`, SIGKILL its whole process group at a random moment after the first epoch's checkpoint, then
    run it again with --resume to the end."""
    env = script_env()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while not (out / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(random.Random(seed).uniform(0, 1.0))
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before the kill: give it more epochs"
    killed_at = torch.load(out / "checkpoint.pt", weights_only=True)["epoch"]
    resumed = subprocess.run([*cmd, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return killed_at


@pytest.fixture(scope="session")
def ce_teacher(tmp_path_factory):
    """A CE teacher trained for one short epoch, shared by the tests that need a checkpoint."""
    import train_teacher
    out = tmp_path_factory.mktemp("runs") / "teacher-ce"
    train_teacher.main(train_teacher.parse_args([*TINY, "--epochs", "1", "--output", str(out)]))
    return out / "checkpoint.pt"


# ---- one training step of a method, as a run takes it (for tests that check what a step does)

STATS = ((0.5,) * 3, (0.25,) * 3)


def tiny_classifier(seed, classes=3, size=4):
    """A linear classifier of uint8 images (size x size): small enough to compute its logits by hand."""
    from undistill import models
    torch.manual_seed(seed)
    return models.Classifier(nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, classes)), *STATS)


def build_task(kind, name, settings, frozen=None, classes=3, image_size=4, world_size=1, release=None):
    """The method's Task as distill_student.py / train_teacher.py build it, for mnist5k-like data of `classes`
    classes and `image_size` pixels; `frozen` (a module) stands for the checkpoint its queried option would load,
    a release of `release` (its checkpoint entry) where given."""
    from dataclasses import replace

    from undistill import datasets, methods
    from undistill.distributed import Context
    from undistill.teachers import Queried
    method = methods.get(kind, name)
    if frozen is not None:
        frozen = Queried(method.option(method.queries), ["frozen.pt"], frozen.eval().requires_grad_(False),
                         [{"release": release} if release else {}])
    record = replace(datasets.record("mnist5k"), num_classes=classes, image_size=image_size)
    info = datasets.DataInfo(record, None, None)
    config = Namespace(seed=0, batch_size=8 * world_size, precision="fp32", grad_clip=0.0)
    return method.build(settings, methods.Run(method, info, Context(), config, frozen))


def step_once(task, model, x, y, lr=0.1, epoch=0):
    """One engine.train_step of `model` (SGD, lr) with the task; returns the task's Step."""
    from undistill import backends, engine
    from undistill.distributed import Context
    config = Namespace(precision="fp32", grad_clip=0.0)
    backend = backends.DDP(model, torch.optim.SGD(model.parameters(), lr=lr), config, Context(),
                           task.trained_beside)
    return engine.train_step(backend, task, x, y, epoch, config, Context())
