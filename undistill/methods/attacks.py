"""Student attacks (`distill_student.py --attack`): scratch and ls (no teacher), kd, htc, scm, dkd, skeptical.

The teacher is a black box: only its logits reach the loss, computed in eval mode without gradient; with several
--teacher it is the mean of their logits (SCM's ensemble). Formulas and their sources: docs/methods.md. Each loss
returns (loss, {term: value}).
"""
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import UserError
from ..options import Option
from .core import SMOOTHING, Method, Supervised, ce, kl, ls, query, register, release_decoder

TEACHER = Option("teacher", "checkpoint(s) written by train_teacher.py (any defense); several: their logits' mean",
                 type=Path, many=True)
ALPHA = Option("alpha", "weight of the teacher term", default=0.9, range="[0, 1]")
NO_LABELS = Option("no_labels", "the attacker has no labels: no CE term", flag=True, default=False)
# KD's temperature is the teacher's tau_A in the papers' code (ImageNet, where no paper trains a nasty teacher: 4),
# and 20 for any released teacher (stingy or an API release: the Stingy Teacher code's setting)
KD_TAU = {"mnist5k": dict(tau=4.0), "cifar10": dict(tau=4.0), "cifar100": dict(tau=20.0),
          "tinyimagenet": dict(tau=20.0), "imagenet": dict(tau=4.0)}
RELEASED_TAU = dict(tau=20.0)
# The attacker's temperatures, spanning the Nasty Teacher paper's ablation of the student's tau (1 to 20)
TAU_SEARCH = {"tau": (1.0, 2.0, 4.0, 8.0, 20.0)}
# Jandial et al. search HTC's and SCM's m in {1, 5, 10, 50} and tau in {4, 20, 50, 100} (alpha in 0.1..0.9, which
# their ablations fix at 0.9, as here; Tiny-ImageNet adds tau 200)
JANDIAL_SEARCH = {"tau": (4.0, 20.0, 50.0, 100.0), "multiplier": (1.0, 5.0, 10.0, 50.0)}


HTC_TAU = Option("tau", "the teacher's temperature (its Fig. 4: 50)", default=50.0, range="(0, inf)")
HTC_MULTIPLIER = Option("multiplier", "weight m of the KL term (its Fig. 4: 50)", default=50.0, range="(0, inf)")


def kd_tau(help):
    return Option("tau", f"{help} (default: the papers' for the dataset, {RELEASED_TAU['tau']:g} for a released "
                  "teacher)", default=4.0, range="(0, inf)")


register(Method("scratch", "attack", "labels only (CE)", loss=ce))

register(Method("ls", "attack", "labels with label smoothing: the baseline of the undistillable verdict",
                "the baseline of Towards Undistillable Models by Minimizing Conditional Mutual Information (Ye et al.)",
                options=(SMOOTHING,), loss=ls))


def with_labels(loss, terms, logits, y, alpha, no_labels):
    """Add (1 - alpha) CE(student, y), unless the attacker has no labels (--no-labels)."""
    if no_labels:
        return loss, terms
    ce_term = F.cross_entropy(logits, y)
    return loss + (1 - alpha) * ce_term, dict(terms, ce=ce_term)


def scm(logits, y, teacher_logits, epoch=0, *, alpha, tau, multiplier, no_labels=False):
    """Sequence of contrastive models: alpha m KL(p_tau(ensemble) || p_tau(student)) + (1 - alpha) CE."""
    kl_term = kl(teacher_logits, logits, tau)
    return with_labels(alpha * multiplier * kl_term, {"kl": kl_term}, logits, y, alpha, no_labels)


def kd(logits, y, teacher_logits, epoch=0, *, alpha, tau, no_labels=False):
    """Hinton KD: alpha tau^2 KL(p_tau(teacher) || p_tau(student)) + (1 - alpha) CE(student, y)."""
    return scm(logits, y, teacher_logits, alpha=alpha, tau=tau, multiplier=tau ** 2, no_labels=no_labels)


def htc(logits, y, teacher_logits, epoch=0, *, alpha, tau, multiplier, no_labels=False):
    """High temperature composition: alpha m KL(p_tau(teacher) || p_1(student)) + (1 - alpha) CE.

    Only the teacher is softened (tau high; the paper searches 4..100): the student matches it at temperature 1.
    """
    kl_term = kl(teacher_logits / tau, logits, 1.0)
    return with_labels(alpha * multiplier * kl_term, {"kl": kl_term}, logits, y, alpha, no_labels)


register(Method(
    "kd", "attack", "alpha tau^2 KL(p_tau(teacher) || p_tau(student)) + (1 - alpha) CE",
    "Distilling the Knowledge in a Neural Network (Hinton et al., 2015)",
    options=(ALPHA, kd_tau("temperature"), NO_LABELS, TEACHER), loss=kd, queries="teacher", per_dataset=KD_TAU,
    for_released=RELEASED_TAU, search=TAU_SEARCH))

register(Method(
    "htc", "attack", "high temperature composition: alpha m KL(p_tau(teacher) || p_1(student)) + (1 - alpha) CE",
    "Distilling the Undistillable: Learning from a Nasty Teacher (Jandial et al., ECCV 2022), eq. 9",
    options=(ALPHA, HTC_TAU, HTC_MULTIPLIER, NO_LABELS, TEACHER),
    loss=htc, queries="teacher", search=JANDIAL_SEARCH))

register(Method(
    "scm", "attack", "sequence of contrastive models: alpha m KL(p_tau(ensemble) || p_tau(student)) + (1 - alpha) CE, "
    "the ensemble the mean logits of several --teacher (recipes/tools/scm_sequence.sh builds them)",
    "Distilling the Undistillable: Learning from a Nasty Teacher (Jandial et al., ECCV 2022), eq. 11",
    options=(ALPHA, kd_tau("temperature"),
             Option("multiplier", "weight m of the KL term (its search: 1, 5, 10, 50)", default=50.0,
                    range="(0, inf)"),
             NO_LABELS, TEACHER),
    loss=scm, queries="teacher", per_dataset=KD_TAU, for_released=RELEASED_TAU, search=JANDIAL_SEARCH))


def dkd_terms(logits, teacher_logits, y, tau):
    """Per-sample TCKD and NCKD of decoupled KD, before the tau^2 scaling.

    TCKD = KL(b_t || b_s) over the binary (target, rest) split, the rest's mass being the sum of the non-target
    probabilities (as the authors' code computes it; 1 - p_target would cancel to 0 for a confident student);
    NCKD = KL(p^_t || p^_s) over the non-target classes renormalized. Per sample,
    KL(p_t || p_s) = TCKD + (1 - p_t[target]) NCKD.
    """
    # gather and scatter, not a boolean index: on CUDA that would wait for the device to count the selected entries
    column = y[:, None]
    target = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, column, True)
    log_p_s, p_t = F.log_softmax(logits / tau, dim=1), F.softmax(teacher_logits / tau, dim=1)
    log_b_s = torch.stack([log_p_s.gather(1, column).squeeze(1), log_p_s.masked_fill(target, -torch.inf).logsumexp(1)],
                          dim=1)
    b_t = torch.stack([p_t.gather(1, column).squeeze(1), p_t.masked_fill(target, 0).sum(1)], dim=1)
    tckd = F.kl_div(log_b_s, b_t, reduction="none").sum(1)
    # The target class is masked with a large finite negative (not -inf) so that 0 * log 0 stays 0.
    masked_s = F.log_softmax(logits / tau - 1000.0 * target, dim=1)
    masked_t = F.softmax(teacher_logits / tau - 1000.0 * target, dim=1)
    nckd = F.kl_div(masked_s, masked_t, reduction="none").sum(1)
    return tckd, nckd


def dkd(logits, y, teacher_logits, epoch=0, *, alpha, beta, tau, dkd_warmup):
    """Decoupled KD: CE + min((epoch + 1) / warmup, 1) tau^2 (alpha TCKD + beta NCKD), batch means."""
    tckd, nckd = (t.mean() for t in dkd_terms(logits, teacher_logits, y, tau))
    ramp = min((epoch + 1) / dkd_warmup, 1.0) if dkd_warmup > 0 else 1.0
    ce_term = F.cross_entropy(logits, y)
    return ce_term + ramp * tau ** 2 * (alpha * tckd + beta * nckd), {"ce": ce_term, "tckd": tckd, "nckd": nckd}


register(Method(
    "dkd", "attack", "decoupled KD: CE + ramp tau^2 (alpha TCKD + beta NCKD)",
    "Decoupled Knowledge Distillation (Zhao et al., CVPR 2022)",
    options=(Option("alpha", "weight of the target-class term TCKD", default=1.0, range="[0, inf)"),
             Option("beta", "weight of the non-target term NCKD", default=8.0, range="[0, inf)"),
             Option("tau", "temperature (its CIFAR setting)", default=4.0, range="(0, inf)"),
             Option("dkd_warmup", "epochs over which the KD terms ramp up", type=int, default=20, range="[0, inf)"),
             TEACHER),
    loss=dkd, queries="teacher"))


def skeptical(heads, y, teacher_logits, epoch=0, *, alpha, tau, kd_head, kd_delay):
    """Skeptical student: the teacher is distilled only into head `kd_head`; the final head learns from the
    labels and is tied to the stage-3 head by a KL term (gradient to both sides). Before epoch `kd_delay`: CE of
    the final head only.

    alpha tau^2 KL(p_tau(t) || p_tau(h_loc)) + (1 - alpha) CE(h_loc) + 0.3 KL(p_tau(h_final) || p_tau(h_1))
    + 0.7 CE(h_1) + CE(h_final).
    """
    final, first = heads[0], heads[1]
    ce_final = F.cross_entropy(final, y)
    if epoch < kd_delay:
        # 0 * the other heads keeps every parameter in the graph, as DDP requires.
        return ce_final + 0.0 * heads[1:].sum(), {"ce": ce_final}
    loc = heads[kd_head]
    kl_term = kl(teacher_logits, loc, tau)
    loss = (alpha * tau ** 2 * kl_term + (1 - alpha) * F.cross_entropy(loc, y)
            + 0.3 * kl(final, first, tau) + 0.7 * F.cross_entropy(first, y) + ce_final)
    return loss, {"ce": ce_final, "kl": kl_term}


register(Method(
    "skeptical", "attack", "a student with auxiliary heads after stages 1-3: the teacher is distilled only into "
    "head --kd-head; the final head learns from the labels and teaches the stage-3 head",
    "Analyzing the Confidentiality of Undistillable Teachers in Knowledge Distillation (Kundu et al., NeurIPS 2021)",
    options=(ALPHA, kd_tau("temperature"),
             Option("kd_head", "the head the teacher is distilled into (0 final, 1 after stage 3, 2 after stage 2, "
                    "3 after stage 1)", type=int, default=1, choices=(0, 1, 2, 3)),
             Option("kd_delay", "epochs of final-head CE before distilling", type=int, default=0, range="[0, inf)"),
             TEACHER),
    loss=skeptical, queries="teacher", heads="skeptical", per_dataset=KD_TAU, for_released=RELEASED_TAU))


class Decoded(Supervised):
    """KD from a release's answers read as an attacker who knows the release reads them (its `decode`)."""

    def __init__(self, run, loss):
        super().__init__(run, loss)
        checkpoints = run.queried.checkpoints
        self.decode = release_decoder(checkpoints[0].get("release")) if len(checkpoints) == 1 else None
        if self.decode is None:
            raise UserError(f"--attack adaptive reads a release's answers through its decoding: {run.queried.name}"
                            " is not a single release that has one (topk, rounded, label, reverse-sigmoid, noise); "
                            "use --attack kd")

    def reference(self, x):
        return self.decode(query(self.frozen[0], x))


register(Method(
    "adaptive", "attack", "KD on a release's answers decoded by an attacker who knows the release (top-k and "
    "rounded completed, a perturbed or label-only answer read as its smoothed label)",
    "the adaptive attacker of model-stealing defenses (Orekondy et al., Prediction Poisoning, ICLR 2020)",
    options=(ALPHA, kd_tau("temperature"), NO_LABELS, TEACHER), loss=kd, task=Decoded, queries="teacher",
    per_dataset=KD_TAU, for_released=RELEASED_TAU, search=TAU_SEARCH))
