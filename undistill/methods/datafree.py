"""Data-free attacks (`distill_student.py --attack dafl|dafl-htc|deepinversion`): the student never sees a training
image.

All are white-box: they back-propagate through the frozen teacher to its input, and DAFL reads its penultimate
features, DeepInversion its BatchNorm statistics. A released teacher (stingy, an API release) keeps its release
transform on the logits they read, and every loss stays finite where it returns -inf. The task synthesizes the
images (its generator's or inversion's loss weighted by its own settings); the method's loss is the student's on the
teacher's answers to them, `loss(logits, teacher_logits) -> (loss, {term: value})`: KD at tau as the authors' code
distills, or HTC's target (dafl-htc). Formulas and sources: docs/methods.md.
"""
import functools
import math
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import UserError
from ..datasets import TensorImages
from ..loaders import GpuLoader
from ..models.generators import DaflGenerator
from ..options import Option
from .attacks import HTC_MULTIPLIER, HTC_TAU, TEACHER, htc, kd
from .core import Method, Step, Task, full_precision, query, register

NLL_CAP = -math.log(1e-8)  # DeepInversion's target NLL with probabilities floored at 1e-8 (finite under a release)


def rank_generator(seed, epoch, rank, device="cpu"):
    """A generator of its own for each (run seed, epoch, rank): ranks draw different latents or images, and an
    epoch draws the same ones when it is trained again after a resume."""
    return torch.Generator(device).manual_seed(int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0]))


class Pixels(nn.Module):
    """Normalized images (what a generator or an inversion produces) on the [0, 255] scale the project's models
    take (models.Classifier normalizes them back)."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * 255, persistent=False)

    def forward(self, x):
        return x * self.std + self.mean


def only_teacher(run, name):
    if len(run.queried.paths) > 1:
        raise UserError(f"--attack {name} inverts one teacher: pass a single --teacher")
    return run.queried.model


# ---- the student's loss on the teacher's answers to synthesized images: no label, so no CE term

def kd_student(logits, teacher_logits, *, tau):
    """tau^2 KL(p_tau(teacher) || p_tau(student)): Hinton KD without labels, as DAFL's and DeepInversion's code
    distill."""
    return kd(logits, None, teacher_logits, alpha=1.0, tau=tau, no_labels=True)


def htc_student(logits, teacher_logits, *, tau, multiplier):
    """m KL(p_tau(teacher) || p_1(student)): HTC without labels (Jandial et al. add HTC to DAFL in their Table 4).
    With no CE term beside it, alpha would only scale m: it is 1."""
    return htc(logits, None, teacher_logits, alpha=1.0, tau=tau, multiplier=multiplier, no_labels=True)


# ---- DAFL

def dafl(teacher_logits, features, *, w_one_hot, w_activation, w_entropy):
    """DAFL's generator loss on the teacher's answers to generated images (the authors' code):
    w_one_hot CE(t, argmax t) - w_activation mean|features| + w_entropy sum_c pbar_c log10 pbar_c, pbar the batch
    mean of softmax(t). The one-hot target is always a kept class of a release, and pbar is floored before the log
    (a class a release never emits has pbar = 0, whose term is 0), so the loss is finite under -inf logits."""
    one_hot = F.cross_entropy(teacher_logits, teacher_logits.detach().argmax(1))
    activation = -features.abs().mean()
    mean = F.softmax(teacher_logits, dim=1).mean(0)
    entropy = (mean * torch.log10(mean.clamp_min(torch.finfo(mean.dtype).tiny))).sum()
    return (w_one_hot * one_hot + w_activation * activation + w_entropy * entropy,
            {"one_hot": one_hot, "activation": activation, "entropy": entropy})


class PenultimateFeatures:
    """Records the input of the last linear layer a model runs: its penultimate features, which DAFL's activation
    loss reads (the teacher's pooled features in the authors' ResNets)."""

    def __init__(self, model):
        self.value = None
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise UserError("--attack dafl reads the teacher's features before its last linear layer, and this "
                            "teacher has no linear layer")
        for layer in linears:
            layer.register_forward_hook(self.keep)

    def keep(self, module, inputs, output):
        self.value = inputs[0]


class GeneratorTask(Task):
    """DAFL's run: each step draws latents, the generator G makes images, the frozen teacher answers them with
    gradient back to G (DAFL's generator loss), and the student learns from the answers on the same images,
    detached (the method's loss); one backward, and G (Adam, lr_generator) and the student step together, as in the
    authors' code. An epoch is steps_per_epoch such steps; each rank draws its own latents."""
    uses_training_split = False

    def __init__(self, run, loss, *, w_one_hot, w_activation, w_entropy, latent_dim, lr_generator, steps_per_epoch):
        teacher = only_teacher(run, run.method.name)
        self.frozen, self.loss = [teacher], loss
        self.generator_loss = functools.partial(dafl, w_one_hot=w_one_hot, w_activation=w_activation,
                                                w_entropy=w_entropy)
        self.features = PenultimateFeatures(teacher)
        self.latent_dim, self.steps, self.batch = latent_dim, steps_per_epoch, run.batch_per_rank
        self.seed, self.ctx = run.config.seed, run.ctx
        # one channel for grayscale data, as the authors' MNIST generator (expanded to the three the models take)
        self.generator = DaflGenerator(latent_dim, run.info.image_size, 1 if run.info.record.gray else 3).to(
            run.ctx.device)
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=lr_generator)
        self.trained_beside = [(self.generator, self.optimizer)]
        self.pixels = Pixels(run.info.mean, run.info.std).to(run.ctx.device)

    def epoch(self, model, epoch, split):
        self.generator.train()
        # drawn on the device: a copy from the host's pageable memory each step would make the host wait for it
        device = self.ctx.device
        rng = rank_generator(self.seed, epoch, self.ctx.rank, device)
        latents = (torch.randn(self.batch, self.latent_dim, generator=rng, device=device) for _ in range(self.steps))
        return self.steps, ((z, None) for z in latents)

    def step(self, model, z, _, epoch):
        images = self.pixels(self.generator(z).expand(-1, 3, -1, -1))
        teacher_logits = self.frozen[0](images)
        student_logits = model(images.detach())
        with full_precision(images):
            loss, terms = self.generator_loss(teacher_logits.float(), self.features.value.float())
            student_loss, student_terms = self.loss(student_logits.float(), teacher_logits.detach().float())
        return Step(loss + student_loss, {**terms, **student_terms}, student_logits, teacher_logits.detach().argmax(1))

    def state_dict(self):
        return {"generator": self.generator.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state):
        self.generator.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["optimizer"])


# DAFL (Chen et al., ICCV 2019), the authors' code: loss weights, generator and student settings. Its student
# trains 2000 epochs of 120 steps, batch 1024, SGD lr 0.1 decayed x0.1 at epochs 800 and 1600 (MNIST: Adam 2e-3).
DAFL_CIFAR10 = dict(w_one_hot=0.05, w_activation=0.01, w_entropy=5.0, latent_dim=1000, lr_generator=0.02,
                    epochs=2000, batch_size=1024, opt="sgd", lr=0.1, milestones="800,1600", gamma=0.1)
DAFL_CIFAR100 = dict(DAFL_CIFAR10, w_one_hot=0.5, w_activation=0.1, w_entropy=20.0)


def student_tau(default, source):
    return Option("tau", f"temperature of the student's KL to the teacher ({source})", default=default,
                  range="(0, inf)")


# DAFL's generator and its settings, shared by every student loss it distills with
DAFL_OPTIONS = (
    Option("w_one_hot", "weight of the one-hot loss (default per dataset, the authors')", default=0.05,
           range="[0, inf)"),
    Option("w_activation", "weight of the activation loss (default per dataset)", default=0.01, range="[0, inf)"),
    Option("w_entropy", "weight of the information-entropy loss (default per dataset)", default=5.0,
           range="[0, inf)"),
    Option("latent_dim", "generator input size (default per dataset: 1000 CIFAR, 100 mnist5k)", type=int,
           default=1000, range="[1, inf)"),
    Option("lr_generator", "Adam lr of the generator (default per dataset: 0.02 CIFAR)", default=0.02,
           range="(0, inf)"),
    Option("steps_per_epoch", "generator and student steps per epoch", type=int, default=120, range="[1, inf)"))
DAFL_PER_DATASET = {
    # DAFL's MNIST latent size and student (Adam 2e-3), but its CIFAR-10 loss weights and generator lr: with its
    # MNIST ones (1 / 0.1 / 5, lr 0.2) the generator collapses to one class here within an epoch
    # (recipes/proxies/results/datafree.md)
    "mnist5k": dict(w_one_hot=0.05, w_activation=0.01, w_entropy=5.0, latent_dim=100, lr_generator=0.02,
                    batch_size=512, lr=2e-3, opt="adam"),
    "cifar10": DAFL_CIFAR10, "cifar100": DAFL_CIFAR100,
    "tinyimagenet": DAFL_CIFAR100, "imagenet": DAFL_CIFAR100}  # no paper runs DAFL there: CIFAR-100's

register(Method(
    "dafl", "attack", "white-box, data-free: a generator trained against the teacher (one-hot, activation and "
    "entropy losses) makes the images the student distills on",
    "Data-Free Learning of Student Networks (Chen et al., ICCV 2019)",
    options=(*DAFL_OPTIONS, student_tau(1.0, "the authors' code"), TEACHER),
    loss=kd_student, task=GeneratorTask, queries="teacher", access="white-box", per_dataset=DAFL_PER_DATASET,
    smoke=("--steps-per-epoch", "2")))

register(Method(
    "dafl-htc", "attack", "white-box, data-free: DAFL's generator makes the images, the student learns HTC's target "
    "on them: m KL(p_tau(teacher) || p_1(student))",
    "Distilling the Undistillable: Learning from a Nasty Teacher (Jandial et al., ECCV 2022), Table 4: HTC added "
    "to DAFL (Data-Free Learning of Student Networks, Chen et al., ICCV 2019)",
    options=(*DAFL_OPTIONS, HTC_TAU, HTC_MULTIPLIER, TEACHER),
    loss=htc_student, task=GeneratorTask, queries="teacher", access="white-box", per_dataset=DAFL_PER_DATASET,
    smoke=("--steps-per-epoch", "2")))


# ---- DeepInversion

def bn_term(x, running_mean, running_var):
    """DeepInversion's feature-statistics term for one BatchNorm layer and its input batch x (N, C, H, W):
    ||mean(x) - running_mean||_2 + ||var(x) - running_var||_2 over channels, var the biased batch variance."""
    mean = x.mean((0, 2, 3))
    var = x.transpose(0, 1).flatten(1).var(1, unbiased=False)
    return torch.norm(running_mean - mean, 2) + torch.norm(running_var - var, 2)


def total_variation(x):
    """The authors' total variation: the L2 norms of the differences to the right, below, and both diagonal
    neighbours, summed."""
    return sum(torch.norm(d) for d in (x[..., :, :-1] - x[..., :, 1:], x[..., :-1, :] - x[..., 1:, :],
                                        x[..., 1:, :-1] - x[..., :-1, 1:], x[..., :-1, :-1] - x[..., 1:, 1:]))


def deepinversion(logits, targets, bn_terms, images, *, r_bn, r_tv, r_l2):
    """DeepInversion's image loss: CE(teacher(x), target) + r_bn sum over BatchNorm layers of bn_term
    + r_tv TV(x) + r_l2 ||x||_2, x the (jittered) images in normalized space. The target's NLL is capped at
    -log 1e-8: a release that gives the target probability 0 leaves the other terms to shape that image."""
    nll = -F.log_softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)
    ce, bn, tv, l2 = nll.clamp(max=NLL_CAP).mean(), sum(bn_terms), total_variation(images), torch.norm(images)
    return ce + r_bn * bn + r_tv * tv + r_l2 * l2, {"ce": ce, "bn": bn, "tv": tv, "l2": l2}


@contextmanager
def batchnorm_terms(model):
    """While open, every BatchNorm2d forward of `model` appends its bn_term to the yielded list."""
    terms = []
    hooks = [m.register_forward_hook(lambda m, inputs, _: terms.append(bn_term(inputs[0], m.running_mean,
                                                                                m.running_var)))
             for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        yield terms
    finally:
        for hook in hooks:
            hook.remove()


class InversionTask(Task):
    """DeepInversion's run: each epoch first inverts the teacher into batches_per_epoch new batches per rank
    (di_iterations Adam steps on random images minimizing DeepInversion's image loss, targets cycling through the
    classes, random jitter (and flips), each step clipped to valid pixels; one channel for grayscale data),
    gathered from every rank into one pool of uint8 images (at most pool_batches batches); the student then passes
    once over the whole pool, with the dataset's augmentation, learning from the teacher's answers (the method's
    loss). The pool is saved for an exact resume."""
    uses_training_split = False

    def __init__(self, run, loss, *, r_bn, r_tv, r_l2, di_batch, di_iterations, di_lr, jitter, di_flip,
                 pool_batches, batches_per_epoch):
        teacher = only_teacher(run, run.method.name)
        if not any(isinstance(m, nn.BatchNorm2d) for m in teacher.modules()):
            raise UserError(f"--attack {run.method.name} matches the teacher's BatchNorm statistics, and this "
                            "teacher has no BatchNorm2d layer")
        self.frozen, self.loss, self.run = [teacher], loss, run
        self.image_loss = functools.partial(deepinversion, r_bn=r_bn, r_tv=r_tv, r_l2=r_l2)
        self.di_batch, self.iterations, self.lr, self.jitter, self.flip = di_batch, di_iterations, di_lr, jitter, \
            di_flip
        self.pool_batches, self.batches_per_epoch = pool_batches, batches_per_epoch
        first = min(batches_per_epoch, pool_batches) * di_batch
        if first < run.batch_per_rank:
            raise UserError(f"the first epoch inverts {first} images per rank, fewer than one batch of "
                            f"{run.batch_per_rank}: raise --di-batch or --batches-per-epoch, or lower --batch-size")
        info, device = run.info, run.ctx.device
        self.pixels = Pixels(info.mean, info.std).to(device)
        self.images = torch.empty(0, 3, info.image_size, info.image_size, dtype=torch.uint8, device=device)
        self.targets = torch.empty(0, dtype=torch.long, device=device)

    def epoch(self, model, epoch, split):
        ctx = self.run.ctx
        room = (self.pool_batches * self.di_batch - len(self.targets)) // (self.di_batch * ctx.world_size)
        if room > 0:
            rng = rank_generator(self.run.config.seed, epoch, ctx.rank)
            new = [self.invert(rng) for _ in range(min(self.batches_per_epoch, room))]
            self.images = torch.cat([self.images, ctx.all_gather(torch.cat([x for x, _ in new]))])
            self.targets = torch.cat([self.targets, ctx.all_gather(torch.cat([y for _, y in new]))])
        pool = TensorImages(self.images, self.targets, self.run.info.record.augment)
        loader = GpuLoader(pool, self.run.batch_per_rank, train=True, seed=self.run.config.seed, workers=0,
                           rank=ctx.rank, world_size=ctx.world_size, device=ctx.device)
        return len(loader), loader.epoch(epoch)

    def invert(self, rng):
        """One batch of images inverted from the teacher, as uint8 pixels, and their targets."""
        teacher, device, size = self.frozen[0], self.run.ctx.device, self.run.info.image_size
        targets = (torch.arange(self.di_batch) % self.run.info.num_classes).to(device)
        channels = 1 if self.run.info.record.gray else 3  # grayscale data: one channel, shown to the teacher as three
        x = torch.randn(self.di_batch, channels, size, size, generator=rng).to(device).requires_grad_()
        optimizer = torch.optim.Adam([x], lr=self.lr)
        low = (-self.pixels.mean / self.pixels.std)[:, :channels]  # a gray dataset's channels share their statistics
        high = ((255 - self.pixels.mean) / self.pixels.std)[:, :channels]
        for _ in range(self.iterations):
            dx, dy = torch.randint(-self.jitter, self.jitter + 1, (2,), generator=rng).tolist()
            jittered = torch.roll(x, shifts=(dx, dy), dims=(2, 3))
            if self.flip and torch.rand(1, generator=rng).item() < 0.5:
                jittered = jittered.flip(3)
            with batchnorm_terms(teacher) as bn_terms:
                logits = teacher(self.pixels(jittered.expand(-1, 3, -1, -1)))
            with full_precision(x):
                loss, _ = self.image_loss(logits.float(), targets, bn_terms, jittered)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                x.copy_(torch.maximum(torch.minimum(x, high), low))  # valid pixels only
        return self.pixels(x.detach().expand(-1, 3, -1, -1)).round().clamp(0, 255).to(torch.uint8), targets

    def step(self, model, x, y, epoch):
        teacher_logits, student_logits = query(self.frozen[0], x), model(x)
        with full_precision(x):
            loss, terms = self.loss(student_logits.float(), teacher_logits)
        return Step(loss, terms, student_logits, teacher_logits.argmax(1))

    def state_dict(self):
        return {"images": self.images.cpu(), "targets": self.targets.cpu()}

    def load_state_dict(self, state):
        device = self.run.ctx.device
        self.images, self.targets = state["images"].to(device), state["targets"].to(device)


register(Method(
    "deepinversion", "attack", "white-box, data-free: images inverted from the teacher (its BatchNorm statistics, "
    "total variation) make the pool the student distills on",
    "Dreaming to Distill: Data-free Knowledge Transfer via DeepInversion (Yin et al., CVPR 2020)",
    options=(Option("di_batch", "images per inverted batch (its BatchNorm statistics are matched per batch)",
                    type=int, default=256, range="[1, inf)"),
             Option("di_iterations", "Adam steps per inverted batch", type=int, default=2000, range="[1, inf)"),
             Option("di_lr", "Adam lr of the inversion", default=0.05, range="(0, inf)"),
             Option("r_bn", "weight of the BatchNorm-statistics term", default=10.0, range="[0, inf)"),
             Option("r_tv", "weight of the total variation", default=2.5e-5, range="[0, inf)"),
             Option("r_l2", "weight of the images' L2 norm", default=0.0, range="[0, inf)"),
             Option("jitter", "random shift of the images at each step, in pixels", type=int, default=2,
                    range="[0, inf)"),
             Option("di_flip", "also flip the images at random at each step (the authors' ImageNet setting)",
                    flag=True, default=False),
             Option("pool_batches", "batches in the pool at most (default: about the size of the dataset's "
                    "training split)", type=int, default=196, range="[1, inf)"),
             Option("batches_per_epoch", "batches each rank inverts per epoch, until the pool is full", type=int,
                    default=2, range="[1, inf)"),
             student_tau(3.0, "the temperature the authors' code compares teacher and student at"),
             TEACHER),
    loss=kd_student, task=InversionTask, queries="teacher", access="white-box",
    # a pool of about as many inverted images as the training split holds, in batches of 256
    per_dataset={name: dict(pool_batches=math.ceil(images / 256)) for name, images in (
        ("mnist5k", 4_000), ("cifar10", 50_000), ("cifar100", 50_000), ("tinyimagenet", 100_000),
        ("imagenet", 1_281_167))},
    smoke=("--di-batch", "4", "--di-iterations", "2", "--pool-batches", "1", "--batches-per-epoch", "1")))
