"""The DeepSpeed and Accelerate backends against plain DDP (2 CPU processes, gloo), DeepSpeed checkpoints converted
to the project's format, and exact resume after a SIGKILL at a random point, for every backend."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, TINY, killed_and_resumed, run_script

pytest.importorskip("deepspeed")
pytest.importorskip("accelerate")

ACCELERATE_CONFIG = str(ROOT / "undistill" / "configs" / "accelerate" / "cpu_2proc.yaml")
ZERO2 = str(ROOT / "undistill" / "configs" / "deepspeed" / "zero2.json")
TIMING = ("images_per_s", "time_s")


def launch(backend, *argv, nproc=2):
    """A 2-process run as docs/distributed.md writes it: torchrun for ddp and deepspeed, `accelerate launch` for
    accelerate."""
    if backend == "accelerate":
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", ACCELERATE_CONFIG, *argv,
                "--backend", "accelerate"]
    extra = ["--backend", backend] + (["--deepspeed-config", ZERO2] if backend == "deepspeed" else [])
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *argv, *extra]


def run(cmd, check=True):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def metrics(out):
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


def weights(out):
    return torch.load(out / "checkpoint.pt", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(name, command) -> the run directory of `command(directory)`, run once per module on first use."""
    done = {}

    def get(name, command):
        if name not in done:
            done[name] = tmp_path_factory.mktemp(name)
            run(command(done[name]))
        return done[name]
    return get


@pytest.fixture
def teacher(trained):
    """backend -> a teacher trained by it over 2 processes for 2 epochs (ddp: the reference)."""
    return lambda backend: trained(f"teacher-{backend}", lambda out: launch(
        backend, "train_teacher.py", *TINY, "--epochs", "2", "--output", str(out)))


@pytest.fixture
def student(trained, ce_teacher):
    """backend -> a KD student trained by it over 2 processes for 2 epochs (ddp: the reference)."""
    return lambda backend: trained(f"student-{backend}", lambda out: launch(
        backend, "distill_student.py", *TINY, "--epochs", "2", "--attack", "kd", "--teacher", str(ce_teacher),
        "--output", str(out)))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["deepspeed", "accelerate"])
def test_backend_trains_both_scripts_as_ddp_does(backend, teacher, student):
    for trained_by in (teacher, student):
        ours, reference = trained_by(backend), trained_by("ddp")
        assert {p.name for p in reference.iterdir()} <= {p.name for p in ours.iterdir()}
        summary, expected = (json.loads((d / "summary.json").read_text()) for d in (ours, reference))
        assert summary.keys() == expected.keys() and summary["args"]["backend"] == backend
        assert expected["args"]["backend"] == "ddp"  # the reference is the DDP run, not this one
        # the same optimization: fp32 on the CPU, so the two runs agree to float rounding of the gradient sums
        for a, b in zip(metrics(ours), metrics(reference), strict=True):
            assert a.keys() == b.keys()
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
            assert a["test_acc"] == pytest.approx(b["test_acc"], abs=0.2)
        for name, tensor in weights(reference).items():
            assert torch.allclose(weights(ours)[name].float(), tensor.float(), atol=1e-4), name


@pytest.mark.slow
def test_deepspeed_checkpoint_converts_and_serves_as_teacher(teacher, tmp_path):
    out = teacher("deepspeed")  # ZeRO-2
    assert [p.name for p in (out / "deepspeed").glob("epoch*")] == ["epoch2"]  # the previous epoch's shards are gone
    converted = tmp_path / "converted.pt"
    proc = run([sys.executable, "-m", "undistill.backends", str(out / "deepspeed"), str(converted)])
    assert "epoch 2" in proc.stdout
    ckpt = torch.load(converted, weights_only=True)
    assert (ckpt["role"], ckpt["method"], ckpt["epoch"]) == ("teacher", "ce", 2)
    for name, tensor in weights(out).items():  # the run's own checkpoint.pt holds the same fp32 weights
        assert torch.equal(ckpt["state_dict"][name], tensor), name
    student = tmp_path / "student"
    run_script("distill_student.py", *TINY, "--epochs", "1", "--attack", "kd", "--teacher", str(converted),
               "--output", str(student))
    assert json.loads((student / "summary.json").read_text())["settings"]["teacher"] == str(converted)
    evaluated = run([sys.executable, "-m", "undistill.evaluate", str(converted), "--cmi-split", "none"])
    assert f"top-1 {ckpt['metrics']['test_acc']:.2f}%" in evaluated.stdout


@pytest.mark.parametrize("config, message", [
    ({"zero_optimization": {"stage": 0}}, "needs stage 1, 2 or 3"),
    ({"zero_optimization": {"stage": 2}, "optimizer": {"type": "Adam"}}, "sets \"optimizer\""),
    ({"zero_optimization": {"stage": 2}, "bf16": {"enabled": True}}, "torch_autocast"),
    ({"zero_optimization": {"stage": 2}, "train_batch_size": 7}, "train_batch_size 7"),
])
def test_bad_deepspeed_config_is_one_line_error(config, message, tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(config))
    proc = run_script("train_teacher.py", *TINY, "--epochs", "1", "--backend", "deepspeed", "--deepspeed-config",
                      str(path), "--output", str(tmp_path / "run"), check=False)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_resume_with_another_backend_is_refused(tmp_path):
    out = tmp_path / "run"
    run_script("train_teacher.py", *TINY, "--epochs", "1", "--output", str(out))
    before = (out / "checkpoint.pt").read_bytes()
    proc = run_script("train_teacher.py", *TINY, "--epochs", "2", "--backend", "deepspeed", "--resume",
                      "--output", str(out), check=False)
    assert proc.returncode == 2 and "--backend ddp" in proc.stderr.strip().splitlines()[-1]
    assert (out / "checkpoint.pt").read_bytes() == before


KILL_ARGV = ["train_teacher.py", *TINY, "--epochs", "6", "--defense", "ls"]


def kill_command(backend, out):
    if backend == "ddp":  # one process, as `python` runs it; the 2-process DDP path is the other backends' reference
        return [sys.executable, *KILL_ARGV, "--output", str(out)]
    return launch(backend, *KILL_ARGV, "--output", str(out))


@pytest.fixture
def uninterrupted(trained):
    """backend -> the run directory of its uninterrupted run."""
    return lambda backend: trained(f"whole-{backend}", lambda out: kill_command(backend, out))


# two kills per backend, each at a random moment within a second after the first checkpoint
@pytest.mark.slow
@pytest.mark.parametrize("trial", range(2))
@pytest.mark.parametrize("backend", ["ddp", "deepspeed", "accelerate"])
def test_sigkill_then_resume_equals_uninterrupted_run(backend, trial, uninterrupted, tmp_path):
    whole = uninterrupted(backend)
    killed_at = killed_and_resumed(kill_command(backend, tmp_path), tmp_path, seed=trial)
    assert killed_at < 6
    assert metrics(tmp_path) == metrics(whole)
    resumed, expected = weights(tmp_path), weights(whole)
    assert all(torch.equal(resumed[k], expected[k]) for k in expected)


def test_precision_comes_from_the_backend_config(monkeypatch):
    from argparse import Namespace

    from undistill import UserError
    from undistill.backends import resolve_precision
    bf16 = ROOT / "undistill" / "configs" / "deepspeed" / "zero2_bf16.json"
    assert resolve_precision(Namespace(backend="deepspeed", deepspeed_config=bf16, precision="auto")) == "bf16"
    assert resolve_precision(Namespace(backend="deepspeed", deepspeed_config=ZERO2, precision="auto")) == "fp32"
    with pytest.raises(UserError, match="contradicts"):
        resolve_precision(Namespace(backend="deepspeed", deepspeed_config=ZERO2, precision="bf16"))
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert resolve_precision(Namespace(backend="accelerate", precision="auto")) == "bf16"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    with pytest.raises(UserError, match="bf16 or fp32"):
        resolve_precision(Namespace(backend="accelerate", precision="auto"))
    assert resolve_precision(Namespace(backend="ddp", precision="fp32")) == "fp32"
