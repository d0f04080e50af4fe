"""SLURM launches through submitit, for both entry scripts.

`--slurm` submits the run as one SLURM job (one task per GPU; torch.distributed is set up from SLURM's variables),
or with `--array-seeds` one array job, one element per seed. `--slurm-local` runs the same path on this machine
through submitit's LocalExecutor and waits. A preempted or timed-out job gets USR2 `SIGNAL_DELAY_S` before the kill;
submitit then calls `ScriptJob.checkpoint`, requeues the job (`scontrol requeue`) and the run continues with
--resume from its checkpoint.pt, which the engine writes after every epoch.
"""
import copy
import functools
import os
import shutil
import sys
from pathlib import Path

from . import UserError, checkpoint, datasets, distributed, methods, options, require, runs

IMPORTED_FROM = Path(__file__).resolve().parents[1]  # the directory undistill is imported from, for child processes
SIGNAL_DELAY_S = 120  # time between the warning signal and the kill: enough to leave a step and requeue


def add_arguments(parser, array_seeds=True):
    """The SLURM options; `array_seeds=False` for a command that makes its own array (the audit)."""
    g = parser.add_argument_group("SLURM (submitit)")
    where = g.add_mutually_exclusive_group()
    where.add_argument("--slurm", action="store_true", help="submit the run as a SLURM job instead of running it")
    where.add_argument("--slurm-local", action="store_true",
                       help="run the job here through submitit's LocalExecutor and wait (checks the --slurm path)")
    g.add_argument("--partition", help="default: the cluster's")
    g.add_argument("--nodes", type=int, default=1)
    g.add_argument("--gpus-per-node", type=int, default=1, help="one task (process) per GPU; with --device cpu that "
                   "many CPU processes (gloo) and no GPU asked for")
    g.add_argument("--cpus-per-task", type=int, default=8, help="for --workers")
    g.add_argument("--time", type=int, default=1440, help="minutes per job; a timed-out job is requeued and resumes")
    g.add_argument("--account")
    g.add_argument("--qos")
    g.add_argument("--sbatch", action="append", default=[], metavar="KEY[=VALUE]",
                   help="extra #SBATCH directive, repeatable: constraint=volta32gb, mem=0, exclusive")
    g.add_argument("--job-dir", type=Path, help="submitit's logs and pickles (default: <run directory>/slurm, for "
                   "an array the run directories' parent /slurm)")
    if array_seeds:
        g.add_argument("--array-seeds", help="comma-separated seeds: one array job, one element per seed, each in "
                       "its own run directory (<output>/s<seed> with --output)")
    g.add_argument("--array-parallelism", type=int, help="array elements running at once (default: all, up to 256)")


class ScriptJob:
    """What a job runs, pickled by submitit: an entry script's `main(args)`, as `python` or `torchrun` would."""

    def __init__(self, main, args, argv):
        self.main, self.args, self.argv = main, args, argv

    def __call__(self):
        submitit = require("submitit", "submitit", "--slurm")
        sys.argv = self.argv  # the run's command.txt records the submitting command, not submitit's
        if int(os.environ.get("SLURM_RESTART_COUNT", 0)) > 0:  # requeued by SLURM itself (node failure): continue
            self.args.resume, self.args.overwrite = True, False
        if submitit.JobEnvironment().num_tasks > 1:
            # RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT for distributed.init; every task keeps all of
            # its node's GPUs and takes the one at LOCAL_RANK
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        # submitit's own SIGTERM handler stays: it lets the USR2 checkpoint-and-requeue finish
        distributed.run(self.main, self.args, sigterm=False)

    def checkpoint(self):
        """Called by submitit on preemption or timeout: the requeued job continues the run from its checkpoint.pt."""
        args = copy.copy(self.args)
        args.resume, args.overwrite = True, False
        submitit = require("submitit", "submitit", "--slurm")
        return submitit.helpers.DelayedSubmission(ScriptJob(self.main, args, self.argv))


def main(script_main, args):
    """An entry script's `__main__`: run `script_main(args)` here, or submit it with --slurm / --slurm-local."""
    if args.slurm or args.slurm_local or args.array_seeds:
        distributed.run(functools.partial(launch, script_main), args)
    else:
        distributed.run(script_main, args)


def launch(script_main, args):
    jobs = submit(script_main, args)
    if args.slurm_local:  # wait, as a run here would
        wait(jobs)


def wait(jobs):
    utils = require("submitit.core.utils", "submitit", "--slurm")
    for job, out in jobs:
        try:
            job.results()
        except utils.UncompletedJobError:
            raise UserError(f"job {job.job_id} failed: see {job.task(0).paths.stderr}") from None
        print(f"job {job.job_id} done -> {out}", flush=True)


def check(args):
    """What can be checked of a launch before anything is submitted."""
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise UserError("--slurm submits from one process: start it with python, not torchrun")
    if args.nodes < 1 or args.gpus_per_node < 1:
        raise UserError("--nodes and --gpus-per-node must be at least 1")
    if args.slurm_local and args.nodes > 1:
        raise UserError("--slurm-local runs on this machine: --nodes 1")
    if args.slurm and shutil.which("srun") is None:
        raise UserError("--slurm: no srun on PATH (not a SLURM login node?); --slurm-local runs the job here")


def submit(script_main, args):
    """Check what can be checked here, submit, print one line per job; returns [(job, run directory)]."""
    if not (args.slurm or args.slurm_local):
        raise UserError("--array-seeds needs --slurm or --slurm-local")
    check(args)
    elements = ([with_seed(args, seed) for seed in options.parse_seeds(args.array_seeds, "--array-seeds")]
                if args.array_seeds else [args])
    role, method, arch = role_method_arch(args)
    # the directories the jobs will write: an existing run without --resume or --overwrite is refused now, not there
    outs = [runs.directory(run, role, method, arch) for run in elements]
    job_dir = args.job_dir or (outs[0].parent if args.array_seeds else outs[0]) / "slurm"
    return submit_runs(args, [(script_main, run, sys.argv, out) for run, out in zip(elements, outs)],
                       f"{role}-{method}-{arch}", job_dir)


def submit_runs(args, elements, name, job_dir):
    """Submit each (script main, its args, its command line, its run directory) as one job, several as one array
    job, with the SLURM options of `args`; returns [(job, run directory)]."""
    submitit, utils = (require(m, "submitit", "--slurm") for m in ("submitit", "submitit.core.utils"))
    executor = submitit.AutoExecutor(job_dir, cluster="local" if args.slurm_local else "slurm")
    executor.update_parameters(
        name=name, timeout_min=args.time, nodes=args.nodes, tasks_per_node=args.gpus_per_node,
        gpus_per_node=None if args.device == "cpu" else args.gpus_per_node, cpus_per_task=args.cpus_per_task,
        slurm_partition=args.partition, slurm_account=args.account, slurm_qos=args.qos,
        slurm_signal_delay_s=SIGNAL_DELAY_S, slurm_array_parallelism=args.array_parallelism,
        slurm_additional_parameters=sbatch_directives(args.sbatch))
    # the job unpickles undistill.launch.ScriptJob: sbatch and the local executor pass this environment on
    pythonpath = os.pathsep.join(filter(None, [str(IMPORTED_FROM), os.environ.get("PYTHONPATH")]))
    try:
        with submitit.helpers.environment_variables(PYTHONPATH=pythonpath), executor.batch():
            jobs = [executor.submit(ScriptJob(main, run, argv)) for main, run, argv, _ in elements]
    except (utils.FailedJobError, utils.FailedSubmissionError) as e:
        raise UserError(f"sbatch failed: {str(e).strip().splitlines()[-1]}") from None
    for job, (*_, out) in zip(jobs, elements):
        print(f"submitted job {job.job_id}: {out}  log {job.task(0).paths.stdout}", flush=True)
    return [(job, out) for job, (*_, out) in zip(jobs, elements)]


def with_seed(args, seed):
    """An array element's args: its own seed and run directory (the default name already holds the seed)."""
    run = copy.copy(args)
    run.seed = seed
    run.output = args.output / f"s{seed}" if args.output else None
    return run


def role_method_arch(args):
    """The trained model's role, the method and the architecture, once the options are checked as the job will
    check them."""
    kind = "defense" if "defense" in vars(args) else "attack"
    method = methods.chosen(args, kind)
    config, settings = options.resolve(args, method, datasets.record(args.dataset))
    source = settings.get(method.queries) if method.release is not None else None
    # a release is named after the teacher it wraps, as in train_teacher.release
    arch = checkpoint.load(source)["arch"] if source else config.arch
    return method.role, method.name, arch


def sbatch_directives(lines):
    """--sbatch constraint=volta32gb -> {"constraint": "volta32gb"}; a bare KEY (exclusive) is a flag."""
    directives = {}
    for line in lines:
        key, sep, value = line.lstrip("-").partition("=")
        if not key:
            raise UserError(f"--sbatch {line!r}: expected KEY or KEY=VALUE, e.g. constraint=volta32gb")
        directives[key] = value if sep else True
    return directives
