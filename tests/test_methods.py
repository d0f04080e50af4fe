"""The method registry: a new attack, a new release and a new per-dataset default are each one definition and one
registration, and a definition that is missing a piece fails when it is registered, not in the middle of a run."""
import argparse
import json

import pytest
import torch
import torch.nn.functional as F

import distill_student
import train_teacher
from conftest import TINY
from undistill import checkpoint, methods
from undistill.methods.attacks import TEACHER
from undistill.methods.core import REGISTRY, Method, kl
from undistill.methods.defenses import FROM
from undistill.options import Option


def reverse_kd(logits, y, teacher_logits, epoch=0, *, alpha, tau):
    """Reverse KD: alpha tau^2 KL(p_tau(student) || p_tau(teacher)) + (1 - alpha) CE."""
    kl_term, ce_term = kl(logits, teacher_logits, tau), F.cross_entropy(logits, y)
    return alpha * tau ** 2 * kl_term + (1 - alpha) * ce_term, {"kl": kl_term, "ce": ce_term}


@pytest.fixture
def registered():
    """Register definitions for one test, and remove them afterwards."""
    added = []

    def register(method):
        methods.register(method)
        added.append(method)  # only once registered: a refused one must not take the original's place away
        return method
    yield register
    for method in added:
        REGISTRY[method.kind].pop(method.name, None)


def test_a_new_attack_is_one_definition_and_one_registration(registered, ce_teacher, tmp_path):
    registered(Method("reverse-kd", "attack", "KL(student || teacher)", loss=reverse_kd, queries="teacher",
                      options=(Option("alpha", "weight of the KL term", default=0.9, range="[0, 1]"),
                               Option("tau", "temperature", default=4.0, range="(0, inf)"), TEACHER)))
    out = tmp_path / "reverse"
    distill_student.main(distill_student.parse_args(
        [*TINY, "--attack", "reverse-kd", "--teacher", str(ce_teacher), "--tau", "2", "--epochs", "1",
         "--output", str(out)]))
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["method"], summary["access"]) == ("reverse-kd", "black-box")
    assert summary["settings"] == {"alpha": 0.9, "tau": 2.0, "teacher": str(ce_teacher)}
    [line] = (out / "metrics.jsonl").read_text().splitlines()
    metrics = json.loads(line)
    assert set(metrics["terms"]) == {"kl", "ce"}
    assert metrics["loss"] == pytest.approx(0.9 * 4 * metrics["terms"]["kl"] + 0.1 * metrics["terms"]["ce"],
                                            rel=1e-4)


def halved(z, *, scale):
    """A toy release: every logit times `scale`."""
    return z * scale


def test_a_new_release_is_one_definition_and_one_registration(registered, ce_teacher, tmp_path):
    registered(Method("scaled", "defense", "the logits scaled", options=(FROM, Option("scale", "factor",
                                                                                         default=0.5)),
                      release=halved, queries="from"))
    out = tmp_path / "scaled"
    train_teacher.main(train_teacher.parse_args([*TINY, "--defense", "scaled", "--from", str(ce_teacher),
                                                 "--scale", "0.25", "--output", str(out)]))
    model, ckpt = checkpoint.load_classifier(out / "checkpoint.pt")
    assert ckpt["release"] == {"name": "scaled", "scale": 0.25}
    teacher, _ = checkpoint.load_classifier(ce_teacher)
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), 0.25 * teacher(x))  # it answers through the definition's transform
    # and a student distills from it as from any release: KD at a released teacher's temperature
    student = tmp_path / "student"
    distill_student.main(distill_student.parse_args([*TINY, "--attack", "kd", "--teacher", str(out / "checkpoint.pt"),
                                                     "--epochs", "1", "--output", str(student)]))
    assert json.loads((student / "summary.json").read_text())["settings"]["tau"] == 20.0


def test_a_per_dataset_default_is_one_entry_of_the_definition(registered, ce_teacher, tmp_path):
    registered(Method("warm-kd", "attack", "KD at the dataset's temperature", loss=methods.get("attack", "kd").loss,
                      queries="teacher", options=methods.get("attack", "kd").options,
                      per_dataset={"mnist5k": {"tau": 3.0, "epochs": 2}}))
    out = tmp_path / "warm"
    distill_student.main(distill_student.parse_args([*TINY, "--attack", "warm-kd", "--teacher", str(ce_teacher),
                                                     "--output", str(out)]))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["tau"] == 3.0 and summary["epochs"] == 2  # the definition's values for mnist5k
    assert methods.get("attack", "warm-kd").default("tau", "cifar10") == 4.0  # elsewhere, the option's default


def test_values_for_a_dataset_must_name_options(registered):
    with pytest.raises(TypeError, match="its values for mnist5k name temperature"):
        registered(Method("typo", "attack", "", loss=reverse_kd, queries="teacher",
                          options=(Option("alpha", "weight"), Option("tau", "temperature"), TEACHER),
                          per_dataset={"mnist5k": {"temperature": 2.0}}))


def test_a_setting_without_its_option_fails_at_registration(registered):
    with pytest.raises(TypeError, match="reverse_kd takes tau, which no Option declares"):
        registered(Method("broken", "attack", "", loss=reverse_kd, queries="teacher",
                          options=(Option("alpha", "weight", default=0.9), TEACHER)))
    assert "broken" not in methods.names("attack")


def test_a_frozen_model_without_its_option_fails_at_registration(registered):
    with pytest.raises(TypeError, match="queries='teacher' is not one of its options"):
        registered(Method("forgetful", "attack", "", loss=reverse_kd, queries="teacher",
                          options=(Option("alpha", "weight"), Option("tau", "temperature"))))


def test_a_shared_flag_must_be_read_the_same_way(registered):
    with pytest.raises(TypeError, match="option tau is read differently by kd"):
        registered(Method("odd", "attack", "", loss=reverse_kd, queries="teacher",
                          options=(Option("alpha", "weight"), Option("tau", "temperature", type=int), TEACHER)))


def test_a_name_is_registered_once_per_role(registered):
    with pytest.raises(TypeError, match="already registered"):
        registered(Method("kd", "attack", "", loss=reverse_kd))
    registered(Method("kd", "defense", "a defense may share an attack's name", loss=methods.get("attack", "ls").loss,
                      options=methods.get("attack", "ls").options))


def test_every_method_is_named_by_its_paper_and_states_its_access():
    for kind in methods.KINDS:
        for method in (methods.get(kind, name) for name in methods.names(kind)):
            assert method.summary and method.access in ("black-box", "white-box")
            assert "seed" not in method.paper.lower()  # papers are named by title and authors
    assert {m for m in methods.names("attack") if methods.get("attack", m).access == "white-box"} == {
        "dafl", "dafl-htc", "deepinversion"}


def test_the_help_lists_every_method_and_option():
    parser = argparse.ArgumentParser(prog="distill_student.py")
    methods.add_arguments(parser, "attack")
    usage = parser.format_help()
    for name in methods.names("attack"):
        assert f"{name}:" in usage
    for option in {o.flag_name for name in methods.names("attack") for o in methods.get("attack", name).options}:
        assert option in usage
