"""Figures in one style: image grids, kernels and feature maps, training curves.

Every function draws with matplotlib and returns the ``Figure`` so a notebook can adjust or save it;
:func:`parameter_slider` (and :func:`epsilon_explorer`, built on it) shows a figure per value of a
parameter behind a slider that works live in Jupyter and Colab and, from precomputed frames, in the
static book.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "image.cmap": "gray",
}


def use_style() -> None:
    """Apply the course's matplotlib style (called by every figure helper)."""
    plt.rcParams.update(STYLE)


def _as_image(img: torch.Tensor):
    """(C,H,W) in [0,1] to what ``imshow`` takes: (H,W) for one channel, (H,W,C) otherwise."""
    img = img.detach().cpu().float()
    return img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).clamp(0, 1).numpy()


def show_images(x: torch.Tensor, titles: Sequence[str] | None = None, ncols: int = 8, scale: float = 1.4,
                vmin: float | None = 0.0, vmax: float | None = 1.0, cmap: str = "gray", suptitle: str | None = None):
    """A grid of images ``x`` (N,C,H,W), each with an optional title; returns the figure."""
    use_style()
    n = len(x)
    if titles is not None and len(titles) != n:
        raise ValueError(f"{n} images but {len(titles)} titles")
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, scale * nrows + (0.3 if titles else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(_as_image(x[i]), cmap=cmap, vmin=vmin, vmax=vmax)
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_kernels(weight: torch.Tensor, ncols: int = 8, title: str | None = None):
    """The first input channel of each convolution kernel in ``weight`` (out, in, kh, kw),
    on a diverging colour scale centred at zero (red positive, blue negative)."""
    kernels = weight.detach().cpu()[:, :1]
    bound = kernels.abs().max().item() or 1.0
    return show_images(kernels, ncols=ncols, scale=0.9, vmin=-bound, vmax=bound, cmap="RdBu_r", suptitle=title)


def show_feature_maps(maps: torch.Tensor, ncols: int = 8, title: str | None = None):
    """The channels of one image's feature maps ``maps`` (C,H,W), each on its own scale."""
    maps = maps.detach().cpu()
    span = maps.flatten(1)
    lo, hi = span.min(dim=1).values, span.max(dim=1).values
    scaled = (maps - lo[:, None, None]) / (hi - lo).clamp_min(1e-12)[:, None, None]
    return show_images(scaled[:, None], ncols=ncols, scale=0.9, cmap="viridis", suptitle=title)


def plot_curves(curves: Mapping[str, Sequence[float]], xlabel: str = "epoch", ylabel: str = "loss",
                title: str | None = None, logy: bool = False):
    """Line plot of several named curves against their index (epoch or step)."""
    use_style()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, values in curves.items():
        ax.plot(range(1, len(values) + 1), list(values), label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_probabilities(probs: torch.Tensor, classes: Sequence[str], true_label: int | None = None,
                       title: str | None = None):
    """Horizontal bars of one image's class probabilities p_i(x); the true class drawn in green."""
    use_style()
    probs = probs.detach().cpu().flatten()
    if len(probs) != len(classes):
        raise ValueError(f"{len(probs)} probabilities but {len(classes)} class names")
    fig, ax = plt.subplots(figsize=(4, 0.25 * len(classes) + 0.8))
    colors = ["tab:green" if i == true_label else "tab:blue" for i in range(len(classes))]
    ax.barh(range(len(classes)), probs.numpy(), color=colors)
    ax.set_yticks(range(len(classes)), classes)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def show_weights(w: torch.Tensor, shape: tuple[int, int] = (28, 28), titles: Sequence[str] | None = None,
                 ncols: int = 5, scale: float = 1.8, title: str | None = None):
    """Weight vectors drawn as images: a linear model's templates.

    Each row of ``w`` (K, H*W), or the single vector ``w``, is reshaped to ``shape`` and drawn on one
    diverging colour scale centred at zero, with a colour bar: red pixels push the logit <x, w> + b up,
    blue ones push it down (a perceptron's w, Rosenblatt 1958; the rows W_i of a softmax layer).
    """
    use_style()
    w = w.detach().cpu().float().reshape(-1, *shape)
    n = len(w)
    if titles is not None and len(titles) != n:
        raise ValueError(f"{n} weight vectors but {len(titles)} titles")
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    bound = w.abs().max().item() or 1.0
    height = scale * nrows + (0.3 if titles else 0) + (0.3 if title else 0)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, layout="constrained",
                             figsize=(scale * ncols + 0.8, height))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            image = ax.imshow(w[i].numpy(), cmap="RdBu_r", vmin=-bound, vmax=bound)
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label="weight")
    if title:
        fig.suptitle(title)
    return fig


def show_predictions(x: torch.Tensor, probs: torch.Tensor, classes: Sequence[str],
                     labels: torch.Tensor | None = None, title: str | None = None, scale: float = 1.8):
    """Images ``x`` (N,C,H,W), each above the bars of its class probabilities p_i(x) (``probs``, (N,K)).

    The true class (``labels``, if given) is drawn in green; a predicted class argmax_i p_i(x) that is
    not the true one in red; the others in blue.
    """
    use_style()
    probs = probs.detach().cpu().float()
    n, k = probs.shape
    if len(x) != n or k != len(classes) or (labels is not None and len(labels) != n):
        raise ValueError(f"expected {n} images and labels for probabilities of shape {tuple(probs.shape)} "
                         f"over {len(classes)} classes, got {len(x)} images"
                         + ("" if labels is None else f" and {len(labels)} labels"))
    bar_height = 0.22 * k + 0.4
    fig, axes = plt.subplots(2, n, squeeze=False, layout="constrained", height_ratios=[scale, bar_height],
                             figsize=(scale * n + 1.2, scale + bar_height + (0.3 if title else 0)))
    fig.get_layout_engine().set(wspace=0.06)
    for i in range(n):
        predicted = int(probs[i].argmax())
        truth = None if labels is None else int(labels[i])
        axes[0, i].imshow(_as_image(x[i]), cmap="gray", vmin=0, vmax=1)
        axes[0, i].axis("off")
        if truth is not None:
            axes[0, i].set_title(f"true: {classes[truth]}", fontsize=8)
        colors = ["tab:green" if j == truth else "tab:red" if j == predicted else "tab:blue" for j in range(k)]
        ax = axes[1, i]
        ax.barh(range(k), probs[i].numpy(), color=colors)
        ax.set_yticks(range(k), classes if i == 0 else [""] * k, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xticks([0, 0.5, 1], ["0", "0.5", "1"])
        ax.set_xlabel("probability", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def plot_confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, classes: Sequence[str],
                          title: str | None = None):
    """The confusion matrix of a classifier, each row normalised: entry (i, j) is the fraction of the
    images of true class i that were classified as j, so the diagonal holds the per-class accuracies."""
    use_style()
    y_true, y_pred = torch.as_tensor(y_true).cpu().long(), torch.as_tensor(y_pred).cpu().long()
    k = len(classes)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be label vectors of one length, got shapes "
                         f"{tuple(y_true.shape)} and {tuple(y_pred.shape)}")
    if len(y_true) and (min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= k):
        raise ValueError(f"labels must lie in 0..{k - 1} for {k} class names")
    counts = torch.bincount(y_true * k + y_pred, minlength=k * k).view(k, k).float()
    rates = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)
    fig, ax = plt.subplots(figsize=(0.45 * k + 2.6, 0.45 * k + 1.8), layout="constrained")
    image = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if counts[i, j] > 0:
                ax.text(j, i, f"{100 * rates[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.grid(False)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class")
    if title:
        ax.set_title(title)
    return fig


# --- sliders: one control for a live kernel and for the static book -----------------------------

SLIDER_ENV = "ADVLIB_SLIDER"  # "live" or "static": overrides how parameter_slider(mode="auto") draws
SLIDER_MODES = ("auto", "live", "static")


def slider_mode(mode: str = "auto") -> str:
    """The way :func:`parameter_slider` draws: ``"live"`` (ipywidgets, redrawn by the kernel) or
    ``"static"`` (precomputed frames in self-contained HTML and JavaScript, no kernel needed).

    ``"auto"`` reads ``ADVLIB_SLIDER`` (``live`` or ``static``) if set; else it is live in Google Colab
    and in a kernel that a Jupyter server started for a user (JupyterLab, Notebook 7: they set
    ``JPY_SESSION_NAME`` for their kernels), and static everywhere else: in the kernels that nbclient
    starts to execute notebooks (``jupyter-book build``, nbval), in scripts, without ipywidgets.
    The static output works in a live notebook too, so a wrong guess costs only the redraw on demand.
    """
    if mode not in SLIDER_MODES:
        raise ValueError(f"unknown slider mode {mode!r}; expected one of {SLIDER_MODES}")
    if mode != "auto":
        return mode
    import os

    env = os.environ.get(SLIDER_ENV, "").strip().lower()
    if env:
        if env not in ("live", "static"):
            raise ValueError(f"{SLIDER_ENV}={env!r} is not a slider mode; expected 'live' or 'static'")
        return env
    return "live" if _interactive_kernel() and _has_ipywidgets() else "static"


def _interactive_kernel() -> bool:
    import os
    import sys

    if "google.colab" in sys.modules:
        return True
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None or getattr(shell, "kernel", None) is None:
        return False
    return bool(os.environ.get("JPY_SESSION_NAME"))


def _has_ipywidgets() -> bool:
    import importlib.util

    return importlib.util.find_spec("ipywidgets") is not None


def _figure_png(fig) -> bytes:
    """The PNG bytes of a matplotlib figure, which is then closed (so a notebook does not show it again)."""
    import io

    from matplotlib.figure import Figure

    if not isinstance(fig, Figure):
        raise TypeError(f"render(value) must return a matplotlib Figure, got {type(fig).__name__}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _value_label(name: str, value, fmt) -> str:
    if callable(fmt):
        text = fmt(value)
    else:
        try:
            text = fmt.format(value)
        except (TypeError, ValueError):
            text = str(value)
    return f"{name} = {text}"


def _static_slider_html(frames: Sequence[bytes], labels: Sequence[str], name: str, start: int) -> str:
    """A self-contained slider: one <img> per frame (base64 PNG), all hidden but the current one, and
    an <input type="range"> over the frame indices whose input event shows another; no external file."""
    import base64
    import html
    import uuid

    uid = f"advlib-slider-{uuid.uuid4().hex[:12]}"
    images = "\n".join(
        f'<img id="{uid}-frame-{i}" class="advlib-slider-frame" data-label="{html.escape(label)}" '
        f'alt="{html.escape(label)}" style="max-width:100%;height:auto;{"" if i == start else "display:none;"}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
        for i, (png, label) in enumerate(zip(frames, labels, strict=True)))
    return f"""<div id="{uid}" class="advlib-slider" style="font-family:sans-serif;font-size:14px">
<div style="display:flex;align-items:center;gap:1em;margin-bottom:0.3em">
<input type="range" id="{uid}-range" min="0" max="{len(frames) - 1}" step="1" value="{start}" \
aria-label="{html.escape(name)}" style="width:22em;max-width:60%">
<span id="{uid}-label" style="font-family:monospace">{html.escape(labels[start])}</span>
</div>
<div id="{uid}-frames">
{images}
</div>
<script>
(function () {{
  var range = document.getElementById("{uid}-range");
  var label = document.getElementById("{uid}-label");
  var frames = document.getElementById("{uid}-frames").getElementsByTagName("img");
  function show() {{
    var current = parseInt(range.value, 10);
    for (var i = 0; i < frames.length; i++) {{
      frames[i].style.display = i === current ? "" : "none";
    }}
    label.textContent = frames[current].getAttribute("data-label");
  }}
  range.addEventListener("input", show);
  range.addEventListener("change", show);
  show();
}})();
</script>
</div>"""


def _live_slider(render, values: Sequence, labels: Sequence[str], name: str, start: int):
    import ipywidgets as widgets

    pngs: dict[int, bytes] = {}

    def png(index: int) -> bytes:
        if index not in pngs:
            pngs[index] = _figure_png(render(values[index]))
        return pngs[index]

    slider = widgets.SelectionSlider(
        options=[(label.split(" = ", 1)[-1], i) for i, label in enumerate(labels)], value=start,
        description=name, continuous_update=False, style={"description_width": "initial"},
        layout=widgets.Layout(width="32em"))
    image = widgets.Image(value=png(start), format="png")
    errors = widgets.Output()

    def redraw(change) -> None:
        with errors:
            errors.clear_output()
            image.value = png(change["new"])

    slider.observe(redraw, names="value")
    return widgets.VBox([slider, image, errors])


def parameter_slider(render, values: Sequence, name: str = "value", *, mode: str = "auto",
                     fmt="{:g}", start: int = 0):
    """A slider over ``values`` that shows the figure ``render(value)`` of the chosen value.

    One helper for both places a chapter runs (the epsilon slider of the attack chapters, the sigma
    slider of randomized smoothing, any other parameter):

    - ``"static"``: every figure is rendered now, once per value, and embedded as a base64 PNG in an
      HTML and JavaScript block with an ``<input type="range">`` over the value indices (0 to
      len(values) - 1, step 1, so unevenly spaced values are fine) and a label showing the current
      value. It is self-contained (no CDN, no external script, no kernel), so it works in the rendered
      book, and in Jupyter and Colab as well. Returns an ``IPython.display.HTML``.
    - ``"live"``: an ipywidgets ``SelectionSlider`` above an image that the kernel redraws, calling
      ``render`` the first time each value is chosen (its PNG is kept for the next time). Returns the
      widget box.
    - ``"auto"`` (default): see :func:`slider_mode`: live in Colab and Jupyter, static when executed
      by nbclient or jupyter-book.

    ``render(value)`` must return a matplotlib ``Figure``; the slider closes it after taking its PNG.
    Give every value's figure the same size so the page does not jump. ``fmt`` (a format string or a
    callable) writes a value in the label ``"{name} = {value}"``; ``start`` is the index shown first.
    Display the result by making it a cell's last expression (or with ``IPython.display.display``).
    """
    values = list(values)
    if not values:
        raise ValueError("a slider needs at least one value")
    if not callable(render):
        raise TypeError(f"render must be a callable render(value) -> Figure, got {type(render).__name__}")
    if not 0 <= start < len(values):
        raise ValueError(f"start must index one of the {len(values)} values, got {start}")
    labels = [_value_label(name, value, fmt) for value in values]
    if slider_mode(mode) == "live":
        return _live_slider(render, values, labels, name, start)
    from IPython.display import HTML

    return HTML(_static_slider_html([_figure_png(render(value)) for value in values], labels, name, start))


def epsilon_explorer(model, x: torch.Tensor, y, attack, epsilons: Sequence[float],
                     classes: Sequence[str] | None = None, *, name: str = "epsilon", mode: str = "auto",
                     start: int = 0):
    """The epsilon slider of the attack chapters: how one image's attack grows with its budget.

    For each budget eps in ``epsilons`` the attack runs once, ``attack(model, x, y, eps=eps)`` (e.g.
    ``fgsm``, or ``functools.partial(pgd, alpha=0.01, steps=40)``), on the single image ``x``
    ((C,H,W) or (1,C,H,W), in [0,1]) with label ``y``; the model classifies all of them in one batch.
    Each frame shows the adversarial image x + delta, the perturbation delta = x_adv - x magnified on a
    diverging colour scale centred at zero (one scale for every frame, written with its norms), and
    the model's class probabilities p_i(x + delta) with the predicted class named (true class green,
    a wrong prediction red). Shown with :func:`parameter_slider` (``mode``: live, static or auto).
    """
    from .utils import check_images, check_model, check_real, eval_mode, model_device

    check_model(model)
    if not callable(attack):
        raise TypeError(f"attack must be a callable attack(model, x, y, eps=...), got {type(attack).__name__}")
    epsilons = [check_real("every epsilon", eps) for eps in epsilons]
    if not epsilons:
        raise ValueError("epsilon_explorer needs at least one epsilon")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be one image, a tensor shaped (C, H, W) or (1, C, H, W), got {type(x).__name__}")
    x = x.detach()
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or len(x) != 1:
        raise ValueError(f"expected one image shaped (C, H, W) or (1, C, H, W), got shape {tuple(x.shape)}")
    check_images(x)
    y = torch.as_tensor(y)
    if y.numel() != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"y must be the image's one integer class label, got {y.tolist()!r} ({y.dtype})")
    label = int(y)
    device = model_device(model)
    x = x.to(device)
    y_batch = torch.tensor([label], device=device)
    adversarial = torch.cat([attack(model, x, y_batch, eps=eps).detach() for eps in epsilons])
    with torch.no_grad(), eval_mode(model):
        logits = model(torch.cat([x, adversarial]))
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)
        logits = torch.log(torch.cat([1 - p, p], dim=1).clamp_min(1e-12))
    probs = logits.softmax(dim=1).cpu()
    classes = [str(i) for i in range(probs.shape[1])] if classes is None else list(classes)
    if len(classes) != probs.shape[1]:
        raise ValueError(f"the model has {probs.shape[1]} classes but {len(classes)} class names were given")
    if not 0 <= label < len(classes):
        raise ValueError(f"label {label} is not one of the {len(classes)} classes")
    x, adversarial = x.cpu(), adversarial.cpu()
    deltas = adversarial - x
    scale = deltas.abs().max().item() or max(epsilons) or 1.0
    clean_class = int(probs[0].argmax())
    heading = (f"true class: {classes[label]}; clean prediction: {classes[clean_class]} "
               f"({100 * probs[0, clean_class]:.0f}%)")
    index = {eps: i for i, eps in enumerate(epsilons)}

    def render(eps: float):
        i = index[eps]
        return _explorer_frame(adversarial[i], deltas[i], probs[i + 1], label, classes, scale,
                               f"{name} = {eps:g}", heading)

    return parameter_slider(render, epsilons, name, mode=mode, start=start)


def _explorer_frame(x_adv: torch.Tensor, delta: torch.Tensor, probs: torch.Tensor, label: int,
                    classes: Sequence[str], scale: float, value: str, heading: str):
    """One frame of :func:`epsilon_explorer`: adversarial image, magnified perturbation, probabilities."""
    use_style()
    k = len(classes)
    # fixed axes positions (no constrained or tight layout to solve for every frame): same frame, faster
    fig = plt.figure(figsize=(10, 3.4))
    axes = [fig.add_axes(rect) for rect in ((0.02, 0.12, 0.24, 0.68), (0.29, 0.12, 0.24, 0.68),
                                           (0.70, 0.14, 0.28, 0.66))]
    colorbar_axes = fig.add_axes((0.545, 0.17, 0.012, 0.58))
    axes[0].imshow(_as_image(x_adv), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title(f"x + δ  ({value})")
    axes[0].axis("off")
    flat = delta.flatten()
    shown = delta.mean(dim=0).numpy()  # one channel, or the mean over colour channels
    image = axes[1].imshow(shown, cmap="RdBu_r", vmin=-scale, vmax=scale)
    axes[1].set_title(f"δ magnified ×{1 / (2 * scale):.3g} (scale ±{scale:.3g})"
                      + (", channel mean" if len(delta) > 1 else ""))
    axes[1].set_xticks([])
    axes[1].set_yticks([])
    axes[1].grid(False)
    axes[1].set_xlabel(f"‖δ‖∞ = {flat.abs().max():.3g}   ‖δ‖₂ = {flat.norm():.3g}", fontsize=9)
    fig.colorbar(image, cax=colorbar_axes)
    predicted = int(probs.argmax())
    colors = ["tab:green" if j == label else "tab:red" if j == predicted else "tab:blue" for j in range(k)]
    axes[2].barh(range(k), probs.numpy(), color=colors)
    axes[2].set_yticks(range(k), classes, fontsize=8)
    axes[2].invert_yaxis()
    axes[2].set_xlim(0, 1)
    axes[2].set_xlabel("probability")
    axes[2].set_title(f"predicted: {classes[predicted]} ({100 * probs[predicted]:.0f}%)",
                      color="tab:green" if predicted == label else "tab:red")
    fig.suptitle(heading, fontsize=10)
    return fig


def show_adversarial(x: torch.Tensor, x_adv: torch.Tensor, labels: Sequence[int], labels_adv: Sequence[int],
                     classes: Sequence[str] | None = None, *, ncols: int = 8, scale: float = 1.4,
                     suptitle: str | None = None,
                     row_labels: Sequence[str] = ("clean", "adversarial", "δ = x' − x")):
    """Clean images, their adversarial examples and the perturbations, in three rows (Szegedy et al.
    2013, Fig. 5: "correctly predicted sample, difference, adversarial example").

    ``x`` and ``x_adv`` are batches (N,C,H,W) in [0,1] (at most ``ncols`` are drawn); ``labels`` and
    ``labels_adv`` the classes a model gives them, written over each image (an adversarial class that
    differs from the clean one in red). The third row draws delta = x_adv - x on one diverging colour
    scale centred at zero for all panels (red: brighter, blue: darker), spanned by the largest |delta|
    (a magnification when the perturbations are small; the colour bar gives the scale). Each panel is
    titled with its distortion sqrt(sum delta^2 / n) (Szegedy et al.'s measure, n values per image) and
    its largest change |delta|_inf. ``row_labels`` names the three rows (e.g. "noisy" for random noise).
    Returns the figure.
    """
    use_style()
    if len(row_labels) != 3:
        raise ValueError(f"row_labels must name the 3 rows, got {len(row_labels)} labels")
    if x.shape != x_adv.shape or x.ndim != 4:
        raise ValueError(f"x and x_adv must be batches of one shape (N, C, H, W), got {tuple(x.shape)} and "
                         f"{tuple(x_adv.shape)}")
    n = min(len(x), ncols)
    if n == 0:
        raise ValueError("no images to show")
    if len(labels) < n or len(labels_adv) < n:
        raise ValueError(f"need a clean and an adversarial label for each of the {n} images drawn")
    x, x_adv = x[:n].detach().cpu().float(), x_adv[:n].detach().cpu().float()
    delta = x_adv - x
    bound = delta.abs().max().item() or 1.0

    def name(label) -> str:
        label = int(label)
        return classes[label] if classes is not None else str(label)

    fig, axes = plt.subplots(3, n, figsize=(scale * n + 0.9, 3 * scale + 0.9), squeeze=False,
                             layout="constrained")
    for i in range(n):
        axes[0, i].imshow(_as_image(x[i]), cmap="gray", vmin=0, vmax=1)
        axes[0, i].set_title(name(labels[i]), fontsize=8)
        axes[1, i].imshow(_as_image(x_adv[i]), cmap="gray", vmin=0, vmax=1)
        changed = int(labels_adv[i]) != int(labels[i])
        axes[1, i].set_title(name(labels_adv[i]), fontsize=8, color="tab:red" if changed else "black")
        image = axes[2, i].imshow(delta[i].mean(dim=0).numpy(), cmap="RdBu_r", vmin=-bound, vmax=bound)
        flat = delta[i].flatten()
        axes[2, i].set_title(f"{flat.pow(2).mean().sqrt():.3f} / {flat.abs().max():.2f}", fontsize=8)
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            for spine in ax.spines.values():
                spine.set_visible(False)
    for ax, text in zip(axes[:, 0], row_labels, strict=True):
        ax.set_ylabel(text)
    fig.colorbar(image, ax=axes[2, :], shrink=0.9, label="δ")
    fig.suptitle(suptitle or "Clean images, adversarial examples and δ = x' − x "
                 "(titled: distortion √(Σδ²/n) / ‖δ‖∞)", fontsize=10)
    return fig
