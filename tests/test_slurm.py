"""A real SLURM cluster (`.ci/slurm_cluster.sh` starts a one-node one on this machine): a recipe's stages run as
submitit arrays, one student's job is preempted mid-run (USR2, as SLURM warns before a preemption), submitit
requeues it and it resumes, and the table equals the one the same recipe writes when run here. Skipped when no
SLURM answers."""
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT

RECIPE = ROOT / "recipes" / "nasty_teacher" / "table1.sh"
USR2 = 1 << (int(signal.SIGUSR2) - 1)  # its bit in /proc/<pid>/status SigCgt: the signals a process catches
SUBMITTED = re.compile(r"^submitted job (\S+): (\S+)  log (\S+)$", re.M)


def no_slurm():
    """Why SLURM cannot run jobs here, or None."""
    if importlib.util.find_spec("submitit") is None:
        return "--slurm is optional and submitit is not installed here (pip install submitit)"
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no SLURM here (sinfo, sbatch): bash .ci/slurm_cluster.sh starts a one-node cluster"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo does not answer within 30 s"
    if proc.returncode != 0:
        return f"sinfo fails: {proc.stderr.strip()}"
    if not {"idle", "mixed", "allocated"} & set(proc.stdout.split()):
        return f"no SLURM node is up (sinfo: {' '.join(proc.stdout.split()) or 'no node'})"
    return None


NO_SLURM = no_slurm()
pytestmark = pytest.mark.skipif(NO_SLURM is not None, reason=str(NO_SLURM))


def start(out, log, **env):
    env = dict(os.environ, SMOKE="1", SEEDS="0,1", DEVICE="cpu", PYTHONPATH=str(ROOT),
               OMP_NUM_THREADS="1", **env)  # one thread here and in every job: the same arithmetic
    with open(log, "w") as f:
        return subprocess.Popen(["bash", str(RECIPE), str(out)], cwd=ROOT, env=env, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)


def catches_usr2(job_id):
    """Whether the job's task has submitit's USR2 handler, which checkpoints and requeues (SLURM runs the job on
    this machine: its processes are ours to read)."""
    raw = subprocess.run(["squeue", "-h", "-j", job_id, "-t", "RUNNING", "-o", "%A"], capture_output=True,
                         text=True).stdout.strip()
    if not raw:
        return False
    # the processes of step 0, the task srun started (the batch step's srun catches USR2 to pass it on)
    listed = subprocess.run(["scontrol", "listpids", f"{raw}.0"], capture_output=True, text=True).stdout.split()
    for pid in filter(str.isdigit, listed[5::5]):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:  # the process has gone
            continue
        caught = int(re.search(r"^SigCgt:\s*(\w+)", status, re.M).group(1), 16)
        if caught & USR2:
            return True
    return False


def preempt_a_student(log, proc, deadline):
    """Send USR2 to one student's job while it runs its task (SLURM's warning before a preemption,
    --signal=USR2@120); returns the job's id and log once its task has caught the signal."""
    while time.time() < deadline and proc.poll() is None:
        for job_id, run_dir, job_log in SUBMITTED.findall(log.read_text()):
            # a ResNet student: the slowest, so still running once the check has seen it
            if "/students/resnet" in run_dir and catches_usr2(job_id):
                # scancel's answer does not tell: it signals the task, then retries for a minute when the job
                # is already being requeued ("try again later"); the task's log does
                try:
                    subprocess.run(["scancel", "--signal=USR2", job_id], capture_output=True, timeout=5)
                except subprocess.TimeoutExpired:
                    pass
                for _ in range(100):
                    if "Caught signal SIGUSR2" in Path(job_log).read_text():
                        return job_id, job_log
                    time.sleep(0.1)
        time.sleep(0.1)
    pytest.fail(f"no student's job caught the signal:\n{log.read_text()[-3000:]}")


def scontrol(job_id):
    return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout


def start_requeued_now(job_id, deadline):
    """SLURM holds a requeued batch job for two minutes before it may start again (its EligibleTime): waived here,
    where nothing else waits for the node."""
    while time.time() < deadline:
        if re.search(r"\bJobState=PENDING\b", scontrol(job_id)):
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)
            return
        time.sleep(0.2)


def finished(job_id, deadline):
    """The job's record once SLURM has ended it (its result file is written, and the recipe goes on, a moment
    before SLURM leaves RUNNING and COMPLETING)."""
    while re.search(r"\bJobState=(RUNNING|COMPLETING)\b", shown := scontrol(job_id)) and time.time() < deadline:
        time.sleep(0.2)
    return shown


@pytest.mark.timeout(3600)
def test_a_recipe_on_slurm_with_a_preempted_job_writes_the_table_of_a_local_run(tmp_path):
    local = tmp_path / "local"
    done = start(local, tmp_path / "local.log", LAUNCH="local").wait(timeout=1800)
    assert done == 0, (tmp_path / "local.log").read_text()[-3000:]

    out, log = tmp_path / "slurm", tmp_path / "slurm.log"
    proc = start(out, log, LAUNCH="slurm", SLURM_OPTIONS="--gpus-per-node 1 --cpus-per-task 1 --time 10")
    try:
        job_id, job_log = preempt_a_student(log, proc, time.time() + 1800)
        start_requeued_now(job_id, time.time() + 60)
        assert proc.wait(timeout=1800) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:  # the recipe and the jobs it submitted
            os.killpg(proc.pid, signal.SIGKILL)
            subprocess.run(["scancel", "--name", f"recipe-{out.name}"])
    # three stages, each one array of its cells x seeds: 2 CE teachers, 2 nasty ones, 32 students
    submitted = SUBMITTED.findall(log.read_text())
    arrays = {}
    for array_job, *_ in submitted:
        arrays.setdefault(array_job.split("_")[0], []).append(array_job)
    assert [len(a) for a in arrays.values()] == [2, 2, 32], submitted

    # requeued by SLURM (its restart count) and run again with --resume (submitit's checkpoint(): from the run's
    # checkpoint.pt when the signal came after the epoch, else from the start)
    shown = finished(job_id, time.time() + 60)
    assert re.search(r"\bRestarts=1\b", shown) and re.search(r"\bJobState=COMPLETED\b", shown), shown
    text = open(job_log).read()
    assert "Requeued job" in text and re.search(r"resuming \S+ after epoch 1|holds no checkpoint.pt", text), text
    assert (out / "table1.md").read_text() == (local / "table1.md").read_text()
