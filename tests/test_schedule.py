"""The learning-rate schedule: step decay at the milestones by gamma, after a linear warmup, as a pure function of
the fractional epoch; and the lr a run really trains with follows it."""
import argparse

import pytest

from conftest import TINY, run_script
from undistill import engine, runs


def config(**kw):
    return argparse.Namespace(**dict(dict(lr=0.1, gamma=0.2, milestones=[60, 120, 160], warmup_epochs=0), **kw))


@pytest.mark.parametrize("progress, lr", [(0, 0.1), (59.99, 0.1), (60, 0.02), (119.5, 0.02), (120, 0.004),
                                          (160, 0.0008), (199.9, 0.0008)])
def test_the_lr_steps_down_by_gamma_at_each_milestone(progress, lr):
    assert engine.learning_rate(config(), progress) == pytest.approx(lr)


@pytest.mark.parametrize("progress, lr", [(0, 0.0), (0.5, 0.025), (1.5, 0.075), (2, 0.1), (3, 0.02), (5, 0.02)])
def test_a_warmup_rises_linearly_to_the_lr_and_the_milestones_still_apply(progress, lr):
    assert engine.learning_rate(config(milestones=[3], warmup_epochs=2), progress) == pytest.approx(lr)


def test_a_run_trains_with_the_schedules_lr(tmp_path):
    # 200 images in batches of 50: 4 steps an epoch; each epoch logs its last step's lr (at progress epoch + 3/4)
    run_script("train_teacher.py", *TINY, "--defense", "ce", "--epochs", "3", "--lr", "0.05", "--gamma", "0.1",
               "--milestones", "1,2", "--warmup-epochs", "1", "--output", str(tmp_path))
    assert [h["lr"] for h in runs.read_metrics(tmp_path)] == pytest.approx([0.0375, 0.005, 0.0005])
