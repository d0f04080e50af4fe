"""bench/gpu_check.sh: its bad input refused in one line, and --smoke, every step of the GPU check at tiny size on
the CPU, each writing its tables."""
import json
import math
import subprocess

import pytest
import torch

from conftest import ROOT
from undistill import methods


def check(*argv, timeout=600):
    return subprocess.run(["bash", "bench/gpu_check.sh", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("argv, says", [
    (["--frobnicate"], "--frobnicate"), (["--out"], "--out needs a value"), ([], "no --data"),
    (["--data", "missing.tar.gz"], "does not exist"), (["--smoke", "--epochs", "1"], "--epochs 1"),
    (["--smoke", "--budget", "7m"], "--budget 7m"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, argv, says):
    proc = check(*argv, "--out", str(tmp_path / "check")) if argv != ["--out"] else check(*argv)
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and says in line
    assert not (tmp_path / "check" / "env.json").exists()


def table_rows(markdown):
    """The first cell of each body row of the markdown tables in the text."""
    return [line.split("|")[1].strip() for line in markdown.splitlines()
            if line.startswith("| ") and not line.startswith("|---")]


@pytest.mark.slow
@pytest.mark.timeout(900)  # every step of the check, at tiny size: about 2 minutes alone on 2 cores, more beside others
def test_gpu_check_smoke_writes_every_table(tmp_path):
    out = tmp_path / "check"
    proc = check("--smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    steps = [line.split("|")[1:4] for line in (out / "check.md").read_text().splitlines()[2:]]
    assert [name.strip() for name, _, _ in steps] == ["environment", "correctness", "throughput batch 16, compile off",
                                                       "Table 1"]
    assert all(state.strip() == "done" for _, _, state in steps), steps

    env = json.loads((out / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["gpu"] is None and env["cpus"] >= 1
    assert set(table_rows((out / "env.md").read_text())) >= {"item", "torch", "cuda", "cudnn", "gpu", "driver"}

    # every registered defense and attack, bf16 against fp32, their steps' host syncs (none), then the checkpoint
    # and the resume: all passing
    checks = json.loads((out / "correctness.json").read_text())["checks"]
    registered = [f"{kind} {name}" for kind in methods.KINDS for name in methods.names(kind)]
    assert list(checks) == [*registered, "syncs", "checkpoint", "resume"]
    assert {"defense nasty", "defense stingy", "attack kd", "attack dafl", "attack deepinversion"} <= set(checks)
    assert [k for k, c in checks.items() if c["verdict"] != "ok"] == [], checks
    assert all(0 <= c["measured"] <= c["limit"] for c in checks.values())
    assert checks["resume"]["measured"] == 0 and checks["checkpoint"]["measured"] == 0  # the CPU is deterministic
    assert table_rows((out / "correctness.md").read_text()) == ["check", *checks]

    speed = json.loads((out / "throughput-b16-compile-off.json").read_text())
    assert set(speed["loader_images_per_s"]) == {"reference", "torchvision", "gpu"}
    assert set(speed["step_images_per_s"]) == {"ce", "nasty", "cmim", "kd"}
    numbers = [*speed["loader_images_per_s"].values(), *speed["step_images_per_s"].values(),
               speed["teacher_forward_images_per_s"]]
    assert all(math.isfinite(n) and n > 0 for n in numbers)
    throughput = (out / "throughput.md").read_text()
    assert "### batch 16, compile off" in throughput
    assert {"reference", "torchvision", "gpu", "ce", "nasty", "cmim", "kd"} <= set(table_rows(throughput))

    table = json.loads((out / "table1.json").read_text())
    assert sorted(table["finished"]) == sorted(["teacher-ce", "teacher-nasty", "teacher-cmim", "teacher-stingy",
                                                "scratch", "ls", "kd-from-ce", "kd-from-nasty", "kd-from-cmim",
                                                "kd-from-stingy"])
    assert sorted(r["teacher"].split("(")[0].split()[0] for r in table["rows"]) == ["ce", "cmim", "nasty", "stingy"]
    # one seed: no interval, a sign only (or no headroom over the LS student)
    assert all(r["attack"].startswith("kd(") and r["outcome"] in ("indicative", "void") for r in table["rows"])
    assert sorted(b["method"] for b in table["baselines"]) == ["ls", "scratch"]
    assert all(p["here"] is not None for p in table["paper"].values())
    markdown = (out / "table1.md").read_text()
    assert markdown.count("| mnist5k |") == 4 and "| vs LS student | verdict |" in markdown and "(1 seed)" in markdown
    assert {"teacher, normal (CE)", "student, KD from the nasty teacher"} <= set(table_rows(markdown))
    assert "| 95.13 |" in markdown and "| 88.01 |" in markdown
