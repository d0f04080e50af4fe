"""One-file checkpoints: everything needed to rebuild the model as a black box, written atomically.

A checkpoint is a dict of plain types and tensors (so it loads with `weights_only=True`):
    format, arch, num_classes, dataset, image_size, mean, std,
    role ("teacher" | "student"), method (defense or attack name), settings (its options),
    access (an attack's: "black-box", or "white-box" when it read more of the teacher than its logits),
    release (None, or for a released teacher the release's name and the settings of its transform, e.g.
    {"name": "stingy", "ratio", "variant"}, {"name": "rounded", "decimals"}: methods.release_transform reads it),
    heads (auxiliary heads the network carries, or None), epoch, metrics, state_dict (the bare network, no DDP
    prefix)
and, in a run's resumable `checkpoint.pt`, also optimizer, best_acc, args and the method's own state (task).
"""
import torch

from . import UserError, methods, models, runs

FORMAT = "undistill/1"


def save(payload, path):
    """Written atomically (runs.atomic_write): a crash never leaves half a checkpoint."""
    runs.atomic_write(path, lambda tmp: torch.save(payload, tmp))


# What every checkpoint holds, checked on load so a malformed one fails there, with its name, not mid-run
FIELDS = {"arch": str, "num_classes": int, "dataset": str, "image_size": int, "mean": list, "std": list,
          "role": str, "method": str, "settings": dict, "state_dict": dict}


def load(path):
    ckpt = runs.load_tensors(path, "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path} is not an undistill checkpoint (no format={FORMAT!r}); "
                        "plain state_dicts go through --weights")
    for field, kind in FIELDS.items():
        if not isinstance(ckpt.get(field), kind):
            raise UserError(f"checkpoint {path} is malformed: its {field!r} is missing or not a {kind.__name__} "
                            "(rewrite it with train_teacher.py or distill_student.py)")
    return ckpt


def load_classifier(path):
    """The checkpoint as a frozen Classifier in eval mode (normalization and release transform included), and
    its dict."""
    ckpt = load(path)
    net = models.build(ckpt["arch"], ckpt["num_classes"], heads=ckpt.get("heads"))
    models.load_weights(net, ckpt["state_dict"], f"checkpoint {path}", ckpt["arch"], ckpt["num_classes"])
    transform = methods.release_transform(ckpt.get("release"), ckpt["num_classes"], f"checkpoint {path}")
    model = models.Classifier(net, ckpt["mean"], ckpt["std"], transform)
    return model.eval().requires_grad_(False), ckpt


def describe(info, arch, role, method, settings, release=None, heads=None, access=None):
    """The checkpoint fields that say what a model is (everything but weights and progress). `heads`: the
    auxiliary heads the network carries (models.HEADS); in eval mode it still answers with its final head."""
    return dict(format=FORMAT, arch=arch, num_classes=info.num_classes, dataset=info.name,
                image_size=info.image_size, mean=list(info.mean), std=list(info.std), role=role, method=method,
                settings=runs.plain(settings), access=access, release=release, heads=heads)


def check_compatible(ckpt, info, what):
    """A frozen model (teacher, adversary) must come from the same dataset as the run that queries it."""
    theirs = (ckpt["dataset"], ckpt["num_classes"], ckpt["image_size"])
    ours = (info.name, info.num_classes, info.image_size)
    if theirs != ours:
        raise UserError(f"{what} was trained on {theirs[0]} ({theirs[1]} classes, {theirs[2]}px) but this run uses "
                        f"{ours[0]} ({ours[1]} classes, {ours[2]}px): pass the matching --dataset or another {what}")
