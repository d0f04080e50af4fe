"""The verdict's statistics against hand computations: paired intervals over 2 and 3 seeds, the three outcomes (a
straddling case, a tie), one seed's indication, the headroom that voids a question, and a release judged over
several attacks with the best of them taken into account."""
import math

import pytest

from undistill import verdict as stats

# Student's t quantiles t(0.975, df), from the printed tables
T975 = {1: 12.706, 2: 4.303, 4: 2.776}


def test_three_seeds_hand_computed():
    iv = stats.paired({0: 83.0, 1: 84.0, 2: 83.0}, {0: 81.0, 1: 81.5, 2: 81.0})  # d = 2, 2.5, 2
    mean, std = 6.5 / 3, math.sqrt(((2 - 6.5 / 3) ** 2 * 2 + (2.5 - 6.5 / 3) ** 2) / 2)
    half = T975[2] * std / math.sqrt(3)
    assert (iv.mean, iv.std, iv.n) == (pytest.approx(mean), pytest.approx(std), 3)
    assert (iv.low, iv.high) == (pytest.approx(mean - half, abs=1e-3), pytest.approx(mean + half, abs=1e-3))
    assert iv.low > 0 and iv.outcome == stats.CLONED
    assert iv.text() == f"+{mean:.2f} ± {std:.2f} [+{mean - half:.2f}, +{mean + half:.2f}]"


def test_two_seeds_are_wide():
    iv = stats.paired({0: 81.0, 1: 83.0}, {0: 80.0, 1: 80.0})  # d = 1, 3: mean 2, std sqrt(2)
    half = T975[1] * math.sqrt(2) / math.sqrt(2)
    assert (iv.low, iv.high) == (pytest.approx(2 - half, abs=1e-3), pytest.approx(2 + half, abs=1e-3))
    assert iv.outcome == stats.INCONCLUSIVE  # +2 points, but two seeds cannot tell it from noise


def test_a_straddling_interval_is_inconclusive_not_its_mean():
    iv = stats.interval([1.0, -1.0, 0.5])  # mean +0.17 > 0, yet well inside the noise
    assert iv.mean == pytest.approx(1 / 6) and iv.low < 0 < iv.high and iv.outcome == stats.INCONCLUSIVE
    assert stats.interval([-1.0, -2.0, -1.5]).outcome == stats.UNDISTILLABLE  # high = -1.5 + 0.5 * 4.303 / sqrt(3)
    assert stats.interval([-1.0, -2.0, -1.5]).high == pytest.approx(-1.5 + 0.5 * T975[2] / math.sqrt(3), abs=1e-3)


def test_a_tie_with_the_ls_student_is_undistillable():
    iv = stats.paired({0: 80.0, 1: 81.0, 2: 79.0}, {0: 80.0, 1: 81.0, 2: 79.0})
    assert (iv.mean, iv.low, iv.high) == (0, 0, 0) and iv.outcome == stats.UNDISTILLABLE  # at or below 0


def test_one_seed_only_indicates():
    iv = stats.paired({0: 90.0}, {0: 80.0})
    assert (iv.low, iv.outcome, iv.text()) == (None, stats.INDICATIVE, "+10.00 (1 seed)")
    assert stats.paired({0: 90.0}, {1: 80.0}) is None  # no seed in common: nothing to pair


def test_a_teacher_no_better_than_the_labels_voids_the_question():
    room = stats.headroom(81.5, {0: 80.0, 1: 81.0, 2: 82.0})  # d = 1.5, 0.5, -0.5: [-1.98, +2.98]
    assert room.low == pytest.approx(0.5 - T975[2] / math.sqrt(3), abs=1e-3) and not stats.has_headroom(room)
    assert stats.has_headroom(stats.headroom(96.5, {0: 80.0, 1: 81.0, 2: 82.0}))
    assert stats.has_headroom(stats.headroom(81.5, {0: 81.0})) and stats.has_headroom(None) is None


def test_runs_without_common_seeds_take_welchs_interval():
    iv = stats.unpaired([82.0, 84.0, 83.0], [80.0, 81.0])
    va, vb = 1.0 / 3, 0.5 / 2
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 1)
    assert iv.mean == pytest.approx(2.5) and df == pytest.approx(2.88, abs=0.01)
    assert iv.high - iv.mean == pytest.approx(stats.t_quantile(0.975, df) * math.sqrt(va + vb))
    assert stats.unpaired([82.0], [80.0, 81.0]).outcome == stats.INDICATIVE


def test_a_release_is_cloned_only_by_an_attack_beyond_the_best_of_many():
    clone = stats.interval([2.0, 2.5, 3.0])  # [+1.26, +3.74] alone
    held = stats.interval([-3.0, -2.5, -2.0])
    two = stats.release_verdict({"kd": clone, "htc": held})
    # the family interval: t(1 - 0.025 / 2, 2) = 6.205, so +2.5 -/+ 6.205 * 0.5 / sqrt(3) = [+0.71, +4.29]
    assert two["outcome"] == stats.CLONED and two["attack"] == "kd"
    assert two["family_interval"]["low"] == pytest.approx(2.5 - 6.205 * 0.5 / math.sqrt(3), abs=1e-3)
    # among 40 attacks the same student no longer stands out from noise: t(1 - 0.05 / 80, 2) = 28.3
    many = stats.release_verdict({"kd": clone, **{f"a{i}": held for i in range(39)}})
    assert many["outcome"] == stats.INCONCLUSIVE and many["family_interval"]["low"] < 0


def test_a_release_is_undistillable_only_when_every_attack_is():
    held, noisy = stats.interval([-3.0, -2.5, -2.0]), stats.interval([1.0, -1.0, 0.5])
    assert stats.release_verdict({"kd": held, "htc": held})["outcome"] == stats.UNDISTILLABLE
    mixed = stats.release_verdict({"kd": held, "htc": noisy})
    assert mixed["outcome"] == stats.INCONCLUSIVE and mixed["attack"] == "htc"  # the strongest: the largest mean
    assert mixed["counts"] == {stats.CLONED: 0, stats.UNDISTILLABLE: 1, stats.INCONCLUSIVE: 1, stats.INDICATIVE: 0}
    one_seed = stats.release_verdict({"kd": stats.interval([3.0]), "htc": held})
    assert one_seed["outcome"] == stats.INDICATIVE and one_seed["attack"] == "kd"
    assert stats.release_verdict({})["outcome"] is None
