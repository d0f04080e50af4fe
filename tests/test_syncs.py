"""bench/syncs.py: the host syncs of a training step, counted on the CPU by the operations that wait on CUDA; the
methods' steps and the loop's tally have none (bench/gpu_check.sh counts them on the GPU)."""
import inspect

import pytest
import torch

from bench import syncs as counter
from bench.syncs import Syncs
from conftest import build_task, step_once, tiny_classifier
from undistill import engine
from undistill.methods.core import Step

X, Y = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8), torch.tensor([0, 1, 2, 0, 1, 2])


class Waiting:
    """A task whose step reads a value, indexes with a mask and builds a tensor from a Python number."""
    frozen, trained_beside = [], []

    def step(self, model, x, y, epoch):
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        if loss.item() > 0:
            loss = loss + logits[y == 0].sum() * 0
        return Step(loss * torch.tensor(1.0), {}, logits, y)

    def after_step(self, out):
        pass


def test_each_wait_is_counted_where_it_is_called():
    lines, first = inspect.getsourcelines(Waiting.step)
    where = {f"tests/test_syncs.py:{first + i}" for i, line in enumerate(lines) if "item()" in line or "[y == 0]"
             in line or "torch.tensor" in line}
    with Syncs("cpu") as syncs:
        for _ in range(2):
            step_once(Waiting(), tiny_classifier(0), X, Y)
    assert syncs.steps == 2 and set(syncs.found) == where and syncs.per_step == 3
    # the SGD step (its backend's) is left out on the CPU, and nothing is counted once the watch has ended
    step_once(Waiting(), tiny_classifier(0), X, Y)
    assert syncs.steps == 2 and sum(syncs.found.values()) == 6


def test_installed_packages_are_not_the_project_wherever_they_live(monkeypatch):
    venv = counter.ROOT / ".venv"  # a virtual environment inside the checkout, as many set one up
    monkeypatch.setattr(counter, "INSTALLED", counter.INSTALLED | {venv})
    assert counter.is_project(counter.ROOT / "undistill" / "engine.py")
    assert not counter.is_project(venv / "lib" / "python3.11" / "site-packages" / "torch" / "_dynamo" / "eval_frame.py")
    assert not counter.is_project(venv / "bin" / "pytest")  # under the environment's prefix, not in site-packages
    assert not counter.is_project(counter.ROOT / "env" / "lib" / "site-packages" / "torch" / "nn.py")
    assert not counter.is_project("/usr/lib/python3/dist-packages/torch/nn.py")


@pytest.mark.parametrize("role, name, settings, frozen", [
    ("defense", "nasty", dict(omega=0.04, tau=4.0), True),
    ("defense", "cmim", dict(cmi_weight=2.0, temperatures=[1.0, 4.0], cmi_agg="t2mean", centroids="ema",
                             centroid_momentum=0.5), False),
    ("attack", "kd", dict(alpha=0.9, tau=4.0, no_labels=False), True),
    ("attack", "dkd", dict(alpha=1.0, beta=8.0, tau=4.0, dkd_warmup=20), True),
])
def test_a_step_and_its_tally_do_not_wait(role, name, settings, frozen):
    task = build_task(role, name, settings, tiny_classifier(1) if frozen else None)
    with Syncs("cpu") as syncs:
        out = step_once(task, tiny_classifier(0), X, Y)
        engine.Tally(list(out.terms), torch.device("cpu")).add(out)
    assert syncs.steps == 1 and dict(syncs.found) == {}
