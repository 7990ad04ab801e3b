"""Figures in one style: image grids, kernels and feature maps, training curves, adversarial examples.

Every function draws with matplotlib and returns the ``Figure`` so a notebook can adjust or save it.
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


def show_adversarial(x: torch.Tensor, x_adv: torch.Tensor, labels: Sequence[int], labels_adv: Sequence[int],
                     classes: Sequence[str] | None = None, *, ncols: int = 8, scale: float = 1.4,
                     suptitle: str | None = None,
                     row_labels: Sequence[str] = ("clean", "adversarial", "δ = x' − x")):
    """Clean images, their adversarial examples and the perturbations, in three rows (Szegedy et al.
    2013, Fig. 5: "correctly predicted sample, difference, adversarial example").

    ``x`` and ``x_adv`` are batches (N,C,H,W) in [0,1] (at most ``ncols`` are drawn); ``labels`` and
    ``labels_adv`` the classes a model gives them, written over each image (an adversarial class that
    differs from the clean one in red). The third row draws delta = x_adv - x on one diverging colour
    scale centred at zero for all panels (red: brighter, blue: darker), spanned by the largest ``|delta|``
    (a magnification when the perturbations are small; the colour bar gives the scale). Each panel is
    titled with its distortion sqrt(sum delta^2 / n) (Szegedy et al.'s measure, n values per image) and
    its largest change ``|delta|_inf``. ``row_labels`` names the three rows (e.g. "noisy" for random noise).
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
