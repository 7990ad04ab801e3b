"""Sliders: one control for a live kernel and for the static book.

:func:`parameter_slider` shows a figure per value of a parameter behind a slider that works live in
Jupyter and Colab (ipywidgets) and, from precomputed frames, in the static book;
:func:`epsilon_explorer` is the attack chapters' epsilon slider built on it.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch

from .figures import _as_image, use_style

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
    from ..utils import check_images, check_model, check_real, eval_mode, model_device

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


