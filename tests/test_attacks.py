"""Student attacks against hand computations (KD, HTC, SCM, DKD), stingy (-inf) teachers, the no-label variants,
and gradient isolation."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from undistill import models
from undistill.attacks import default_settings, dkd, dkd_terms, htc, kd, scm
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


def kl_by_hand(p, q):
    return sum(pc * (math.log(pc) - math.log(qc)) for pc, qc in zip(p, q) if pc > 0)


def ce_by_hand(rows, y):
    return sum(-math.log(softmax(row)[c]) for row, c in zip(rows, y)) / len(rows)


@pytest.mark.parametrize("alpha,tau,m", [(0.9, 50.0, 50.0), (0.5, 100.0, 1.0), (0.1, 4.0, 10.0)])
def test_htc_hand_computed_with_the_student_at_temperature_one(alpha, tau, m):
    # seed 002 eq. 9: only the teacher is softened
    kl = sum(kl_by_hand(softmax(t_row, tau), softmax(s_row)) for s_row, t_row in zip(STUDENT, TEACHER)) / 2
    expected = alpha * m * kl + (1 - alpha) * ce_by_hand(STUDENT, Y)
    got = htc(t(STUDENT), torch.tensor(Y), t(TEACHER), alpha=alpha, tau=tau, multiplier=m).item()
    assert got == pytest.approx(expected, rel=1e-10)


def test_htc_with_alpha_zero_is_exactly_ce():
    s, y = t(STUDENT), torch.tensor(Y)
    assert torch.equal(htc(s, y, t(TEACHER), alpha=0.0, tau=50.0, multiplier=50.0), F.cross_entropy(s, y))


@pytest.mark.parametrize("attack,settings", [(kd, {"tau": 4.0}), (htc, {"tau": 50.0, "multiplier": 5.0}),
                                             (scm, {"tau": 4.0, "multiplier": 10.0})])
def test_no_labels_drops_the_ce_term(attack, settings):
    s, teacher = t(STUDENT), t(TEACHER)
    blind = [attack(s, torch.tensor(y), teacher, alpha=0.9, no_labels=True, **settings) for y in (Y, [0, 0])]
    assert torch.equal(blind[0], blind[1])  # the labels are not used at all
    with_labels = attack(s, torch.tensor(Y), teacher, alpha=0.9, **settings)
    torch.testing.assert_close(with_labels - blind[0], 0.1 * F.cross_entropy(s, torch.tensor(Y)))


@pytest.mark.parametrize("tau", [1.0, 4.0, 20.0])
def test_scm_with_one_teacher_and_m_tau_squared_is_kd(tau):
    s, y, teacher = t(STUDENT), torch.tensor(Y), t(TEACHER)
    assert torch.equal(scm(s, y, teacher, alpha=0.9, tau=tau, multiplier=tau ** 2),
                       kd(s, y, teacher, alpha=0.9, tau=tau))


class Fixed(nn.Module):
    """A teacher that answers every batch with the same logits."""

    def __init__(self, rows):
        super().__init__()
        self.register_buffer("rows", t(rows))

    def forward(self, x):
        return self.rows


def test_scm_distills_from_the_mean_of_the_teachers_logits():
    other = [[0.0, 2.0, -1.0], [1.0, 1.0, 0.0]]
    mean = [[(a + b) / 2 for a, b in zip(r1, r2)] for r1, r2 in zip(TEACHER, other)]
    kl = sum(kl_by_hand(softmax(m_row, 4.0), softmax(s_row, 4.0)) for s_row, m_row in zip(STUDENT, mean)) / 2
    expected = 0.9 * 10.0 * kl + 0.1 * ce_by_hand(STUDENT, Y)
    ensemble = models.Ensemble([Fixed(TEACHER), Fixed(other)])
    ens_logits = ensemble(torch.zeros(2, 3, 1, 1))
    got = scm(t(STUDENT), torch.tensor(Y), ens_logits, alpha=0.9, tau=4.0, multiplier=10.0).item()
    assert got == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_dkd_decomposition_holds_per_sample(tau):
    # KL(p_t || p_s) = TCKD + (1 - p_t[target]) NCKD, sample by sample, on random logits
    g = torch.Generator().manual_seed(0)
    s, teacher = torch.randn(16, 10, generator=g, dtype=torch.float64) * 3, torch.randn(16, 10, generator=g,
                                                                                      dtype=torch.float64) * 3
    y = torch.randint(0, 10, (16,), generator=g)
    tckd, nckd = dkd_terms(s, teacher, y, tau)
    p_t = F.softmax(teacher / tau, dim=1)
    full = F.kl_div(F.log_softmax(s / tau, dim=1), p_t, reduction="none").sum(1)
    torch.testing.assert_close(tckd + (1 - p_t[torch.arange(16), y]) * nckd, full, rtol=1e-9, atol=1e-12)


def test_dkd_hand_computed_and_warmup_ramp():
    tau, alpha, beta = 2.0, 1.0, 8.0
    tckd = nckd = 0.0
    for s_row, t_row, c in zip(STUDENT, TEACHER, Y):
        ps, pt = softmax(s_row, tau), softmax(t_row, tau)
        tckd += kl_by_hand([pt[c], 1 - pt[c]], [ps[c], 1 - ps[c]])
        rest = [i for i in range(3) if i != c]
        nckd += kl_by_hand(softmax([t_row[i] for i in rest], tau), softmax([s_row[i] for i in rest], tau))
    kd_part = tau ** 2 * (alpha * tckd + beta * nckd) / 2
    ce = ce_by_hand(STUDENT, Y)
    for epoch, ramp in ((0, 1 / 20), (9, 10 / 20), (19, 1.0), (50, 1.0)):
        got = dkd(t(STUDENT), torch.tensor(Y), t(TEACHER), epoch, alpha=alpha, beta=beta, tau=tau, dkd_warmup=20)
        assert got.item() == pytest.approx(ce + ramp * kd_part, rel=1e-9)


def test_dkd_with_stingy_teacher_is_finite():
    g = torch.Generator().manual_seed(1)
    teacher = stingy_top(torch.randn(8, 100, generator=g), k=10)
    s = torch.randn(8, 100, generator=g, requires_grad=True)
    loss = dkd(s, torch.randint(0, 100, (8,), generator=g), teacher, 30, alpha=1.0, beta=8.0, tau=4.0, dkd_warmup=20)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def test_default_settings_follow_the_papers():
    assert default_settings("kd", "cifar10", False) == {"alpha": 0.9, "tau": 4.0, "multiplier": 16.0}
    assert default_settings("kd", "cifar100", False)["tau"] == 20.0
    assert default_settings("scm", "cifar10", True)["tau"] == 20.0  # a stingy teacher is distilled at 20
    assert default_settings("htc", "cifar10", False) == {"alpha": 0.9, "tau": 50.0, "multiplier": 50.0}
    assert default_settings("dkd", "cifar100", False) == {"alpha": 1.0, "tau": 4.0, "multiplier": 16.0}
