"""bench/gpu_check.sh --smoke: every step of the GPU check at tiny size on the CPU, each writing its table."""
import json
import subprocess

from conftest import ROOT


def test_gpu_check_smoke_writes_every_table(tmp_path):
    out = tmp_path / "check"
    proc = subprocess.run(["bash", "bench/gpu_check.sh", "--smoke", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads((out / "env.json").read_text())["torch"]
    correctness = json.loads((out / "correctness.json").read_text())
    methods = [k for k in correctness if k.startswith(("defense ", "attack "))]
    assert {"defense nasty", "defense stingy", "attack kd", "attack dafl", "attack deepinversion"} <= set(methods)
    assert all(correctness[m]["verdict"] == "ok" for m in methods), correctness
    assert correctness["resume max |weight diff|"] == 0  # the CPU is deterministic
    assert correctness["checkpoint device->cpu max |logit diff|"] == 0
    speed = json.loads((out / "throughput-b16-compile-off.json").read_text())
    assert set(speed["loader_images_per_s"]) == {"reference", "torchvision", "gpu"}
    assert {"ce", "nasty", "cmim", "kd"} <= set(speed["step_images_per_s"])
    table = (out / "table1.md").read_text()
    assert table.count("| mnist5k |") == 4 and "undistillable" in table and "95.13" in table
