"""The prediction-API releases (topk, rounded, label, reverse-sigmoid, noise) against hand computations, the noise's
counter-based generator, every attack's loss under them, the adaptive attacker's decoding of each, and their
checkpoints written by train_teacher.py."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

import train_teacher
from conftest import TINY, build_task, step_once, tiny_classifier
from undistill import UserError, checkpoint, datasets, methods
from undistill.methods.attacks import dkd, htc, kd, scm, skeptical
from undistill.methods.datafree import dafl, deepinversion
from undistill.releases import (complete_rounded, complete_topk, counter_normals, label, mix32, mul32, noise,
                                reverse_sigmoid, rounded, smoothed_label, stingy_top, topk)

INF = math.inf
ROW = [2.0, 1.0, 0.0, -1.0]
# Every API release, with settings of its transform (its checkpoint entry, less the name).
SETTINGS = {"topk": {"k": 2}, "rounded": {"decimals": 2}, "label": {},
            "reverse-sigmoid": {"rs_beta": 1.0, "rs_gamma": 0.1}, "noise": {"sigma": 0.2, "noise_seed": 0}}


def softmax(row):
    e = [math.exp(v) for v in row]
    return [x / sum(e) for x in e]


def log_or_inf(values):
    return [math.log(v) if v > 0 else -INF for v in values]


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def assert_rows(got, expected, rel=1e-12):
    """Equal entry by entry: the -inf ones exactly, the others to `rel`."""
    for got_row, expected_row in zip(got.tolist(), expected):
        for g, e in zip(got_row, expected_row):
            assert g == e if e == -INF else g == pytest.approx(e, rel=rel, abs=1e-15), (got_row, expected_row)


def random_logits(rows=64, classes=10, scale=3.0, seed=0):
    return torch.randn(rows, classes, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


# ---------------------------------------------------------------- topk

def test_topk_returns_the_log_of_the_k_largest_probabilities_not_renormalized():
    p = softmax(ROW)
    assert_rows(topk(t([ROW]), k=2), [[math.log(p[0]), math.log(p[1]), -INF, -INF]])
    assert_rows(topk(t([ROW]), k=1), [[math.log(p[0]), -INF, -INF, -INF]])
    kept = topk(t([ROW]), k=2).exp().sum().item()
    assert kept == pytest.approx(p[0] + p[1], rel=1e-12) and kept < 1  # what the API shows, not renormalized
    torch.testing.assert_close(topk(t([ROW]), k=4), F.log_softmax(t([ROW]), dim=1))


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("tau", [1.0, 4.0, 20.0])
def test_topk_distills_exactly_like_stingy_top_on_the_same_k(k, tau):
    # log p = z - logsumexp(z): a per-row shift, which softmax at any temperature does not see.
    z = random_logits()
    torch.testing.assert_close(F.softmax(topk(z, k=k) / tau, dim=1),
                               F.softmax(stingy_top(z, k) / tau, dim=1), rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- rounded

def test_rounded_hand_example():
    # p = (0.6439, 0.2369, 0.0871, 0.0321)
    assert_rows(rounded(t([ROW]), decimals=2), [log_or_inf([0.64, 0.24, 0.09, 0.03])])
    assert_rows(rounded(t([ROW]), decimals=1), [log_or_inf([0.6, 0.2, 0.1, 0.0])])
    assert_rows(rounded(t([ROW]), decimals=0), [log_or_inf([1.0, 0.0, 0.0, 0.0])])


def test_a_row_rounded_to_nothing_keeps_its_argmax_at_the_smallest_shown_value():
    # p = (0.24, 0.30, 0.27, 0.19): every probability rounds to 0 at 0 decimals.
    flat = [0.1, 0.3, 0.2, -0.15]
    assert max(softmax(flat)) < 0.5
    assert_rows(rounded(t([flat, ROW]), decimals=0), [[-INF, 0.0, -INF, -INF], [0.0, -INF, -INF, -INF]])
    # 30 nearly uniform classes (p about 0.033) at 1 decimal: the argmax at 0.1
    many = [[0.01 * c for c in range(30)]]
    assert_rows(rounded(t(many), decimals=1), [[-INF] * 29 + [math.log(0.1)]])


def test_rounding_keeps_the_argmax_where_it_ties_it_with_other_classes():
    # p = (0.28, 0.31, 0.21, 0.20) -> (0.3, 0.3, 0.2, 0.2): the teacher's top class stays on top, by one float step
    row = [math.log(v) for v in (0.28, 0.31, 0.21, 0.20)]
    out = rounded(t([row]), decimals=1)
    assert_rows(out, [log_or_inf([0.3, 0.3, 0.2, 0.2])])
    assert out.argmax(1).item() == 1 and out[0, 1].item() == math.nextafter(out[0, 0].item(), INF)
    assert out[0, 2].item() == out[0, 3].item()  # ties below the top stay ties
    z = random_logits(256, 10, scale=0.5)  # unconfident rows, many ties
    assert torch.equal(rounded(z, decimals=1).argmax(1), z.argmax(1))


def test_rounded_to_zero_decimals_is_the_label():
    z = random_logits(256, 4, scale=0.5)  # many rows whose top probability is below 1/2
    assert (F.softmax(z, dim=1).max(1).values < 0.5).any()
    assert torch.equal(rounded(z, decimals=0), label(z))


# ---------------------------------------------------------------- label

def test_label_is_the_log_one_hot_of_the_argmax():
    assert_rows(label(t([ROW, [0.0, 3.0, -1.0, 2.0]])), [[0.0, -INF, -INF, -INF], [-INF, 0.0, -INF, -INF]])
    z = random_logits()
    out = label(z)
    assert torch.equal(out.argmax(1), z.argmax(1)) and (out.isfinite().sum(1) == 1).all()


# ---------------------------------------------------------------- reverse sigmoid

def reverse_sigmoid_by_hand(row, beta, gamma):
    """Lee et al.'s perturbation, written out in Python floats."""
    p = softmax(row)
    perturbed = []
    for pc in p:
        c = min(max(pc, 1e-9), 1 - 1e-9)
        r = beta * (1 / (1 + math.exp(gamma * math.log((1 - c) / c))) - 0.5)  # sigmoid(-gamma log((1-c)/c))
        perturbed.append(min(max(pc - r, 0.0), 1.0))
    return log_or_inf([v / sum(perturbed) for v in perturbed])


@pytest.mark.parametrize("row,beta,gamma", [(ROW, 1.0, 0.1), (ROW, 0.7, 0.5), ([0.3, 0.2, 0.1], 1.0, 0.1),
                                            # p = 9e-14 < 1e-9: r from the clipped p, subtracted from p itself
                                            ([0.0, -4.6, -30.0], 1.0, 0.1),
                                            # the top class loses more than it has: clipped to 0
                                            ([10.0, 0.0, 0.0], 3.0, 0.5)])
def test_reverse_sigmoid_hand_computed(row, beta, gamma):
    expected = reverse_sigmoid_by_hand(row, beta, gamma)
    assert_rows(reverse_sigmoid(t([row]), rs_beta=beta, rs_gamma=gamma), [expected], rel=1e-10)


def test_reverse_sigmoid_clips_a_top_class_it_overturns():
    assert reverse_sigmoid_by_hand([10.0, 0.0, 0.0], 3.0, 0.5)[0] == -INF
    assert reverse_sigmoid(t([[10.0, 0.0, 0.0]]), rs_beta=3.0, rs_gamma=0.5)[0, 0].item() == -INF


def test_reverse_sigmoid_lifts_the_small_probabilities():
    # The deception: a class of probability ~0 gets more than one of probability 0.01.
    out = reverse_sigmoid(t([[0.0, -4.6, -30.0]]), rs_beta=1.0, rs_gamma=0.1).exp()[0]
    assert out[2] > out[1]


# ---------------------------------------------------------------- noise

def lowbias32(x):
    """The reference integer hash, in Python's unbounded integers."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) % 2 ** 32
    x ^= x >> 15
    x = (x * 0x846CA68B) % 2 ** 32
    return x ^ (x >> 16)


def test_the_32_bit_arithmetic_matches_python_integers():
    values = torch.randint(0, 2 ** 32, (1000,), generator=torch.Generator().manual_seed(0), dtype=torch.int64)
    values = torch.cat([values, torch.tensor([0, 1, 2 ** 32 - 1])])
    for m in (0x7FEB352D, 0x846CA68B, 0xFFFFFFFF):
        assert mul32(values, m).tolist() == [(v * m) % 2 ** 32 for v in values.tolist()]
    assert mix32(values).tolist() == [lowbias32(v) for v in values.tolist()] == [mix32(v) for v in values.tolist()]


def test_the_same_input_gets_the_same_noise_in_any_batch():
    z = random_logits(32)
    out = noise(z, sigma=0.2, noise_seed=0)
    assert torch.equal(out, noise(z, sigma=0.2, noise_seed=0))
    # alone, in halves, or shuffled: a row's answer depends on the row only (ranks and resumed runs agree)
    assert torch.equal(torch.cat([noise(z[:5], sigma=0.2, noise_seed=0),
                                  noise(z[5:], sigma=0.2, noise_seed=0)]), out)
    order = torch.randperm(32, generator=torch.Generator().manual_seed(1))
    assert torch.equal(noise(z[order], sigma=0.2, noise_seed=0), out[order])
    assert torch.equal(counter_normals(z.float(), 0), counter_normals(z, 0))  # the key: the logits' float32 bits


def test_another_seed_or_another_row_gets_other_noise():
    z = random_logits(32)
    n = counter_normals(z, 0)
    assert (counter_normals(z, 1) != n).all()
    # one logit one float32 step away: another input, another draw for every class
    nudged = z.float()
    nudged[:, 3] = torch.nextafter(nudged[:, 3], torch.tensor(INF))
    assert (counter_normals(nudged, 0) != n).all()
    # the same logits in another order are another row: another key, not the same draws by class
    assert (counter_normals(z.flip(1), 0) != n).all()


def test_the_counter_normals_are_standard_normal():
    n = counter_normals(random_logits(20000, 10), 0)
    assert abs(n.mean().item()) < 0.005 and n.std().item() == pytest.approx(1.0, abs=0.005)
    assert (n.abs() < 1).double().mean().item() == pytest.approx(0.6827, abs=0.003)
    assert (n.abs() < 2).double().mean().item() == pytest.approx(0.9545, abs=0.002)
    assert abs(torch.corrcoef(n[:, :2].T)[0, 1].item()) < 0.02  # classes independent
    assert abs(torch.corrcoef(torch.stack([n[:, 0], counter_normals(random_logits(20000, 10), 1)[:, 0]]))[0, 1]
               .item()) < 0.02  # seeds independent


def test_noise_is_sigma_times_the_counter_normals_renormalized():
    z, sigma = random_logits(64, 4, scale=0.3), 0.05  # no probability goes below 0 here
    noisy = F.softmax(z, dim=1) + sigma * counter_normals(z, 7)
    assert (noisy > 0).all()
    torch.testing.assert_close(noise(z, sigma=sigma, noise_seed=7), (noisy / noisy.sum(1, keepdim=True)).log())


def test_noise_never_gives_nan_and_a_row_with_nothing_left_answers_its_label():
    z = random_logits(2000, 3)
    out = noise(z, sigma=100.0, noise_seed=0)
    noisy = F.softmax(z, dim=1) + 100.0 * counter_normals(z, 0)
    empty = (noisy <= 0).all(1)
    assert 100 < empty.sum() < 500  # about 1/8 of the rows
    assert torch.equal(out[empty], label(z[empty]))
    assert not out.isnan().any() and (out.isfinite().sum(1) >= 1).all()
    torch.testing.assert_close(out[~empty].exp().sum(1), torch.ones(int((~empty).sum()), dtype=z.dtype))


# ---------------------------------------------------------------- the adaptive attacker's decodings

def test_a_topk_answer_is_completed_with_an_even_share_of_what_it_hides():
    p = softmax(ROW)
    hidden = (p[2] + p[3]) / 2  # below the smallest shown probability, p[1]: no cap
    assert_rows(complete_topk(topk(t([ROW]), k=2)), [log_or_inf([p[0], p[1], hidden, hidden])])


def test_a_rounded_answer_is_completed_with_at_most_half_a_step_per_hidden_class():
    # softmax(ROW) = .644 .237 .087 .032, to 1 decimal .6 .2 .1 0: 0.1 unaccounted for, the hidden class held
    # less than 0.05 (it rounded to 0): 0.05, then renormalized
    answer = rounded(t([ROW]), decimals=1)
    assert_rows(answer.exp(), [[0.6, 0.2, 0.1, 0.0]], rel=1e-9)
    assert_rows(complete_rounded(answer, decimals=1), [log_or_inf([0.6 / 0.95, 0.2 / 0.95, 0.1 / 0.95, 0.05 / 0.95])],
                rel=1e-9)


@pytest.mark.parametrize("release", ["label", "reverse-sigmoid", "noise"])
def test_a_perturbed_or_label_only_answer_is_read_as_its_smoothed_label(release):
    answer = methods.release_transform({"name": release, **SETTINGS[release]}, 4, "a test")(t([ROW]))
    assert_rows(smoothed_label(answer), [log_or_inf([0.925, 0.025, 0.025, 0.025])], rel=1e-9)


class RoundedRelease(torch.nn.Module):
    """A released model as an API answers: softmax(ROW) rounded to 1 decimal (.6 .2 .1 0) for every image."""

    def forward(self, x):
        return rounded(t([ROW]).expand(len(x), 4), decimals=1).float()


def test_the_adaptive_attack_distills_the_decoded_answers_and_refuses_a_release_without_decoding():
    # The attacker's target is the answers' completion: its step is KD towards complete_rounded(answers), not
    # towards the answers themselves.
    x, y = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8), torch.tensor([0, 1, 2, 3, 1, 2])
    settings = dict(alpha=0.9, tau=4.0, no_labels=False)
    release = RoundedRelease()
    task = build_task("attack", "adaptive", settings, release, classes=4, release={"name": "rounded", "decimals": 1})
    student = tiny_classifier(0, classes=4)
    with torch.no_grad():
        answers = release(x)
        target = complete_rounded(answers, decimals=1).float()
        expected = kd(student(x), y, target, **settings)[0].item()
        plain = kd(student(x), y, answers, **settings)[0].item()
    assert torch.allclose(task.reference(x).exp(), torch.tensor([[0.6, 0.2, 0.1, 0.05]]).expand(6, 4) / 0.95)
    assert step_once(task, student, x, y).loss.item() == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(plain, rel=1e-3)
    stingy = {"name": "stingy", "ratio": 0.5, "variant": "top"}
    with pytest.raises(UserError, match="is not a single release that has one"):
        build_task("attack", "adaptive", settings, tiny_classifier(1), release=stingy)


# ---------------------------------------------------------------- every release

def test_every_api_release_is_registered_and_round_trips_through_its_entry():
    assert set(SETTINGS) | {"stingy"} == {m for m in methods.names("defense") if methods.get("defense", m).release}
    z = random_logits(8)
    for name, settings in SETTINGS.items():
        entry = {"name": name, **settings}
        assert torch.equal(methods.release_transform(entry, 10, "test")(z), transform(name)(z, **settings))
    for bad, message in (({"name": "topk"}, "has the settings"), ({"name": "label", "k": 2}, "has the settings"),
                         ({"name": "nonsense"}, "unknown release"), ({"name": "ce"}, "unknown release"),
                         ({"name": "topk", "k": 11}, "k is at most the classes"),
                         ({"name": "topk", "k": 2.5}, "is not a int"), ({"name": "topk", "k": -1}, "outside"),
                         ({"name": "stingy", "ratio": 0.2, "variant": "odd"}, "is not one of top"),
                         ({"name": "rounded", "decimals": True}, "is not a int")):
        with pytest.raises(UserError, match=message):
            methods.release_transform(bad, 10, "test")


def transform(name):
    """A release's transform, as its definition carries it."""
    return methods.get("defense", name).release


@pytest.fixture(params=sorted(SETTINGS))
def released(request):
    """A release's answers to wide-ranging logits (some probabilities underflow to 0), as a teacher's output."""
    name = request.param
    z = random_logits(16, 10, scale=40.0, seed=3)
    return name, z, transform(name)(z, **SETTINGS[name])


def test_every_release_answers_a_distribution_without_nan(released):
    name, z, out = released
    assert not out.isnan().any() and out.dtype == z.dtype
    assert (out < 1e-12).all() and (out.isfinite().sum(1) >= 1).all()
    if name != "reverse-sigmoid":  # the others keep the argmax (noise: at sigma 0.2 on these confident rows)
        assert torch.equal(out.argmax(1), z.argmax(1))


@pytest.mark.parametrize("attack,settings", [
    (kd, {"alpha": 0.9, "tau": 20.0}), (htc, {"alpha": 0.9, "tau": 50.0, "multiplier": 50.0}),
    (scm, {"alpha": 0.9, "tau": 4.0, "multiplier": 16.0}),
    (dkd, {"alpha": 1.0, "beta": 8.0, "tau": 4.0, "dkd_warmup": 20})])
def test_every_black_box_attack_is_finite_on_every_release(released, attack, settings):
    _, z, teacher = released
    student = torch.randn(16, 10, generator=torch.Generator().manual_seed(4), dtype=torch.float64,
                          requires_grad=True)
    loss, terms = attack(student, z.argmax(1), teacher, 30, **settings)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in terms.values())
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


def test_the_skeptical_student_is_finite_on_every_release(released):
    _, z, teacher = released
    heads = torch.randn(4, 16, 10, generator=torch.Generator().manual_seed(5), dtype=torch.float64,
                        requires_grad=True)
    loss, _ = skeptical(heads, z.argmax(1), teacher, alpha=0.9, tau=20.0, kd_head=1, kd_delay=0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(heads.grad).all()


def test_white_box_losses_differentiate_through_every_release(released):
    # DAFL and DeepInversion back-propagate through the release to the teacher's logits: finite everywhere.
    name, z, _ = released
    for loss_of in (lambda out: dafl(out, torch.ones(16, 4, dtype=out.dtype), w_one_hot=1.0, w_activation=0.1,
                                     w_entropy=5.0)[0],
                    lambda out: deepinversion(out, torch.arange(16) % 10, [], torch.zeros(16, 3, 2, 2,
                                              dtype=out.dtype), r_bn=0.0, r_tv=0.0, r_l2=0.0)[0]):
        logits = z.clone().requires_grad_()
        out = transform(name)(logits, **SETTINGS[name])
        loss = loss_of(out)
        assert torch.isfinite(loss)
        if out.requires_grad:  # the label carries no gradient (rounding a zero one)
            loss.backward()
            assert torch.isfinite(logits.grad).all()


# ---------------------------------------------------------------- the released checkpoint

OPTIONS = {"topk": ["--k", "2"], "rounded": ["--decimals", "1"], "label": [],
           "reverse-sigmoid": ["--rs-beta", "1.0", "--rs-gamma", "0.1"],
           "noise": ["--sigma", "0.2", "--noise-seed", "3"]}
ENTRIES = {"topk": {"k": 2}, "rounded": {"decimals": 1}, "label": {},
           "reverse-sigmoid": {"rs_beta": 1.0, "rs_gamma": 0.1},
           "noise": {"sigma": 0.2, "noise_seed": 3}}


@pytest.fixture(scope="module")
def test_split():
    return datasets.load("mnist5k", train=False).test


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_train_teacher_writes_a_release_whose_model_answers_the_transform(ce_teacher, test_split, tmp_path, name):
    out = tmp_path / name
    train_teacher.main(train_teacher.parse_args([*TINY, "--defense", name, "--from", str(ce_teacher), *OPTIONS[name],
                                                 "--output", str(out)]))
    model, ckpt = checkpoint.load_classifier(out / "checkpoint.pt")
    assert ckpt["release"] == {"name": name, **ENTRIES[name]}
    assert ckpt["method"] == name and ckpt["settings"]["from"] == str(ce_teacher)
    teacher, _ = checkpoint.load_classifier(ce_teacher)
    with torch.no_grad():  # in the run's batches of 50
        answers, logits = (torch.cat([m(x) for x in test_split.images.split(50)]) for m in (model, teacher))
    released = methods.release_transform(ckpt["release"], 10, "test")
    assert torch.equal(answers, released(logits))  # a black-box user only ever sees the release
    assert not answers.isnan().any()
    labels = torch.as_tensor(test_split.labels)
    accuracy = 100 * (answers.argmax(1) == labels).double().mean().item()
    assert json.loads((out / "summary.json").read_text())["last_acc"] == pytest.approx(accuracy)
    if name in ("topk", "rounded", "label"):  # the argmax is kept: the teacher's accuracy
        assert accuracy == pytest.approx(100 * (logits.argmax(1) == labels).double().mean().item())


@pytest.mark.parametrize("argv,message", [
    (["--defense", "topk", "--k", "0"], r"--k 0 is outside \[1, inf\)"),
    (["--defense", "rounded", "--decimals", "16"], r"--decimals 16 is outside \[0, 15\]"),
    (["--defense", "noise", "--sigma", "0"], r"--sigma 0.0 is outside \(0, inf\)"),
    (["--defense", "stingy", "--k", "2"], "--k is not an option of --defense stingy")])
def test_release_options_are_checked_before_anything_is_written(ce_teacher, tmp_path, argv, message):
    out = tmp_path / "refused"
    with pytest.raises(UserError, match=message):
        train_teacher.main(train_teacher.parse_args([*TINY, *argv, "--from", str(ce_teacher), "--output", str(out)]))
    assert not (out / "checkpoint.pt").exists()


def test_topk_refuses_more_classes_than_the_teacher_has(ce_teacher, tmp_path):
    out = tmp_path / "refused"
    with pytest.raises(UserError, match="a top-11 release of a teacher with 10 classes"):
        train_teacher.main(train_teacher.parse_args([*TINY, "--defense", "topk", "--k", "11", "--from",
                                                     str(ce_teacher), "--output", str(out)]))
    assert not out.exists()
    torch.testing.assert_close(topk(random_logits(3), k=10), F.log_softmax(random_logits(3), dim=1))
