"""Forward passes of images that differ from known ones only inside a small square window: the queries of
the Square attack (:mod:`advlib.attacks.square`), where most proposals change a few pixels.

In a convolutional network a change confined to a window of the input reaches only a window of every later
feature map: through a layer of kernel k, stride s and padding p, input rows [r, r + h) reach the output rows
o with o s - p <= r + h - 1 and o s - p + k - 1 >= r, at most R = floor((h + k - 2) / s) + 1 of them (the
receptive-field arithmetic read backwards; pointwise layers keep the window). So the feature map that enters
the network's first dense layer can be updated by recomputing a window of it, from the patch of the input
that window depends on ((R - 1) s + k rows per layer, going back), and the rest of the network runs as usual
on the updated map. Nothing is approximated: every recomputed value is the same sum of the same products as
in the full pass (in another order, so equal up to rounding), and no value is carried by differences, so no
rounding error accumulates over the iterations.

Which models: an ``nn.Sequential`` (its own ``forward``) whose layers before an ``nn.Flatten`` are plain
``nn.Conv2d`` (numeric zero padding, dilation 1), ``nn.MaxPool2d`` and ``nn.AvgPool2d`` without padding,
and pointwise layers (ReLU and its relatives, Sigmoid, Tanh, Softplus, :class:`advlib.models.Normalize`,
``nn.Identity``), with at least one convolution; no layer before the Flatten may carry hooks (its calls are
skipped), and no global module hooks may be set. The model's own hooks run: a query is still a call of the
model, whose ``forward`` is swapped for the block (as :mod:`advlib.attacks.conv_gradient` swaps a layer's),
and so do the hooks of the layers from the Flatten on. Any other model, and any window too large to gain
(estimated multiply-adds more than half a full pass), gets the ordinary forward pass, and so does a model on
a GPU, where the window path's extra small operations cost more than the pass they save.

Measured on chapter 10's network (Wong and Kolter's, 28x28 input; 321 images; one core of the 2-core AMD
EPYC VM): the window path's convolutions, gathers and scatter take 2.2 ms and the dense layers after them
1.2 ms, against 11.3 ms for the full pass (whose larger buffers also fault fresh pages in on this machine).
The windows have side 1 to 4 for the last 90% of AutoAttack's 5,000 queries, and AutoAttack's Square on
that network's 321 images still standing took 25-26 s against 37 s with full passes (same images broken).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as module_hooks

from ..models import Normalize
from ..utils import model_device
from . import core

__all__ = ["GAIN", "WindowForward", "window_forward"]

POINTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Identity,
             Normalize)
GAIN = 0.5  # the window path is taken when its multiply-adds are at most this share of a full pass


class _Local(NamedTuple):
    """A layer that maps windows to windows: kernel, stride, padding (per axis, rows then columns)."""

    module: nn.Module
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]


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
    AutoAttack's Square took 7.5-8.1 s with it against 5.5-5.6 s without (420 images, 5,000 queries)."""
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
        if any(_hooked(m) for m in layer.modules()):
            return None
        if type(layer) is nn.Flatten:
            if not local or not any(type(item.module) is nn.Conv2d for item in local) \
                    or layer.start_dim != 1 or layer.end_dim != -1:
                return None
            return local, layers[i:]
        item = _local_layer(layer)
        if item is None:
            return None
        local.append(item)
    return None


class WindowForward:
    """The window path of one batch of running examples: the feature maps entering the first dense layer at
    each example's current point, updated as the attack moves, and the forward pass of a proposal that
    differs from the current point in one window (module docstring)."""

    def __init__(self, model: nn.Module, plan: tuple[list[_Local], list[nn.Module]]):
        self.model, (self.local, self.tail) = model, plan
        self.maps: torch.Tensor | None = None  # (n, C, H, W): the current points' maps
        self.pending = None  # (trial, corners, side) of the query being made
        self.trial_maps: torch.Tensor | None = None  # the last query's maps
        self.sizes: dict[tuple[int, int, int], _Geometry | None] = {}  # (height, width, side) -> the tables

    # --- the attack's side --------------------------------------------------------------------------------

    def start(self, current: torch.Tensor) -> None:
        """Compute the maps of the current points (one pass of the local layers)."""
        self.maps = self._local_full(current)

    def __call__(self, trial: torch.Tensor, corners: torch.Tensor, side: int) -> torch.Tensor:
        """The logits of ``trial``, which differs from the current points only in the side x side windows at
        ``corners`` (n, 2), by a call of the model (its hooks run)."""
        self.pending = (trial, corners, side)
        try:
            return self.model(trial)
        finally:
            self.pending = None

    def keep(self, keep: torch.Tensor) -> None:
        """The rows ``keep`` moved to the last query's point: their maps are its maps."""
        self.maps = core.keep_rows(keep, self.trial_maps, self.maps)

    def select(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (the examples still running)."""
        self.maps = self.maps[rows]

    # --- the model's side ---------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The swapped ``forward`` of the model: the window path for the pending query, else the full pass
        (the pending query's maps kept either way)."""
        if self.pending is None or x is not self.pending[0]:
            return nn.Sequential.forward(self.model, x)
        trial, corners, side = self.pending
        geometry = self._geometry(trial.shape, side, trial.device)
        maps = self._local_full(trial) if geometry is None else self._local_window(trial, corners, geometry)
        self.trial_maps = maps
        for layer in self.tail:
            maps = layer(maps)
        return maps

    def _local_full(self, x: torch.Tensor) -> torch.Tensor:
        for item in self.local:
            x = item.module(x)
        return x

    def _geometry(self, shape: torch.Size, side: int, device: torch.device) -> _Geometry | None:
        key = (shape[2], shape[3], side)
        if key not in self.sizes:
            self.sizes[key] = _window_geometry(self.local, (shape[2], shape[3]), side, device)
        return self.sizes[key]

    def _local_window(self, trial: torch.Tensor, corners: torch.Tensor, geometry: _Geometry) -> torch.Tensor:
        """The maps of ``trial``: the current maps with the window the change reaches recomputed from the
        patch of ``trial`` it depends on. Every index and mask is read from tables made per window size."""
        top, left = corners[:, 0], corners[:, 1]
        x = _gather(trial, geometry.patch_rows[top], geometry.patch_cols[left])
        for item, masks in zip(self.local, geometry.masks, strict=True):
            if type(item.module) is not nn.Conv2d:
                x = item.module(x)
                continue
            if masks is not None:  # positions outside the map are the convolution's zero padding
                x = x * masks[top * geometry.lefts + left].to(x.dtype)
            module = item.module
            x = F.conv2d(x, module.weight, module.bias, module.stride, 0, 1, module.groups)
        return _scatter(self.maps, x, geometry.window_rows[top], geometry.window_cols[left])


class _Geometry(NamedTuple):
    """Tables of the window path for one input size and window side, indexed by the window's top row (rows)
    or left column (columns): the input patch's coordinates, clamped to the image (what is read from outside
    only ever reaches positions outside a later map, which the padded convolution there masks); per local
    layer, the 0/1 masks of its input patch's positions inside its input map (convolutions with padding,
    else None), indexed by top * lefts + left; and the coordinates of the last map's window."""

    patch_rows: torch.Tensor
    patch_cols: torch.Tensor
    masks: list
    lefts: int
    window_rows: torch.Tensor
    window_cols: torch.Tensor


def _window_geometry(local: list[_Local], size: tuple[int, int], side: int,
                     device: torch.device) -> _Geometry | None:
    """The tables of the window path (:class:`_Geometry`) for inputs of ``size`` (H, W) and windows of
    ``side``, or None when its multiply-adds exceed ``GAIN`` times those of a full pass."""
    sizes, windows = [tuple(size)], [(min(side, size[0]), min(side, size[1]))]
    for item in local:  # each map's size, and the most rows/columns of it the window reaches
        sizes.append(tuple((sizes[-1][a] + 2 * item.padding[a] - item.kernel[a]) // item.stride[a] + 1
                           for a in (0, 1)))
        windows.append(tuple(min(sizes[-1][a], (windows[-1][a] + item.kernel[a] - 2) // item.stride[a] + 1)
                             for a in (0, 1)))
    patches = [windows[-1]]  # the patch of each map that the last window depends on, going back
    for item in reversed(local):
        patches.insert(0, tuple((patches[0][a] - 1) * item.stride[a] + item.kernel[a] for a in (0, 1)))
    full = part = 0
    for i, item in enumerate(local):  # multiply-adds per output position: k_h k_w C_in C_out / groups
        if type(item.module) is nn.Conv2d:
            per = math.prod(item.kernel) * item.module.in_channels * item.module.out_channels // item.module.groups
            full += per * math.prod(sizes[i + 1])
            part += per * math.prod(patches[i + 1])
    if part > GAIN * full:
        return None
    tables = []
    for a in (0, 1):  # rows, then columns: the same arithmetic per axis, for every corner the window can take
        origin = torch.arange(sizes[0][a] - windows[0][a] + 1)
        for item, (size_a, window) in zip(local, zip(sizes[1:], windows[1:], strict=True), strict=True):
            # the first output reached: ceil((o + p - k + 1) / s), kept where the whole window fits
            first = -torch.div(-(origin + item.padding[a] - item.kernel[a] + 1), item.stride[a], rounding_mode="floor")
            origin = first.clamp(0, size_a[a] - window[a])
        window_index = origin[:, None] + torch.arange(windows[-1][a])
        starts = [origin]  # each patch's first row: q -> q s - p, going back
        for item in reversed(local):
            starts.insert(0, starts[0] * item.stride[a] - item.padding[a])
        spans = [q[:, None] + torch.arange(patches[i][a]) for i, q in enumerate(starts)]
        masks = [((span >= 0) & (span < sizes[i][a])).float() for i, span in enumerate(spans)]
        patch_index = spans[0].clamp(0, sizes[0][a] - 1)
        tables.append((patch_index, masks, window_index))
    (rows, row_masks, window_rows), (cols, col_masks, window_cols) = tables
    # masks per corner (top, left), flattened as top * lefts + left: (corners, 1, P_h, P_w)
    masks = [(row_masks[i][:, None, :, None] * col_masks[i][None, :, None, :]).flatten(0, 1)[:, None].to(device)
             if type(item.module) is nn.Conv2d and item.padding != (0, 0) else None
             for i, item in enumerate(local)]
    return _Geometry(rows.to(device), cols.to(device), masks, len(cols), window_rows.to(device),
                     window_cols.to(device))


def _flat_index(rows: torch.Tensor, cols: torch.Tensor, width: int) -> torch.Tensor:
    """Per example, the flat pixel indices (n, P Q), row by row, of its rows (n, P) x cols (n, Q) in an image of
    width ``width``."""
    return (rows[:, :, None] * width + cols[:, None, :]).flatten(1)


def _gather(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Per example n, x[n, :, rows[n]][:, :, cols[n]]: rows (n, P), cols (n, Q) -> (n, C, P, Q)."""
    n, channels, _, width = x.shape
    index = _flat_index(rows, cols, width)
    patch = x.flatten(2).gather(2, index[:, None].expand(n, channels, -1))
    return patch.view(n, channels, rows.shape[1], cols.shape[1])


def _scatter(maps: torch.Tensor, window: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """A copy of ``maps`` with each example's ``window`` written at its ``rows`` x ``cols``."""
    n, channels, _, width = maps.shape
    index = _flat_index(rows, cols, width)
    out = maps.flatten(2).scatter(2, index[:, None].expand(n, channels, -1), window.flatten(2))
    return out.view_as(maps)


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
