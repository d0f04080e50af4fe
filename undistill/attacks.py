"""Student attacks: objectives `f(logits, y, teacher_logits, *, settings...) -> loss` (formulas: METHODS.md).

The teacher is a black box: only its logits reach the objective, computed in eval mode without gradient; with
several teachers it is the mean of their logits (SCM's ensemble). Settings are keyword-only and filled from the
command-line options of the same name. An objective with an `epoch` parameter also gets the current epoch
(0-based) from the engine. The skeptical student's `logits` are its heads, [final, after stage 3, 2, 1].
"""
import torch
import torch.nn.functional as F

from .defenses import ce, kl, ls


def labels_term(logits, y, alpha, no_labels):
    """(1 - alpha) CE(student, y), or nothing for an attacker without labels (--no-labels)."""
    return 0.0 if no_labels else (1 - alpha) * F.cross_entropy(logits, y)


def scm(logits, y, teacher_logits, *, alpha, tau, multiplier, no_labels=False):
    """Sequence of contrastive models (seed 002 eq. 11): (1 - alpha) CE + alpha m KL(p_tau(ensemble) || p_tau(s))."""
    return alpha * multiplier * kl(teacher_logits, logits, tau) + labels_term(logits, y, alpha, no_labels)


def kd(logits, y, teacher_logits, *, alpha, tau, no_labels=False):
    """Hinton KD: alpha tau^2 KL(p_tau(teacher) || p_tau(student)) + (1 - alpha) CE(student, y)."""
    return scm(logits, y, teacher_logits, alpha=alpha, tau=tau, multiplier=tau ** 2, no_labels=no_labels)


def htc(logits, y, teacher_logits, *, alpha, tau, multiplier, no_labels=False):
    """High temperature composition (seed 002 eq. 9): (1 - alpha) CE + alpha m KL(p_tau(teacher) || p_1(student)).

    Only the teacher is softened (tau high; seed 002 searches 4..100): the student matches it at temperature 1.
    """
    return alpha * multiplier * kl(teacher_logits / tau, logits, 1.0) + labels_term(logits, y, alpha, no_labels)


def dkd_terms(logits, teacher_logits, y, tau):
    """Per-sample TCKD and NCKD of decoupled KD (Zhao et al., CVPR 2022), before the tau^2 scaling.

    TCKD = KL(b_t || b_s) over the binary (target, rest) split; NCKD = KL(p^_t || p^_s) over the non-target
    classes renormalized. Per sample, KL(p_t || p_s) = TCKD + (1 - p_t[target]) NCKD.
    """
    target = F.one_hot(y, logits.shape[1]).bool()
    p_s, p_t = F.softmax(logits / tau, dim=1), F.softmax(teacher_logits / tau, dim=1)

    def binary(p):
        p_target = (p * target).sum(1, keepdim=True)
        return torch.cat([p_target, 1 - p_target], dim=1).clamp_min(1e-12)

    b_s, b_t = binary(p_s), binary(p_t)
    tckd = (b_t * (b_t.log() - b_s.log())).sum(1)
    # The target class is masked with a large finite negative (not -inf) so that 0 * log 0 stays 0.
    masked_s = F.log_softmax(logits / tau - 1000.0 * target, dim=1)
    masked_t = F.softmax(teacher_logits / tau - 1000.0 * target, dim=1)
    nckd = F.kl_div(masked_s, masked_t, reduction="none").sum(1)
    return tckd, nckd


def dkd(logits, y, teacher_logits, epoch=0, *, alpha, beta, tau, dkd_warmup):
    """Decoupled KD: CE + min((epoch + 1) / warmup, 1) tau^2 (alpha TCKD + beta NCKD), batch means."""
    tckd, nckd = dkd_terms(logits, teacher_logits, y, tau)
    ramp = min((epoch + 1) / dkd_warmup, 1.0) if dkd_warmup > 0 else 1.0
    return F.cross_entropy(logits, y) + ramp * tau ** 2 * (alpha * tckd.mean() + beta * nckd.mean())


def skeptical(heads, y, teacher_logits, epoch=0, *, alpha, tau, kd_head, kd_delay):
    """Skeptical student: the teacher is distilled only into head `kd_head`; the final head learns from the
    labels and is tied to the stage-3 head by a KL term (gradient to both sides, as METHODS.md writes it).
    Before epoch `kd_delay`: CE of the final head only.

    alpha tau^2 KL(p_tau(t) || p_tau(h_loc)) + (1 - alpha) CE(h_loc) + 0.3 KL(p_tau(h_final) || p_tau(h_1))
    + 0.7 CE(h_1) + CE(h_final).
    """
    final, first = heads[0], heads[1]
    if epoch < kd_delay:
        # 0 * the other heads keeps every parameter in the graph, as DDP requires.
        return F.cross_entropy(final, y) + 0.0 * heads[1:].sum()
    loc = heads[kd_head]
    return (alpha * tau ** 2 * kl(teacher_logits, loc, tau) + (1 - alpha) * F.cross_entropy(loc, y)
            + 0.3 * kl(final, first, tau) + 0.7 * F.cross_entropy(first, y) + F.cross_entropy(final, y))


ATTACKS = {"scratch": ce, "ls": ls, "kd": kd, "htc": htc, "scm": scm, "dkd": dkd, "skeptical": skeptical}
NEEDS_TEACHER = {"kd", "htc", "scm", "dkd", "skeptical"}
STUDENT_HEADS = {"skeptical": "skeptical"}  # attacks that train a student with auxiliary heads (models.HEADS)

# KD temperature per dataset (the teacher's tau_A in the papers' code); a stingy teacher is distilled at 20.
KD_TAU = {"mnist5k": 4.0, "cifar10": 4.0, "cifar100": 20.0, "tinyimagenet": 20.0, "imagenet": 4.0}
STINGY_TAU = 20.0
HTC_TAU, HTC_MULTIPLIER = 50.0, 50.0  # seed 002 Fig. 4 (tau 50, m 50; alpha 0.9)
DKD_TAU = 4.0  # Zhao et al.'s CIFAR setting (with alpha 1, beta 8, warmup 20)


def default_settings(attack, dataset, stingy_teacher):
    """alpha, tau and the multiplier m an attack takes when not given: the papers' values."""
    tau = {"htc": HTC_TAU, "dkd": DKD_TAU}.get(attack, STINGY_TAU if stingy_teacher else KD_TAU[dataset])
    return {"alpha": 1.0 if attack == "dkd" else 0.9, "tau": tau,
            "multiplier": HTC_MULTIPLIER if attack == "htc" else tau ** 2}
