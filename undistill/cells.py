"""Many training runs taken to the end, each its own run directory: the cells of an audit or of a recipe.

A cell is an entry script's command line and the run directory it writes. A finished cell (its summary.json, with
the epochs asked for) is skipped and an unfinished one (a checkpoint.pt) continues with --resume, so running the
same cells again after an interruption or a preemption picks up where they stopped. They run here, one after the
other in this process or `jobs` at a time as processes (each under torchrun with `nproc` processes), or as one
SLURM array through submitit.
"""
import importlib
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from . import UserError, launch



# what cells name them -> the package's modules they run as: the two entry scripts, and the importer (a model
# released elsewhere, taken as it is)
ENTRY_SCRIPTS = {"train_teacher.py": "undistill.train_teacher", "distill_student.py": "undistill.distill_student",
                 "undistill.importer": "undistill.importer"}


@dataclass(frozen=True)
class Cell:
    """`argv`: the entry script (train_teacher.py, distill_student.py or undistill.importer) and its options,
    --output `out` included; `epochs`: what a finished run has trained (None: a release or an import, which train
    nothing)."""
    argv: tuple
    out: Path
    epochs: int | None

    def state(self):
        return state(self.out, self.epochs)

    def command(self):
        """The command that takes the cell to its end from where it stands."""
        return [*self.argv, "--resume" if self.state() == "resumable" else "--overwrite"]

    def log(self, root):
        return root / "logs" / f"{self.out.relative_to(root).as_posix().replace('/', '_')}.log"


def state(out, epochs):
    """done, resumable or new: what a run directory holds, for a run of `epochs` (None: a release)."""
    summary = out / "summary.json"
    if summary.is_file():
        try:
            if epochs is None or json.loads(summary.read_text()).get("epochs") == epochs:
                return "done"
        except (OSError, json.JSONDecodeError):
            pass
    return "resumable" if epochs is not None and (out / "checkpoint.pt").is_file() else "new"


def script(name):
    """The entry script's module (ENTRY_SCRIPTS)."""
    return importlib.import_module(ENTRY_SCRIPTS[name])


def execute(command, log, jobs=1, nproc=1, processes=None):
    """Run one entry script to the end as a process (python, or torchrun with `nproc` processes), its output
    appended to `log`; returns the exit code (None where `processes` had already stopped: it did not start)."""
    prefix = [sys.executable] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    threads = max(1, (os.cpu_count() or 1) // (jobs * nproc))
    entry = list(command[:1])
    if command[0] in ENTRY_SCRIPTS:  # the entry script's module: a checkout's or an installed one
        entry = ["-m" if nproc == 1 else "--module", ENTRY_SCRIPTS[command[0]]]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join(filter(None, [str(launch.IMPORTED_FROM), os.environ.get("PYTHONPATH")])))
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"$ {' '.join(command)}\n")
        f.flush()
        proc = (processes or Processes()).start(prefix + entry + list(command[1:]), env=env, stdout=f,
                                                 stderr=subprocess.STDOUT)
        if proc is None:
            return None
        try:
            return proc.wait()
        except BaseException:  # interrupted here: the run stops as it would alone
            proc.terminate()
            proc.wait()
            raise


class Processes:
    """The processes of a run of cells, so that an interrupted run (Ctrl-C, SIGTERM) starts no other cell and stops
    the running ones as SIGTERM stops a run alone: at the step, with its last finished epoch kept."""

    def __init__(self):
        self.lock, self.started, self.stopped = threading.Lock(), [], False

    def start(self, argv, **options):
        with self.lock:  # no process starts once stop() has begun
            if self.stopped:
                return None
            self.started.append(subprocess.Popen(argv, **options))
            return self.started[-1]

    def stop(self):
        with self.lock:
            self.stopped = True
        for proc in self.started:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.started:
            proc.wait()


def take(cell, root, jobs, nproc, processes):
    """One cell to its end, its command decided as it starts, not when it was queued: another process (an earlier
    launch still running, a SLURM array) may have taken it further since, and a stale --overwrite would lose it.
    Returns the exit code and the seconds it ran (None: it had finished already)."""
    if cell.state() == "done":
        return 0, None
    began = time.perf_counter()
    code = execute(cell.command(), cell.log(root), jobs, nproc, processes)
    return code, time.perf_counter() - began


def run(cells, root, desc, jobs=1, nproc=1, here=False, finished=None):
    """Take every unfinished cell to its end. `here`: one after the other in this process, their output shown
    (no process start per cell: what a smoke run of a recipe needs); else as processes, `jobs` at a time, with
    one progress bar and a log per cell under `root`/logs, `finished(cell, seconds)` called as each one that ran
    ends well. A failed cell stops nothing else; the error names the failed cells' logs. Interrupted, the run
    stops its cells and starts no other (Processes)."""
    todo = [c for c in cells if c.state() != "done"]
    if here:
        for i, cell in enumerate(todo):
            command = cell.command()
            print(f"[{i + 1}/{len(todo)}] {' '.join(command)}", flush=True)
            module = script(command[0])
            module.main(module.parse_args(command[1:]))
        return
    failed, processes = [], Processes()
    with tqdm(total=len(todo), desc=desc, unit="cell", dynamic_ncols=True, file=sys.stdout) as bar, \
            ThreadPoolExecutor(jobs) as pool:
        try:
            futures = {pool.submit(take, cell, root, jobs, nproc, processes): cell for cell in todo}
            for future in as_completed(futures):
                cell = futures[future]
                code, seconds = future.result()
                if code != 0:
                    failed.append(cell.log(root))
                elif seconds is not None and finished is not None:
                    finished(cell, seconds)
                bar.set_postfix_str(cell.out.relative_to(root).as_posix())
                bar.update(1)
        except BaseException:  # leaving the pool would otherwise wait for every queued cell to run
            pool.shutdown(wait=False, cancel_futures=True)
            processes.stop()
            raise
    if failed:
        raise UserError(f"{len(failed)} cell(s) failed, the others are kept: see {failed[0]}"
                        f"{' and the other logs there' if len(failed) > 1 else ''}; the same command continues")


def submit(cells, args, name, job_dir, wait=False):
    """The unfinished cells as one SLURM array (the SLURM options of `args`, launch.add_arguments); True when
    they have run (`wait`, or --slurm-local: until the array has ended), False once submitted."""
    elements = []
    for cell in cells:
        if cell.state() != "done":
            command = cell.command()
            module = script(command[0])
            elements.append((module.main, module.parse_args(command[1:]), command, cell.out))
    if not elements:
        return True
    jobs = launch.submit_runs(args, elements, name, job_dir)
    if wait or args.slurm_local:
        launch.wait(jobs)
        return True
    return False
