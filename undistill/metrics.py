"""Measurements of a released model's outputs: accuracy, calibration, likelihood, sparsity, distance to a
reference teacher, and the conditional mutual information (CMI) that CMIM teachers minimize (docs/methods.md).

Every function takes logits (or probabilities) as tensors on any device and computes in float64. Logits may be
-inf (a stingy release): probabilities are then exactly 0 and every p log p term uses xlogy semantics
(0 log 0 = 0), so nothing turns into NaN; a quantity whose true value is infinite (the NLL of a label whose logit
is -inf, a KL against a reference that gives probability 0 where the model does not) comes out as inf.

The functions return Python floats for one batch. Over a whole dataset (and across torchrun ranks) use the
accumulators: `SplitMetrics` for the per-sample metrics, `CMIAccumulator` for CMI. Each keeps float64 sums on
its device; `tensors()` lists them for an all-reduce (sum), after which `value()` gives the dataset's metrics.

Notation: z = logits, K classes, softmax_T(z) = softmax(z / T), KL(p || q) = sum_c p_c (log p_c - log q_c).
"""
import math

import torch
import torch.nn.functional as F

from . import UserError

DEFAULT_TEMPERATURES = "1,2,4,8,16,32"  # the CMI grid of CMIM and of the measurements


def parse_temperatures(text):
    try:
        temps = [float(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--temperatures {text!r}: give comma-separated numbers, e.g. {DEFAULT_TEMPERATURES}") from None
    if not temps or any(not (math.isfinite(t) and t > 0) for t in temps) or len(set(temps)) != len(temps):
        raise UserError(f"--temperatures {text!r}: give distinct positive numbers, e.g. {DEFAULT_TEMPERATURES}")
    return temps


def _log_probs(logits, temperature=1.0):
    """(p, log p) of softmax(z / T) in float64; p is exactly 0 where z = -inf."""
    logp = F.log_softmax(logits.detach().double() / temperature, dim=1)
    return logp.exp(), logp


def _plogp(p, logp):
    """p log p elementwise with 0 log 0 = 0 (also where p underflows to 0 with a finite log p)."""
    return torch.where(p > 0, p * logp, torch.zeros((), dtype=p.dtype, device=p.device))


# ---- per-sample quantities (the building blocks of the batch means and of the accumulators) ----

def nll_per_sample(logits, y):
    """-log softmax(z)_y per sample: +inf where the label's logit is -inf."""
    _, logp = _log_probs(logits)
    return -logp.gather(1, y.view(-1, 1).to(logp.device)).squeeze(1)


def kl_per_sample(logits, ref_logits, tau):
    """KL(softmax_tau(z) || softmax_tau(z_ref)) per sample, 0 log 0 = 0; +inf where the reference gives 0 and the
    model does not."""
    p, logp = _log_probs(logits, tau)
    _, logq = _log_probs(ref_logits.to(p.device), tau)
    terms = torch.where(p > 0, p * (logp - logq), torch.zeros((), dtype=p.dtype, device=p.device))
    return terms.sum(1)


def sparsity_per_sample(logits, tau, threshold=1e-3):
    """(number of classes with softmax_tau(z)_c > threshold, entropy -sum_c p_c log p_c in nats) per sample."""
    p, logp = _log_probs(logits, tau)
    return (p > threshold).sum(1).double(), -_plogp(p, logp).sum(1)


def calibration_bins(probs, y, bins=15):
    """Per confidence bin b (equal width over (0, 1], bin b = ((b-1)/bins, b/bins]): a (3, bins) float64 tensor of
    [number of samples, sum of confidences max_c p_c, number correct (argmax_c p_c == y)]."""
    probs = probs.detach().double()
    conf, pred = probs.max(1)
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64, device=probs.device)[1:-1]
    # right=False: edges[b-1] < conf <= edges[b], i.e. bins closed on the right; conf <= 0 lands in the first bin.
    index = torch.bucketize(conf, edges, right=False)
    out = torch.zeros(3, bins, dtype=torch.float64, device=probs.device)
    out[0].index_add_(0, index, torch.ones_like(conf))
    out[1].index_add_(0, index, conf)
    out[2].index_add_(0, index, (pred == y.to(pred.device)).double())
    return out


def ece_from_bins(bins):
    """ECE = sum_b |B_b| / N * |acc_b - conf_b| from the (3, bins) sums of `calibration_bins`."""
    count, conf_sum, correct = bins.double()
    n = count.sum()
    if n == 0:
        return math.nan
    return float((conf_sum - correct).abs().sum() / n)  # |B_b| |acc_b - conf_b| = |sum correct - sum conf|


# ---- batch means ----

def accuracy(logits, y):
    """Top-1 accuracy in percent: 100 * mean(argmax_c z_c == y)."""
    return 100.0 * float((logits.argmax(1) == y.to(logits.device)).double().mean())


def fidelity(logits, ref_logits):
    """Agreement in percent: 100 * mean(argmax_c z_c == argmax_c z_ref,c) (a clone's with the model it copies)."""
    return 100 * float((logits.argmax(1) == ref_logits.argmax(1)).double().mean())


def ece(probs, y, bins=15):
    """Expected calibration error in [0, 1]: sum_b |B_b| / N * |acc_b - conf_b|, confidence = max_c p_c, `bins`
    equal-width bins over (0, 1]."""
    return ece_from_bins(calibration_bins(probs, y, bins))


def nll(logits, y):
    """Mean negative log-likelihood -mean_x log softmax(z_x)_y (nats): inf if any label's logit is -inf."""
    return float(nll_per_sample(logits, y).mean())


def kl_to_reference(logits, ref_logits, tau):
    """mean_x KL(softmax_tau(z_x) || softmax_tau(z_ref,x)): the model evaluated first, the reference second (the
    project's KL(teacher || reference teacher), "batchmean": summed over classes, averaged over samples)."""
    return float(kl_per_sample(logits, ref_logits, tau).mean())


def sparsity(logits, tau, threshold=1e-3):
    """{"active_classes": mean_x #{c : softmax_tau(z_x)_c > threshold}, "entropy": mean_x H(softmax_tau(z_x))
    (nats)}."""
    active, entropy = sparsity_per_sample(logits, tau, threshold)
    return {"active_classes": float(active.mean()), "entropy": float(entropy.mean())}


def cmi(logits, y, num_classes, temperatures):
    """{T: CMI_T} with CMI_T = mean_x KL(softmax_T(z_x) || Q_y^T), Q_y^T = mean of softmax_T(z) over class y's
    samples (see CMIAccumulator for the single-pass computation)."""
    acc = CMIAccumulator(num_classes, temperatures, device=logits.device)
    acc.add(logits, y)
    return acc.value()


# ---- accumulators over a dataset (streaming, all-reducible) ----

class Summable:
    """Accumulator state that sums across ranks: subclasses list their tensors in `tensors()`."""

    def reduce(self, reduce_sum):
        """Apply `reduce_sum` (e.g. `ctx.all_reduce_sum`, in place or returning the sum) to every state tensor."""
        for t in self.tensors():
            out = reduce_sum(t)
            if out is not None and out is not t:
                t.copy_(out)
        return self


class CMIAccumulator(Summable):
    """CMI_T = (1/N) sum_x KL(p_x || Q_y(x)), p_x = softmax_T(z_x), Q_y = (1/n_y) sum_{x in y} p_x, in one pass.

    The centroid Q_y is the mean of the transformed outputs (not the transform of the mean logits). One pass
    suffices because, per class y with n_y samples, s_y = sum_{x in y} p_x (a K-vector) and
    h_y = sum_{x in y} sum_c p_xc log p_xc,
        sum_{x in y} KL(p_x || Q_y) = h_y - sum_c s_yc log Q_yc = h_y - sum_c s_yc log(s_yc / n_y),
    with 0 log 0 = 0 (Q_yc = 0 only where every p_xc of the class is 0). The state is n (K), s (len(T) x K x K)
    and h (len(T) x K), float64 sums: chunks may come in any order and from any rank; all-reduce (sum) the
    `tensors()` across ranks before `value()`.
    """

    def __init__(self, num_classes, temperatures, device="cpu"):
        self.num_classes = num_classes
        self.temperatures = [float(t) for t in temperatures]
        if not self.temperatures or min(self.temperatures) <= 0:
            raise ValueError(f"temperatures must be positive, got {temperatures}")
        nt, k = len(self.temperatures), num_classes
        self.counts = torch.zeros(k, dtype=torch.float64, device=device)
        self.prob_sums = torch.zeros(nt, k, k, dtype=torch.float64, device=device)      # [T, y, c]: s_yc
        self.plogp_sums = torch.zeros(nt, k, dtype=torch.float64, device=device)         # [T, y]: h_y

    def add(self, logits, y):
        """Accumulate a chunk of logits (N, K) with labels (N,)."""
        device = self.counts.device
        z, y = logits.detach().to(device), y.to(device)
        if z.dim() != 2 or z.shape[1] != self.num_classes or len(y) != len(z):
            raise ValueError(f"expected logits (N, {self.num_classes}) and N labels, got {tuple(z.shape)} and "
                             f"{tuple(y.shape)}")
        self.counts.index_add_(0, y, torch.ones(len(y), dtype=torch.float64, device=device))
        for i, t in enumerate(self.temperatures):
            p, logp = _log_probs(z, t)
            self.prob_sums[i].index_add_(0, y, p)
            self.plogp_sums[i].index_add_(0, y, _plogp(p, logp).sum(1))
        return self

    def tensors(self):
        """The state to all-reduce (sum) across ranks, in place."""
        return [self.counts, self.prob_sums, self.plogp_sums]

    def per_class(self):
        """(len(T), K) float64: sum over class y's samples of KL(p_x || Q_y) (>= 0; rounding clamped)."""
        n = self.counts.clamp_min(1).view(1, -1, 1)
        s = self.prob_sums
        return (self.plogp_sums - torch.special.xlogy(s, s / n).sum(2)).clamp_min(0)

    def value(self):
        """{T: CMI_T} (NaN when nothing was added)."""
        n = float(self.counts.sum())
        if n == 0:
            return {t: math.nan for t in self.temperatures}
        totals = self.per_class().sum(1).tolist()
        return {t: v / n for t, v in zip(self.temperatures, totals)}


class SplitMetrics(Summable):
    """Streaming top-1, ECE, NLL, sparsity at tau and (optionally) KL to a reference over a split: float64 sums
    on `device`, all-reducible across ranks through `tensors()`; `value()` gives the means over all samples."""

    FIELDS = ("n", "correct", "nll", "label_excluded", "active_classes", "entropy", "kl")

    def __init__(self, tau, bins=15, threshold=1e-3, reference=False, device="cpu"):
        self.tau, self.threshold, self.reference = tau, threshold, reference
        self.sums = torch.zeros(len(self.FIELDS), dtype=torch.float64, device=device)
        self.bins = torch.zeros(3, bins, dtype=torch.float64, device=device)

    def add(self, logits, y, ref_logits=None):
        """Accumulate a batch (logits (N, K), labels (N,), the reference's logits on the same images)."""
        device = self.sums.device
        z, y = logits.detach().to(device), y.to(device)
        if self.reference and ref_logits is None:
            raise ValueError("this accumulator measures KL to a reference: pass ref_logits")
        p, logp = _log_probs(z)
        label_logp = logp.gather(1, y.view(-1, 1)).squeeze(1)
        active, entropy = sparsity_per_sample(z, self.tau, self.threshold)
        kl = kl_per_sample(z, ref_logits.to(device), self.tau).sum() if self.reference else torch.zeros(
            (), dtype=torch.float64, device=device)
        self.sums += torch.stack([
            torch.tensor(float(len(y)), dtype=torch.float64, device=device),
            (z.argmax(1) == y).double().sum(), -label_logp.sum(), torch.isneginf(label_logp).double().sum(),
            active.sum(), entropy.sum(), kl])
        self.bins += calibration_bins(p, y, self.bins.shape[1])
        return self

    def tensors(self):
        """The state to all-reduce (sum) across ranks, in place."""
        return [self.sums, self.bins]

    def value(self):
        """{images, acc (%), ece, nll, label_excluded (fraction of labels with probability exactly 0),
        active_classes, entropy, and kl_to_reference if measured}."""
        s = dict(zip(self.FIELDS, self.sums.tolist()))
        n = s["n"]
        if n == 0:
            raise ValueError("no samples were added")
        out = {"images": int(n), "acc": 100.0 * s["correct"] / n, "ece": ece_from_bins(self.bins),
               "nll": s["nll"] / n, "label_excluded": s["label_excluded"] / n,
               "active_classes": s["active_classes"] / n, "entropy": s["entropy"] / n}
        if self.reference:
            out["kl_to_reference"] = s["kl"] / n
        return out
