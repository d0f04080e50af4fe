"""The audit report's figures: each function writes a PNG of the size its docstring gives, sparse (-inf) outputs
and tiny t-SNE inputs work, and mismatched inputs are refused with a message naming the argument."""
import math
import struct

import pytest
import torch
from PIL import Image

from undistill import figures

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def png_size(path):
    """(width, height) from the IHDR chunk, after checking the signature; PIL then decodes the whole image."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    with Image.open(path) as image:
        image.load()
        assert image.size == (width, height)
    return width, height


def logits(n, k, seed, sparse=False):
    """Seeded logits peaked on a class each; `sparse` keeps the top 2 per row and sets the rest to -inf."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    z = torch.randn(n, k, generator=g)
    z[torch.arange(n), y] += 4
    if sparse:
        z[z < z.topk(2, dim=1).values[:, -1:]] = -math.inf
    return z, y


def test_temperature_curve(tmp_path):
    curves = {"CE": [(70.0, 0.5), (72.5, 0.4), (73.0, None), (71.0, 0.8)],
              "nasty": [(69.0, 1.0), (None, None), (60.0, 1.5), (58.0, 2.0)]}  # None: a run not done yet
    out = figures.temperature_curve(tmp_path / "sub" / "t.png", [1, 4, 16, 64], curves, (69.5, 0.6),
                                    scratch=(68.0, 0.3), title="mnist5k")
    assert out == tmp_path / "sub" / "t.png"
    assert png_size(out) == (900, 540)
    no_std = figures.temperature_curve(tmp_path / "t2.png", [2, 4], {"CE": [(1, None), (2, None)]}, (1.5, None))
    assert png_size(no_std) == (900, 540)


@pytest.mark.parametrize("temperatures, curves, ls_band, message", [
    ([1, 4, 16], {"CE": [(70.0, 0.5), (72.0, 0.5)]}, (69.0, 0.5), r"curves\['CE'\] has 2 .* for 3 temperatures"),
    ([0, 4], {"CE": [(70.0, 0.5), (72.0, 0.5)]}, (69.0, 0.5), "temperatures must be positive"),
    ([1, 4], {"CE": [(70.0, 0.5), (72.0, 0.5)]}, (69.0,), "ls_band must be a"),
    ([1, 4], {}, (69.0, 0.5), "curves is empty"),
])
def test_temperature_curve_refuses(tmp_path, temperatures, curves, ls_band, message):
    with pytest.raises(ValueError, match=message):
        figures.temperature_curve(tmp_path / "t.png", temperatures, curves, ls_band)
    assert not (tmp_path / "t.png").exists()


def test_responses_sparse_release_labels_and_images(tmp_path):
    z, y = logits(2, 10, seed=0)
    sparse = z.clone()
    sparse[sparse < sparse.topk(2, dim=1).values[:, -1:]] = -math.inf
    tau = 4.0
    panels = [("CE", torch.softmax(z / tau, 1)), ("stingy", torch.softmax(sparse / tau, 1)),
              ("nasty", torch.softmax((z + 5 * torch.eye(10)[[1, 6, 9]].sum(0)) / tau, 1))]
    assert (panels[1][1] == 0).any()
    images = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    out = figures.responses(tmp_path / "r.png", panels, NAMES, tau, labels=y, images=images)
    assert png_size(out) == (1200, 600)  # (3 x 2.75 + 1.25 + 0.5) x (2 x 1.75 + 1.5) inches at 120 dpi
    plain = figures.responses(tmp_path / "r2.png", panels[:2], None, tau)
    assert png_size(plain) == (720, 600)
    gray = figures.responses(tmp_path / "r3.png", panels[:1], NAMES, tau, labels=y.tolist(), images=images[:, :1])
    assert png_size(gray) == (540, 600)


def test_responses_many_classes_shows_the_top_20(tmp_path):
    z, y = logits(2, 30, seed=2)
    panels = [("CE", torch.softmax(z, 1)), ("soft", torch.softmax(z / 8, 1))]
    out = figures.responses(tmp_path / "r.png", panels, [f"class {c}" for c in range(30)], 1, labels=y)
    assert png_size(out) == (720, 780)  # rows of 2.5 inches: each carries its own class names


@pytest.mark.parametrize("change, message", [
    (lambda p, names, kw: (p, names[:9], kw), "class_names has 9 names for 10 classes"),
    (lambda p, names, kw: (p, names, {"labels": torch.zeros(3, dtype=torch.long)}), "3 labels for 4 samples"),
    (lambda p, names, kw: (p, names, {"labels": torch.full((4,), 10)}), r"class indices in \[0, 10\)"),
    (lambda p, names, kw: ([p[0], ("half", p[1][1][:2])], names, kw), "panel 'half' has shape"),
    (lambda p, names, kw: ([("logits", torch.log(p[0][1]))], names, kw), "must hold probabilities"),
    (lambda p, names, kw: (p, names, {"images": torch.zeros(4, 3, 8, 8)}), "images must be a uint8"),
    (lambda p, names, kw: (p, names, {"images": torch.zeros(2, 3, 8, 8, dtype=torch.uint8)}), "images must be"),
])
def test_responses_refuses(tmp_path, change, message):
    z, _ = logits(4, 10, seed=3)
    panels = [("CE", torch.softmax(z, 1)), ("soft", torch.softmax(z / 4, 1))]
    panels, names, kwargs = change(panels, NAMES, {})
    with pytest.raises(ValueError, match=message):
        figures.responses(tmp_path / "r.png", panels, names, 4, **kwargs)


def test_tsne_thirty_points_with_sparse_logits(tmp_path):
    z, y = logits(30, 10, seed=4)
    sparse, _ = logits(30, 10, seed=4, sparse=True)
    assert torch.isneginf(sparse).any()
    out = figures.tsne(tmp_path / "s.png", [("CE", z), ("stingy", sparse), ("probs", torch.softmax(z, 1))], y)
    assert png_size(out) == (1440, 570)  # 4 x 4.75 inches per panel at 120 dpi


def test_tsne_subsamples_deterministically(tmp_path):
    z, y = logits(200, 12, seed=5)  # 12 classes: coloured along a colour map, no legend
    first = figures.tsne(tmp_path / "a.png", [("CE", z)], y, seed=3, max_points=60)
    again = figures.tsne(tmp_path / "b.png", [("CE", z)], y, seed=3, max_points=60)
    assert png_size(first) == (480, 570)
    assert first.read_bytes() == again.read_bytes()


@pytest.mark.parametrize("panels, labels, message", [
    ([("CE", torch.zeros(30, 10)), ("other", torch.zeros(29, 10))], torch.zeros(30), "panel 'other' has shape"),
    ([("CE", torch.zeros(30, 10))], torch.zeros(31), "31 labels for 30 samples"),
    ([("CE", torch.full((30, 10), math.nan))], torch.zeros(30), "NaN or \\+inf"),
    ([("CE", torch.full((30, 10), -math.inf))], torch.zeros(30), "all -inf"),
    ([("CE", torch.zeros(4, 10))], torch.zeros(4), "at least 5 samples"),
    ([], torch.zeros(30), "panels is empty"),
])
def test_tsne_refuses(tmp_path, panels, labels, message):
    with pytest.raises(ValueError, match=message):
        figures.tsne(tmp_path / "s.png", panels, labels)


def test_reliability(tmp_path):
    z, y = logits(300, 10, seed=6)
    panels = [("sharp", torch.softmax(2 * z, 1), y), ("soft", torch.softmax(z / 3, 1), y.tolist())]
    out = figures.reliability(tmp_path / "c.png", panels, bins=10)
    assert png_size(out) == (840, 510)  # 3.5 x 4.25 inches per panel at 120 dpi


@pytest.mark.parametrize("panels, bins, message", [
    ([("a", torch.full((5, 4), 0.25), torch.zeros(6))], 15, "6 labels for 5 samples"),
    ([("a", torch.full((5, 4), 0.3), torch.zeros(5))], 15, "must hold probabilities"),
    ([("a", torch.full((5, 4), 0.25))], 15, r"\(name, probs, labels\)"),
    ([("a", torch.full((5, 4), 0.25), torch.zeros(5))], 0, "bins must be a positive integer"),
])
def test_reliability_refuses(tmp_path, panels, bins, message):
    with pytest.raises(ValueError, match=message):
        figures.reliability(tmp_path / "c.png", panels, bins=bins)
