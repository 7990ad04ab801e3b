"""The window path of the Square attack's queries (advlib.attacks.window_forward): a proposal that differs from
the current points in one window, the same for the batch, evaluated by recomputing only the window of each
feature map it reaches and updating the first dense layer's output by the window's columns.

What is checked: its logits equal the model's own pass on every supported kind of layer (strided, padded and
unpadded convolutions, rectangular kernels, grouped convolutions, strides longer than the kernel, pooling that
overlaps or skips a row, Normalize and other pointwise layers, layers working in place after the path, RGB, a
non-square image), for windows anywhere, the image's corners and edges included, of sides 1 to 5, 8 and the
whole image; a change that no output reads gets the full pass; the carried dense layer stays within rounding
of the full pass over a run of 5,000 kept queries; every window takes the path, up to the whole image, unless
a layer drops its change; a pre-hook of the model that replaces the query gets the full pass of what it
returns; models it cannot handle (hooks on a layer, global hooks, an unsupported layer, no Flatten, no
convolution, a forward of their own) get the full pass; the model's own hooks, and those of its Flatten and
the layers after, see every query; the swap is undone after the block, also after an error; and along a whole
Square run every query's logits are the model's, and the run fools the same examples at the same queries as
one by full passes.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlib import models
from advlib.attacks import square_with_queries, window_forward
from advlib.attacks.square import _linf_proposal_at, _linf_side, p_schedule
from advlib.attacks.window_forward import WindowForward, _plan


def odd_net() -> nn.Sequential:
    """Normalize first, a stride-3 5x5 convolution, Tanh, average pooling, an unstrided padded convolution."""
    return nn.Sequential(models.Normalize([0.5], [0.3]), nn.Conv2d(1, 4, 5, stride=3, padding=2), nn.Tanh(),
                         nn.AvgPool2d(2), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(6 * 5 * 5, 10))


def rgb_net() -> nn.Sequential:
    """Three channels, an unpadded convolution, then a rectangular kernel with unequal strides and padding."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(),
                         nn.Conv2d(8, 8, (3, 2), stride=(1, 2), padding=(2, 1)), nn.LeakyReLU(0.1),
                         nn.Flatten(), nn.Linear(8 * 17 * 8, 5))


def pooled_net() -> nn.Sequential:
    """Max pooling that reads no output from its input's last row and column (an unpadded 4x4 convolution leaves
    25, pooled by 2 to 12), so a change reaches the next convolution's patch only in part."""
    return nn.Sequential(nn.Conv2d(1, 4, 4), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(6 * 12 * 12, 10))


def in_place_net() -> nn.Sequential:
    """ReLUs that work in place, after the convolutions and after the first dense layer (whose output the path
    carries: the layers after it must not change it)."""
    return nn.Sequential(nn.Conv2d(1, 8, 4, stride=2, padding=1), nn.ReLU(inplace=True), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(8 * 14 * 14, 20), nn.ReLU(inplace=True),
                         nn.Linear(20, 10))


def strided_net() -> nn.Sequential:
    """A 20x33 image of two channels: Identity first, a grouped 2x2 convolution of stride 3 (it reads no row or
    column 2 mod 3, nor column 32), overlapping 3x3 max pooling of stride 2, a 1x1 convolution to one channel
    (whose Flatten is a view of the map), then an in-place layer right after the Flatten (the dense layer is
    not carried: the path writes its window into a copy of the last map)."""
    return nn.Sequential(nn.Identity(), nn.Conv2d(2, 4, 2, stride=3, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2),
                         nn.Conv2d(4, 1, 1), nn.Flatten(), nn.SiLU(inplace=True), nn.Linear(3 * 5, 10))


NETS = {"wong-kolter": (models.wong_kolter_cnn, (1, 28, 28)), "small-cnn": (models.small_cnn, (1, 28, 28)),
        "odd": (odd_net, (1, 28, 28)), "rgb": (rgb_net, (3, 32, 32)), "pooled": (pooled_net, (1, 28, 28)),
        "in-place": (in_place_net, (1, 28, 28)), "strided": (strided_net, (2, 20, 33))}
# where a change of one pixel's row or column reaches nothing (a stride, or pooling, skips it): the full pass
DROPPED = {"rgb": lambda top, left: top == 31 or left == 31, "pooled": lambda top, left: top == 27 or left == 27,
           "strided": lambda top, left: top % 3 == 2 or left % 3 == 2 or left == 32}


def built(name: str) -> tuple[nn.Module, tuple[int, int, int]]:
    torch.manual_seed(0)
    build, shape = NETS[name]
    return build().eval(), shape


@pytest.mark.parametrize("name", sorted(NETS))
def test_the_window_path_gives_the_models_own_logits(name):
    model, (c, h, w) = built(name)
    x = torch.rand(12, c, h, w, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for side in (1, 2, 3, 4, 5, 8, min(h, w)):
            current = _linf_proposal_at(x, x.clone(), 0.2, side, generator)[0]  # a point off the clean image
            with window_forward.window_forward(model) as local:
                assert local is not None
                local.start(current)
                drawn = _linf_proposal_at(x, current, 0.2, side, generator)[1]
                inner = (max(0, h - side - 1), min(2, w - side))  # off the edges by one and two
                # the top left corner again last: a window query after the others, dropped ones among them
                for corner in ((0, 0), (h - side, w - side), (0, w - side), inner, drawn, (0, 0)):
                    trial = _move(current, corner, side)
                    logits = local(trial, corner, side)
                    dropped = side == 1 and DROPPED.get(name, lambda top, left: False)(*corner)
                    assert (local.query.steps is None) == dropped
                    torch.testing.assert_close(logits, model(trial), rtol=1e-5, atol=1e-5)
                    keep = torch.rand(len(x), generator=generator) < 0.5
                    local.keep(keep)
                    current = torch.where(keep[:, None, None, None], trial, current)
                    torch.testing.assert_close(local(current, corner, side), model(current), rtol=1e-5, atol=1e-5)


def _move(current, corner, side):
    """``current`` with the side x side window at ``corner`` changed in every example (any change will do)."""
    out = current.clone()
    window = (slice(None), slice(None), slice(corner[0], corner[0] + side), slice(corner[1], corner[1] + side))
    out[window] = 1 - current[window]
    return out


def test_the_carried_dense_layer_stays_within_rounding_over_a_long_run():
    """The first dense layer's output is the one value carried by differences (a kept proposal's is the
    query's): after 5,000 queries each kept by every example, on the schedule of AutoAttack's Square, it is
    within 1e-5 of its size of the full pass's (a few in a million, measured), and so are the logits."""
    model, _ = built("wong-kolter")
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(9))
    generator = torch.Generator().manual_seed(10)
    with torch.no_grad(), window_forward.window_forward(model) as local:
        current = _linf_proposal_at(x, x.clone(), 0.1, 28, generator)[0]
        local.start(current)
        for iteration in range(5000):
            side = _linf_side(p_schedule(iteration, 5000, 0.8), 28, 28)
            current, corner = _linf_proposal_at(x, current, 0.1, side, generator)
            logits = local(current, corner, side)
            local.keep(torch.ones(len(x), dtype=torch.bool))
        assert local.query.steps is not None and local.dense is not None  # the path, dense layer carried, was taken
        dense = model[5](model[:5](current))
        assert (local.dense - dense).abs().max() <= 1e-5 * dense.abs().max()
        assert (logits - model(current)).abs().max() <= 1e-5 * logits.abs().max()


def test_every_window_takes_the_path_unless_a_layer_drops_its_change():
    model, shape = built("wong-kolter")
    local = WindowForward(model, _plan(model))
    size = torch.Size((1, *shape))
    assert all(local._steps(size, top, left, side) is not None
               for side in (1, 2, 3, 4, 9, 18, 28) for top in range(29 - side) for left in range(29 - side))
    model, shape = built("rgb")  # a 3x3 convolution of stride 2 without padding reads no output from row 31
    local = WindowForward(model, _plan(model))
    size = torch.Size((1, *shape))
    assert local._steps(size, 31, 0, 1) is None and local._steps(size, 0, 31, 1) is None
    assert local._steps(size, 30, 30, 2) is not None


class Own(nn.Sequential):
    def forward(self, x):
        return super().forward(x) * 2


@pytest.mark.parametrize("case", ["layer hook", "layer pre-hook", "global hook", "batch norm", "no flatten",
                                  "no convolution", "own forward", "dilated", "padded pooling", "not sequential"])
def test_models_it_cannot_handle_get_the_full_pass(case):
    model, _ = built("wong-kolter")
    handle = None
    if case == "layer hook":
        model[2].register_forward_hook(lambda *args: None)
    elif case == "layer pre-hook":
        model[0].register_forward_pre_hook(lambda *args: None)
    elif case == "global hook":
        handle = nn.modules.module.register_module_forward_hook(lambda *args: None)
    elif case == "batch norm":
        model = nn.Sequential(*model[:1], nn.BatchNorm2d(16), *model[1:]).eval()
    elif case == "no flatten":
        model = nn.Sequential(nn.Conv2d(1, 10, 28), nn.ReLU())
    elif case == "no convolution":
        model = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(784, 10))
    elif case == "own forward":
        model = Own(*model)
    elif case == "dilated":
        model = nn.Sequential(nn.Conv2d(1, 4, 3, dilation=2), nn.Flatten(), nn.Linear(4 * 24 * 24, 10))
    elif case == "padded pooling":
        model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2, padding=1), nn.Flatten(), nn.Linear(4 * 14 * 14, 10))
    elif case == "not sequential":
        model = nn.ModuleList(model)
    try:
        assert _plan(model) is None
        with window_forward.window_forward(model) as local:
            assert local is None
    finally:
        if handle is not None:
            handle.remove()


def test_a_pre_hook_that_replaces_the_query_gets_the_full_pass_of_what_it_returns():
    """A forward pre-hook of the model that hands over another tensor: the path cannot read that one, so the
    query is answered, and its maps kept, by the full pass of the hook's tensor (the model's own logits)."""
    model, _ = built("wong-kolter")
    model.register_forward_pre_hook(lambda module, inputs: (inputs[0].flip(-1),))
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(12))
    generator = torch.Generator().manual_seed(13)
    with torch.no_grad(), window_forward.window_forward(model) as local:
        current = x.clone()
        local.start(current)
        for side in (3, 2, 2, 1):
            trial, corner = _linf_proposal_at(x, current, 0.2, side, generator)
            logits = local(trial, corner, side)
            assert local.query.steps is None
            torch.testing.assert_close(logits, model(trial), rtol=1e-5, atol=1e-5)
            keep = torch.rand(len(x), generator=generator) < 0.5
            local.keep(keep)
            current = torch.where(keep[:, None, None, None], trial, current)


def test_the_models_hooks_see_every_query_and_the_swap_is_undone(monkeypatch):
    model, _ = built("wong-kolter")
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = model(x).argmax(1)
    rows, flatten_rows, dense_rows = [], [], []
    model.register_forward_hook(lambda module, inputs, output: rows.append(len(inputs[0])))
    model[4].register_forward_hook(lambda module, inputs, output: flatten_rows.append(len(inputs[0])))
    model[5].register_forward_hook(lambda module, inputs, output: dense_rows.append(len(inputs[0])))
    result = square_with_queries(model, x, y, eps=0.1, queries=200, p_init=0.05,
                                 generator=torch.Generator().manual_seed(4))
    assert "forward" not in model.__dict__
    fooled_later = int((result.success & (result.queries > 1)).sum())  # each confirmed by one more pass
    assert fooled_later > 0 and not result.success.all()
    assert sum(rows) == int(result.queries.sum()) + fooled_later  # every query is a call of the model
    assert flatten_rows == dense_rows == rows  # and the Flatten and the layers after it run on each

    def broken(self, *args):
        raise RuntimeError("boom")

    monkeypatch.setattr(WindowForward, "_windows", broken)
    with pytest.raises(RuntimeError, match="boom"):
        square_with_queries(model, x, y, eps=0.3, queries=60, p_init=0.01)
    assert "forward" not in model.__dict__


@pytest.mark.parametrize(("name", "eps"), [("wong-kolter", 0.1), ("small-cnn", 0.01)])
def test_square_with_the_window_path_sees_the_models_logits_and_fools_the_same_examples(name, eps, monkeypatch):
    """Along a whole run, every query's logits by the window path are the model's own up to rounding; and
    the run fools the same examples at the same queries as one by full passes. (Its images need not be equal
    bit for bit: where a proposal leaves the loss unchanged, as one behind a dead ReLU or a max pooling that
    does not pick it, the path's rounding can keep what the full pass's exact tie rejects.)"""
    model, (c, h, w) = built(name)
    x = torch.rand(16, c, h, w, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = model(x).argmax(1)
    query, compared = WindowForward.__call__, []

    def checked(self, trial, corner, side):
        logits = query(self, trial, corner, side)
        compared.append(self.query.steps is not None)
        torch.testing.assert_close(logits, nn.Sequential.forward(model, trial), rtol=1e-5, atol=1e-5)
        return logits

    def run():
        return square_with_queries(model, x, y, eps=eps, queries=300, p_init=0.05,
                                   generator=torch.Generator().manual_seed(6))

    monkeypatch.setattr(WindowForward, "__call__", checked)
    with_window = run()
    assert len(compared) == 299 and sum(compared) > 250  # the path answered most queries
    monkeypatch.setattr(window_forward, "_plan", lambda model: None)
    without = run()
    assert with_window.success.any() and not with_window.success.all()  # the comparison is not vacuous
    assert torch.equal(with_window.queries, without.queries)
    assert torch.equal(with_window.success, without.success)


def test_the_window_path_keeps_the_models_dtype():
    model, _ = built("wong-kolter")
    model = model.double()
    x = torch.rand(5, 1, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad(), window_forward.window_forward(model) as local:
        local.start(x)
        trial, corner = _linf_proposal_at(x, x.clone(), 0.1, 2, torch.Generator().manual_seed(8))
        logits = local(trial, corner, 2)
        assert logits.dtype == torch.float64
        torch.testing.assert_close(logits, model(trial))


def test_a_model_on_a_gpu_gets_the_full_pass(monkeypatch):
    """Measured slower on a GPU (window_forward._on_cpu): a model whose parameters are not on the CPU gets None."""
    model, _ = built("wong-kolter")
    on_cpu = window_forward._on_cpu
    assert on_cpu(model) and on_cpu(nn.Sequential()) and not on_cpu(models.wong_kolter_cnn().to("meta"))
    monkeypatch.setattr(window_forward, "_on_cpu", lambda model: False)
    with window_forward.window_forward(model) as local:
        assert local is None
