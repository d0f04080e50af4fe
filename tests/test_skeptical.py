"""The skeptical student: heads in the right order and shapes, the teacher reaching only the chosen head, the
delay, and checkpoints that load and evaluate as ordinary students."""
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY, run_script
from undistill import checkpoint, models
from undistill.methods.attacks import skeptical


@pytest.mark.parametrize("arch", ["resnet18", "resnetc20", "mobilenetv2"])
def test_heads_are_ordered_final_then_stage_3_2_1(arch):
    torch.manual_seed(0)
    net = models.build(arch, 7, heads="skeptical")
    x = torch.randn(2, 3, 32, 32)
    heads = net.train()(x)
    assert heads.shape == (4, 2, 7)
    with torch.no_grad():
        net.eval()
        torch.testing.assert_close(net(x), net.backbone(x))  # eval: the wrapped network's own output
        maps = net.backbone.features(x)
        expected = torch.stack([net.backbone(x)] + [net.heads[j](maps[s]) for j, s in enumerate((2, 1, 0))])
        net.train()
        for m in net.modules():  # BatchNorm on running statistics, so train mode computes the same maps
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
        torch.testing.assert_close(net(x), expected)


def test_each_head_reads_its_own_stage():
    torch.manual_seed(0)
    net = models.build("resnetc20", 10, heads="skeptical")
    # ResNetC-20's maps: 16 ch at 32x32, 32 at 16x16, 64 at 8x8, then the final BN-ReLU map (64 at 8x8)
    stage1, stage3 = net.heads[2], net.heads[0]
    assert stage1.gate.conv[0].in_channels == 16 and stage3.gate.conv[0].in_channels == 64
    assert [(c[0].stride[0], c[5].out_channels) for c in stage1.convs] == [(2, 32), (2, 64), (1, 64)]
    assert [(c[0].stride[0], c[5].out_channels) for c in stage3.convs] == [(1, 64)]


def test_heads_refuse_a_network_without_stages():
    with pytest.raises(Exception, match="heads attach to the stages"):
        models.build("cnn", 10, heads="skeptical")


def kl(p_logits, q_logits, tau):
    return F.kl_div(F.log_softmax(q_logits / tau, 1), F.softmax(p_logits / tau, 1), reduction="batchmean")


def test_loss_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    heads, teacher = torch.randn(4, 5, 10, generator=g, dtype=torch.float64), torch.randn(5, 10, generator=g,
                                                                                          dtype=torch.float64)
    y = torch.randint(0, 10, (5,), generator=g)
    alpha, tau, loc = 0.9, 4.0, 2
    expected = (alpha * tau ** 2 * kl(teacher, heads[loc], tau) + (1 - alpha) * F.cross_entropy(heads[loc], y)
                + 0.3 * kl(heads[0], heads[1], tau) + 0.7 * F.cross_entropy(heads[1], y)
                + F.cross_entropy(heads[0], y))
    got, _ = skeptical(heads, y, teacher, 5, alpha=alpha, tau=tau, kd_head=loc, kd_delay=3)
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)


@pytest.mark.parametrize("kd_head", [1, 2, 3])
def test_the_teacher_reaches_only_the_chosen_head(kd_head):
    g = torch.Generator().manual_seed(1)
    heads = torch.randn(4, 6, 10, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (6,), generator=g)
    grads = []
    for teacher in (torch.randn(6, 10, generator=g, dtype=torch.float64), torch.zeros(6, 10, dtype=torch.float64)):
        h = heads.clone().requires_grad_()
        skeptical(h, y, teacher, 10, alpha=0.9, tau=4.0, kd_head=kd_head, kd_delay=0)[0].backward()
        grads.append(h.grad)
    moved = [(grads[0][i] - grads[1][i]).abs().max().item() > 1e-9 for i in range(4)]
    assert moved == [i == kd_head for i in range(4)]


def test_before_the_delay_only_the_final_head_learns_from_the_labels():
    g = torch.Generator().manual_seed(2)
    heads = torch.randn(4, 6, 10, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 10, (6,), generator=g)
    loss, _ = skeptical(heads, y, torch.randn(6, 10, generator=g, dtype=torch.float64), 2, alpha=0.9, tau=4.0,
                        kd_head=1, kd_delay=3)
    loss.backward()
    assert loss.item() == pytest.approx(F.cross_entropy(heads[0], y).item(), rel=1e-12)
    assert heads.grad[0].abs().sum() > 0 and heads.grad[1:].abs().sum() == 0


def aux_parameters(ckpt):
    return {k: v for k, v in ckpt["state_dict"].items() if k.startswith("heads.") and v.is_floating_point()
            and "running" not in k}


def test_skeptical_student_trains_delays_and_loads_as_an_ordinary_student(ce_teacher, tmp_path):
    # With plain SGD (no momentum, no decay), aux heads only move once the delay is over: the engine passes
    # the epoch to the objective.
    common = [*TINY, "--arch", "resnetc20", "--epochs", "1", "--opt", "sgd", "--momentum", "0", "--wd", "0",
              "--attack", "skeptical", "--teacher", str(ce_teacher)]
    torch.manual_seed(0)
    initial = aux_parameters({"state_dict": models.build("resnetc20", 10, heads="skeptical").state_dict()})
    for delay, moves in ((1, False), (0, True)):
        out = tmp_path / f"delay{delay}"
        run_script("distill_student.py", *common, "--kd-delay", str(delay), "--output", str(out))
        trained = aux_parameters(checkpoint.load(out / "checkpoint.pt"))
        assert any(not torch.equal(trained[k], initial[k]) for k in initial) is moves
    model, ckpt = checkpoint.load_classifier(out / "checkpoint.pt")
    assert ckpt["heads"] == "skeptical" and ckpt["arch"] == "resnetc20"
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    assert model(x).shape == (3, 10)  # eval mode: the final head only
    proc = run_script("-m", "undistill.evaluate", str(out / "checkpoint.pt"), "--cmi-split", "none",
                      "--output", str(tmp_path / "eval.json"))
    assert "top-1" in proc.stdout
