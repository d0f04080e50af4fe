"""Student attacks against hand computations (KD, HTC, SCM, DKD), their loss terms, stingy (-inf) teachers, the
no-label variants, one training step through the loop, and the papers' defaults."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import distill_student
from conftest import build_task, step_once, tiny_classifier
from undistill import datasets, methods, models, options
from undistill.methods.attacks import dkd, dkd_terms, htc, kd, scm
from undistill.releases import stingy_top


def softmax(row, tau=1.0):
    e = [math.exp(v / tau) if v != -math.inf else 0.0 for v in row]
    return [x / sum(e) for x in e]


def kl_by_hand(p, q):
    return sum(pc * (math.log(pc) - math.log(qc)) for pc, qc in zip(p, q) if pc > 0)


def kl_rows(teacher, student, tau_t, tau_s):
    return sum(kl_by_hand(softmax(t_row, tau_t), softmax(s_row, tau_s)) for s_row, t_row in zip(student, teacher)
               ) / len(student)


def ce_by_hand(rows, y):
    return sum(-math.log(softmax(row)[c]) for row, c in zip(rows, y)) / len(rows)


def kd_by_hand(student, y, teacher, alpha, tau):
    return alpha * tau ** 2 * kl_rows(teacher, student, tau, tau) + (1 - alpha) * ce_by_hand(student, y)


STUDENT = [[1.0, 2.0, 0.5], [0.3, -1.0, 2.0]]
TEACHER = [[3.0, 1.0, 0.0], [0.0, 0.5, 1.5]]
Y = [1, 2]


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("alpha,tau", [(0.9, 4.0), (0.9, 20.0), (0.5, 1.0), (0.1, 2.0)])
def test_kd_hand_computed_with_its_terms(alpha, tau):
    loss, terms = kd(t(STUDENT), torch.tensor(Y), t(TEACHER), alpha=alpha, tau=tau)
    assert loss.item() == pytest.approx(kd_by_hand(STUDENT, Y, TEACHER, alpha, tau), rel=1e-10)
    assert terms["kl"].item() == pytest.approx(kl_rows(TEACHER, STUDENT, tau, tau), rel=1e-10)
    assert terms["ce"].item() == pytest.approx(ce_by_hand(STUDENT, Y), rel=1e-10)


def test_kd_alpha_zero_is_exactly_ce():
    s, y = t(STUDENT), torch.tensor(Y)
    assert torch.equal(kd(s, y, t(TEACHER), alpha=0.0, tau=4.0)[0], F.cross_entropy(s, y))


def test_kd_alpha_one_ignores_labels():
    s, teacher = t(STUDENT), t(TEACHER)
    a = kd(s, torch.tensor([1, 2]), teacher, alpha=1.0, tau=4.0)[0]
    b = kd(s, torch.tensor([0, 0]), teacher, alpha=1.0, tau=4.0)[0]
    assert torch.equal(a, b)
    assert a.item() == pytest.approx(kd_by_hand(STUDENT, Y, TEACHER, 1.0, 4.0), rel=1e-10)


def test_kd_with_stingy_teacher_is_finite_and_matches_kept_classes():
    teacher = [[3.0, 1.0, -math.inf], [-math.inf, 0.5, 1.5]]  # stingy k=2 on 3 classes
    s = t(STUDENT).requires_grad_()
    loss, _ = kd(s, torch.tensor(Y), t(teacher), alpha=0.9, tau=20.0)
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
    loss, _ = kd(s, torch.randint(0, 100, (8,), generator=g), teacher, alpha=0.9, tau=tau)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(s.grad).all()


def test_a_kd_step_learns_from_the_frozen_teacher_through_the_loop():
    # One engine.train_step of the kd task: the loss is KD of the student's and the teacher's logits on the batch,
    # the teacher neither moves nor gets a gradient, and another teacher moves the student differently.
    x, y = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8), torch.tensor([0, 1, 2, 0, 1, 2])
    settings = dict(alpha=0.9, tau=4.0, no_labels=False)
    updates = []
    for teacher_seed in (1, 2):
        teacher, student = tiny_classifier(teacher_seed), tiny_classifier(0)
        before = {k: v.clone() for k, v in teacher.state_dict().items()}
        with torch.no_grad():
            expected = kd_by_hand(student(x).tolist(), y.tolist(), teacher(x).tolist(), 0.9, 4.0)
        step = step_once(build_task("attack", "kd", settings, teacher), student, x, y)
        assert step.loss.item() == pytest.approx(expected, rel=1e-5)
        assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
        assert all(p.grad is None for p in teacher.parameters())
        updates.append(student.net[1].weight.detach() - tiny_classifier(0).net[1].weight)
    assert updates[0].abs().sum() > 0 and not torch.allclose(updates[0], updates[1])


@pytest.mark.parametrize("alpha,tau,m", [(0.9, 50.0, 50.0), (0.5, 100.0, 1.0), (0.1, 4.0, 10.0)])
def test_htc_hand_computed_with_the_student_at_temperature_one(alpha, tau, m):
    # Only the teacher is softened.
    expected = alpha * m * kl_rows(TEACHER, STUDENT, tau, 1.0) + (1 - alpha) * ce_by_hand(STUDENT, Y)
    loss, terms = htc(t(STUDENT), torch.tensor(Y), t(TEACHER), alpha=alpha, tau=tau, multiplier=m)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    assert terms["kl"].item() == pytest.approx(kl_rows(TEACHER, STUDENT, tau, 1.0), rel=1e-10)


def test_htc_with_alpha_zero_is_exactly_ce():
    s, y = t(STUDENT), torch.tensor(Y)
    assert torch.equal(htc(s, y, t(TEACHER), alpha=0.0, tau=50.0, multiplier=50.0)[0], F.cross_entropy(s, y))


@pytest.mark.parametrize("attack,settings", [(kd, {"tau": 4.0}), (htc, {"tau": 50.0, "multiplier": 5.0}),
                                             (scm, {"tau": 4.0, "multiplier": 10.0})])
def test_no_labels_drops_the_ce_term(attack, settings):
    s, teacher = t(STUDENT), t(TEACHER)
    blind = [attack(s, torch.tensor(y), teacher, alpha=0.9, no_labels=True, **settings) for y in (Y, [0, 0])]
    assert torch.equal(blind[0][0], blind[1][0])  # the labels are not used at all
    assert "ce" not in blind[0][1]
    with_labels = attack(s, torch.tensor(Y), teacher, alpha=0.9, **settings)[0]
    torch.testing.assert_close(with_labels - blind[0][0], 0.1 * F.cross_entropy(s, torch.tensor(Y)))


@pytest.mark.parametrize("tau", [1.0, 4.0, 20.0])
def test_scm_with_one_teacher_and_m_tau_squared_is_kd(tau):
    s, y, teacher = t(STUDENT), torch.tensor(Y), t(TEACHER)
    assert torch.equal(scm(s, y, teacher, alpha=0.9, tau=tau, multiplier=tau ** 2)[0],
                       kd(s, y, teacher, alpha=0.9, tau=tau)[0])


class Fixed(torch.nn.Module):
    """A teacher that answers every batch with the same logits."""

    def __init__(self, rows):
        super().__init__()
        self.register_buffer("rows", t(rows))

    def forward(self, x):
        return self.rows


def test_scm_distills_from_the_mean_of_the_teachers_logits():
    other = [[0.0, 2.0, -1.0], [1.0, 1.0, 0.0]]
    mean = [[(a + b) / 2 for a, b in zip(r1, r2)] for r1, r2 in zip(TEACHER, other)]
    expected = 0.9 * 10.0 * kl_rows(mean, STUDENT, 4.0, 4.0) + 0.1 * ce_by_hand(STUDENT, Y)
    ensemble = models.Ensemble([Fixed(TEACHER), Fixed(other)])(torch.zeros(2, 3, 1, 1))
    got = scm(t(STUDENT), torch.tensor(Y), ensemble, alpha=0.9, tau=4.0, multiplier=10.0)[0]
    assert got.item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_dkd_decomposition_holds_per_sample(tau):
    # KL(p_t || p_s) = TCKD + (1 - p_t[target]) NCKD, sample by sample, on random logits
    g = torch.Generator().manual_seed(0)
    s, teacher = (torch.randn(16, 10, generator=g, dtype=torch.float64) * 3 for _ in range(2))
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
        got, terms = dkd(t(STUDENT), torch.tensor(Y), t(TEACHER), epoch, alpha=alpha, beta=beta, tau=tau,
                         dkd_warmup=20)
        assert got.item() == pytest.approx(ce + ramp * kd_part, rel=1e-9)
        assert terms["tckd"].item() == pytest.approx(tckd / 2, rel=1e-9)


def test_dkd_non_target_mass_survives_a_confident_student_in_float32():
    # The rest's mass is the sum of the non-target probabilities: 1 - p_target would round to 0 in float32.
    student = torch.tensor([[30.0, 0.0, -2.0]])
    teacher = torch.tensor([[3.0, 1.0, 0.0]])
    tckd, _ = dkd_terms(student, teacher, torch.tensor([0]), 1.0)
    p_s, p_t = softmax(student[0].tolist()), softmax(teacher[0].tolist())
    rest_s = math.exp(-30.0) + math.exp(-32.0)  # = p_s[1] + p_s[2] to float64 precision
    expected = kl_by_hand([p_t[0], p_t[1] + p_t[2]], [p_s[0], rest_s])
    assert tckd.item() == pytest.approx(expected, rel=1e-4)


def test_dkd_with_stingy_teacher_is_finite():
    g = torch.Generator().manual_seed(1)
    teacher = stingy_top(torch.randn(8, 100, generator=g), k=10)
    s = torch.randn(8, 100, generator=g, requires_grad=True)
    loss, _ = dkd(s, torch.randint(0, 100, (8,), generator=g), teacher, 30, alpha=1.0, beta=8.0, tau=4.0,
                  dkd_warmup=20)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def settings_for(argv, dataset="mnist5k", released=False):
    args = distill_student.parse_args(argv)
    return options.resolve(args, methods.get("attack", args.attack), datasets.record(dataset), released)[1]


def test_unset_settings_take_the_papers_values_for_the_dataset():
    kd_on = lambda dataset, released=False: settings_for(["--attack", "kd", "--teacher", "t.pt"], dataset, released)
    assert kd_on("cifar10") == {"alpha": 0.9, "tau": 4.0, "no_labels": False, "teacher": [Path("t.pt")]}
    assert kd_on("cifar100")["tau"] == kd_on("tinyimagenet")["tau"] == 20.0
    assert kd_on("cifar10", released=True)["tau"] == 20.0  # a stingy teacher is distilled at 20
    scm_settings = settings_for(["--attack", "scm", "--teacher", "t.pt", "--tau", "3"])
    assert scm_settings["multiplier"] == 50.0  # from the set Jandial et al. search, not tau^2
    htc_settings = settings_for(["--attack", "htc", "--teacher", "t.pt"])
    assert (htc_settings["alpha"], htc_settings["tau"], htc_settings["multiplier"]) == (0.9, 50.0, 50.0)
    dkd_settings = settings_for(["--attack", "dkd", "--teacher", "t.pt"], "cifar100")
    assert dkd_settings == {"alpha": 1.0, "beta": 8.0, "tau": 4.0, "dkd_warmup": 20, "teacher": [Path("t.pt")]}
    assert settings_for(["--attack", "kd", "--teacher", "t.pt", "--tau", "7"], "cifar100", True)["tau"] == 7.0
