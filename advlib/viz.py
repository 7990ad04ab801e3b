"""Figures in one style: image grids, kernels and feature maps, training curves.

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
