"""What a released model returns: logit transforms applied to every output of a published teacher.

A released checkpoint names its transform (`release`: {"name", ...its settings}); checkpoint.load_classifier
rebuilds a model whose forward already applies it, so a black-box user only ever sees the released outputs.

Stingy Teacher (Ma et al., "Stingy Teacher: Sparse Logits Suffice to Fail Knowledge Distillation") keeps k logits
per row, k = floor(r K) for every sample (the authors' code); what becomes of the others is the variant: `top`
(the paper's, -inf elsewhere) and its ablations `smooth`, `reverse` and `least`.

The prediction-API releases (topk, rounded, label, reverse_sigmoid, noise) answer as an API that returns
probabilities p' would, and hand a student log p' (log 0 = -inf): log-probabilities are logits, and
softmax(log p' / tau) is what a KD attacker computes from the probabilities. They start from the teacher's softmax
in float64 and return the logits' floating type (at least float32).

Each transform is `f(z, *, settings)`, its settings the options of the `train_teacher.py --defense` that releases it
(methods/defenses.py): that definition is the only place a release is named.
"""
import math

import torch
import torch.nn.functional as F

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


def stingy_k(ratio: float, num_classes: int) -> int:
    """k = floor(r K), the same for every sample (at least 1 so the argmax survives)."""
    return max(1, math.floor(ratio * num_classes + 1e-9))


def stingy(z, *, ratio, variant):
    """Stingy Teacher's release: k = floor(ratio K) logits kept per row, the variant saying how."""
    return STINGY_VARIANTS[variant](z, stingy_k(ratio, z.shape[1]))


def released_dtype(z):
    """What a release answers in: the logits' floating type, at least float32."""
    return torch.promote_types(z.dtype, torch.float32)


def probabilities(z):
    """The teacher's softmax in float64, where rounding to up to 15 decimals is exact."""
    return F.softmax(z.double(), dim=1)


def as_logits(p, z):
    """log p, with log 0 = -inf, in z's floating type. The log is taken of p clamped away from 0 so that its
    gradient stays finite where p = 0 (white-box attacks differentiate through a release)."""
    log_p = torch.where(p > 0, p.clamp_min(torch.finfo(p.dtype).tiny).log(), -math.inf)
    return log_p.to(released_dtype(z))


def argmax_one_hot(z):
    """The label alone, as probabilities: 1 at the argmax, 0 elsewhere."""
    return torch.zeros_like(z, dtype=torch.float64).scatter(1, z.argmax(1, keepdim=True), 1.0)


def renormalized(q, z):
    """q / sum(q) per row; a row with nothing left (every entry <= 0) answers with the clean label instead of 0/0."""
    total = q.sum(1, keepdim=True)
    return torch.where(total > 0, q / total.clamp_min(torch.finfo(q.dtype).tiny), argmax_one_hot(z))


def topk(z, *, k):
    """The k largest probabilities of the full softmax, not renormalized (what the API shows), -inf elsewhere:
    log p is z shifted per row, so softmax_T of it is stingy_top's at every T."""
    if k > z.shape[1]:
        raise UserError(f"a top-{k} release of a teacher with {z.shape[1]} classes: k is at most the classes")
    return stingy_top(F.log_softmax(z.double(), dim=1), k).to(released_dtype(z))


def rounded(z, *, decimals):
    """p rounded to `decimals` decimals (half to even), not renormalized. A row whose probabilities all round to 0
    (possible once K > 2 * 10^decimals) keeps its argmax at 10^-decimals, the smallest value the API can show, never
    0/0. Where rounding ties the argmax with other classes (0.3, 0.3, ...), which an API's ranked answer still
    orders, the argmax's log-probability is raised by one float step: the answer's argmax is the teacher's."""
    q = probabilities(z).round(decimals=decimals)
    empty = q.sum(1, keepdim=True) == 0
    log_q = as_logits(torch.where(empty, argmax_one_hot(z) * 10.0 ** -decimals, q), z)
    top = z.argmax(1, keepdim=True)
    best = log_q.gather(1, top)
    tied = (log_q == best).sum(1, keepdim=True) > 1
    # the step added as a constant, so that the gradient passes as through `best` (torch 2.4 and 2.11 have no
    # derivative for nextafter)
    step = torch.nextafter(best.detach(), torch.full_like(best, math.inf)) - best.detach()
    return log_q.scatter(1, top, torch.where(tied, best + step, best))


def label(z):
    """The argmax alone: 0 (log 1) at the argmax, -inf elsewhere."""
    return as_logits(argmax_one_hot(z), z)


def reverse_sigmoid(z, *, rs_beta, rs_gamma):
    """Lee et al.'s reverse sigmoid perturbation, as ART's ReverseSigmoid computes it: with p clipped to
    [1e-9, 1 - 1e-9], r = beta (sigmoid(-gamma log((1 - p) / p)) - 1/2), p' = clip(p - r, 0, 1) renormalized (r
    is taken from the clipped p, subtracted from the unclipped one)."""
    p = probabilities(z)
    clipped = p.clamp(1e-9, 1 - 1e-9)
    r = rs_beta * (torch.sigmoid(-rs_gamma * torch.log((1 - clipped) / clipped)) - 0.5)
    return as_logits(renormalized((p - r).clamp(0, 1), z), z)


def noise(z, *, sigma, noise_seed):
    """p + sigma n, negatives set to 0, renormalized (ART's GaussianNoise), n = counter_normals: the same input
    always gets the same answer, so repeating a query cannot average the noise away."""
    noisy = (probabilities(z) + sigma * counter_normals(z, noise_seed)).clamp_min(0)
    return as_logits(renormalized(noisy, z), z)


# ---- how an attacker who knows a release reads its answers (the release's `decode`, the `adaptive` attack): the
# answers (log p', -inf where p' = 0) back to a distribution over every class, as logits (log q)

def completed(a, cap):
    """The probabilities an answer shows, and every class it shows as 0 given an even share of the mass it does not
    account for, at most `cap` each (what such a class could hold): log q, renormalized."""
    p = a.double().exp()
    hidden = p == 0
    rest = (1 - p.sum(1, keepdim=True)).clamp_min(0)
    fill = torch.minimum(rest / hidden.sum(1, keepdim=True).clamp_min(1), cap)
    q = torch.where(hidden, fill, p)
    return as_logits(q / q.sum(1, keepdim=True), a)


def complete_topk(a):
    """A top-k answer completed: the classes not shown share what the k shown leave, each at most the smallest
    shown probability (they rank below it)."""
    shown = a.double().exp()
    return completed(a, torch.where(shown > 0, shown, math.inf).min(1, keepdim=True).values)


def complete_rounded(a, *, decimals):
    """A rounded answer completed: a class shown as 0 held less than half a step, 10^-decimals / 2; the classes at
    0 share what the others leave, each at most that."""
    return completed(a, torch.full_like(a, 10.0 ** -decimals / 2, dtype=torch.float64)[:, :1])


def smoothed_label(a):
    """The answer's argmax alone, label-smoothed (epsilon 0.1): an attacker who trusts only the top class of an
    answer that a perturbation distorts elsewhere (Orekondy et al.'s adaptive attacker of Prediction Poisoning,
    ICLR 2020), or that shows nothing else."""
    k = a.shape[1]
    return as_logits(0.9 * argmax_one_hot(a) + 0.1 / k, a)


MASK32 = 0xFFFFFFFF


def mul32(x, m):
    """x * m mod 2^32 for x in [0, 2^32), in int64 without overflow (torch does not promise that int64 products
    wrap: signed overflow is undefined in C++), by splitting m into 16-bit halves."""
    return (x * (m & 0xFFFF) + (((x * (m >> 16)) & 0xFFFF) << 16)) & MASK32


def mix32(x):
    """A bijective 32-bit integer hash with full avalanche (Wellons' lowbias32), of tensors or Python ints."""
    x = x ^ (x >> 16)
    x = mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def counter_normals(z, seed):
    """Standard normals, one per entry of z, as a pure function of (seed, the row's float32 logits, the class):
    no generator state, so a query, a resumed run and every rank get the same noise for the same logits. Two
    uniforms per entry from a hash of (row key, class, draw), exact on every device, then Box-Muller."""
    bits = z.detach().float().contiguous().view(torch.int32).long() & MASK32
    classes = torch.arange(z.shape[1], device=z.device)
    # The row key hashes each logit's bits with its class (a permuted row is another row), sums them (at most
    # K 2^32: no overflow) and mixes in the seed.
    row = mix32((mix32(bits ^ mix32(classes)).sum(1, keepdim=True) + mix32(seed)) & MASK32)
    u1, u2 = ((mix32(row ^ mix32(2 * classes + draw)).double() + 0.5) / 2 ** 32 for draw in (0, 1))
    return torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * math.pi * u2)


def describe(release):
    """One line for messages: the name and the settings."""
    settings = ", ".join(f"{k} {v}" for k, v in release.items() if k != "name")
    return f"{release['name']} ({settings})" if settings else release["name"]
