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


def cmim(logits, y, centroids, *, cmi_weight, temperatures, cmi_agg):
    """CE + lambda * agg_T CMI_T, CMI_T = mean_x KL(softmax_T(z_x) || Q_y^T) (CMIM, reconstructed).

    `centroids` (n_T, K, K) holds Q^T, row y being the mean of softmax_T over class y's training outputs, kept
    out of autograd (ClassCentroids): the gradient moves each output towards its class centroid.
    """
    terms = torch.stack([
        F.kl_div(q[y].clamp_min(1e-12).log(), F.softmax(logits / t, dim=1), reduction="batchmean")
        for q, t in zip(centroids.detach(), temperatures)])
    weights = torch.tensor(temperatures, device=logits.device, dtype=terms.dtype) ** 2
    aggregate = {"mean": terms.mean(), "max": terms.max(), "t2mean": (weights * terms).mean()}[cmi_agg]
    return F.cross_entropy(logits, y) + cmi_weight * aggregate


class ClassCentroids(torch.nn.Module):
    """Q_y^T for every temperature T of the grid: the mean of softmax_T(z) over the training samples of class y
    (the mean of the transformed outputs, not the transform of the mean). Outside autograd.

    Estimated with an EMA over each batch's detached outputs (`observe`, all ranks contribute through
    all-reduce, so every rank holds the same centroids), or recomputed by a full pass over the training data
    at the start of each epoch (`start_epoch`). Calling it returns the centroids, the `ref` of `cmim`.
    """

    def __init__(self, num_classes, temperatures, estimator="ema", momentum=0.9):
        super().__init__()
        self.temperatures, self.estimator, self.momentum = list(temperatures), estimator, momentum
        self.register_buffer("q", torch.full((len(self.temperatures), num_classes, num_classes), 1 / num_classes))

    def forward(self, x=None):
        return self.q

    def class_sums(self, logits, y):
        """Per temperature, per class: the summed softmax_T outputs (n_T, K, K), and the class counts (K,)."""
        k = self.q.shape[1]
        probs = torch.stack([F.softmax(logits.detach().float() / t, dim=1) for t in self.temperatures])
        sums = torch.zeros_like(self.q).index_add_(1, y, probs)
        return sums, torch.bincount(y, minlength=k).to(self.q.dtype)

    def reduced_class_means(self, sums, counts, ctx):
        """Class means summed over all ranks, and which classes had any sample."""
        k = counts.numel()
        packed = ctx.all_reduce_sum(torch.cat([sums.flatten(), counts]))
        sums, counts = packed[:-k].view_as(sums), packed[-k:]
        return sums / counts.clamp_min(1).view(1, -1, 1), counts > 0

    @torch.no_grad()
    def observe(self, logits, y, ctx):
        if self.estimator == "ema":
            mean, seen = self.reduced_class_means(*self.class_sums(logits, y), ctx)
            # Classes absent from this step's batches keep their centroid.
            self.q[:, seen] = self.momentum * self.q[:, seen] + (1 - self.momentum) * mean[:, seen]

    @torch.no_grad()
    def start_epoch(self, model, batches, ctx):
        if self.estimator != "epoch":
            return
        sums, counts = torch.zeros_like(self.q), torch.zeros(self.q.shape[1], device=self.q.device)
        for x, y in batches:
            s, c = self.class_sums(model(x), y)
            sums, counts = sums + s, counts + c
        mean, seen = self.reduced_class_means(sums, counts, ctx)
        self.q[:, seen] = mean[:, seen]


DEFENSES = {"ce": ce, "ls": ls, "nasty": nasty, "cmim": cmim}
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
