"""What a released model returns: logit transforms applied to every output of a published teacher.

A released checkpoint names its transform (`release`: {"name", ...its settings}); checkpoint.load_classifier
rebuilds a model whose forward already applies it, so a black-box user only ever sees the released outputs.

Stingy Teacher (Ma et al., "Stingy Teacher: Sparse Logits Suffice to Fail Knowledge Distillation") keeps k logits
per row, k = floor(r K) for every sample (the authors' code); what becomes of the others is the variant: `top`
(the paper's, -inf elsewhere) and its ablations `smooth`, `reverse` and `least`.
"""
import math
from functools import partial

import torch

from . import UserError


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


def transform(release):
    """The logit transform a checkpoint's `release` entry names (None: the full logits)."""
    if release is None:
        return None
    if release.get("name") != "stingy" or release.get("variant") not in STINGY_VARIANTS:
        raise UserError(f"unknown release transform {release} in checkpoint")
    return partial(STINGY_VARIANTS[release["variant"]], k=release["k"])
