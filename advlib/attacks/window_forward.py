"""Forward passes of images that differ from known ones only inside one small square window, the same window
for the whole batch: the queries of the Square attack (:mod:`advlib.attacks.square`), where most proposals
change a few pixels.

In a convolutional network a change confined to a window of the input reaches only a window of every later
feature map: through a layer of kernel k, stride s and padding p, input rows [a, b) reach the output rows o
with o s - p <= b - 1 and o s - p + k - 1 >= a (the receptive-field arithmetic read backwards; pointwise
layers keep the window), and those outputs depend on the input rows [o_first s - p, o_last s - p + k), the
patch. So the path keeps, for each example's current point, the feature map entering every convolution or
pooling layer after the first (the first one's is the image) and the last one before the ``nn.Flatten``; a
query recomputes each layer's window alone, from its patch of the stored map (zero where the patch leaves the
map: the convolution's padding) with the window the change reached written into it. Every recomputed value is
the same sum of the same products as in the full pass (in another order, so equal up to rounding), and the
stored maps are never updated by differences: a kept proposal's windows are written into them.

The first dense layer after the Flatten (an ``nn.Linear``) is carried the same way: its output z = W m + b
for the current points is kept, and a query's is z + W_S (m'_S - m_S), where S is the window of the last map
(its columns of W, a copy per window position). A kept proposal's z is the query's, so this one value is
carried by differences; its rounding error grows at most with the number of kept proposals, a few in a
million of the logits' size after AutoAttack's 5,000 queries (measured, ``tests/test_window_forward.py``), and a
success is decided by the model's own full pass anyway (:mod:`advlib.attacks.square`).

Because the window is the same for every example of a query (as in AutoAttack's and torchattacks' Square,
which draw one position per iteration; the authors' Linf code draws one per image), every patch and window is
a slice of the batch's tensors, and the dense layer's change is one matrix product.

Which models: an ``nn.Sequential`` (its own ``forward``) whose layers before an ``nn.Flatten`` are plain
``nn.Conv2d`` (numeric zero padding, dilation 1), ``nn.MaxPool2d`` and ``nn.AvgPool2d`` without padding, and
pointwise layers (ReLU and its relatives, Sigmoid, Tanh, Softplus, :class:`advlib.models.Normalize`,
``nn.Identity``), with at least one convolution; no layer before the Flatten may carry hooks (its calls are
skipped), and no global module hooks may be set. The model's own hooks run: a query is still a call of the
model, whose ``forward`` is swapped for the block (as :mod:`advlib.attacks.conv_gradient` swaps a layer's; a
forward pre-hook of the model that replaces the query gets the full pass of what it returns), and so do the
hooks of the layers from the Flatten on: when the Flatten or the dense layer carries one, the path writes the
window into the last map and runs them as usual. The layers after the path get copies of its values, so one that works
in place changes nothing the path keeps. Any other model gets the ordinary forward pass, and so does a model
on a GPU, where a full pass of a small network costs less than the path's small operations. On the CPU
every window takes the path, however large: a full pass that must also store its maps for the next query
costs about as much at the largest windows and more at the others, measured per query on 314 images
(chapter 10's network: the path 11.0 ms and the full pass 10.8 at side 25, 8.6 and 11.2 at side 18, 4.1 and
12.0 at side 9; the small CNN of :func:`advlib.models.small_cnn`: 72 and 128 ms at side 25). The full pass
is left for a change that a layer drops (a stride that skips the window's rows), whose logits it gives as
usual.

The stored maps are kept in channels-last memory: a window of a map is then a run of whole pixels (all
channels of each), so its copies and differences are a few long contiguous strides, where in the default
layout they are many rows of 2-3 values, several times slower on a CPU.

Measured on chapter 10's network (Wong and Kolter's, 28x28 input), AutoAttack's Square on the 314 images
still standing after APGD-T, 5,000 queries, one core of the 2-core AMD EPYC VM: 10.1-10.3 s, against 57-58 s
with a full pass per query and 22.8-26.5 s with this module's earlier form (a window per example, gathered
and scattered, the dense layers run whole, full passes for windows of side 9 and more); none of those images
broken by any of the three.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as module_hooks

from ..models import Normalize
from ..utils import model_device
from . import core

__all__ = ["WindowForward", "window_forward"]

POINTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Identity,
             Normalize)


class _Local(NamedTuple):
    """A layer that maps windows to windows: kernel, stride, padding (per axis, rows then columns)."""

    module: nn.Module
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]

    @property
    def pointwise(self) -> bool:
        return type(self.module) in POINTWISE


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _local_layer(module: nn.Module) -> _Local | None:
    """The window geometry of a supported layer (pointwise: kernel 1, stride 1), else None."""
    if type(module) in POINTWISE:
        return _Local(module, (1, 1), (1, 1), (0, 0))
    if type(module) is nn.Conv2d:
        forward = module.__dict__.get("forward")
        plain = forward is None or getattr(forward, "computes_conv2d", False)
        if (plain and module.dilation == (1, 1) and module.padding_mode == "zeros"
                and not isinstance(module.padding, str)):
            return _Local(module, module.kernel_size, module.stride, module.padding)
        return None
    if type(module) in (nn.MaxPool2d, nn.AvgPool2d):
        plain = getattr(module, "dilation", 1) in (1, (1, 1)) and getattr(module, "divisor_override", None) is None
        if plain and _pair(module.padding) == (0, 0) and not module.ceil_mode:
            stride = module.stride if module.stride is not None else module.kernel_size
            return _Local(module, _pair(module.kernel_size), _pair(stride), (0, 0))
    return None


def _hooked(module: nn.Module) -> bool:
    hooks = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return any(getattr(module, name, None) for name in hooks) or "forward" in module.__dict__ and type(
        module) is not nn.Conv2d


def _on_cpu(model: nn.Module) -> bool:
    """The window path is for the CPU: on an H200 a full pass of chapter 10's network costs so little that
    AutoAttack's Square took longer with the path than without: 9.9-12.2 s against 7.8-8.1 s (the path as
    of commit 55cb4ce; 314 images, 5,000 queries), and 7.5-8.1 s against 5.5-5.6 s with its first form."""
    return model_device(model).type == "cpu"


def _plan(model: nn.Module) -> tuple[list[_Local], list[nn.Module]] | None:
    """(the local layers before the Flatten, the layers from the Flatten on), or None when the model is not
    one this module handles (module docstring)."""
    if not isinstance(model, nn.Sequential) or type(model).forward is not nn.Sequential.forward \
            or "forward" in model.__dict__:
        return None
    if any(getattr(module_hooks, name, None) for name in
           ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
            "_global_backward_pre_hooks")):
        return None
    layers = list(model)
    local = []
    for i, layer in enumerate(layers):
        if type(layer) is nn.Flatten:  # the layers from here on run as usual, their hooks too
            if not local or not any(type(item.module) is nn.Conv2d for item in local) \
                    or layer.start_dim != 1 or layer.end_dim != -1:
                return None
            return local, layers[i:]
        if any(_hooked(m) for m in layer.modules()):
            return None
        item = _local_layer(layer)
        if item is None:
            return None
        local.append(item)
    return None


class _Step(NamedTuple):
    """One local layer's part of a query: the window of its output the change reaches (rows, columns), and
    for a convolution or pooling layer the patch of its input that window depends on: the part inside the
    input map, the zeros around it (``F.pad``'s order: left, right, top, bottom), where in the patch the
    input's changed window lies and which part of that window lands there (rows, columns; the rows no output
    reads are left out; both None for the first layer, whose input is the query itself)."""

    window: tuple[slice, slice]
    source: tuple[slice, slice] | None
    pad: tuple[int, int, int, int] | None
    inner: tuple[slice, slice] | None
    take: tuple[slice, slice] | None


class _Query(NamedTuple):
    """What a query computed, kept until the attack says which rows move to it: the new windows of the
    stored maps (None after a full pass, then ``maps`` holds them whole), and the dense layer's output."""

    steps: list[_Step] | None
    maps: list[torch.Tensor]
    dense: torch.Tensor | None


class WindowForward:
    """The window path of one batch of running examples: the stored feature maps (and the first dense layer's
    output) at each example's current point, updated as the attack moves, and the forward pass of a proposal
    that differs from the current points in one window shared by the batch (module docstring)."""

    def __init__(self, model: nn.Module, plan: tuple[list[_Local], list[nn.Module]]):
        self.model, (self.local, self.tail) = model, plan
        # the maps kept: the input of every convolution or pooling layer after the first, and the last map
        self.stored = [i for i in range(len(self.local))
                       if i == len(self.local) - 1 or not self.local[i + 1].pointwise]
        dense = self.tail[1] if len(self.tail) > 1 else None
        carried = type(dense) is nn.Linear and not _hooked(self.tail[0]) and not _hooked(dense)
        self.linear = dense if carried else None  # the dense layer carried by the window's change, if any
        self.maps: list[torch.Tensor] = []  # the stored maps at the current points
        self.dense: torch.Tensor | None = None  # the dense layer's output at the current points
        self.pending = None  # (trial, (top, left), side) of the query being made
        self.query: _Query | None = None  # the last query's
        self.steps: dict[tuple[int, ...], list[_Step] | None] = {}  # (H, W, top, left, side) -> its steps
        self.columns: dict[tuple[int, ...], torch.Tensor] = {}  # the last map's window -> W_S transposed

    # --- the attack's side --------------------------------------------------------------------------------

    def start(self, current: torch.Tensor) -> None:
        """Compute the stored maps of the current points (one pass of the local layers)."""
        self.maps, self.dense = self._full(current)

    def __call__(self, trial: torch.Tensor, corner: tuple[int, int], side: int) -> torch.Tensor:
        """The logits of ``trial``, which differs from the current points only in the side x side window at
        ``corner`` (top, left), the same for every example, by a call of the model (its hooks run)."""
        self.pending = (trial, corner, side)
        try:
            return self.model(trial)
        finally:
            self.pending = None

    def keep(self, keep: torch.Tensor) -> None:
        """The rows ``keep`` moved to the last query's point: its windows are written into their maps."""
        query = self.query
        if query.steps is None:
            self.maps = [core.keep_rows(keep, new, old) for new, old in zip(query.maps, self.maps, strict=True)]
        else:
            rows = keep.nonzero().squeeze(1)
            for i, old, new in zip(self.stored, self.maps, query.maps, strict=True):
                old[(rows, slice(None), *query.steps[i].window)] = new[rows]
        if self.dense is not None:
            self.dense = core.keep_rows(keep, query.dense, self.dense)

    def select(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (the examples still running)."""
        self.maps = [m[rows] for m in self.maps]
        if self.dense is not None:
            self.dense = self.dense[rows]

    # --- the model's side ---------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The swapped ``forward`` of the model: the window path for the pending query, else the full pass
        (the pending query's values kept either way)."""
        if self.pending is None:
            return nn.Sequential.forward(self.model, x)
        trial, (top, left), side = self.pending
        # a forward pre-hook of the model may hand over another tensor: only the query itself takes the path
        steps = self._steps(trial.shape, top, left, side) if x is trial else None
        if steps is None:
            maps, dense = self._full(x)
        else:
            maps, dense = self._windows(trial, steps)
        self.query = _Query(steps, maps, dense)
        # the layers after the path get copies: one working in place must not change what keep() stores
        if dense is not None:
            out = dense.clone()
            for layer in self.tail[2:]:
                out = layer(out)
            return out
        if steps is None:
            out = maps[-1].clone()
        else:  # the last map with its new window, for the layers from the Flatten on
            out = self.maps[-1].clone()
            out[(slice(None), slice(None), *steps[-1].window)] = maps[-1]
        for layer in self.tail:
            out = layer(out)
        return out

    def _full(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """The stored maps of ``x`` and the carried dense layer's output, by the full pass of the local layers."""
        maps = []
        for i, item in enumerate(self.local):
            x = item.module(x)
            if i in self.stored:
                maps.append(x.contiguous(memory_format=torch.channels_last))
        dense = None if self.linear is None else F.linear(x.flatten(1), self.linear.weight, self.linear.bias)
        return maps, dense

    def _windows(self, trial: torch.Tensor, steps: list[_Step]) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """The new windows of the stored maps, each layer's from its patch, and the dense layer's output."""
        maps, stored = [], iter(self.maps)
        source = trial  # the map entering the next convolution or pooling layer
        x = trial[(slice(None), slice(None), *steps[0].window)] if self.local[0].pointwise else trial
        for i, (item, step) in enumerate(zip(self.local, steps, strict=True)):
            if item.pointwise:
                x = item.module(x)
            else:
                patch = source[(slice(None), slice(None), *step.source)]
                if any(step.pad):  # a new tensor, with the zeros of the convolution's padding around
                    patch = F.pad(patch, step.pad)
                elif step.inner is not None:  # a copy to write into: the slice is a view of a stored map
                    patch = patch.clone()
                if step.inner is not None:
                    patch[(slice(None), slice(None), *step.inner)] = x[(slice(None), slice(None), *step.take)]
                module = item.module
                if type(module) is nn.Conv2d:
                    x = F.conv2d(patch, module.weight, module.bias, module.stride, 0, 1, module.groups)
                else:
                    x = module(patch)
                x = x.contiguous(memory_format=torch.channels_last)
            if i in self.stored:
                maps.append(x)
                source = next(stored)
        if self.linear is None:
            return maps, None
        window = steps[-1].window
        change = x - self.maps[-1][(slice(None), slice(None), *window)]
        change = change.permute(0, 2, 3, 1).flatten(1)  # rows, columns, channels: a view in channels-last memory
        return maps, torch.addmm(self.dense, change, self._columns(window))

    def _columns(self, window: tuple[slice, slice]) -> torch.Tensor:
        """W_S transposed: the dense layer's weights on the last map's ``window``, ordered by rows, columns,
        then channels (as the window's values in channels-last memory), (R_h R_w C, out)."""
        key = (window[0].start, window[0].stop, window[1].start, window[1].stop)
        if key not in self.columns:
            weight = self.linear.weight
            channels, height, width = self.maps[-1].shape[1:]
            part = weight.reshape(weight.shape[0], channels, height, width)[:, :, window[0], window[1]]
            self.columns[key] = part.permute(0, 2, 3, 1).flatten(1).t().contiguous()
        return self.columns[key]

    def _steps(self, shape: torch.Size, top: int, left: int, side: int) -> list[_Step] | None:
        key = (shape[2], shape[3], top, left, side)
        if key not in self.steps:
            self.steps[key] = _window_steps(self.local, (shape[2], shape[3]), (top, left), side)
        return self.steps[key]


def _axis(local: list[_Local], sizes: list[tuple[int, int]], axis: int, start: int, stop: int):
    """Along one axis, per local layer: (output window, input patch inside the map, zeros before and after
    it, the input window's place in the patch, the part of the input window placed there), for a change in
    the input's [start, stop); None when a layer drops the change (no output reaches it)."""
    spans = []
    for i, item in enumerate(local):
        if item.pointwise:
            spans.append((slice(start, stop), None, (0, 0), None, None))
            continue
        k, s, p = item.kernel[axis], item.stride[axis], item.padding[axis]
        size_in, size_out = sizes[i][axis], sizes[i + 1][axis]
        first = max(0, -((k - 1 - p - start) // s))  # ceil((start + p - k + 1) / s)
        last = min(size_out, (stop - 1 + p) // s + 1)
        if first >= last:
            return None
        low, high = first * s - p, (last - 1) * s - p + k  # the patch, in the input map's coordinates
        inside = max(start, low), min(stop, high)
        spans.append((slice(first, last), slice(max(low, 0), min(high, size_in)),
                      (max(0, -low), max(0, high - size_in)), slice(inside[0] - low, inside[1] - low),
                      slice(inside[0] - start, inside[1] - start)))
        start, stop = first, last
    return spans


def _window_steps(local: list[_Local], size: tuple[int, int], corner: tuple[int, int],
                  side: int) -> list[_Step] | None:
    """The steps of a query whose window is side x side at ``corner`` of inputs of ``size`` (H, W), or None
    when a layer drops the change (no output reads it)."""
    sizes = [tuple(size)]
    for item in local:
        sizes.append(tuple((sizes[-1][a] + 2 * item.padding[a] - item.kernel[a]) // item.stride[a] + 1
                           for a in (0, 1)))
    rows = _axis(local, sizes, 0, corner[0], min(corner[0] + side, size[0]))
    cols = _axis(local, sizes, 1, corner[1], min(corner[1] + side, size[1]))
    if rows is None or cols is None:
        return None
    steps = []
    for i, ((row, row_source, row_pad, row_inner, row_take), (col, col_source, col_pad, col_inner, col_take)) \
            in enumerate(zip(rows, cols, strict=True)):
        if row_source is None:
            steps.append(_Step((row, col), None, None, None, None))
        elif i == 0:
            steps.append(_Step((row, col), (row_source, col_source), (*col_pad, *row_pad), None, None))
        else:
            steps.append(_Step((row, col), (row_source, col_source), (*col_pad, *row_pad), (row_inner, col_inner),
                               (row_take, col_take)))
    return steps


@contextmanager
def window_forward(model: nn.Module, enabled: bool = True):
    """For the block, a :class:`WindowForward` of ``model`` (its ``forward`` swapped, restored afterwards, also
    after an error), or None when the model is not one the window path handles, is not on the CPU, or
    ``enabled`` is false."""
    plan = _plan(model) if enabled and _on_cpu(model) else None
    if plan is None:
        yield None
        return
    evaluator = WindowForward(model, plan)
    model.forward = evaluator.forward
    try:
        yield evaluator
    finally:
        model.__dict__.pop("forward", None)
