"""Malformed files given to every command that reads one, a second process on a run, Ctrl-C: each is one line
naming the problem, and a run in --output survives (also an --overwrite that fails)."""
import errno
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import distill_student
import train_teacher
from conftest import ROOT, TINY, run_script
from undistill import UserError, datasets, evaluate, models, report, runs


def malformed(kind, good, where):
    """A file of `kind` derived from the good checkpoint `good`, written in `where`."""
    path = where / f"{kind}.pt"
    ckpt = torch.load(good, weights_only=True)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif kind == "text":
        path.write_text("root:x:0:0:root:/root:/bin/bash\n")
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "no-arch":
        torch.save({k: v for k, v in ckpt.items() if k != "arch"}, path)
    elif kind == "classes":
        torch.save(dict(ckpt, num_classes=7), path)
    elif kind == "arch":
        torch.save(dict(ckpt, arch="resnetc20"), path)
    elif kind == "other-weights":
        torch.save(models.build("resnetc20", 10).state_dict(), path)
    elif kind == "directory":
        path.mkdir()
    return path


CASES = [  # (script, options before the file, file option, malformed kind, message)
    *[(distill_student, ["--attack", "kd"], "--teacher", kind, message) for kind, message in [
        ("empty", "is corrupt or not a trusted tensor file"),
        ("truncated", "is corrupt or not a trusted tensor file"),
        ("text", "is corrupt or not a trusted tensor file"),
        ("tensor", "is not an undistill checkpoint"),
        ("no-arch", "its 'arch' is missing"),
        ("classes", "do not fit cnn with 7 classes"),
        ("arch", "do not fit resnetc20 with 10 classes"),
        ("directory", "is not a file"),
    ]],
    (train_teacher, ["--defense", "nasty"], "--adversary", "truncated", "is corrupt or not a trusted tensor file"),
    (train_teacher, ["--defense", "nasty"], "--adversary", "classes", "do not fit cnn with 7 classes"),
    (train_teacher, ["--defense", "stingy"], "--from", "no-arch", "its 'arch' is missing"),
    (train_teacher, ["--defense", "stingy"], "--from", "empty", "is corrupt or not a trusted tensor file"),
    (train_teacher, [], "--weights", "tensor", "holds a Tensor, not a state_dict"),
    (train_teacher, [], "--weights", "truncated", "is corrupt or not a trusted tensor file"),
    (train_teacher, [], "--weights", "other-weights", "do not fit cnn with 10 classes"),
    (distill_student, ["--attack", "scratch"], "--weights", "directory", "is not a file"),
]


def digests(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("script, argv, flag, kind, message", CASES,
                         ids=[f"{c[0].__name__}{c[2]}={c[3]}" for c in CASES])
def test_a_malformed_file_is_one_line_and_the_run_survives(ce_teacher, tmp_path, script, argv, flag, kind,
                                                            message):
    run = tmp_path / "run"
    shutil.copytree(ce_teacher.parent, run)
    before = digests(run)
    bad = malformed(kind, ce_teacher, tmp_path)
    with pytest.raises(UserError) as refused:
        script.main(script.parse_args([*TINY, *argv, flag, str(bad), "--epochs", "1", "--output", str(run),
                                       "--overwrite"]))
    assert message in str(refused.value) and str(bad) in str(refused.value)
    assert "\n" not in str(refused.value)
    assert digests(run) == before


@pytest.mark.parametrize("kind, message", [("truncated", "is corrupt"), ("arch", "do not fit resnetc20")])
def test_evaluate_refuses_a_malformed_checkpoint(ce_teacher, tmp_path, kind, message):
    bad = malformed(kind, ce_teacher, tmp_path)
    with pytest.raises(UserError, match=message):
        evaluate.main(evaluate.parse_args([str(bad), "--workers", "0"]))
    assert not list(tmp_path.glob("*.json"))


@pytest.mark.parametrize("text, message", [("{\"role\": ", "cannot read"), ("[1]", "is not a run summary"),
                                           ("{\"role\": \"student\"}", "is not a run summary")])
def test_report_names_a_damaged_summary(tmp_path, text, message):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text(text)
    with pytest.raises(UserError, match=message):
        report.main(report.parse_args([str(tmp_path)]))


def test_report_on_no_runs_and_an_output_that_is_a_file(tmp_path):
    with pytest.raises(UserError, match="no summary.json"):
        report.main(report.parse_args([str(tmp_path)]))
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(UserError, match="is a file, not a directory"):
        train_teacher.main(train_teacher.parse_args([*TINY, "--output", str(tmp_path / "file")]))
    assert (tmp_path / "file").read_text() == "keep me"


def test_resume_over_a_damaged_history_is_refused(ce_teacher, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(ce_teacher.parent, run)
    (run / "metrics.jsonl").write_bytes(b"\x00garbage\n")
    before = digests(run)
    with pytest.raises(UserError, match="metrics.jsonl is damaged"):
        train_teacher.main(train_teacher.parse_args([*TINY, "--epochs", "2", "--output", str(run), "--resume"]))
    assert digests(run) == before


def test_a_second_process_on_the_same_output_is_refused(ce_teacher, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(ce_teacher.parent, run)
    before = digests(run)
    with runs.owned(run):
        with pytest.raises(UserError, match=r"is in use by pid \d+ on "):
            train_teacher.main(train_teacher.parse_args([*TINY, "--epochs", "2", "--output", str(run), "--resume"]))
    assert digests(run) == before


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_a_signal_is_one_line_and_the_run_resumes(tmp_path, signum, code):
    # SIGINT as a terminal delivers it: a shell starting the tests in the background leaves it ignored otherwise
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "train_teacher.py", *TINY, "--epochs", "50", "--output", str(out)],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not (out / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code and stderr.strip().splitlines() == [stderr.strip()] and "--resume" in stderr, stderr
    assert not list(out.glob(".*.tmp")) and not (out / ".lock").exists()
    epoch = torch.load(out / "checkpoint.pt", weights_only=True)["epoch"]
    train_teacher.main(train_teacher.parse_args([*TINY, "--epochs", str(epoch + 1), "--output", str(out),
                                                 "--resume"]))
    assert len(runs.read_metrics(out)) == epoch + 1


def test_a_full_disk_keeps_the_last_checkpoint_and_blocks_no_resume(tmp_path, monkeypatch):
    out, save, calls = tmp_path / "run", torch.save, []

    def full_disk(obj, path, *args, **kwargs):  # the second checkpoint.pt: half written, then ENOSPC
        calls.append(Path(path).name)
        if calls.count(".checkpoint.pt.tmp") == 2:
            Path(path).write_bytes(b"PK\x03\x04 half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    argv = [*TINY, "--epochs", "3", "--output", str(out)]
    with pytest.raises(UserError, match=r"cannot write .*checkpoint\.pt \(No space left on device\).*--resume"):
        train_teacher.main(train_teacher.parse_args(argv))
    monkeypatch.setattr(torch, "save", save)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not list(out.glob(".*")), "a temporary file or the lock was left behind"
    train_teacher.main(train_teacher.parse_args([*argv, "--resume"]))
    assert [h["epoch"] for h in runs.read_metrics(out)] == [1, 2, 3]


@pytest.mark.slow
def test_a_write_failing_on_rank_0_stops_every_rank_with_one_line(tmp_path):
    out = tmp_path / "run"
    (out / ".metrics.jsonl.tmp").mkdir(parents=True)  # rank 0 alone writes the run: its first metrics fail
    proc = run_script("train_teacher.py", *TINY, "--epochs", "2", "--output", str(out), nproc=2, check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot write" in errors[0] and "metrics.jsonl" in errors[0], proc.stderr
    # torchrun reports the failed ranks with a traceback of its own; no rank's code may appear in one
    assert not re.search(r'File ".*(undistill|train_teacher)', proc.stderr + proc.stdout), proc.stderr
    # rank 1 exits 2 as well, or 143 when torchrun, on rank 0's exit, stops it first; never 1 (a crash)
    assert "exitcode  : 2" in proc.stderr and "exitcode  : 1 " not in proc.stderr, proc.stderr
    assert "gloo" not in proc.stderr.lower(), proc.stderr


def test_an_unreadable_image_is_named_and_a_damaged_cache_rebuilt(tmp_path, capsys):
    files = []
    for i in range(3):
        Image.new("RGB", (4, 4), (60 * i,) * 3).save(tmp_path / f"{i}.png")
        files.append((tmp_path / f"{i}.png", i))
    cache = tmp_path / ".cache.pt"
    images, labels = datasets.decode_cached(files, cache)
    cache.write_bytes(cache.read_bytes()[:100])
    again, _ = datasets.decode_cached(files, cache)
    assert torch.equal(again, images) and "decoding the images again" in capsys.readouterr().err
    assert torch.equal(datasets.decode_cached(files, cache)[0], images)  # rewritten whole
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.raises(UserError, match=r"cannot read the image .*bad\.jpg"):
        datasets.decode_cached([*files, (tmp_path / "bad.jpg", 0)], tmp_path / ".other.pt")
