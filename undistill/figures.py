"""The figures of an audit report: can a released teacher be cloned by distillation?

Pure functions, each drawing one PNG from plain inputs (tensors, lists, dicts) and returning its path:

    temperature_curve  student accuracy against the attacker's KD temperature, next to the LS student's band
    queries_curve      student accuracy and fidelity against the teacher queries, next to the LS students' band
    responses          softmax_tau outputs of several models on a few images (Nasty Teacher Fig. 1)
    tsne               t-SNE of the models' outputs, coloured by class
    reliability        reliability diagrams with the ECE of each model
    curves             a paper's ablation: accuracy against a setting (or the epoch), ours beside the paper's
    image_grid         images per class, a column per class, one block per model (Nasty Teacher Fig. 6)

Figures are built on matplotlib's object API and rendered by the Agg canvas, never through pyplot: no display is
needed, the process-wide backend and pyplot's figure registry stay untouched for the caller, and a figure is freed
when the function returns. Every size is a multiple of a quarter inch and the PNG is saved at DPI (120) without
tight cropping, so its size in pixels is known in advance (each docstring gives it). Wrong inputs (mismatched
lengths or shapes, probabilities that are not probabilities) raise ValueError naming the argument.
"""
import math
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, NullLocator

from .metrics import calibration_bins, ece_from_bins

DPI = 120
TOP_CLASSES = 20       # responses shows at most this many classes per image
LEGEND_CLASSES = 10    # tsne names the classes in a legend up to this many

BAR, TRUE_BAR, GAP = "#4c72b0", "#dd5f2a", "#d62728"


# ---- input checks and conversions ----

def _matrix(x, what):
    """A 2-D float64 CPU tensor from a tensor, array or nested list."""
    x = torch.as_tensor(x).detach().cpu().double()
    if x.dim() != 2 or 0 in x.shape:
        raise ValueError(f"{what} must be a non-empty (n, K) matrix, got shape {tuple(x.shape)}")
    return x


def _labels(y, n, k, what):
    y = torch.as_tensor(y).detach().cpu().long().view(-1)
    if len(y) != n:
        raise ValueError(f"{what} has {len(y)} labels for {n} samples: give one label per row")
    if len(y) and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"{what} must be class indices in [0, {k}), got values in [{int(y.min())}, {int(y.max())}]")
    return y


def _is_probs(x, atol=1e-3):
    return bool(torch.isfinite(x).all() and (x >= 0).all() and (x <= 1 + atol).all()
                and torch.allclose(x.sum(1), torch.ones(len(x), dtype=x.dtype), atol=atol))


def _probs(x, what):
    x = _matrix(x, what)
    if not _is_probs(x):
        raise ValueError(f"{what} must hold probabilities (entries in [0, 1], rows summing to 1): apply "
                         "softmax(z / tau) to logits first (a -inf logit becomes an exact 0)")
    return x


def _same_shape(panels, what):
    """Every panel's matrix has the first one's shape (the same images, the same classes)."""
    shape = panels[0][1].shape
    for name, x in panels[1:]:
        if x.shape != shape:
            raise ValueError(f"{what}: panel {name!r} has shape {tuple(x.shape)}, panel {panels[0][0]!r} "
                             f"{tuple(shape)}: every panel must cover the same samples and classes")
    return shape


def _nonempty(panels, what):
    panels = list(panels)
    if not panels:
        raise ValueError(f"{what} is empty: give at least one (name, ...) panel")
    return panels


def _figure(width_in, height_in):
    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")  # no bbox_inches="tight": it would change the pixel size
    return path


# ---- the figures ----

def spread(labels, num_classes, n=4):
    """The indices of the first sample of `n` classes spread over the label range: the images a responses figure
    shows."""
    labels = torch.as_tensor(labels)
    return [int((labels == c).nonzero()[0]) for c in torch.linspace(0, num_classes - 1, n).round().long()
            if (labels == c).any()]


def temperature_curve(path, temperatures, curves, ls_band, scratch=None, title=""):
    """Student top-1 accuracy (%) against the attacker's KD temperature, one line per release.

    `temperatures`: the KD temperatures (positive; a log-scale axis labelled with them). `curves`: {release name:
    [(mean, std or None) per temperature]}, drawn with error bars (a mean of None or NaN leaves a gap).
    `ls_band`: (mean, std or None) of the label-smoothing student, drawn as the band mean +- std (a line when std
    is None): a point above it is an attack that learned more from the release than from the labels alone, i.e.
    the release can be cloned. `scratch`: optional (mean, std or None) of the student trained from scratch,
    dashed. The PNG is 900 x 540 pixels.
    """
    temps = [float(t) for t in temperatures]
    if not temps or any(not (math.isfinite(t) and t > 0) for t in temps):
        raise ValueError(f"temperatures must be positive numbers (a log axis), got {list(temperatures)}")
    if not curves:
        raise ValueError("curves is empty: give {release name: [(mean, std) per temperature]}")
    for name, points in curves.items():
        if len(points) != len(temps):
            raise ValueError(f"curves[{name!r}] has {len(points)} (mean, std) points for {len(temps)} temperatures")

    def pair(value, what):
        if value is None or len(value) != 2:
            raise ValueError(f"{what} must be a (mean, std or None) pair, got {value!r}")
        mean, std = value
        return float(mean), (None if std is None else float(std))

    fig = _figure(7.5, 4.5)
    ax = fig.add_subplot()
    ls_mean, ls_std = pair(ls_band, "ls_band")
    if ls_std is not None:
        ax.axhspan(ls_mean - ls_std, ls_mean + ls_std, color="0.6", alpha=0.3, lw=0)
    ax.axhline(ls_mean, color="0.35", lw=1.2)
    handles = [(Patch(facecolor="0.6", alpha=0.5, edgecolor="0.35") if ls_std is not None
                else Line2D([], [], color="0.35"), "LS student (no teacher)")]
    if scratch is not None:
        s_mean, _ = pair(scratch, "scratch")
        ax.axhline(s_mean, color="0.2", ls="--", lw=1.2)
        handles.append((Line2D([], [], color="0.2", ls="--"), "scratch student"))
    for i, (name, points) in enumerate(curves.items()):
        means = [math.nan if m is None else float(m) for m, _ in points]
        stds = [math.nan if s is None else float(s) for _, s in points]
        # Releases measured at the same temperatures would hide each other's error bars: spread them a little.
        shift = 1.04 ** (i - (len(curves) - 1) / 2)
        line = ax.errorbar([t * shift for t in temps], means, yerr=stds, marker="o", ms=4, capsize=3, lw=1.5)
        handles.append((line, name))
    ax.set_xscale("log")
    ax.set_xticks(temps, [f"{t:g}" for t in temps])
    ax.xaxis.set_minor_locator(NullLocator())  # a log axis would add unlabelled minor ticks
    ax.set_xlim(min(temps) / 1.25, max(temps) * 1.25)
    ax.set_xlabel("attacker's KD temperature τ")
    ax.set_ylabel("student top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.set_title("points above the LS band: the student gains from the release, which can be cloned",
                 fontsize=9, color="0.3")
    if title:
        fig.suptitle(title)
    # Outside the axes: a legend inside would cover the curves of some release.
    ax.legend(*zip(*handles), loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)
    return _save(fig, path)


def queries_curve(path, curves, baseline, title=""):
    """Student top-1 accuracy (%) and fidelity (% of test images given the teacher's label) against the teacher
    queries the student took (images sent, augmentations included; a log axis), one line per release, as
    model-extraction benchmarks plot them.

    `curves`: {release name: [(share, queries, (acc mean, std or None), (fidelity mean, std or None)) per budget]}.
    `baseline`: {share: ((acc mean, std), (fidelity mean, std))} of the LS students trained on the same images
    without the teacher, drawn as a band (mean +- std) at those budgets' queries. The PNG is 1200 x 480 pixels.
    """
    if not curves:
        raise ValueError("curves is empty: give {release name: [(share, queries, acc, fidelity) per budget]}")
    for name, points in curves.items():
        if len(points) < 2 or any(len(p) != 4 or not p[1] > 0 for p in points):
            raise ValueError(f"curves[{name!r}] needs at least two (share, queries > 0, acc, fidelity) points")
    fig = _figure(10, 4)
    axes = fig.subplots(1, 2)
    where = {}  # share -> the queries at which the releases' students took it
    for points in curves.values():
        for share, queries, *_ in points:
            where.setdefault(share, []).append(queries)
    shares = sorted(s for s in where if s in baseline)
    xs = [math.exp(sum(map(math.log, where[s])) / len(where[s])) for s in shares]
    for column, (ax, label) in enumerate(zip(axes, ("student top-1 accuracy (%)", "fidelity to the teacher (%)"))):
        if len(shares) >= 2:
            means = [baseline[s][column][0] for s in shares]
            stds = [baseline[s][column][1] or 0.0 for s in shares]
            ax.fill_between(xs, [m - d for m, d in zip(means, stds)], [m + d for m, d in zip(means, stds)],
                            color="0.6", alpha=0.3, lw=0)
            ax.plot(xs, means, color="0.35", lw=1.2, label="LS student (no teacher), same images")
        for name, points in curves.items():
            points = sorted(points)
            ax.errorbar([p[1] for p in points], [p[2 + column][0] for p in points],
                        yerr=[p[2 + column][1] or 0.0 for p in points], marker="o", ms=4, capsize=3, lw=1.5,
                        label=name)
        ax.set_xscale("log")
        ax.set_xlabel("teacher queries (images sent)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_title("above the LS band: the queries taught the student more than the labels", fontsize=9,
                      color="0.3")
    axes[1].legend(fontsize=8, frameon=False, loc="lower right")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def responses(path, panels, class_names, tau, *, labels=None, images=None):
    """Bars of each model's softmax_tau output on a few images: one row per image, one column per model.

    `panels`: [(model name, probs)], probs an (n_images, K) tensor of softmax_tau outputs (the caller applies
    softmax(z / tau); a -inf logit is an exact 0), the same images in every panel. `class_names`: K names (None:
    the class indices). `tau` is the temperature the outputs were taken at (shown in the title). `labels`:
    optional true classes (n_images), highlighted. `images`: optional uint8 (n_images, C, H, W) tensor, C = 1 or 3,
    shown in a first column. With K > 20 each row shows the 20 classes the first panel ranks highest for that image
    (a true class outside them is not drawn). The models of a row share its probability scale.
    The PNG is (2.75 per model + 1.25 with images + 0.5) x (1.75 per image (2.5 when K > 20) + 1.5) inches at
    120 dpi, e.g. 720 x 810 pixels for 2 models and 3 images with K <= 20 and no image column.
    """
    panels = [(name, _probs(p, f"responses: panel {name!r}")) for name, p in _nonempty(panels, "panels")]
    n, k = _same_shape(panels, "responses")
    names = [str(c) for c in range(k)] if class_names is None else [str(c) for c in class_names]
    if len(names) != k:
        raise ValueError(f"class_names has {len(names)} names for {k} classes")
    y = None if labels is None else _labels(labels, n, k, "labels")
    if images is not None:
        images = torch.as_tensor(images).detach().cpu()
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3) or len(images) != n:
            raise ValueError(f"images must be a uint8 (n_images={n}, C=1 or 3, H, W) tensor, got {images.dtype} "
                             f"{tuple(images.shape)}")
    top = k > TOP_CLASSES
    shown = min(k, TOP_CLASSES)
    row_h = 2.5 if top else 1.75  # with per-row classes every row carries its own rotated class names
    extra = 0 if images is None else 1
    fig = _figure(2.75 * len(panels) + 1.25 * extra + 0.5, row_h * n + 1.5)
    grid = fig.add_gridspec(n, len(panels) + extra, width_ratios=[1.0] * extra + [2.2] * len(panels))
    # Classes per row: all K in order, or the first panel's top-20 for that image.
    order = (panels[0][1].argsort(dim=1, descending=True, stable=True)[:, :shown] if top
             else torch.arange(k).expand(n, k))
    short = [c if len(c) <= 12 else c[:11] + "…" for c in names]
    for r in range(n):
        classes = order[r].tolist()
        # One scale per row, shared by its models: small probabilities (K = 100 at a high tau) stay visible.
        top_p = max(float(probs[r, classes].max()) for _, probs in panels)
        row_ylim = min(1.05, max(1.15 * top_p, 0.01))
        if images is not None:
            ax = fig.add_subplot(grid[r, 0])
            img = images[r].permute(1, 2, 0).numpy()
            ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("image", fontsize=9)
            if y is not None:
                ax.set_xlabel(f"true: {short[int(y[r])]}", fontsize=8)
        for c, (name, probs) in enumerate(panels):
            ax = fig.add_subplot(grid[r, extra + c])
            colours = [TRUE_BAR if y is not None and cls == int(y[r]) else BAR for cls in classes]
            ax.bar(range(shown), probs[r, classes].numpy(), color=colours, width=0.8)
            ax.set_ylim(0, row_ylim)
            ax.set_xlim(-0.7, shown - 0.3)
            ax.yaxis.set_major_locator(MaxNLocator(nbins=3))
            ax.tick_params(labelsize=7, length=2)
            ax.grid(axis="y", alpha=0.3)
            if r == 0:
                ax.set_title(name, fontsize=9)
            if c == 0:
                who = f"image {r}" + ("" if y is None or images is not None else f"\ntrue: {short[int(y[r])]}")
                ax.set_ylabel(who, fontsize=8)
            else:
                ax.set_yticklabels([])
            # The class names: under every row when the classes differ per row, else under the last row only.
            ax.set_xticks(range(shown))
            if top or r == n - 1:
                ax.set_xticklabels([short[cls] for cls in classes], rotation=90, fontsize=7)
            else:
                ax.set_xticklabels([])
    fig.suptitle(f"softmax outputs at τ = {tau:g}" + ("" if y is None else " (true class in orange)"), fontsize=10)
    fig.supxlabel(f"each row: the top {shown} of {k} classes by {panels[0][0]}'s probability" if top else "class",
                  fontsize=9)
    return _save(fig, path)


def tsne(path, panels, labels, seed=0, max_points=2000, features=False):
    """Side-by-side 2-D t-SNE embeddings of several models' outputs on the same samples, coloured by class.

    `panels`: [(name, (n, K) logits or probabilities)]. Every panel is embedded as probabilities: a matrix whose
    rows are already probabilities (entries in [0, 1], rows summing to 1) is used as it is, anything else is taken
    as logits and mapped through softmax, which turns a -inf logit (a sparse release) into an exact 0, so a dense
    teacher and its sparse release land in the same space. With `features`, the rows are a network's features
    (before its last layer, as the papers plot them), embedded as they are. `labels`: the n classes. Beyond
    `max_points` samples, the same `max_points` of them (drawn with `seed`) are embedded in every panel. The
    perplexity is 30, lowered to (n - 1) / 3 for small n (t-SNE needs perplexity < n). Classes are named in a legend
    when there are at most 10 of them, else coloured along a colour map. The PNG is (4 per panel) x 4.75 inches at
    120 dpi (480 pixels per panel by 570).
    """
    # Imported here: they take seconds, and only this figure needs them.
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    panels = [(name, _matrix(x, f"tsne: panel {name!r}")) for name, x in _nonempty(panels, "panels")]
    n, k = _same_shape(panels, "tsne")
    y = _labels(labels, n, k, "labels")
    if n < 5:
        raise ValueError(f"tsne needs at least 5 samples, got {n}")
    if max_points < 5:
        raise ValueError(f"max_points must be at least 5, got {max_points}")
    keep = torch.arange(n)
    if n > max_points:
        keep = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_points].sort().values
    y = y[keep]
    m = len(keep)
    perplexity = min(30.0, (m - 1) / 3)
    classes = sorted(set(y.tolist()))
    fig = _figure(4.0 * len(panels), 4.75)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    if len(classes) <= LEGEND_CLASSES:
        colours = {c: f"C{i}" for i, c in enumerate(classes)}
        point_colours = [colours[c] for c in y.tolist()]
        scatter_kw = {"c": point_colours}
    else:
        scatter_kw = {"c": y.numpy(), "cmap": "turbo", "vmin": 0,
                      "vmax": int(y.max()) if features else k - 1}  # features: k is their width, not the classes
    for ax, (name, x) in zip(axes, panels):
        x = x[keep]
        if torch.isnan(x).any() or torch.isposinf(x).any():
            raise ValueError(f"tsne: panel {name!r} has NaN or +inf entries: give finite logits (-inf allowed) or "
                             "probabilities")
        probs = x if features or _is_probs(x) else torch.softmax(x, dim=1)
        if torch.isnan(probs).any():
            raise ValueError(f"tsne: panel {name!r} has a row whose logits are all -inf")
        # One OpenMP thread: the same picture on every machine (no thread-dependent summation order), and no
        # 10x slowdown when the cores are shared with training runs (spinning threads wait on preempted ones).
        with threadpool_limits(limits=1):
            xy = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                      random_state=seed).fit_transform(probs.numpy())
        ax.scatter(xy[:, 0], xy[:, 1], s=6 if m > 500 else 14, alpha=0.8, linewidths=0, **scatter_kw)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal", adjustable="datalim")
    colouring = f"colour: class ({len(classes)} classes)"
    what = "features" if features else "softmax outputs"
    fig.suptitle(f"t-SNE of the {what}: {m} samples, perplexity {perplexity:.3g}; {colouring}",
                 fontsize=10)
    if len(classes) <= LEGEND_CLASSES:
        handles = [Line2D([], [], ls="", marker="o", ms=6, color=colours[c]) for c in classes]
        # Under the panels, never on top of the points.
        fig.legend(handles, [str(c) for c in classes], loc="outside lower center", ncol=len(classes),
                   fontsize=8, frameon=False, handletextpad=0.1, columnspacing=1.0)
    return _save(fig, path)


def reliability(path, panels, bins=15):
    """Reliability diagrams, one panel per model: accuracy per confidence bin against the diagonal.

    `panels`: [(name, probs (n, K), labels (n))]. Confidence is max_c p_c; the `bins` equal-width bins over
    (0, 1] and the ECE are undistill.metrics' (calibration_bins, ece_from_bins). Blue bars: the accuracy of each
    non-empty bin; red hatching: the gap to the bin's mean confidence (bars below the diagonal: over-confident).
    The PNG is (3.5 per panel) x 4.25 inches at 120 dpi (420 pixels per panel by 510).
    """
    if int(bins) != bins or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins}")
    checked = []
    for panel in _nonempty(panels, "panels"):
        if len(panel) != 3:
            raise ValueError(f"reliability: each panel is (name, probs, labels), got {len(panel)} items")
        name, probs, y = panel
        probs = _probs(probs, f"reliability: panel {name!r}")
        checked.append((name, probs, _labels(y, len(probs), probs.shape[1], f"reliability: labels of {name!r}")))
    fig = _figure(3.5 * len(checked), 4.25)  # the square panels, their titles and the legend under them
    axes = fig.subplots(1, len(checked), squeeze=False)[0]
    width = 1.0 / bins
    lefts = torch.arange(bins, dtype=torch.float64) * width
    for i, (ax, (name, probs, y)) in enumerate(zip(axes, checked)):
        sums = calibration_bins(probs, y, bins)
        count, conf_sum, correct = sums
        full = count > 0
        acc = correct[full] / count[full]
        conf = conf_sum[full] / count[full]
        ax.bar(lefts[full].numpy(), acc.numpy(), width=width, align="edge", color=BAR, edgecolor="white", lw=0.5,
               label="accuracy")
        # Hatched, not filled: an under-confident bin's gap lies over its accuracy bar and must stay readable.
        ax.bar(lefts[full].numpy(), (conf - acc).numpy(), bottom=acc.numpy(), width=width, align="edge",
               fill=False, hatch="////", edgecolor=GAP, lw=0.6, label="gap to the bin's mean confidence")
        ax.plot([0, 1], [0, 1], color="0.3", ls="--", lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("confidence (max probability)", fontsize=9)
        if i == 0:
            ax.set_ylabel("accuracy", fontsize=9)
        else:
            ax.set_yticklabels([])
        ax.tick_params(labelsize=8)
        ax.set_title(f"{name}\nECE {ece_from_bins(sums):.3f}, n = {len(y)}", fontsize=9)
    # Under the panels: inside one it would cover the bars of low-confidence bins.
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    return _save(fig, path)


def curves(path, panels, x, xlabel, ylabel="student top-1 accuracy (%)", title="", log=False):
    """A paper's line plot drawn with our numbers: one panel per name, one line per row, against `x`.

    `panels`: [(panel name, [(label, ours, paper)])]; `ours`: one (mean, std or None) or None (not run: a gap) per
    x; `paper`: the paper's number per x (None where it gives none), drawn dashed in the line's colour with
    crosses. `x`: the numbers on the axis (the setting, the epoch); `log`: a log axis labelled with them. The PNG is
    (4.5 per panel + 1, at least 9) x 5 inches at 120 dpi (1080 x 600 pixels for one or two panels), the legend
    under the panels.
    """
    panels = _nonempty(panels, "panels")
    xs = [float(v) for v in x]
    if not xs or (log and min(xs) <= 0):
        raise ValueError(f"x must be numbers (positive on a log axis), got {list(x)}")
    for name, lines in panels:
        for label, ours, paper in lines:
            if len(ours) != len(xs) or len(paper) != len(xs):
                raise ValueError(f"panel {name!r}, line {label!r}: {len(ours)} of ours and {len(paper)} of the "
                                 f"paper's for {len(xs)} x values: give one per x (None where there is none)")
    fig = _figure(max(4.5 * len(panels) + 1, 9), 5)  # the legend's three columns fit
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, lines) in zip(axes, panels):
        for i, (label, ours, paper) in enumerate(lines):
            means = [math.nan if o is None else float(o[0]) for o in ours]
            stds = [math.nan if o is None or o[1] is None else float(o[1]) for o in ours]
            many = len(xs) > 30  # an epoch axis: error bars on every point would hide the lines
            ax.errorbar(xs, means, yerr=None if many else stds, color=f"C{i}", marker=None if many else "o", ms=4,
                        capsize=3, lw=1.5, label=f"{label} (ours)")
            if any(p is not None for p in paper):
                ax.plot(xs, [math.nan if p is None else float(p) for p in paper], color=f"C{i}", ls="--",
                        marker="x", ms=5, lw=1, label=f"{label} (paper)")
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(NullLocator())  # a log axis would add unlabelled minor ticks
        if log or len(xs) <= 30:  # the settings the paper varies, labelled as they are
            ax.set_xticks(xs, [f"{v:g}" for v in xs])
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    legend = {}  # beside the panels, never over a curve; a line drawn in several panels named once
    for ax in axes:
        legend.update((label, handle) for handle, label in zip(*ax.get_legend_handles_labels()))
    fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncol=min(3, len(legend)), fontsize=8,
               frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def image_grid(path, panels, num_classes, per_class=3):
    """Images grouped by class: one block of rows per model, a column per class, `per_class` rows (the first images
    of that class; a class with fewer leaves blank cells), as images inverted from a teacher are shown.

    `panels`: [(name, images, targets)], images a uint8 (n, C, H, W) tensor with C = 1 or 3, targets their n classes
    in [0, num_classes). The PNG is (0.75 per class + 0.5) x ((0.75 per row + 0.5) per model) inches at 120 dpi.
    """
    checked = []
    for name, images, targets in _nonempty(panels, "panels"):
        images = torch.as_tensor(images).detach().cpu()
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"image_grid: panel {name!r} must hold uint8 (n, C=1 or 3, H, W) images, got "
                             f"{images.dtype} {tuple(images.shape)}")
        checked.append((name, images, _labels(targets, len(images), num_classes, f"targets of {name!r}")))
    fig = _figure(0.75 * num_classes + 0.5, (0.75 * per_class + 0.5) * len(checked))
    for block, (name, images, targets) in zip(fig.subfigures(len(checked), 1, squeeze=False)[:, 0], checked):
        axes = block.subplots(per_class, num_classes, squeeze=False)
        for c in range(num_classes):
            chosen = (targets == c).nonzero().view(-1)[:per_class].tolist()
            for r in range(per_class):
                ax = axes[r, c]
                ax.set_axis_off()
                if r < len(chosen):
                    img = images[chosen[r]].permute(1, 2, 0).numpy()
                    ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=255)
            axes[0, c].set_title(str(c), fontsize=8)
        block.suptitle(name, fontsize=10)
    return _save(fig, path)
