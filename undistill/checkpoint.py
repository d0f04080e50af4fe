"""One-file checkpoints: everything needed to rebuild the model as a black box, written atomically.

A checkpoint is a dict of plain types and tensors (so it loads with `weights_only=True`):
    format, arch, num_classes, dataset, image_size, mean, std,
    role ("teacher" | "student"), method (defense or attack name), settings (its options),
    access (an attack's: "black-box", or "white-box" when it read more of the teacher than its logits),
    release (None, or for a released teacher the release's name and the settings of its transform, e.g.
    {"name": "stingy", "ratio", "variant"}, {"name": "rounded", "decimals"}: methods.release_transform reads it),
    heads (auxiliary heads the network carries, or None), epoch, metrics, state_dict (the bare network, no DDP
    prefix; for arch "torchscript", an imported TorchScript module's file as one uint8 tensor, "script"; for arch
    "onnx", an imported ONNX model's file, "onnx"),
    input (an imported model's input convention, models.Classifier's `owner`, or None)
and, in a run's resumable `checkpoint.pt`, also optimizer, best_acc, args and the method's own state (task).
"""
import contextlib
import io
import math
import warnings

import torch

from . import UserError, methods, models, require, runs

FORMAT = "undistill/1"
IMPORT = "python -m undistill.importer"
TORCHSCRIPT = "torchscript"  # the arch of an imported TorchScript module: a black box, forward only
ONNX = "onnx"  # the arch of an imported ONNX model, run by onnxruntime: a black box, forward only
BLACK_BOX = {TORCHSCRIPT: "TorchScript module", ONNX: "ONNX model"}  # arch: what the white-box attacks refuse
# What a checkpoint may claim, checked before anything is built from it: a file is untrusted input
MAX_CLASSES, MAX_IMAGE_SIZE = 100_000, 4096


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
                        f"plain state_dicts go through --weights, or become a checkpoint with {IMPORT}")
    for field, kind in FIELDS.items():
        if not isinstance(ckpt.get(field), kind):
            raise UserError(f"checkpoint {path} is malformed: its {field!r} is missing or not a {kind.__name__} "
                            "(rewrite it with train_teacher.py or distill_student.py)")
    check_claims(ckpt, f"checkpoint {path}")
    return ckpt


def check_claims(ckpt, where):
    """What a checkpoint says about its model, within sane bounds and consistent with itself: a hostile file is one
    UserError, never a huge allocation or a model built from nonsense."""
    def bad(what):
        return UserError(f"{where} claims {what}: rewrite it with train_teacher.py, distill_student.py or {IMPORT}")

    if not 1 <= ckpt["num_classes"] <= MAX_CLASSES:
        raise bad(f"{ckpt['num_classes']} classes (1 to {MAX_CLASSES})")
    if not 1 <= ckpt["image_size"] <= MAX_IMAGE_SIZE:
        raise bad(f"{ckpt['image_size']}px images (1 to {MAX_IMAGE_SIZE})")
    owner = ckpt.get("input") or {}
    if not isinstance(owner, dict) or set(owner) - {"image_size", "channels", "class_order"}:
        raise bad(f"an input convention {owner!r} (image_size, channels, class_order)")
    size = owner.get("image_size")
    if size is not None and not (type(size) is int and 1 <= size <= MAX_IMAGE_SIZE):
        raise bad(f"an input size {size!r} (1 to {MAX_IMAGE_SIZE})")
    if owner.get("channels", 3) not in (1, 3):
        raise bad(f"{owner['channels']!r} input channels (1 or 3)")
    check_normalization(ckpt["mean"], ckpt["std"], owner.get("channels", 3), bad)
    order = owner.get("class_order")
    if order is not None and not (isinstance(order, list) and all(type(i) is int for i in order)
                                  and sorted(order) == list(range(ckpt["num_classes"]))):
        raise bad(f"a class order that is not a permutation of its {ckpt['num_classes']} classes")


def check_normalization(mean, std, channels, bad):
    """`bad(what)`: the UserError to raise. One finite mean and a positive finite std per input channel."""
    for name, values in (("mean", mean), ("std", std)):
        if len(values) != channels or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise bad(f"a {name} {values!r} (one finite number per input channel: {channels})")
    if not all(v > 0 for v in std):
        raise bad(f"a std {std!r} (positive numbers)")


def load_classifier(path):
    """The checkpoint as a frozen Classifier in eval mode (normalization and release transform included), and
    its dict."""
    ckpt = load(path)
    if ckpt["arch"] == TORCHSCRIPT:
        net = load_script(ckpt["state_dict"].get("script"), f"checkpoint {path}")
    elif ckpt["arch"] == ONNX:
        net = load_onnx(ckpt["state_dict"].get("onnx"), f"checkpoint {path}")
    else:
        net = models.build(ckpt["arch"], ckpt["num_classes"], heads=ckpt.get("heads"))
        models.load_weights(net, ckpt["state_dict"], f"checkpoint {path}", ckpt["arch"], ckpt["num_classes"])
    transform = methods.release_transform(ckpt.get("release"), ckpt["num_classes"], f"checkpoint {path}")
    model = models.Classifier(net, ckpt["mean"], ckpt["std"], transform, ckpt.get("input"))
    return model.eval().requires_grad_(False), ckpt


def load_script(script, where):
    """An imported TorchScript module, from its file's bytes (a uint8 tensor, so the checkpoint stays weights_only
    loadable). TorchScript runs no Python: its code is the TorchScript interpreter's."""
    if not isinstance(script, torch.Tensor) or script.dtype != torch.uint8 or script.dim() != 1:
        raise UserError(f"{where}: its TorchScript module is missing (state_dict['script'], a uint8 tensor): "
                        f"import it again with {IMPORT}")
    try:
        with quiet_jit():
            return torch.jit.load(io.BytesIO(script.numpy().tobytes()), map_location="cpu")
    except Exception as e:  # a damaged archive raises a different type per damage
        raise UserError(f"{where}: its TorchScript module cannot be loaded ({str(e).strip().splitlines()[0][:120]}):"
                        f" import it again with {IMPORT}") from None


def load_onnx(model, where):
    """An imported ONNX model as a module whose forward runs onnxruntime, from its file's bytes (a uint8 tensor)."""
    if not isinstance(model, torch.Tensor) or model.dtype != torch.uint8 or model.dim() != 1:
        raise UserError(f"{where}: its ONNX model is missing (state_dict['onnx'], a uint8 tensor): import it again "
                        f"with {IMPORT}")
    ort = require("onnxruntime", "onnxruntime", f"{where}, an ONNX model,")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the process's share of the cores, as torch's
    options.log_severity_level = 4  # fatal only: a model it refuses is one UserError, without its log line before
    try:
        session = ort.InferenceSession(model.numpy().tobytes(), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # a damaged protobuf, an unknown operator
        raise UserError(f"{where}: its ONNX model cannot be loaded ({str(e).strip().splitlines()[0][:120]}): "
                        f"import it again with {IMPORT}") from None
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or isinstance(inputs[0].shape[0], int):
        shapes = [i.shape for i in inputs]
        raise UserError(f"{where}: its ONNX model takes {shapes}, not one batch of images (N, C, H, W) of a free "
                        "batch size N: export it with one input and dynamic_axes={'<input>': {0: 'batch'}}")
    return OnnxModel(session)


class OnnxModel(torch.nn.Module):
    """An ONNX model's forward: float32 images in, its first output out, on the images' device. onnxruntime runs
    outside autograd: the model answers queries, and nothing reads its gradients."""

    def __init__(self, session):
        super().__init__()
        self.session = session
        self.input = session.get_inputs()[0].name

    def forward(self, x):
        answers = self.session.run(None, {self.input: x.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(answers).to(x.device)


def describe(info, arch, role, method, settings, release=None, heads=None, access=None):
    """The checkpoint fields that say what a model is (everything but weights and progress). `heads`: the
    auxiliary heads the network carries (models.HEADS); in eval mode it still answers with its final head."""
    return dict(format=FORMAT, arch=arch, num_classes=info.num_classes, dataset=info.name,
                image_size=info.image_size, mean=list(info.mean), std=list(info.std), role=role, method=method,
                settings=runs.plain(settings), access=access, release=release, heads=heads)


@contextlib.contextmanager
def quiet_jit():
    """torch 2.9+ deprecates torch.jit for torch.export, which reads no TorchScript file: its warning tells the
    owner of one nothing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def carried(ckpt):
    """What a model derived from `ckpt` without training (a release) keeps of it: how it reads its images."""
    return {k: ckpt.get(k) for k in ("mean", "std", "input")}


def convention(weights):
    """How the model of --weights reads its images (carried: mean, std, input) where it is a checkpoint of this
    project, so that fine-tuning an imported model keeps its owner's convention; {} for none or a plain
    state_dict."""
    if weights is None:
        return {}
    state = runs.load_tensors(weights, "--weights")
    if not (isinstance(state, dict) and state.get("format") == FORMAT):
        return {}
    return carried(load(weights))


def check_compatible(ckpt, info, what):
    """A frozen model (teacher, adversary) must come from the same dataset as the run that queries it."""
    theirs = (ckpt["dataset"], ckpt["num_classes"], ckpt["image_size"])
    ours = (info.name, info.num_classes, info.image_size)
    if theirs != ours:
        raise UserError(f"{what} was trained on {theirs[0]} ({theirs[1]} classes, {theirs[2]}px) but this run uses "
                        f"{ours[0]} ({ours[1]} classes, {ours[2]}px): pass the matching --dataset or another {what}")
