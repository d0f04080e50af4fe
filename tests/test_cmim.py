"""CMIM: the loss against hand-computed values, its gradient direction, and the class-centroid estimators."""
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import build_task, run_script, step_once, tiny_classifier
from undistill.distributed import Context
from undistill.methods.defenses import ClassCentroids, cmim

SETTINGS = dict(cmi_weight=0.5, temperatures=[1.0, 4.0], cmi_agg="mean")


def softmax(z, t):
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def test_cmi_term_is_zero_when_every_output_sits_on_its_class_centroid():
    logits = torch.tensor([[2.0, 0.0, -1.0], [2.0, 0.0, -1.0], [0.0, 3.0, 1.0]])
    y = torch.tensor([0, 0, 1])
    centroids = torch.stack([torch.stack([F.softmax(logits[0] / t, 0), F.softmax(logits[2] / t, 0),
                                          torch.full((3,), 1 / 3)]) for t in (1.0, 4.0)])
    loss, terms = cmim(logits, y, centroids, **SETTINGS)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, y).item(), abs=1e-6)
    assert terms["cmi"].item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("agg", ["mean", "max", "t2mean"])
def test_cmim_equals_hand_computed_value(agg):
    z = [[1.0, 0.0, -1.0], [0.0, 2.0, 0.5]]
    y = [0, 0]
    q = {1.0: [0.5, 0.3, 0.2], 4.0: [0.4, 0.35, 0.25]}  # class-0 centroid at each temperature
    terms = []
    for t in (1.0, 4.0):
        kls = [sum(p * math.log(p / c) for p, c in zip(softmax(row, t), q[t])) for row in z]
        terms.append(sum(kls) / len(kls))
    aggregate = {"mean": sum(terms) / 2, "max": max(terms), "t2mean": (terms[0] * 1 + terms[1] * 16) / 2}[agg]
    ce = sum(-math.log(softmax(row, 1.0)[label]) for row, label in zip(z, y)) / 2
    centroids = torch.zeros(2, 3, 3)
    centroids[0, 0], centroids[1, 0] = torch.tensor(q[1.0]), torch.tensor(q[4.0])
    got, terms = cmim(torch.tensor(z), torch.tensor(y), centroids, **dict(SETTINGS, cmi_agg=agg))
    assert got.item() == pytest.approx(ce + 0.5 * aggregate, rel=1e-5)
    assert (terms["ce"].item(), terms["cmi"].item()) == pytest.approx((ce, aggregate), rel=1e-5)


def test_cmi_gradient_pulls_outputs_towards_their_centroid_and_not_the_centroid():
    logits = torch.tensor([[3.0, -1.0, 0.0], [0.0, 1.0, 2.0]], requires_grad=True)
    y = torch.tensor([0, 0])
    centroids = torch.full((2, 3, 3), 1 / 3, requires_grad=True)
    loss, _ = cmim(logits, y, centroids, **dict(SETTINGS, cmi_weight=100.0))  # CMI dominates
    loss.backward()
    assert centroids.grad is None  # stop-gradient: the centroids are estimates, not parameters
    kl = lambda z: F.kl_div(torch.full((2, 3), 1 / 3).log(), F.softmax(z, 1), reduction="batchmean")
    assert kl(logits.detach() - 1e-3 * logits.grad) < kl(logits.detach())


def test_ema_centroids_follow_the_hand_computed_update():
    centroids = ClassCentroids(3, [1.0, 2.0], "ema", momentum=0.75)
    logits, y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]]), torch.tensor([0, 0])
    centroids.observe(logits, y, Context())
    for i, t in enumerate((1.0, 2.0)):
        mean = (F.softmax(logits[0] / t, 0) + F.softmax(logits[1] / t, 0)) / 2
        assert torch.allclose(centroids.q[i, 0], 0.75 / 3 + 0.25 * mean)
        assert torch.allclose(centroids.q[i, 1:], torch.full((2, 3), 1 / 3))  # unseen classes keep theirs


def test_epoch_centroids_are_the_class_means_of_a_full_pass():
    centroids = ClassCentroids(2, [1.0, 3.0], "epoch")
    net = torch.nn.Linear(4, 2)
    batches = [(torch.randn(5, 4), torch.tensor([0, 1, 0, 1, 1])), (torch.randn(3, 4), torch.tensor([0, 0, 1]))]
    centroids.recompute(net, iter(batches), Context())
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    for i, t in enumerate((1.0, 3.0)):
        probs = F.softmax(net(x).detach() / t, 1)
        for c in (0, 1):
            assert torch.allclose(centroids.q[i, c], probs[y == c].mean(0), atol=1e-6)


def test_a_cmim_step_observes_its_outputs_into_the_centroids():
    # Through the loop: the step's loss reads the centroids as they were, then they follow the step's outputs.
    x, y = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8), torch.tensor([0, 1, 2, 0, 1, 2])
    model = tiny_classifier(0)
    task = build_task("defense", "cmim", dict(cmi_weight=2.0, temperatures=[1.0, 4.0], cmi_agg="mean",
                                              centroids="ema", centroid_momentum=0.5))
    with torch.no_grad():
        logits = model(x)
    expected, _ = cmim(logits, y, torch.full((2, 3, 3), 1 / 3), cmi_weight=2.0, temperatures=[1.0, 4.0],
                       cmi_agg="mean")
    step = step_once(task, model, x, y)
    assert step.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for i, temp in enumerate((1.0, 4.0)):
        for c in range(3):
            mean = F.softmax(logits[y == c] / temp, 1).mean(0)
            assert torch.allclose(task.centroids.q[i, c], 0.5 / 3 + 0.5 * mean, atol=1e-6)
    assert torch.equal(task.state_dict()["centroids"]["q"], task.centroids.q)


@pytest.mark.slow
def test_centroids_agree_across_two_torchrun_ranks(tmp_path):
    run_script("tests/centroids_worker.py", str(tmp_path), nproc=2)
    q0, q1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert torch.equal(q0, q1)
    torch.manual_seed(0)
    logits, y = torch.randn(8, 3), torch.tensor([0, 1, 2, 0, 1, 0, 0, 2])
    single = ClassCentroids(3, [1.0, 4.0], "ema", momentum=0.5)
    single.observe(logits, y, Context())
    assert torch.allclose(q0, single.q, atol=1e-6)
