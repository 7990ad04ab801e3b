"""advlib.viz: figures hold what they are asked to show."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch

from advlib import viz

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


@pytest.mark.parametrize("n, ncols, grid", [(5, 3, (2, 3)), (8, 8, (1, 8)), (1, 8, (1, 1)), (10, 4, (3, 4))])
def test_show_images_grid(n, ncols, grid):
    x = torch.rand(n, 1, 6, 6)
    titles = [f"image {i}" for i in range(n)]
    fig = viz.show_images(x, titles, ncols=ncols)
    assert isinstance(fig, matplotlib.figure.Figure)
    assert len(fig.axes) == grid[0] * grid[1]
    shown = image_axes(fig)
    assert len(shown) == n
    assert [ax.get_title() for ax in shown] == titles
    assert torch.equal(torch.as_tensor(shown[0].images[0].get_array().data), x[0, 0])


def test_show_images_colour():
    x = torch.rand(2, 3, 4, 5)
    fig = viz.show_images(x)
    assert image_axes(fig)[1].images[0].get_array().shape == (4, 5, 3)


def test_show_images_titles_must_match():
    with pytest.raises(ValueError, match="3 images but 2 titles"):
        viz.show_images(torch.rand(3, 1, 4, 4), ["a", "b"])
    assert plt.get_fignums() == []  # no half-drawn figure left open


def test_other_figures():
    fig = viz.show_kernels(torch.randn(6, 2, 3, 3))
    assert len(image_axes(fig)) == 6
    fig = viz.show_feature_maps(torch.rand(5, 7, 7))
    assert len(image_axes(fig)) == 5
    fig = viz.plot_curves({"train": [3, 2, 1], "test": [3, 2.5, 2]})
    assert [line.get_label() for line in fig.axes[0].lines] == ["train", "test"]
    fig = viz.plot_probabilities(torch.full((10,), 0.1), [str(i) for i in range(10)], true_label=3)
    assert len(fig.axes[0].patches) == 10
    with pytest.raises(ValueError, match="3 probabilities but 2 class names"):
        viz.plot_probabilities(torch.full((3,), 0.3), ["a", "b"])
