"""advlib.viz's parameter slider (static HTML+JavaScript frames, or live ipywidgets) and the epsilon explorer."""

from __future__ import annotations

import base64
import re
import sys
import types

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlib import viz

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def fgsm(model, x, y, eps):
    """Goodfellow et al.'s one step x + eps * sign(grad_x loss), clipped to [0,1] (test-local)."""
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


class Recorder:
    """A render function that draws a small figure and records the values it was called with."""

    def __init__(self):
        self.calls = []

    def __call__(self, value):
        self.calls.append(value)
        fig, ax = plt.subplots(figsize=(1.2, 1.0))
        ax.plot([0, 1], [0, value])
        ax.set_title(f"{value}")
        return fig


@pytest.fixture(autouse=True)
def _no_slider_env(monkeypatch):
    monkeypatch.delenv(viz.SLIDER_ENV, raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    yield
    plt.close("all")


def frames(html):
    return re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)


def test_static_slider_holds_one_png_frame_per_value_and_a_matching_range():
    render = Recorder()
    values = [0.0, 0.1, 0.25, 0.5]
    html = viz.parameter_slider(render, values, "sigma", mode="static").data
    assert render.calls == values  # once per value, in order
    images = frames(html)
    assert len(images) == len(values) == html.count("<img ")
    assert all(base64.b64decode(image).startswith(PNG_SIGNATURE) for image in images)
    assert len(set(images)) == len(values)  # a different figure per value
    ranges = re.findall(r'<input type="range"[^>]*>', html)
    assert len(ranges) == 1
    assert 'min="0"' in ranges[0] and 'max="3"' in ranges[0] and 'step="1"' in ranges[0]
    assert 'value="0"' in ranges[0]
    assert "sigma = 0.25" in html and "sigma = 0<" in html  # labels; the first one shown
    assert plt.get_fignums() == []  # every figure closed after its PNG was taken


def test_static_slider_is_self_contained():
    html = viz.parameter_slider(Recorder(), [1, 2], "eps", mode="static").data
    assert not re.search(r"https?://", html)
    assert "<script src" not in html and "<link" not in html and "@import" not in html
    assert "<script>" in html and 'addEventListener("input"' in html


def test_static_slider_ids_are_unique_across_calls_and_the_script_uses_its_own():
    first = viz.parameter_slider(Recorder(), [1, 2, 3], mode="static").data
    second = viz.parameter_slider(Recorder(), [1, 2, 3], mode="static").data
    ids_first, ids_second = (set(re.findall(r'\bid="([^"]+)"', html)) for html in (first, second))
    assert len(ids_first) == len(re.findall(r'\bid="', first))  # unique within one slider
    assert ids_first and not ids_first & ids_second
    for html, ids in ((first, ids_first), (second, ids_second)):
        used = set(re.findall(r'getElementById\("([^"]+)"\)', html))
        assert used and used <= ids


def test_start_and_format_choose_the_first_frame_and_the_label():
    html = viz.parameter_slider(Recorder(), [0.5, 1.0], "sigma", mode="static", start=1,
                                fmt=lambda v: f"{v:.2f}").data
    shown = re.findall(r'<img id="([^"]+)"[^>]*style="max-width:100%;height:auto;"', html)
    assert len(shown) == 1 and shown[0].endswith("-frame-1")
    assert 'value="1"' in re.findall(r'<input type="range"[^>]*>', html)[0]
    assert "sigma = 1.00" in html


def test_bad_arguments():
    with pytest.raises(ValueError, match="a slider needs at least one value"):
        viz.parameter_slider(Recorder(), [], mode="static")
    with pytest.raises(ValueError, match="unknown slider mode 'interactive'"):
        viz.parameter_slider(Recorder(), [1], mode="interactive")
    with pytest.raises(ValueError, match="start must index one of the 2 values, got 2"):
        viz.parameter_slider(Recorder(), [1, 2], mode="static", start=2)
    with pytest.raises(TypeError, match="render.value. must return a matplotlib Figure, got str"):
        viz.parameter_slider(lambda v: "not a figure", [1], mode="static")


def test_auto_mode_is_static_when_no_user_kernel_and_follows_the_environment(monkeypatch):
    assert viz.slider_mode("auto") == "static"  # pytest, like nbclient, is no interactive frontend
    monkeypatch.setenv(viz.SLIDER_ENV, "live")
    assert viz.slider_mode() == "live"
    monkeypatch.setenv(viz.SLIDER_ENV, "static")
    assert viz.slider_mode() == "static"
    monkeypatch.setenv(viz.SLIDER_ENV, "sometimes")
    with pytest.raises(ValueError, match=f"{viz.SLIDER_ENV}='sometimes' is not a slider mode"):
        viz.slider_mode()
    monkeypatch.delenv(viz.SLIDER_ENV)
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert viz.slider_mode() == "live"
    assert viz.slider_mode("static") == "static"


def test_live_slider_redraws_with_the_same_render_and_caches():
    widgets = pytest.importorskip("ipywidgets")
    render = Recorder()
    box = viz.parameter_slider(render, [0.1, 0.2, 0.3], "epsilon", mode="live")
    slider, image = box.children[0], box.children[1]
    assert isinstance(slider, widgets.SelectionSlider) and isinstance(image, widgets.Image)
    assert render.calls == [0.1]  # only the value shown is drawn
    first = bytes(image.value)
    assert first.startswith(PNG_SIGNATURE)
    slider.value = 2
    assert render.calls == [0.1, 0.3] and bytes(image.value) != first
    slider.value = 0
    assert render.calls == [0.1, 0.3] and bytes(image.value) == first  # drawn once, kept
    assert [label for label, _ in slider.options] == ["0.1", "0.2", "0.3"]


def test_epsilon_explorer_static_frames_one_attack_per_epsilon():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    x = torch.rand(1, 8, 8)
    epsilons = [0.0, 0.05, 0.2]
    seen = []

    def attack(model, xb, yb, eps):
        seen.append((tuple(xb.shape), yb.tolist(), eps))
        return fgsm(model, xb, yb, eps=eps)

    html = viz.epsilon_explorer(model, x, 2, attack, epsilons, classes=list("abcd"), mode="static").data
    assert seen == [((1, 1, 8, 8), [2], eps) for eps in epsilons]
    assert len(frames(html)) == 3 and "epsilon = 0.05" in html
    assert not re.search(r"https?://", html)
    assert plt.get_fignums() == []


def test_epsilon_explorer_live_and_bad_input():
    pytest.importorskip("ipywidgets")
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    x = torch.rand(1, 1, 8, 8)
    box = viz.epsilon_explorer(model, x, torch.tensor(1), fgsm, [0.0, 0.1], mode="live")
    assert bytes(box.children[1].value).startswith(PNG_SIGNATURE)
    with pytest.raises(ValueError, match=r"expected one image shaped \(C, H, W\) or \(1, C, H, W\), got shape \(2,"):
        viz.epsilon_explorer(model, torch.rand(2, 1, 8, 8), 1, fgsm, [0.1], mode="static")
    with pytest.raises(ValueError, match="the model has 4 classes but 2 class names were given"):
        viz.epsilon_explorer(model, x, 1, fgsm, [0.1], classes=["a", "b"], mode="static")
    with pytest.raises(ValueError, match=r"every epsilon must lie in \[0, inf\), got -0.1"):
        viz.epsilon_explorer(model, x, 1, fgsm, [-0.1], mode="static")
    with pytest.raises(ValueError, match="every epsilon must be a finite number, got nan"):
        viz.epsilon_explorer(model, x, 1, fgsm, [0.1, float("nan")], mode="static")
    with pytest.raises(ValueError, match="epsilon_explorer needs at least one epsilon"):
        viz.epsilon_explorer(model, x, 1, fgsm, [], mode="static")
    with pytest.raises(ValueError, match=r"x must hold images in \[0, 1\]"):
        viz.epsilon_explorer(model, x + 1, 1, fgsm, [0.1], mode="static")
    with pytest.raises(ValueError, match=r"y must be the image's one integer class label, got \[1, 2\]"):
        viz.epsilon_explorer(model, x, torch.tensor([1, 2]), fgsm, [0.1], mode="static")
