"""Teacher defenses (`train_teacher.py --defense`): ce, ls, nasty, cmim, and the releases of a trained teacher:
stingy and the prediction-API releases topk, rounded, label, reverse-sigmoid and noise.

Formulas and their sources: docs/methods.md. Each loss returns (loss, {term: value}); the terms are the result
as much as the loss is (for nasty and CMIM, the balance between CE and what the defense pushes).
"""
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import UserError, metrics, releases
from ..options import Option
from .core import SMOOTHING, Method, Supervised, ce, kl, ls, register

register(Method("ce", "defense", "a normal teacher (cross entropy)", loss=ce))

register(Method("ls", "defense", "label smoothing", "Rethinking the Inception Architecture for Computer Vision "
                "(Szegedy et al., CVPR 2016)", options=(SMOOTHING,), loss=ls))


def nasty(logits, y, adversary_logits, epoch=0, *, omega, tau):
    """Self-undermining KD: CE - omega tau^2 KL(p_tau(nasty) || p_tau(adversary)).

    The nasty model is the KL's first argument, so the gradient pushes its own softened outputs away from the
    adversary's; the adversary's logits come from a frozen model and carry no gradient.
    """
    ce_term, kl_term = F.cross_entropy(logits, y), kl(logits, adversary_logits.detach(), tau)
    return ce_term - omega * tau ** 2 * kl_term, {"ce": ce_term, "kl": kl_term}


class AgainstAdversary(Supervised):
    """A nasty teacher's run: the adversary must answer with all its logits."""

    def __init__(self, run, loss):
        if run.queried.released:  # its -inf logits make the KL to it infinite
            ckpt = next(c for c in run.queried.checkpoints if c.get("release"))
            raise UserError(f"the adversary is a {ckpt['release']['name']} release, whose sparse logits give an "
                            f"infinite KL: pass the teacher it wraps ({ckpt['settings'].get('from')}) as --adversary")
        super().__init__(run, loss)


register(Method(
    "nasty", "defense", "self-undermining KD: CE - omega tau^2 KL(p_tau(model) || p_tau(adversary)), from scratch",
    "Undistillable: Making a Nasty Teacher That CANNOT Teach Students (Ma et al., ICLR 2021)",
    options=(Option("adversary", "checkpoint of the normally trained (ce) adversary", type=Path),
             Option("omega", "weight of the KL term (default per dataset, the papers')", default=0.04,
                    range="(0, inf)"),
             Option("tau", "temperature tau_A (default per dataset, the papers')", default=4.0, range="(0, inf)")),
    loss=nasty, task=AgainstAdversary, queries="adversary",
    # the papers' tau_A and omega (no paper trains one on ImageNet: CIFAR-100's)
    per_dataset={"mnist5k": dict(tau=4.0, omega=0.04), "cifar10": dict(tau=4.0, omega=0.04),
                 "cifar100": dict(tau=20.0, omega=0.005), "tinyimagenet": dict(tau=20.0, omega=0.01),
                 "imagenet": dict(tau=20.0, omega=0.005)},
    # a 2-step adversary's eval-mode logits are huge, and the unbounded -KL step would leave a deep nasty teacher
    # (ResNet-34) with non-finite outputs, which a student distilled from it then stops on
    smoke=("--grad-clip", "1")))


def cmim(logits, y, centroids, epoch=0, *, cmi_weight, temperatures, cmi_agg):
    """CE + lambda * agg_T CMI_T, CMI_T = mean_x KL(softmax_T(z_x) || Q_y^T) (CMIM, reconstructed).

    `centroids` (n_T, K, K) holds Q^T, row y being the mean of softmax_T over class y's training outputs, kept
    out of autograd (ClassCentroids): the gradient moves each output towards its class centroid.
    """
    terms = [F.kl_div(q[y].clamp_min(1e-12).log(), F.softmax(logits / t, dim=1), reduction="batchmean")
             for q, t in zip(centroids.detach(), temperatures)]
    if cmi_agg == "t2mean":
        terms = [t ** 2 * term for t, term in zip(temperatures, terms)]
    terms = torch.stack(terms)
    aggregate = terms.max() if cmi_agg == "max" else terms.mean()
    ce_term = F.cross_entropy(logits, y)
    return ce_term + cmi_weight * aggregate, {"ce": ce_term, "cmi": aggregate}


class ClassCentroids(torch.nn.Module):
    """Q_y^T for every temperature T of the grid: the mean of softmax_T(z) over the training samples of class y
    (the mean of the transformed outputs, not the transform of the mean). Outside autograd.

    Estimated with an EMA over each batch's detached outputs (`observe`, all ranks contribute through
    all-reduce, so every rank holds the same centroids), or recomputed by a full pass over the training data
    at the start of each epoch (`recompute`). `q` is the `ref` of `cmim`.
    """

    def __init__(self, num_classes, temperatures, estimator="ema", momentum=0.9):
        super().__init__()
        self.temperatures, self.estimator, self.momentum = list(temperatures), estimator, momentum
        self.register_buffer("q", torch.full((len(self.temperatures), num_classes, num_classes), 1 / num_classes))

    def class_sums(self, logits, y):
        """Per temperature, per class: the summed softmax_T outputs (n_T, K, K), and the class counts (K,)."""
        k = self.q.shape[1]
        probs = torch.stack([F.softmax(logits.detach().float() / t, dim=1) for t in self.temperatures])
        sums = torch.zeros_like(self.q).index_add_(1, y, probs)
        # index_add_, not bincount: on CUDA bincount reads the largest label back to the host
        return sums, self.q.new_zeros(k).index_add_(0, y, torch.ones_like(y, dtype=self.q.dtype))

    def reduced_class_means(self, sums, counts, ctx):
        """Class means summed over all ranks, and which classes had any sample."""
        k = counts.numel()
        packed = ctx.all_reduce_sum(torch.cat([sums.flatten(), counts]))
        sums, counts = packed[:-k].view_as(sums), packed[-k:]
        return sums / counts.clamp_min(1).view(1, -1, 1), counts > 0

    @torch.no_grad()
    def observe(self, logits, y, ctx):
        mean, seen = self.reduced_class_means(*self.class_sums(logits, y), ctx)
        # Classes absent from this step's batches keep their centroid (torch.where: a boolean index would wait for
        # the device to count the classes seen).
        self.q.copy_(torch.where(seen.view(1, -1, 1), self.momentum * self.q + (1 - self.momentum) * mean, self.q))

    @torch.no_grad()
    def recompute(self, model, batches, ctx):
        sums, counts = torch.zeros_like(self.q), torch.zeros(self.q.shape[1], device=self.q.device)
        for x, y in batches:
            s, c = self.class_sums(model(x), y)
            sums, counts = sums + s, counts + c
        mean, seen = self.reduced_class_means(sums, counts, ctx)
        self.q.copy_(torch.where(seen.view(1, -1, 1), mean, self.q))


class CentroidTask(Supervised):
    """A CMIM teacher's run: the loss compares each output with its class centroid, which follows the training
    outputs (an EMA after every step) or is recomputed by a pass over the training split before every epoch."""

    def __init__(self, run, loss, *, temperatures, centroids, centroid_momentum):
        super().__init__(run, loss)
        self.ctx = run.ctx
        self.centroids = ClassCentroids(run.info.num_classes, temperatures, centroids, centroid_momentum).to(
            run.ctx.device)

    def reference(self, x):
        return self.centroids.q

    def epoch(self, model, epoch, split):
        if self.centroids.estimator == "epoch":
            model.eval()
            self.centroids.recompute(model, split.epoch(epoch), self.ctx)
        return super().epoch(model, epoch, split)

    def after_step(self, step):
        if self.centroids.estimator == "ema":
            self.centroids.observe(step.logits, step.labels, self.ctx)

    def state_dict(self):
        return {"centroids": self.centroids.state_dict()}

    def load_state_dict(self, state):
        self.centroids.load_state_dict(state["centroids"])


register(Method(
    "cmim", "defense", "CE + lambda agg_T KL(softmax_T(z) || Q_y^T) over a temperature grid, class centroids Q",
    "Towards Undistillable Models by Minimizing Conditional Mutual Information (Ye et al.); the objective is "
    "reconstructed from the abstract",
    options=(
        # lambda 4 with t2mean: the best trade-off of the CIFAR-10 CPU proxy sweep (recipes/proxies/results)
        Option("cmi_weight", "lambda, the weight of the CMI term", default=4.0, range="[0, inf)"),
        Option("temperatures", "the temperature grid, comma-separated", type=str,
               default=metrics.DEFAULT_TEMPERATURES, parse=metrics.parse_temperatures),
        Option("cmi_agg", "how the grid's terms combine (t2mean: the mean of T^2 CMI_T)", type=str,
               default="t2mean", choices=("mean", "max", "t2mean")),
        Option("centroids", "class centroids from an EMA of each step's outputs, or a full pass per epoch",
               type=str, default="ema", choices=("ema", "epoch")),
        Option("centroid_momentum", "EMA momentum of the centroids", default=0.9, range="[0, 1)")),
    loss=cmim, task=CentroidTask))


FROM = Option("from", "checkpoint of the trained teacher to release", type=Path)

# The releases of a trained teacher: each definition carries its logit transform (releases.py), whose settings are
# its options; a released checkpoint records the name and those settings, and answers through the transform.

register(Method(
    "stingy", "defense", "no training: releases a trained teacher whose outputs keep only the top k = floor(r K) "
    "logits", "Stingy Teacher: Sparse Logits Suffice to Fail Knowledge Distillation (Ma et al.)",
    options=(FROM,
             Option("ratio", "keep k = floor(ratio * classes) logits per sample (default per dataset, the "
                    "papers')", default=0.1, range="(0, 1]"),
             Option("variant", "top (the paper's), smooth, reverse, least (its ablations)", type=str,
                    default="top", choices=tuple(releases.STINGY_VARIANTS))),
    release=releases.stingy, queries="from",
    per_dataset={"mnist5k": dict(ratio=0.2), "cifar10": dict(ratio=0.2), "cifar100": dict(ratio=0.1),
                 "tinyimagenet": dict(ratio=0.1), "imagenet": dict(ratio=0.1)}))

# The prediction-API releases: the students see log p' of the probabilities p' the API would return (-inf where
# p' = 0).

register(Method(
    "topk", "defense", "no training: releases a trained teacher as an API that returns its k largest "
    "probabilities", "the truncated outputs of Knockoff Nets: Stealing Functionality of Black-Box Models "
    "(Orekondy et al., CVPR 2019)",
    options=(FROM, Option("k", "probabilities returned per sample (at most the classes)", type=int, default=5,
                          range="[1, inf)")),
    release=releases.topk, decode=releases.complete_topk, queries="from"))

register(Method(
    "rounded", "defense", "no training: releases a trained teacher as an API that returns its probabilities "
    "rounded to --decimals", "rounding confidences, Stealing Machine Learning Models via Prediction APIs "
    "(Tramèr et al., USENIX Security 2016)",
    # 3: the default of ART's Rounded; past 15 decimals float64 has nothing left to round
    options=(FROM, Option("decimals", "decimals kept (0 answers the label alone)",
                          type=int, default=3, range="[0, 15]")),
    release=releases.rounded, decode=releases.complete_rounded, queries="from"))

register(Method(
    "label", "defense", "no training: releases a trained teacher as an API that returns its label only",
    "class labels only, Stealing Machine Learning Models via Prediction APIs (Tramèr et al., USENIX Security 2016)",
    options=(FROM,), release=releases.label, decode=releases.smoothed_label, queries="from"))

register(Method(
    "reverse-sigmoid", "defense", "no training: releases a trained teacher whose probabilities p become "
    "p - beta (sigmoid(gamma logit(p)) - 1/2), clipped and renormalized",
    "Defending Against NN Model Stealing Attacks Using Deceptive Perturbations (Lee et al., IEEE S&P Workshops "
    "2019)",
    # ART's ReverseSigmoid defaults; --gamma is the learning-rate factor, hence the prefix
    options=(FROM, Option("rs_beta", "beta, the perturbation's magnitude", default=1.0, range="(0, inf)"),
             Option("rs_gamma", "gamma, its convergence", default=0.1, range="(0, inf)")),
    release=releases.reverse_sigmoid, decode=releases.smoothed_label, queries="from"))

register(Method(
    "noise", "defense", "no training: releases a trained teacher whose probabilities get Gaussian noise "
    "(negatives set to 0, renormalized), a fixed function of the input",
    "the GaussianNoise postprocessor of the Adversarial Robustness Toolbox (Nicolae et al., 2018)",
    options=(FROM, Option("sigma", "standard deviation of the noise", default=0.2, range="(0, inf)"),
             Option("noise_seed", "seed of the noise (the same seed, the same answers)", type=int, default=0,
                    range=f"[0, {releases.MASK32}]")),
    release=releases.noise, decode=releases.smoothed_label, queries="from"))
