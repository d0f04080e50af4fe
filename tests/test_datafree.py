"""The data-free attacks: DAFL's and DeepInversion's losses and the students' (KD, HTC's target) on hand-computed
values, finite under a stingy teacher, the generator's shape, the training split withheld, white-box runs end to end,
exact resume after a SIGKILL, and two torchrun ranks."""
import json
import math
import sys

import pytest
import torch
from torch import nn

import distill_student
import train_teacher
from conftest import TINY, build_task, killed_and_resumed, run_script, step_once, tiny_classifier
from undistill import checkpoint, datasets, engine, report
from undistill.distributed import Context
from undistill.methods.datafree import (PenultimateFeatures, batchnorm_terms, bn_term, dafl, deepinversion,
                                        htc_student, kd_student, total_variation)
from undistill.models.generators import DaflGenerator
from undistill.releases import stingy_top

# Tiny data-free runs on mnist5k: a teacher, no training image.
DAFL = ["--attack", "dafl", "--batch-size", "16", "--steps-per-epoch", "3", "--latent-dim", "8"]
DAFL_HTC = ["--attack", "dafl-htc", *DAFL[2:], "--tau", "4", "--multiplier", "2"]
ARGV = {"dafl": DAFL, "dafl-htc": DAFL_HTC}
INVERSION = ["--attack", "deepinversion", "--batch-size", "8", "--di-batch", "8", "--di-iterations", "3",
             "--batches-per-epoch", "1", "--pool-batches", "4"]
QUICK = ["--dataset", "mnist5k", "--workers", "0", "--quiet", "--log-every", "1"]


def softmax(row):
    e = [math.exp(v) if v != -math.inf else 0.0 for v in row]
    return [v / sum(e) for v in e]


LOGITS = [[2.0, 0.5, -1.0], [0.1, 0.3, 1.2], [1.0, 1.5, 0.0], [-0.5, 0.0, 0.4]]
FEATURES = [[0.5, -1.0], [2.0, 0.0], [-0.25, 1.0], [0.0, 3.0]]


def test_dafl_generator_loss_hand_computed():
    argmax = [max(range(3), key=row.__getitem__) for row in LOGITS]
    one_hot = sum(-math.log(softmax(row)[c]) for row, c in zip(LOGITS, argmax)) / 4
    activation = -sum(abs(v) for row in FEATURES for v in row) / 8
    mean = [sum(softmax(row)[c] for row in LOGITS) / 4 for c in range(3)]
    entropy = sum(p * math.log10(p) for p in mean)  # the authors' code takes log10
    loss, terms = dafl(torch.tensor(LOGITS, dtype=torch.float64), torch.tensor(FEATURES, dtype=torch.float64),
                       w_one_hot=0.05, w_activation=0.01, w_entropy=5.0)
    assert terms["one_hot"].item() == pytest.approx(one_hot, rel=1e-12)
    assert terms["activation"].item() == pytest.approx(activation, rel=1e-12)
    assert terms["entropy"].item() == pytest.approx(entropy, rel=1e-12)
    assert loss.item() == pytest.approx(0.05 * one_hot + 0.01 * activation + 5.0 * entropy, rel=1e-12)


def test_dafl_loss_stays_finite_under_a_stingy_teacher():
    # k = 1 of 10: every class but the argmax gets probability 0 in every sample, so the batch mean has zeros.
    logits = stingy_top(torch.randn(6, 10, generator=torch.Generator().manual_seed(0)), 1).requires_grad_()
    features = torch.randn(6, 4, requires_grad=True)
    loss, terms = dafl(logits, features, w_one_hot=1.0, w_activation=0.1, w_entropy=5.0)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in terms.values())
    assert torch.isfinite(logits.grad[logits.isfinite()]).all() and torch.isfinite(features.grad).all()


def kl_rows(p_rows, q_rows):
    """KL(p || q) summed over classes, averaged over the rows."""
    return sum(sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0) for p, q in zip(p_rows, q_rows)) / len(p_rows)


STUDENT = [[0.3, -0.2, 1.1], [1.5, 0.0, -0.7], [-0.4, 0.9, 0.2], [0.0, 0.0, 0.0]]


def test_the_data_free_students_losses_hand_computed():
    t, s = torch.tensor(LOGITS, dtype=torch.float64), torch.tensor(STUDENT, dtype=torch.float64)
    at = lambda rows, tau: [softmax([v / tau for v in row]) for row in rows]
    # HTC's target: the teacher alone softened at tau, the student at temperature 1, the KL weighted by m
    loss, terms = htc_student(s, t, tau=5.0, multiplier=3.0)
    assert terms["kl"].item() == pytest.approx(kl_rows(at(LOGITS, 5.0), at(STUDENT, 1.0)), rel=1e-12)
    assert loss.item() == pytest.approx(3.0 * kl_rows(at(LOGITS, 5.0), at(STUDENT, 1.0)), rel=1e-12)
    # DAFL's own: both sides at tau, weighted by tau^2
    loss, terms = kd_student(s, t, tau=2.0)
    assert loss.item() == pytest.approx(4.0 * kl_rows(at(LOGITS, 2.0), at(STUDENT, 2.0)), rel=1e-12)
    # a stingy teacher's -inf logits: probability 0, a term of 0
    sparse = stingy_top(t, 1)
    loss, _ = htc_student(s, sparse, tau=5.0, multiplier=3.0)
    assert loss.item() == pytest.approx(3.0 * kl_rows(at(sparse.tolist(), 5.0), at(STUDENT, 1.0)), rel=1e-12)


def test_a_dafl_htc_step_distills_htcs_target_on_the_generated_images():
    teacher, student = tiny_classifier(1, classes=10, size=32), tiny_classifier(0, classes=10, size=32)
    task = build_task("attack", "dafl-htc", dict(w_one_hot=1.0, w_activation=0.1, w_entropy=5.0, latent_dim=8,
                                                 lr_generator=0.2, steps_per_epoch=2, tau=5.0, multiplier=3.0),
                      teacher, classes=10, image_size=32)
    seen = []
    student.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach().clone()))
    z, _ = next(iter(task.epoch(student, 0, None)[1]))
    step = step_once(task, student, z, None, lr=0.01)
    with torch.no_grad():
        t = teacher(seen[0]).double().tolist()
    s = step.logits.double().tolist()  # the student's logits before its update
    expected = kl_rows([softmax([v / 5.0 for v in row]) for row in t], [softmax(row) for row in s])
    assert set(step.terms) == {"one_hot", "activation", "entropy", "kl"}
    assert step.terms["kl"].item() == pytest.approx(expected, rel=1e-4)
    assert step.loss.item() == pytest.approx(1.0 * step.terms["one_hot"].item() + 0.1 * step.terms["activation"].item()
                                             + 5.0 * step.terms["entropy"].item() + 3.0 * expected, rel=1e-4)


def test_dafl_generator_is_the_authors_at_32_px_and_scales_to_64_and_224():
    generator = DaflGenerator(1000, 32)
    # l1, BN(128), conv 128->128 + BN, conv 128->64 + BN, conv 64->3, BN without affine
    expected = (1000 + 1) * 128 * 64 + 2 * 128 + (128 * 128 * 9 + 128) + 2 * 128 + (128 * 64 * 9 + 64) + 2 * 64 \
        + (64 * 3 * 9 + 3)
    assert sum(p.numel() for p in generator.parameters()) == expected
    assert [m.eps for m in generator.modules() if isinstance(m, nn.BatchNorm2d)] == [1e-5, 0.8, 0.8, 1e-5]
    for size, start in ((32, 8), (64, 8), (224, 7)):
        generator = DaflGenerator(16, size)
        images = generator(torch.randn(6, 16))
        assert generator.start == start and images.shape == (6, 3, size, size)
        # the last BN centres each channel of the batch: the teacher's normalized input space
        assert torch.allclose(images.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
        assert (images.var((0, 2, 3), unbiased=False) <= 1).all()


def test_penultimate_features_are_the_input_of_the_last_linear_layer():
    teacher = tiny_classifier(0)
    features = PenultimateFeatures(teacher)
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    teacher(x)
    assert torch.equal(features.value, ((x.float() - teacher.mean) / teacher.std).flatten(1))


def test_bn_term_is_zero_when_the_batch_has_the_running_statistics_and_hand_computed_otherwise():
    x = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mean, var = x.mean((0, 2, 3)), x.permute(1, 0, 2, 3).reshape(3, -1).var(1, unbiased=False)
    assert bn_term(x, mean, var).item() == pytest.approx(0.0, abs=1e-12)
    running_mean, running_var = mean + torch.tensor([0.3, 0.0, -0.4], dtype=torch.float64), var * 2
    expected = math.sqrt(0.3 ** 2 + 0.4 ** 2) + math.sqrt(sum(v ** 2 for v in var.tolist()))
    assert bn_term(x, running_mean, running_var).item() == pytest.approx(expected, rel=1e-12)


def test_batchnorm_terms_come_from_every_batchnorm_layer_while_open():
    teacher = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1),
                            nn.BatchNorm2d(2)).eval()
    x = torch.randn(2, 3, 5, 5)
    with batchnorm_terms(teacher) as terms:
        teacher(x)
    h = teacher[0](x)
    assert len(terms) == 2 and terms[0].item() == pytest.approx(bn_term(h, teacher[1].running_mean,
                                                                         teacher[1].running_var).item())
    teacher(x)
    assert len(terms) == 2  # closed: no hook left behind


def test_total_variation_hand_computed():
    a, b, c, d = 1.0, 4.0, -2.0, 0.5  # the image [[a, b], [c, d]]
    x = torch.tensor([[[[a, b], [c, d]]]], dtype=torch.float64)
    expected = (math.hypot(a - b, c - d) + math.hypot(a - c, b - d) + abs(c - b) + abs(a - d))
    assert total_variation(x).item() == pytest.approx(expected, rel=1e-12)


def test_deepinversion_loss_hand_computed_and_finite_under_a_stingy_teacher():
    images = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    targets = torch.tensor([0, 1, 2, 0])
    ce = sum(-math.log(softmax(row)[c]) for row, c in zip(LOGITS, targets.tolist())) / 4
    bn = [torch.tensor(0.5, dtype=torch.float64), torch.tensor(1.25, dtype=torch.float64)]
    loss, terms = deepinversion(torch.tensor(LOGITS, dtype=torch.float64), targets, bn, images, r_bn=10.0,
                                r_tv=0.1, r_l2=0.01)
    expected = ce + 10 * 1.75 + 0.1 * total_variation(images).item() + 0.01 * images.norm().item()
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert (terms["ce"].item(), terms["bn"].item()) == pytest.approx((ce, 1.75), rel=1e-12)
    # A release that zeroes a target's probability: its NLL is capped at -log 1e-8, and nothing is NaN.
    sparse = stingy_top(torch.tensor(LOGITS, dtype=torch.float64), 1).requires_grad_()
    loss, terms = deepinversion(sparse, targets, bn, images, r_bn=10.0, r_tv=0.1, r_l2=0.01)
    loss.backward()
    # Only sample 0's target is its kept class (probability 1); the three others are capped.
    assert terms["ce"].item() == pytest.approx(3 * -math.log(1e-8) / 4, rel=1e-12)
    assert torch.isfinite(loss) and torch.isfinite(sparse.grad).all()


def test_a_dafl_step_trains_generator_and_student_together():
    teacher, student = tiny_classifier(1, classes=10, size=32), tiny_classifier(0, classes=10, size=32)
    task = build_task("attack", "dafl", dict(w_one_hot=1.0, w_activation=0.1, w_entropy=5.0, latent_dim=8,
                                             lr_generator=0.2, steps_per_epoch=2, tau=1.0), teacher, classes=10,
                      image_size=32)
    generator_before = {k: v.clone() for k, v in task.generator.state_dict().items()}
    steps, batches = task.epoch(student, 0, None)
    z, _ = next(iter(batches))
    step = step_once(task, student, z, None, lr=0.01)
    assert steps == 2 and z.shape == (8, 8)
    assert set(step.terms) == {"one_hot", "activation", "entropy", "kl"} and torch.equal(step.labels,
                                                                                          step.labels.long())
    assert step.loss.item() == pytest.approx(1.0 * step.terms["one_hot"].item() + 0.1 * step.terms["activation"].item()
                                             + 5.0 * step.terms["entropy"].item() + step.terms["kl"].item(), rel=1e-5)
    assert any(not torch.equal(generator_before[k], v) for k, v in task.generator.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())
    # each epoch draws its own latents, the same ones when trained again
    again = next(iter(task.epoch(student, 0, None)[1]))[0]
    other = next(iter(task.epoch(student, 1, None)[1]))[0]
    assert torch.equal(again, z) and not torch.equal(other, z)


def test_the_training_split_of_a_data_free_run_is_withheld():
    info = datasets.load("mnist5k", train=False)
    config = train_teacher.parse_args([*TINY])
    config.loader, config.batch_size, config.seed = "torchvision", 50, 0
    with pytest.raises(RuntimeError, match="withheld"):
        engine.make_loader(info.train, config, Context(), train=True)
    with pytest.raises(RuntimeError, match="withheld"):
        info.train[0]


def test_subset_is_refused_for_a_data_free_attack(ce_teacher, tmp_path):
    proc = run_script("distill_student.py", *QUICK, *DAFL, "--teacher", str(ce_teacher), "--subset", "10",
                      "--output", str(tmp_path / "x"), check=False)
    assert proc.returncode == 2 and "data-free" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def stingy_teacher(ce_teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("stingy") / "stingy"
    train_teacher.main(train_teacher.parse_args([*TINY, "--defense", "stingy", "--from", str(ce_teacher),
                                                 "--output", str(out)]))
    return out / "checkpoint.pt"


@pytest.mark.parametrize("attack", ["dafl", "dafl-htc", "deepinversion"])
@pytest.mark.parametrize("which", ["ce", "stingy"])
def test_data_free_students_train_as_white_box_attacks(attack, which, ce_teacher, stingy_teacher, tmp_path):
    teacher = ce_teacher if which == "ce" else stingy_teacher
    out = tmp_path / attack
    distill_student.main(distill_student.parse_args([*QUICK, *ARGV.get(attack, INVERSION),
                                                     "--teacher", str(teacher), "--epochs", "2",
                                                     "--output", str(out)]))
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["method"], summary["access"]) == (attack, "white-box")
    assert checkpoint.load(out / "checkpoint.pt")["access"] == "white-box"
    if attack == "dafl-htc":
        assert (summary["settings"]["tau"], summary["settings"]["multiplier"]) == (4.0, 2.0)
    terms = {"deepinversion": {"kl"}}.get(attack, {"one_hot", "activation", "entropy", "kl"})
    for line in (out / "metrics.jsonl").read_text().splitlines():
        metrics = json.loads(line)
        assert set(metrics["terms"]) == terms and all(math.isfinite(v) for v in metrics["terms"].values())
    state = torch.load(out / "checkpoint.pt", weights_only=True)["task"]
    if attack == "deepinversion":  # the pool grows by one batch of 8 images per epoch
        assert state["images"].shape == (16, 3, 32, 32) and state["images"].dtype == torch.uint8
        assert state["targets"].tolist() == list(range(8)) * 2
    else:
        assert set(state) == {"generator", "optimizer"}
    rows, _ = report.verdict_rows(report.collect([out, teacher.parent]))
    assert [r["access"] for r in rows] == ["white-box"]


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["dafl", "deepinversion"])
def test_sigkill_then_resume_equals_uninterrupted_run(attack, ce_teacher, tmp_path):
    argv = [sys.executable, "distill_student.py", *QUICK, *(DAFL if attack == "dafl" else INVERSION), "--teacher",
            str(ce_teacher), "--epochs", "6"]
    if attack == "dafl":
        argv += ["--steps-per-epoch", "10"]
    else:
        argv += ["--di-iterations", "30", "--pool-batches", "8"]
    run_script(*argv[1:], "--output", str(tmp_path / "whole"))
    killed_at = killed_and_resumed([*argv, "--output", str(tmp_path / "killed")], tmp_path / "killed", seed=3)
    assert killed_at < 6
    whole, killed = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True) for d in ("whole", "killed"))
    for key, value in whole["state_dict"].items():
        assert torch.equal(value, killed["state_dict"][key]), key
    flat = lambda state: {k: v for k, v in state.items() if isinstance(v, torch.Tensor)} | (
        state.get("generator") or {})
    for key, value in flat(whole["task"]).items():
        assert torch.equal(value, flat(killed["task"])[key]), key
    strip = lambda d: [{k: v for k, v in json.loads(line).items() if k not in ("images_per_s", "time_s")}
                       for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
    assert strip("whole") == strip("killed")


@pytest.mark.slow
def test_a_module_trained_beside_the_model_gets_the_ranks_mean_gradient(tmp_path):
    run_script("tests/beside_worker.py", str(tmp_path), nproc=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    torch.manual_seed(0)
    nn.Linear(2, 1)
    initial = nn.Linear(2, 1).state_dict()  # the beside module as both ranks built it
    # loss weights 1 and 2 on the two ranks: mean gradient 1.5 * (x for the weight, 1 for the bias), lr 0.1
    assert torch.allclose(ranks[0]["weight"], initial["weight"] - 0.15) and torch.equal(ranks[0]["weight"],
                                                                                        ranks[1]["weight"])
    assert torch.allclose(ranks[0]["bias"], initial["bias"] - 0.15) and torch.equal(ranks[0]["bias"],
                                                                                    ranks[1]["bias"])


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["dafl", "deepinversion"])
def test_data_free_students_under_torchrun_with_two_processes(attack, ce_teacher, tmp_path):
    out = tmp_path / attack
    proc = run_script("distill_student.py", *QUICK, *(DAFL if attack == "dafl" else INVERSION), "--teacher",
                      str(ce_teacher), "--epochs", "2", "--output", str(out), nproc=2)
    assert proc.stdout.count("done:") == 1
    state = torch.load(out / "checkpoint.pt", weights_only=True)["task"]
    if attack == "deepinversion":  # each rank inverts its own batch per epoch: the pool holds both
        assert len(state["targets"]) == 2 * 2 * 8
        images = state["images"].view(2, 2, 8, -1).float()
        assert not torch.equal(images[0, 0], images[0, 1])  # the ranks drew different images
