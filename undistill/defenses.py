"""Teacher defenses: training objectives and release-time logit transforms (formulas: docs in METHODS.md).

An objective is `f(logits, y, ref, *, settings...) -> loss`, where `ref` is the logits of the frozen model the
defense trains against (None when there is none). The keyword-only settings are filled from the command-line
options of the same name, so adding a defense is one function and one line in DEFENSES.
"""
import math

import torch
import torch.nn.functional as F


def kl(p_logits, q_logits, tau):
    """KL(softmax_tau(p) || softmax_tau(q)), summed over classes and averaged over the batch ("batchmean").

    Gradient reaches both sides. Probabilities (not log-probabilities) are passed as the target so that a
    teacher's -inf logits (stingy) give p = 0 and contribute exactly 0 (PyTorch uses xlogy for p log p).
    """
    return F.kl_div(F.log_softmax(q_logits / tau, dim=1), F.softmax(p_logits / tau, dim=1), reduction="batchmean")


def ce(logits, y, ref=None):
    return F.cross_entropy(logits, y)


def ls(logits, y, ref=None, *, smoothing):
    """CE against (1 - eps) one-hot + eps / K uniform."""
    return F.cross_entropy(logits, y, label_smoothing=smoothing)


def nasty(logits, y, adversary_logits, *, omega, tau):
    """Self-undermining KD (Nasty Teacher eq. 2): CE - omega tau^2 KL(p_tau(nasty) || p_tau(adversary)).

    The nasty model is the KL's first argument, so the gradient pushes its own softened outputs away from the
    adversary's; the adversary's logits come from a frozen model and carry no gradient.
    """
    return F.cross_entropy(logits, y) - omega * tau ** 2 * kl(logits, adversary_logits.detach(), tau)


DEFENSES = {"ce": ce, "ls": ls, "nasty": nasty}
FROZEN_MODEL = {"nasty": "adversary"}  # defenses that train against a frozen model, and the option naming it

# The papers' settings per dataset (code): nasty (tau_A, omega) and the stingy ratio r. ImageNet has no nasty
# setting in the papers; it takes CIFAR-100's.
NASTY_SETTINGS = {"mnist5k": (4.0, 0.04), "cifar10": (4.0, 0.04), "cifar100": (20.0, 0.005),
                  "tinyimagenet": (20.0, 0.01), "imagenet": (20.0, 0.005)}
STINGY_RATIO = {"mnist5k": 0.2, "cifar10": 0.2, "cifar100": 0.1, "tinyimagenet": 0.1, "imagenet": 0.1}


# Release-time transforms (Stingy Teacher): keep k logits per row; what the others become is the variant.
def stingy_top(z, k):
    """Keep the top-k logits, -inf elsewhere: the softmax is exactly 0 outside the top-k at any temperature."""
    top = z.topk(k, dim=1).indices
    return torch.full_like(z, -math.inf).scatter(1, top, z.gather(1, top))


def stingy_smooth(z, k):
    """Keep the top-k logits and give every other class the mean of the logits it replaces (dense, smooth)."""
    top = z.topk(k, dim=1).indices
    dropped = torch.ones_like(z, dtype=torch.bool).scatter(1, top, False)
    mean = (z * dropped).sum(1, keepdim=True) / dropped.sum(1, keepdim=True).clamp(min=1)
    return torch.where(dropped, mean, z)


def stingy_reverse(z, k):
    """Keep the top-1 logit and reverse the order of the others: the 2nd-ranked class gets the smallest value."""
    values, order = z.sort(dim=1, descending=True)
    reversed_values = torch.cat([values[:, :1], values[:, 1:].flip(1)], dim=1)
    return torch.empty_like(z).scatter(1, order, reversed_values)


def stingy_least(z, k):
    """Keep the top-1 logit and the k-1 smallest ones, -inf elsewhere (the worst sparse subset)."""
    keep = torch.cat([z.topk(1, dim=1).indices, z.topk(k - 1, dim=1, largest=False).indices], dim=1)
    return torch.full_like(z, -math.inf).scatter(1, keep, z.gather(1, keep))


STINGY_VARIANTS = {"top": stingy_top, "smooth": stingy_smooth, "reverse": stingy_reverse, "least": stingy_least}


def stingy_k(ratio, num_classes):
    """k = floor(r K), the same for every sample (at least 1 so the argmax survives)."""
    return max(1, math.floor(ratio * num_classes + 1e-9))
