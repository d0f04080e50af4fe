"""Teacher defenses: loss values and terms against hand computations, gradient directions, a nasty step through
the loop, and the stingy release."""

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import build_task, step_once, tiny_classifier
from undistill import datasets, methods, models, releases
from undistill.methods.core import kl, ls
from undistill.methods.defenses import nasty
from undistill.releases import stingy_k, stingy_least, stingy_reverse, stingy_smooth, stingy_top

INF = math.inf


# Plain-python references, independent of the torch calls under test.
def softmax(row, tau=1.0):
    e = [math.exp(v / tau) for v in row]
    return [x / sum(e) for x in e]


def kl_rows(p_logits, q_logits, tau):
    """KL(softmax_tau(p) || softmax_tau(q)) summed over classes, averaged over rows; p = 0 contributes 0."""
    total = 0.0
    for pr, qr in zip(p_logits, q_logits):
        p, q = softmax(pr, tau), softmax(qr, tau)
        total += sum(pc * (math.log(pc) - math.log(qc)) for pc, qc in zip(p, q) if pc > 0)
    return total / len(p_logits)


def ce_rows(logits, y):
    return sum(-math.log(softmax(row)[c]) for row, c in zip(logits, y)) / len(logits)


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


# ---------------------------------------------------------------- ls, kl

def test_ls_is_ce_against_smoothed_one_hot():
    z = t([[2.0, -1.0, 0.5, 0.0], [0.1, 0.2, 3.0, -2.0], [-1.0, 1.0, 1.5, 0.3]])
    y = torch.tensor([0, 2, 3])
    eps, k = 0.1, 4
    target = (1 - eps) * F.one_hot(y, k).double() + eps / k
    expected = -(target * F.log_softmax(z, dim=1)).sum(1).mean()
    torch.testing.assert_close(ls(z, y, smoothing=eps)[0], expected)


def test_ls_with_zero_smoothing_is_ce():
    z = t([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]])
    y = torch.tensor([1, 2])
    torch.testing.assert_close(ls(z, y, smoothing=0.0)[0], torch.tensor(ce_rows(z.tolist(), [1, 2]), dtype=z.dtype))


def test_kl_hand_computed_batchmean():
    p = [[1.0, 2.0, 3.0], [0.0, -1.0, 2.0]]
    q = [[0.5, 0.5, 1.0], [2.0, 0.0, -1.0]]
    tau = 2.0
    # Row 0 and row 1 written out: KL = sum_c p_c (log p_c - log q_c), then the mean of the two rows.
    expected = 0.0
    for pr, qr in zip(p, q):
        ep = [math.exp(v / tau) for v in pr]
        eq = [math.exp(v / tau) for v in qr]
        pp = [x / sum(ep) for x in ep]
        qq = [x / sum(eq) for x in eq]
        expected += sum(a * (math.log(a) - math.log(b)) for a, b in zip(pp, qq))
    expected /= 2  # batchmean: over the 2 rows, not over the 6 entries
    got = kl(t(p), t(q), tau).item()
    assert got == pytest.approx(expected, rel=1e-12)
    assert got != pytest.approx(expected / 3, rel=1e-3)  # the "mean" reduction would also divide by K = 3


def test_kl_of_identical_logits_is_zero():
    z = t([[1.0, 2.0, 3.0], [0.0, -1.0, 2.0]])
    assert kl(z, z + 5.0, 4.0).item() == pytest.approx(0.0, abs=1e-12)  # softmax is shift-invariant


# ---------------------------------------------------------------- nasty

Z_T = [[2.0, 0.5, -1.0, 0.3], [-0.5, 1.5, 0.2, 0.0], [0.1, -0.2, 0.4, 2.2]]
Z_A = [[1.0, 1.0, -0.5, 0.0], [0.3, 2.5, -1.0, 0.2], [-1.0, 0.0, 1.0, 1.0]]
Y = [0, 1, 3]


@pytest.mark.parametrize("omega,tau", [(0.04, 4.0), (0.005, 20.0), (0.5, 1.0)])
def test_nasty_value_is_ce_minus_weighted_kl(omega, tau):
    expected = ce_rows(Z_T, Y) - omega * tau ** 2 * kl_rows(Z_T, Z_A, tau)
    got, terms = nasty(t(Z_T), torch.tensor(Y), t(Z_A), omega=omega, tau=tau)
    assert got.item() == pytest.approx(expected, rel=1e-10)
    assert terms["ce"].item() == pytest.approx(ce_rows(Z_T, Y), rel=1e-10)
    assert terms["kl"].item() == pytest.approx(kl_rows(Z_T, Z_A, tau), rel=1e-10)


def test_nasty_larger_omega_lowers_the_loss():
    assert kl_rows(Z_T, Z_A, 4.0) > 0
    low, high = (nasty(t(Z_T), torch.tensor(Y), t(Z_A), omega=w, tau=4.0)[0].item() for w in (0.01, 0.1))
    assert high < low


def test_nasty_with_zero_omega_is_ce():
    got = nasty(t(Z_T), torch.tensor(Y), t(Z_A), omega=0.0, tau=4.0)[0].item()
    assert got == pytest.approx(ce_rows(Z_T, Y), rel=1e-12)


def test_nasty_gradient_reaches_the_nasty_model_only():
    z_t, z_a = t(Z_T).requires_grad_(), t(Z_A).requires_grad_()
    nasty(z_t, torch.tensor(Y), z_a, omega=0.04, tau=4.0)[0].backward()
    assert z_t.grad is not None and z_t.grad.abs().sum() > 0
    assert z_a.grad is None or not z_a.grad.any()


def test_nasty_kl_gradient_is_taken_through_the_nasty_side():
    # The KL term's gradient must flow through softmax(z_T) (the target side of kl_div), not be detached.
    z_t = t(Z_T).requires_grad_()
    nasty(z_t, torch.tensor(Y), t(Z_A), omega=0.04, tau=4.0)[0].backward()
    z_ce = t(Z_T).requires_grad_()
    F.cross_entropy(z_ce, torch.tensor(Y)).backward()
    assert not torch.allclose(z_t.grad, z_ce.grad)


def test_descending_nasty_pushes_away_from_the_adversary():
    # With omega huge the CE part is negligible: a small descent step on the loss must increase the KL.
    z_t = t(Z_T).requires_grad_()
    z_a = t(Z_A)
    nasty(z_t, torch.tensor(Y), z_a, omega=1e3, tau=4.0)[0].backward()
    step = z_t.detach() - 1e-2 * z_t.grad / z_t.grad.norm()
    assert kl(step, z_a, 4.0) > kl(t(Z_T), z_a, 4.0)


def test_descending_nasty_matches_ascending_kl():
    z_t = t(Z_T).requires_grad_()
    nasty(z_t, torch.tensor(Y), t(Z_A), omega=1e3, tau=4.0)[0].backward()
    g_nasty = z_t.grad.clone()
    z_k = t(Z_T).requires_grad_()
    kl(z_k, t(Z_A), 4.0).backward()
    cosine = F.cosine_similarity(g_nasty.flatten(), -z_k.grad.flatten(), dim=0)
    assert cosine > 0.999


def test_a_nasty_step_pushes_the_model_away_from_its_frozen_adversary():
    # One engine.train_step of the nasty task, with a large omega: the loss is CE - omega tau^2 KL of the model's
    # and the adversary's logits on the batch, the adversary does not move, and the KL grows.
    x, y = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8), torch.tensor([0, 1, 2, 0, 1, 2])
    adversary, model = tiny_classifier(1), tiny_classifier(0)
    before = {k: v.clone() for k, v in adversary.state_dict().items()}
    with torch.no_grad():
        z_t, z_a = model(x).tolist(), adversary(x).tolist()
    step = step_once(build_task("defense", "nasty", dict(omega=10.0, tau=4.0), adversary), model, x, y, lr=0.01)
    assert step.loss.item() == pytest.approx(ce_rows(z_t, y.tolist()) - 160.0 * kl_rows(z_t, z_a, 4.0), rel=1e-5)
    assert all(torch.equal(before[k], v) for k, v in adversary.state_dict().items())
    with torch.no_grad():
        assert kl_rows(model(x).tolist(), z_a, 4.0) > kl_rows(z_t, z_a, 4.0)


# ---------------------------------------------------------------- stingy

@pytest.mark.parametrize("ratio,num_classes,k", [(0.2, 10, 2), (0.1, 100, 10), (0.1, 200, 20), (0.1, 1000, 100)])
def test_stingy_k_papers_settings(ratio, num_classes, k):
    assert stingy_k(ratio, num_classes) == k


def test_stingy_k_rounds_down_and_is_at_least_one():
    assert stingy_k(0.25, 10) == 2
    assert stingy_k(0.15, 100) == 15
    assert stingy_k(0.19, 10) == 1
    assert stingy_k(0.01, 10) == 1


def test_stingy_ratios_per_dataset_give_the_papers_k():
    stingy = methods.get("defense", "stingy")
    papers = [r for r in datasets.DATASETS.values() if r.name != "folder"]  # an owner's folder counts its classes
    ks = {r.name: stingy_k(stingy.default("ratio", r.name), r.num_classes) for r in papers}
    assert ks == {"mnist5k": 2, "cifar10": 2, "cifar100": 10, "tinyimagenet": 20, "imagenet": 100}


@pytest.fixture(params=[(10, 2), (100, 10)], ids=["K10k2", "K100k10"])
def logits_and_k(request):
    num_classes, k = request.param
    z = torch.randn(6, num_classes, generator=torch.Generator().manual_seed(num_classes))
    return z, k


def test_stingy_top_keeps_exactly_the_top_k_values(logits_and_k):
    z, k = logits_and_k
    out = stingy_top(z, k)
    finite = out.isfinite()
    assert (finite.sum(1) == k).all()
    assert (out[~finite] == -INF).all()
    assert torch.equal(out[finite], z[finite])  # original values, untouched
    # the kept ones are the k largest: each kept logit beats every dropped one in its row
    kept_min = torch.where(finite, z, torch.full_like(z, INF)).min(1).values
    dropped_max = torch.where(finite, torch.full_like(z, -INF), z).max(1).values
    assert (kept_min > dropped_max).all()


@pytest.mark.parametrize("tau", [1.0, 4.0, 20.0, 100.0])
def test_stingy_top_softmax_is_exactly_zero_outside_top_k(logits_and_k, tau):
    z, k = logits_and_k
    out = stingy_top(z, k)
    p = F.softmax(out / tau, dim=1)
    assert (p[~out.isfinite()] == 0).all()
    assert (p[out.isfinite()] > 0).all()
    torch.testing.assert_close(p.sum(1), torch.ones(len(z)))


def test_stingy_top_keeps_the_argmax(logits_and_k):
    z, k = logits_and_k
    assert torch.equal(stingy_top(z, k).argmax(1), z.argmax(1))


def test_stingy_top_hand_example():
    z = torch.tensor([[1.0, 5.0, 3.0, 2.0, 4.0]])
    assert stingy_top(z, 2).tolist() == [[-INF, 5.0, -INF, -INF, 4.0]]


def test_stingy_smooth_hand_example():
    z = torch.tensor([[1.0, 5.0, 3.0, 2.0, 4.0]])
    # top-2 = {5, 4} stay; the dropped 1, 3, 2 each become their mean 2
    assert stingy_smooth(z, 2).tolist() == [[2.0, 5.0, 2.0, 2.0, 4.0]]


def test_stingy_smooth_per_row_means():
    z = torch.tensor([[1.0, 5.0, 3.0, 2.0, 4.0], [10.0, -2.0, 0.0, 7.0, 1.0]])
    # row 1: top-2 = {10, 7}; dropped -2, 0, 1 -> mean -1/3
    m = -1.0 / 3.0
    torch.testing.assert_close(stingy_smooth(z, 2), torch.tensor([[2.0, 5.0, 2.0, 2.0, 4.0],
                                                                  [10.0, m, m, 7.0, m]]))


def test_stingy_reverse_hand_example():
    z = torch.tensor([[1.0, 5.0, 3.0, 2.0, 4.0]])
    # top-1 (class 1, value 5) stays; the rest ranked [4, 3, 2, 1] belong to classes [4, 2, 3, 0] and get the
    # reversed values [1, 2, 3, 4]
    assert stingy_reverse(z, 2).tolist() == [[4.0, 5.0, 2.0, 3.0, 1.0]]


def test_stingy_reverse_keeps_argmax_and_multiset(logits_and_k):
    z, k = logits_and_k
    out = stingy_reverse(z, k)
    assert torch.equal(out.argmax(1), z.argmax(1))
    assert torch.equal(out.sort(1).values, z.sort(1).values)  # a permutation of each row's values


def test_stingy_least_hand_example():
    z = torch.tensor([[1.0, 5.0, 3.0, 2.0, 4.0]])
    # top-1 (5) plus the 2 smallest (1 and 2)
    assert stingy_least(z, 3).tolist() == [[1.0, 5.0, -INF, 2.0, -INF]]


def test_stingy_least_with_k1_is_the_hard_label():
    z = torch.tensor([[1.0, 5.0, 3.0, 2.0, 4.0]])
    assert stingy_least(z, 1).tolist() == [[-INF, 5.0, -INF, -INF, -INF]]


def test_stingy_least_keeps_k_logits_and_argmax(logits_and_k):
    z, k = logits_and_k
    out = stingy_least(z, k)
    assert (out.isfinite().sum(1) == k).all()
    assert torch.equal(out.argmax(1), z.argmax(1))


@pytest.mark.parametrize("variant", sorted(releases.STINGY_VARIANTS))
def test_a_release_names_its_transform_and_the_loaded_model_applies_it(variant):
    z = torch.tensor([[1.0, 5.0, 3.0, 2.0, 4.0]])
    transform = methods.release_transform({"name": "stingy", "ratio": 0.4, "variant": variant}, 5, "test")
    assert torch.equal(transform(z), releases.STINGY_VARIANTS[variant](z, 2))
    assert methods.release_transform(None, 5, "test") is None


# ---------------------------------------------------------------- released classifier

def _tiny_net():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))


@pytest.mark.parametrize("arch", ["linear", "cnn"])
@torch.no_grad()
def test_stingy_classifier_has_the_same_predictions(arch):
    torch.manual_seed(0)
    net = _tiny_net() if arch == "linear" else models.build("cnn", 10)
    net.eval()
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    plain = models.Classifier(net, mean, std)
    released = models.Classifier(net, mean, std, release=functools.partial(stingy_top, k=2))
    x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 10, (32,))
    dense, sparse = plain(x), released(x)
    assert (sparse.isfinite().sum(1) == 2).all()  # the release transform is applied to the output
    assert torch.equal(sparse.argmax(1), dense.argmax(1))
    assert (sparse.argmax(1) == y).sum() == (dense.argmax(1) == y).sum()
