"""The method registry: a new attack is one definition and one registration, and a definition that is missing a
piece fails when it is registered, not in the middle of a run."""
import argparse
import json

import pytest
import torch.nn.functional as F

import distill_student
from conftest import TINY
from undistill import methods
from undistill.methods.attacks import TEACHER
from undistill.methods.core import REGISTRY, Method, kl
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
        REGISTRY[method.role].pop(method.name, None)


def test_a_new_attack_is_one_definition_and_one_registration(registered, ce_teacher, tmp_path):
    registered(Method("reverse-kd", "attack", "KL(student || teacher)", loss=reverse_kd, frozen="teacher",
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


def test_a_setting_without_its_option_fails_at_registration(registered):
    with pytest.raises(TypeError, match="reverse_kd takes tau, which no Option declares"):
        registered(Method("broken", "attack", "", loss=reverse_kd, frozen="teacher",
                          options=(Option("alpha", "weight", default=0.9), TEACHER)))
    assert "broken" not in methods.names("attack")


def test_a_frozen_model_without_its_option_fails_at_registration(registered):
    with pytest.raises(TypeError, match="frozen='teacher' is not one of its options"):
        registered(Method("forgetful", "attack", "", loss=reverse_kd, frozen="teacher",
                          options=(Option("alpha", "weight"), Option("tau", "temperature"))))


def test_a_shared_flag_must_be_read_the_same_way(registered):
    with pytest.raises(TypeError, match="option tau is read differently by kd"):
        registered(Method("odd", "attack", "", loss=reverse_kd, frozen="teacher",
                          options=(Option("alpha", "weight"), Option("tau", "temperature", type=int), TEACHER)))


def test_a_name_is_registered_once_per_role(registered):
    with pytest.raises(TypeError, match="already registered"):
        registered(Method("kd", "attack", "", loss=reverse_kd))
    registered(Method("kd", "defense", "a defense may share an attack's name", loss=methods.get("attack", "ls").loss,
                      options=methods.get("attack", "ls").options))


def test_every_method_is_named_by_its_paper_and_states_its_access():
    for role in methods.ROLES:
        for method in (methods.get(role, name) for name in methods.names(role)):
            assert method.summary and method.access in ("black-box", "white-box")
            assert "seed" not in method.paper.lower()  # papers are named by title and authors
    assert {m for m in methods.names("attack") if methods.get("attack", m).access == "white-box"} == {
        "dafl", "deepinversion"}


def test_the_help_lists_every_method_and_option():
    parser = argparse.ArgumentParser(prog="distill_student.py")
    methods.add_arguments(parser, "attack")
    usage = parser.format_help()
    for name in methods.names("attack"):
        assert f"{name}:" in usage
    for option in {o.flag_name for name in methods.names("attack") for o in methods.get("attack", name).options}:
        assert option in usage
