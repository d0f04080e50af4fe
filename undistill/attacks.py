"""Student attacks: objectives `f(logits, y, teacher_logits, *, settings...) -> loss` (formulas: METHODS.md).

The teacher is a black box: only its logits reach the objective, computed in eval mode without gradient.
Settings are keyword-only and filled from the command-line options of the same name.
"""
import torch.nn.functional as F

from .defenses import ce, kl, ls


def kd(logits, y, teacher_logits, *, alpha, tau):
    """Hinton KD: alpha tau^2 KL(p_tau(teacher) || p_tau(student)) + (1 - alpha) CE(student, y)."""
    return alpha * tau ** 2 * kl(teacher_logits, logits, tau) + (1 - alpha) * F.cross_entropy(logits, y)


ATTACKS = {"scratch": ce, "ls": ls, "kd": kd}
NEEDS_TEACHER = {"kd"}

# KD temperature per dataset (the teacher's tau_A in the papers' code); a stingy teacher is distilled at 20.
KD_TAU = {"mnist5k": 4.0, "cifar10": 4.0, "cifar100": 20.0, "tinyimagenet": 20.0, "imagenet": 4.0}
STINGY_TAU = 20.0
