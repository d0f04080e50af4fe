"""Measurements against hand computations: CMI (one-shot, streamed, exact zeros), ECE, NLL, KL, sparsity."""
import math

import pytest
import torch

from undistill import metrics
from undistill.distributed import Context
from undistill.methods.defenses import ClassCentroids, cmim
from undistill.releases import stingy_top
from undistill.metrics import CMIAccumulator, SplitMetrics

INF = math.inf
TEMPS = [1, 2, 4, 8, 16, 32]


# Plain-python references, independent of the torch code under test.
def softmax(row, tau=1.0):
    e = [math.exp(v / tau) for v in row]  # exp(-inf) = 0
    return [x / sum(e) for x in e]


def cmi_reference(logits, y, tau):
    """CMI in its entropy form: centroid = mean of the class's softmax_tau outputs, KL per sample, mean."""
    probs = [softmax(row, tau) for row in logits]
    total = 0.0
    for p, c in zip(probs, y):
        members = [q for q, d in zip(probs, y) if d == c]
        centroid = [sum(q[k] for q in members) / len(members) for k in range(len(p))]
        total += sum(pk * math.log(pk / ck) for pk, ck in zip(p, centroid) if pk > 0)
    return total / len(logits)


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


LOGITS = [[2.0, 0.5, -1.0], [0.3, 1.2, 0.0], [1.5, 1.4, -0.2], [-1.0, 0.0, 3.0], [0.0, 2.5, 0.7]]
LABELS = [0, 1, 1, 2, 1]


def test_cmi_is_zero_when_each_class_has_one_output():
    row = {0: [3.0, 1.0, -2.0], 1: [0.5, 2.0, 0.1], 2: [-INF, 1.0, 4.0]}  # class 2 even stingy
    y = [0, 0, 1, 2, 1, 2, 0]
    got = metrics.cmi(t([row[c] for c in y]), torch.tensor(y), 3, TEMPS)
    assert list(got) == TEMPS
    assert all(abs(v) < 1e-12 for v in got.values()), got


def test_cmi_matches_the_entropy_form_by_hand():
    got = metrics.cmi(t(LOGITS), torch.tensor(LABELS), 3, TEMPS)
    for temp in TEMPS:
        assert got[temp] == pytest.approx(cmi_reference(LOGITS, LABELS, temp), rel=1e-9, abs=1e-15)
    assert got[1] > 0.01 and got[1] > got[32] > 0  # it shrinks as the temperature flattens every output


def test_cmi_handles_stingy_zeros_with_0_log_0():
    logits = [[2.0, 0.5, -INF], [0.3, -INF, 1.0], [-INF, 1.4, -0.2], [1.0, -INF, 3.0]]
    y = [0, 0, 1, 1]
    got = metrics.cmi(t(logits), torch.tensor(y), 3, [1, 4])
    for temp in (1, 4):
        assert math.isfinite(got[temp])
        assert got[temp] == pytest.approx(cmi_reference(logits, y, temp), rel=1e-9)


def test_cmi_streamed_in_chunks_equals_one_shot():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(60, 7, generator=g) * 3, torch.randint(0, 7, (60,), generator=g)
    z[40:] = stingy_top(z[40:], 3)  # the last chunk stingy
    whole = metrics.cmi(z, y, 7, TEMPS)
    acc = CMIAccumulator(7, TEMPS)
    for chunk in (slice(0, 13), slice(13, 40), slice(40, 60)):
        acc.add(z[chunk], y[chunk])
    # Three "ranks", summed as an all-reduce would.
    ranks = [CMIAccumulator(7, TEMPS).add(z[c], y[c]) for c in (slice(0, 13), slice(13, 40), slice(40, 60))]
    reduced = CMIAccumulator(7, TEMPS)
    for state in ranks:
        for total, part in zip(reduced.tensors(), state.tensors()):
            total += part
    for temp in TEMPS:
        assert acc.value()[temp] == pytest.approx(whole[temp], rel=1e-12, abs=1e-15)
        assert reduced.value()[temp] == pytest.approx(whole[temp], rel=1e-12, abs=1e-15)


def test_cmims_training_term_with_exact_centroids_is_the_measured_cmi():
    # What a CMIM teacher minimizes (its term, with the centroids of a full pass) is what evaluate measures.
    z = torch.randn(40, 5, generator=torch.Generator().manual_seed(1)) * 3
    y = torch.arange(40) % 5
    centroids = ClassCentroids(5, TEMPS, "epoch")
    centroids.recompute(lambda logits: logits, [(z, y)], Context())
    measured = metrics.cmi(z, y, 5, TEMPS)
    for i, temp in enumerate(TEMPS):
        _, terms = cmim(z, y, centroids.q[i:i + 1], cmi_weight=1.0, temperatures=[temp], cmi_agg="mean")
        assert terms["cmi"].item() == pytest.approx(measured[temp], rel=1e-4, abs=1e-7)


def test_ece_is_zero_when_calibrated_and_matches_a_hand_value():
    probs = t([[0.8, 0.2]] * 10)
    y = torch.tensor([0] * 8 + [1] * 2)  # confidence 0.8, 8 of 10 correct
    assert metrics.ece(probs, y) == pytest.approx(0.0, abs=1e-12)
    # Two bins: confidence 0.9 with 1 of 2 correct (|0.5 - 0.9| = 0.4), confidence 0.6 with 2 of 2 (0.4):
    # ECE = 2/4 * 0.4 + 2/4 * 0.4 = 0.4.
    probs = t([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    assert metrics.ece(probs, torch.tensor([0, 1, 1, 1])) == pytest.approx(0.4, abs=1e-12)
    # One bin holding confidences 0.61 and 0.64 (15 bins: (0.6, 0.6667]), one correct: |0.5 - 0.625| = 0.125.
    probs = t([[0.61, 0.39], [0.36, 0.64]])
    assert metrics.ece(probs, torch.tensor([0, 0])) == pytest.approx(0.125, abs=1e-12)
    assert metrics.ece(probs, torch.tensor([0, 0]), bins=30) == pytest.approx((0.39 + 0.64) / 2, abs=1e-12)


def test_nll_is_inf_only_when_the_label_is_masked():
    logits = [[2.0, 1.0, -INF], [0.0, 3.0, -INF]]
    expected = -(math.log(softmax(logits[0])[0]) + math.log(softmax(logits[1])[1])) / 2
    assert metrics.nll(t(logits), torch.tensor([0, 1])) == pytest.approx(expected, rel=1e-12)
    assert metrics.nll(t(logits), torch.tensor([0, 2])) == INF
    assert metrics.nll(t(logits).float(), torch.tensor([2, 2])) == INF


def test_kl_to_reference():
    a, b = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], [[0.2, 1.0, 1.0], [2.0, 0.0, 0.5]]
    assert metrics.kl_to_reference(t(a), t(a), 4) == 0.0
    for tau in (1, 4):
        expected = sum(sum(p * math.log(p / q) for p, q in zip(softmax(ra, tau), softmax(rb, tau)))
                       for ra, rb in zip(a, b)) / 2
        assert metrics.kl_to_reference(t(a), t(b), tau) == pytest.approx(expected, rel=1e-12)
    # The model first: a stingy model against a full reference is finite, the other way round infinite.
    sparse = stingy_top(t(a), 2)
    assert math.isfinite(metrics.kl_to_reference(sparse, t(a), 4))
    assert metrics.kl_to_reference(t(a), sparse, 4) == INF


def test_sparsity_of_a_stingy_top2_output():
    z = t([[3.0, 1.0, 0.5, -0.5, 0.0, 0.2, -1.0, 0.1, 0.3, -0.2], [0.1, 0.2, 2.0, 1.5, 0.0, 0.0, 0.0, 0, 0, 0]])
    sparsity = metrics.sparsity(stingy_top(z, 2), tau=4)
    assert sparsity["active_classes"] == 2.0
    p = softmax([3.0, 1.0], 4)
    q = softmax([2.0, 1.5], 4)
    entropy = lambda r: -sum(x * math.log(x) for x in r)
    assert sparsity["entropy"] == pytest.approx((entropy(p) + entropy(q)) / 2, rel=1e-12)
    assert metrics.sparsity(z, tau=4)["active_classes"] == 10.0
    assert metrics.sparsity(t([[10.0, 0.0, -20.0]]), tau=1, threshold=1e-3)["active_classes"] == 1.0


def test_accuracy():
    assert metrics.accuracy(t(LOGITS), torch.tensor(LABELS)) == pytest.approx(80.0)  # row 3 predicts 0, not 1
    assert metrics.accuracy(stingy_top(t(LOGITS), 1), torch.tensor(LABELS)) == pytest.approx(80.0)


def test_split_metrics_stream_equals_batch_functions():
    g = torch.Generator().manual_seed(2)
    z, ref = torch.randn(50, 10, generator=g) * 2, torch.randn(50, 10, generator=g)
    y = torch.randint(0, 10, (50,), generator=g)
    acc = SplitMetrics(tau=4, reference=True)
    for chunk in (slice(0, 17), slice(17, 50)):
        acc.add(z[chunk], y[chunk], ref[chunk])
    got = acc.value()
    assert got["images"] == 50 and got["label_excluded"] == 0
    assert got["acc"] == pytest.approx(metrics.accuracy(z, y))
    assert got["ece"] == pytest.approx(metrics.ece(torch.softmax(z.double(), 1), y), abs=1e-12)
    assert got["nll"] == pytest.approx(metrics.nll(z, y), rel=1e-12)
    assert got["kl_to_reference"] == pytest.approx(metrics.kl_to_reference(z, ref, 4), rel=1e-12)
    sp = metrics.sparsity(z, 4)
    assert got["active_classes"] == pytest.approx(sp["active_classes"])
    assert got["entropy"] == pytest.approx(sp["entropy"], rel=1e-12)
