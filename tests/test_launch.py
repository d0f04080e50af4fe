"""SLURM launches through submitit: the LocalExecutor path with gloo DDP, the sbatch files written for a cluster
(fake sbatch and srun on PATH), validation before submitting, and requeue with --resume after a preemption."""
import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

import train_teacher
from conftest import ROOT, TINY, run_script
from undistill import launch

DelayedSubmission = pytest.importorskip("submitit.helpers", reason="--slurm is optional and submitit is not "
                                        "installed here (pip install submitit)").DelayedSubmission

JOB_ID = "12345"


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """`sbatch` that keeps a copy of the file it was given (and the PYTHONPATH the job would get) and answers like
    SLURM; `srun` only needs to exist. Returns the copy's path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    copy = tmp_path / "sbatch.sh"
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {copy}\necho "$PYTHONPATH" > {copy}.pythonpath\n'
                                    f'echo "Submitted batch job {JOB_ID}"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return copy


def directives(sbatch_file):
    return {line for line in sbatch_file.read_text().splitlines() if line.startswith("#SBATCH")}


def submitted(job_dir, job_id):
    """The callable a job will run, as submitit pickled it."""
    return DelayedSubmission.load(job_dir / f"{job_id}_submitted.pkl").function


def strip_timing(run_dir):
    return [{k: v for k, v in json.loads(line).items() if k not in ("images_per_s", "time_s")}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_slurm_local_trains_with_two_gloo_tasks(tmp_path):
    out = tmp_path / "run"
    proc = run_script("train_teacher.py", *TINY, "--epochs", "1", "--device", "cpu", "--output", str(out),
                      "--slurm-local", "--gpus-per-node", "2")
    job_id = proc.stdout.split()[2].rstrip(":")
    assert proc.stdout.splitlines() == [f"submitted job {job_id}: {out}  log {out}/slurm/{job_id}_0_log.out",
                                        f"job {job_id} done -> {out}"]
    assert {p.name for p in out.iterdir()} >= {"checkpoint.pt", "best.pt", "summary.json", "metrics.jsonl", "slurm"}
    summary = json.loads((out / "summary.json").read_text())
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert (summary["role"], summary["method"], summary["arch"], summary["epochs"]) == ("teacher", "ce", "cnn", 1)
    assert summary["last_acc"] == metrics[-1]["test_acc"] and len(metrics) == 1
    assert summary["args"]["gpus_per_node"] == 2 and summary["args"]["slurm_local"] is True
    # two ranks of one process group: only rank 0 reports; a task that missed the environment would train alone
    rank0, rank1 = ((out / "slurm" / f"{job_id}_{rank}_log.out").read_text() for rank in (0, 1))
    assert "epoch 1/1" in rank0 and "done:" in rank0 and "epoch" not in rank1
    assert "global_rank=1(2)" in rank1


def test_sbatch_file_for_two_nodes_of_eight_gpus(tmp_path, fake_slurm):
    out = tmp_path / "cmim"
    proc = run_script("train_teacher.py", *TINY, "--defense", "cmim", "--output", str(out), "--slurm",
                      "--nodes", "2", "--gpus-per-node", "8", "--partition", "p", "--account", "a", "--qos", "q",
                      "--time", "60", "--sbatch", "constraint=a100", "--sbatch", "exclusive")
    assert proc.stdout == f"submitted job {JOB_ID}: {out}  log {out}/slurm/{JOB_ID}_0_log.out\n"
    assert directives(fake_slurm) >= {
        "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8", "#SBATCH --cpus-per-task=8",
        "#SBATCH --partition=p", "#SBATCH --account=a", "#SBATCH --qos=q", "#SBATCH --time=60",
        "#SBATCH --signal=USR2@120", "#SBATCH --constraint=a100", "#SBATCH --exclusive",
        "#SBATCH --job-name=teacher-cmim-cnn"}
    assert not any(line.startswith("#SBATCH --array") for line in directives(fake_slurm))
    assert "srun" in fake_slurm.read_text() and "-m submitit.core._submit" in fake_slurm.read_text()
    assert Path(fake_slurm.with_suffix(".sh.pythonpath").read_text().split(os.pathsep)[0]) == ROOT
    job = submitted(out / "slurm", JOB_ID)
    assert (job.args.output, job.args.defense, job.args.resume) == (out, "cmim", False)
    assert not (out / "checkpoint.pt").exists()  # submitted, not run


def test_array_over_seeds_for_the_student_script(tmp_path, fake_slurm):
    out = tmp_path / "ls"
    proc = run_script("distill_student.py", *TINY, "--attack", "ls", "--output", str(out), "--slurm",
                      "--array-seeds", "0,1", "--array-parallelism", "1")
    assert proc.stdout.splitlines() == [
        f"submitted job {JOB_ID}_{i}: {out}/s{i}  log {out}/slurm/{JOB_ID}_{i}_0_log.out" for i in (0, 1)]
    assert {"#SBATCH --array=0-1%1", "#SBATCH --job-name=student-ls-cnn", "#SBATCH --ntasks-per-node=1",
            "#SBATCH --gpus-per-node=1"} <= directives(fake_slurm)
    for i in (0, 1):
        job = submitted(out / "slurm", f"{JOB_ID}_{i}")
        assert (job.args.seed, job.args.output, job.args.attack) == (i, out / f"s{i}", "ls")


@pytest.mark.parametrize("argv, message", [
    (["--slurm"], "--resume"),  # the run directory already holds a run
    (["--slurm", "--array-seeds", "0,x"], "comma-separated integers"),
    (["--slurm-local", "--nodes", "2"], "--nodes 1"),
    (["--array-seeds", "0,1"], "needs --slurm"),
])
def test_bad_launches_exit_2_before_submitting(tmp_path, fake_slurm, argv, message):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"")
    proc = run_script("train_teacher.py", *TINY, "--output", str(out), *argv, check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not fake_slurm.exists() and not (out / "slurm").exists()


def test_checkpoint_resubmits_the_run_with_resume():
    args = train_teacher.parse_args([*TINY, "--output", "x", "--overwrite", "--slurm"])
    job = launch.ScriptJob(train_teacher.main, args, ["train_teacher.py"])
    again = job.checkpoint()
    assert isinstance(again, DelayedSubmission) and isinstance(again.function, launch.ScriptJob)
    assert (again.function.args.resume, again.function.args.overwrite) == (True, False)
    assert again.function.args.output == Path("x") and again.function.main is train_teacher.main
    assert (job.args.resume, job.args.overwrite) == (False, True)  # the running job's own args are untouched


def task_pids(controller_pid):
    """The processes the local controller started (its children), as SLURM's signal would reach the tasks."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process has gone
            continue
        if int(fields[1]) == controller_pid:
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the job's task through /proc")
def test_preempted_job_is_requeued_and_resumes_exactly(tmp_path, monkeypatch):
    argv = [*TINY, "--subset", "100", "--epochs", "4", "--opt", "sgd", "--lr", "0.05", "--milestones", "2"]
    run_script("train_teacher.py", *argv, "--output", str(tmp_path / "full"))
    out = tmp_path / "preempted"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as run_script: the same arithmetic as the uninterrupted run
    [(job, _)] = launch.submit(train_teacher.main, train_teacher.parse_args([*argv, "--output", str(out),
                                                                             "--slurm-local"]))
    deadline = time.time() + 300
    while not (out / "checkpoint.pt").exists():  # epoch 1 is on disk (written last, renamed into place)
        assert time.time() < deadline and job.state == "RUNNING", job.stderr()
        time.sleep(0.05)
    [task] = task_pids(int(job.job_id))
    os.kill(task, signal.SIGUSR2)  # SLURM's warning before a preemption (--signal=USR2@120)
    job.results()
    log = job.paths.stdout.read_text()
    assert "Requeued job" in log and f"resuming {out} after epoch" in log, log
    assert submitted(out / "slurm", job.job_id).args.resume is True  # what checkpoint() handed to the requeue
    full, preempted = (torch.load(d / "checkpoint.pt", weights_only=True) for d in (tmp_path / "full", out))
    assert preempted["epoch"] == 4
    for key in full["state_dict"]:
        assert torch.equal(full["state_dict"][key], preempted["state_dict"][key]), key
    assert strip_timing(out) == strip_timing(tmp_path / "full")


@pytest.mark.slow
def test_an_audit_submits_its_cells_as_one_array(ce_teacher, tmp_path, fake_slurm, capsys):
    from undistill import audit
    out = tmp_path / "audit"
    audit.main(audit.parse_args([str(ce_teacher), "--attacks", "dkd", "--seeds", "0", "--slurm", "--output",
                                 str(out)]))
    assert "#SBATCH --array=0-2%3" in directives(fake_slurm) and "#SBATCH --job-name=audit-mnist5k" in directives(
        fake_slurm)
    jobs = [submitted(out / "slurm", f"{JOB_ID}_{i}") for i in range(3)]
    assert [(j.args.attack, j.args.output) for j in jobs] == [
        ("ls", out / "baselines/cnn/ls/s0"), ("scratch", out / "baselines/cnn/scratch/s0"),
        ("dkd", out / "full/cnn/dkd/s0")]
    assert jobs[2].args.teacher == [ce_teacher] and jobs[2].argv[:3] == ["distill_student.py", "--attack", "dkd"]
    assert "the same command writes the report" in capsys.readouterr().out and not (out / "report.md").exists()
