"""Student attacks: Hinton KD against hand computations, stingy (-inf) teachers, and gradient isolation."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from undistill import models
from undistill.attacks import kd
from undistill.defenses import stingy_top


def softmax(row, tau=1.0):
    e = [math.exp(v / tau) if v != -math.inf else 0.0 for v in row]
    return [x / sum(e) for x in e]


def kd_by_hand(student, y, teacher, alpha, tau):
    n = len(student)
    kl = 0.0
    for s_row, t_row in zip(student, teacher):
        p, q = softmax(t_row, tau), softmax(s_row, tau)
        kl += sum(pc * (math.log(pc) - math.log(qc)) for pc, qc in zip(p, q) if pc > 0)
    ce = sum(-math.log(softmax(row)[c]) for row, c in zip(student, y))
    return alpha * tau ** 2 * kl / n + (1 - alpha) * ce / n


STUDENT = [[1.0, 2.0, 0.5], [0.3, -1.0, 2.0]]
TEACHER = [[3.0, 1.0, 0.0], [0.0, 0.5, 1.5]]
Y = [1, 2]


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("alpha,tau", [(0.9, 4.0), (0.9, 20.0), (0.5, 1.0), (0.1, 2.0)])
def test_kd_hand_computed(alpha, tau):
    got = kd(t(STUDENT), torch.tensor(Y), t(TEACHER), alpha=alpha, tau=tau).item()
    assert got == pytest.approx(kd_by_hand(STUDENT, Y, TEACHER, alpha, tau), rel=1e-10)


def test_kd_alpha_zero_is_exactly_ce():
    s, y = t(STUDENT), torch.tensor(Y)
    assert torch.equal(kd(s, y, t(TEACHER), alpha=0.0, tau=4.0), F.cross_entropy(s, y))


def test_kd_alpha_one_ignores_labels():
    s, teacher = t(STUDENT), t(TEACHER)
    a = kd(s, torch.tensor([1, 2]), teacher, alpha=1.0, tau=4.0)
    b = kd(s, torch.tensor([0, 0]), teacher, alpha=1.0, tau=4.0)
    assert torch.equal(a, b)
    assert a.item() == pytest.approx(kd_by_hand(STUDENT, Y, TEACHER, 1.0, 4.0), rel=1e-10)


def test_kd_with_stingy_teacher_is_finite_and_matches_kept_classes():
    teacher = [[3.0, 1.0, -math.inf], [-math.inf, 0.5, 1.5]]  # stingy k=2 on 3 classes
    s = t(STUDENT).requires_grad_()
    loss = kd(s, torch.tensor(Y), t(teacher), alpha=0.9, tau=20.0)
    assert torch.isfinite(loss)
    # classes with teacher probability 0 contribute exactly 0 to the KL
    assert loss.item() == pytest.approx(kd_by_hand(STUDENT, Y, teacher, 0.9, 20.0), rel=1e-10)
    loss.backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


@pytest.mark.parametrize("tau", [1.0, 4.0, 20.0, 100.0])
def test_kd_with_stingy_teacher_gradient_is_finite(tau):
    g = torch.Generator().manual_seed(0)
    teacher = stingy_top(torch.randn(8, 100, generator=g), k=10)
    s = torch.randn(8, 100, generator=g, requires_grad=True)
    loss = kd(s, torch.randint(0, 100, (8,), generator=g), teacher, alpha=0.9, tau=tau)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(s.grad).all()


def test_kd_student_gradient_does_not_depend_on_teacher_graph():
    # The same teacher values with or without an autograd history give the same loss and student gradient.
    y = torch.tensor(Y)
    s1, s2 = t(STUDENT).requires_grad_(), t(STUDENT).requires_grad_()
    teacher_leaf = t(TEACHER).requires_grad_()
    loss_graph = kd(s1, y, teacher_leaf * 1.0, alpha=0.9, tau=4.0)
    loss_plain = kd(s2, y, t(TEACHER), alpha=0.9, tau=4.0)
    loss_graph.backward()
    loss_plain.backward()
    assert torch.equal(loss_graph.detach(), loss_plain.detach())
    torch.testing.assert_close(s1.grad, s2.grad, rtol=0, atol=0)


def test_kd_step_leaves_a_frozen_teacher_without_gradient():
    # As the engine queries it: eval mode, requires_grad off, forward under no_grad.
    torch.manual_seed(0)
    stats = ((0.5,) * 3, (0.25,) * 3)
    teacher = models.Classifier(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10)), *stats).eval()
    teacher.requires_grad_(False)
    student = models.Classifier(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10)), *stats)
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        ref = teacher(x)
    assert not ref.requires_grad
    kd(student(x), torch.tensor([0, 1, 2, 3]), ref, alpha=0.9, tau=4.0).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
