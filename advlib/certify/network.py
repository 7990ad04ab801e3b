"""A ReLU network as the bound computations see it: a list of affine maps and ReLUs, and the input box.

Every bound in :mod:`advlib.certify` treats a model ``nn.Sequential`` of ``nn.Linear``, ``nn.Conv2d``,
``nn.ReLU``, ``nn.Flatten`` and :class:`advlib.models.Normalize` (nested ``nn.Sequential`` allowed) as

    z_1 = x,   z_{i+1} = A_i z_i + b_i  (an affine layer)   or   z_{i+1} = max(z_i, 0)  (a ReLU),

and needs four things from each affine layer A, b: A v and |A| v (forward, for interval bounds and for
propagating directions), Lambda A (the transposed map, for the backward pass of the linear relaxation)
and Lambda b (its bias term). :func:`layers` converts a model into such :class:`Affine` steps and
:data:`RELU` markers (a ``TypeError`` names any other layer); :func:`input_region` gives the input set
{x' : ||x' - x||_inf <= eps} intersected with a box as the interval centre +- radius.

Shapes: a batch of activations is (N, *shape); a batch of coefficient rows ("Lambda") is (B, S, *shape):
S rows (specifications, or neurons whose bounds are wanted) per example, B = N or B = 1 when the rows
are the same for every example (they broadcast).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import utils
from ..models import Normalize

__all__ = ["RELU", "Affine", "check_certify_inputs", "input_region", "layers"]

RELU = "relu"  # the marker of a ReLU in the list that :func:`layers` returns


class Affine:
    """One affine layer z -> A z + b, with the maps the bounds need (see the module docstring).

    ``in_shape`` and ``out_shape`` are the per-example shapes; ``mixes`` is False for a layer whose A is
    diagonal or a reshape (interval arithmetic through it is exact)."""

    mixes = True

    def __init__(self, layer: nn.Module, in_shape: torch.Size, out_shape: torch.Size):
        self.layer, self.in_shape, self.out_shape = layer, in_shape, out_shape

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """A z + b on a batch (N, *in_shape)."""
        return self.layer(z)

    def linear(self, v: torch.Tensor) -> torch.Tensor:
        """A v (no bias) on rows (B, S, *in_shape)."""
        raise NotImplementedError

    def abs_linear(self, r: torch.Tensor) -> torch.Tensor:
        """|A| r on a batch (N, *in_shape): the radius of the image of a box of radius r."""
        raise NotImplementedError

    def transpose(self, lam: torch.Tensor) -> torch.Tensor:
        """Lambda A on rows (B, S, *out_shape) -> (B, S, *in_shape)."""
        raise NotImplementedError

    def bias_term(self, lam: torch.Tensor) -> torch.Tensor | None:
        """Lambda b on rows (B, S, *out_shape) -> (B, S); None when b = 0."""
        return None


class _Linear(Affine):
    def linear(self, v):
        return F.linear(v, self.layer.weight)

    def abs_linear(self, r):
        return F.linear(r, self.layer.weight.abs())

    def transpose(self, lam):
        return lam @ self.layer.weight

    def bias_term(self, lam):
        return None if self.layer.bias is None else lam @ self.layer.bias


class _Conv2d(Affine):
    def __init__(self, layer: nn.Conv2d, in_shape, out_shape):
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str) and layer.padding != "valid":
            raise TypeError(f"unsupported layer {layer}: only zero padding given as numbers (or 'valid') is supported")
        super().__init__(layer, in_shape, out_shape)
        self.padding = (0, 0) if layer.padding == "valid" else layer.padding
        # conv_transpose2d needs the rows and columns that the forward convolution's stride dropped
        self.output_padding = tuple(
            size_in - ((size_out - 1) * stride - 2 * pad + dil * (k - 1) + 1)
            for size_in, size_out, stride, pad, dil, k in zip(
                in_shape[1:], out_shape[1:], layer.stride, self.padding, layer.dilation, layer.kernel_size,
                strict=True))

    def _conv(self, v, weight):
        layer = self.layer
        return F.conv2d(v, weight, None, layer.stride, self.padding, layer.dilation, layer.groups)

    def linear(self, v):
        return self._conv(v.flatten(0, 1), self.layer.weight).unflatten(0, v.shape[:2])

    def abs_linear(self, r):
        return self._conv(r, self.layer.weight.abs())

    def transpose(self, lam):
        layer = self.layer
        out = F.conv_transpose2d(lam.flatten(0, 1), layer.weight, None, layer.stride, self.padding,
                                 self.output_padding, layer.groups, layer.dilation)
        return out.unflatten(0, lam.shape[:2])

    def bias_term(self, lam):
        return None if self.layer.bias is None else lam.sum(dim=(-2, -1)) @ self.layer.bias


class _Normalize(Affine):
    """(x - mean) / std per channel: A = diag(1/std), b = -mean/std."""

    mixes = False

    def __init__(self, layer: Normalize, in_shape, out_shape):
        if len(in_shape) != 3:
            raise TypeError(f"Normalize must act on images (C, H, W), got inputs of shape {tuple(in_shape)}")
        super().__init__(layer, in_shape, out_shape)
        channels = in_shape[0]
        self.scale = (1 / layer.std).expand(1, channels, 1, 1).reshape(channels, 1, 1)
        self.bias = (-layer.mean / layer.std).expand(1, channels, 1, 1).reshape(channels)

    def linear(self, v):
        return v * self.scale

    def abs_linear(self, r):
        return r * self.scale

    def transpose(self, lam):
        return lam * self.scale

    def bias_term(self, lam):
        return lam.sum(dim=(-2, -1)) @ self.bias


class _Flatten(Affine):
    mixes = False

    def linear(self, v):
        return v.reshape(*v.shape[:2], *self.out_shape)

    def abs_linear(self, r):
        return r.reshape(len(r), *self.out_shape)

    def transpose(self, lam):
        return lam.reshape(*lam.shape[:2], *self.in_shape)


_KINDS = {nn.Linear: _Linear, nn.Conv2d: _Conv2d, Normalize: _Normalize, nn.Flatten: _Flatten}


def _leaves(model: nn.Module):
    for layer in model:
        if isinstance(layer, nn.Sequential):
            yield from _leaves(layer)
        else:
            yield layer


def layers(model: nn.Module, example: torch.Tensor) -> list:
    """The model as a list of :class:`Affine` steps and :data:`RELU` markers.

    ``example`` is one input (1, C, H, W), run through the layers to record their shapes. ``TypeError``
    for a model that is not an ``nn.Sequential`` or holds a layer other than ``nn.Linear``, ``nn.Conv2d``,
    ``nn.ReLU``, ``nn.Flatten`` (over all dimensions but the batch) and :class:`advlib.models.Normalize`.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"bounds need an nn.Sequential of Linear, Conv2d, ReLU, Flatten and Normalize layers, "
                        f"got {type(model).__name__}")
    steps: list = []
    z = example
    with torch.no_grad():
        for layer in _leaves(model):
            if isinstance(layer, nn.ReLU):
                steps.append(RELU)
                continue
            kind = _KINDS.get(type(layer))
            if kind is None:
                raise TypeError(f"unsupported layer {layer!r} ({type(layer).__name__}): bounds support nn.Linear, "
                                f"nn.Conv2d, nn.ReLU, nn.Flatten and advlib.models.Normalize")
            if kind is _Flatten and (layer.start_dim != 1 or layer.end_dim != -1):
                raise TypeError(f"unsupported layer {layer!r}: only Flatten(start_dim=1, end_dim=-1) is supported")
            if kind is _Linear and z.ndim != 2:
                raise TypeError(f"unsupported use of {layer!r}: bounds need a Linear layer to act on flat vectors "
                                f"(N, features), but it gets inputs shaped (N, {', '.join(map(str, z.shape[1:]))}); "
                                "put an nn.Flatten() before it")
            out = layer(z)
            steps.append(kind(layer, z.shape[1:], out.shape[1:]))
            z = out
    return steps


def input_region(x: torch.Tensor, eps: float, box: tuple[float, float] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(centre, radius) of the interval [max(x - eps, lo), min(x + eps, hi)] for ``box = (lo, hi)``, or of
    the plain ball [x - eps, x + eps] for ``box=None``."""
    if box is None:
        return x, torch.full_like(x, eps)
    lower, upper = (x - eps).clamp(min=box[0]), (x + eps).clamp(max=box[1])
    return (upper + lower) / 2, (upper - lower) / 2


def check_certify_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, eps: float,
                         box: tuple[float, float] | None) -> None:
    """``TypeError``/``ValueError`` unless ``model`` is an ``nn.Sequential``, ``x`` a batch of images in [0,1]
    (with labels ``y`` of the same length, when given), ``eps`` >= 0 and ``box`` None or (lo, hi) with lo < hi."""
    utils.check_model(model)
    utils.check_images(x)
    utils.check_model(model, x)
    if y is not None:
        utils.check_labels(y, len(x))
    utils.check_real("eps", eps)
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"bounds need an nn.Sequential of Linear, Conv2d, ReLU, Flatten and Normalize layers, "
                        f"got {type(model).__name__}")
    if box is not None and (len(box) != 2 or not box[0] < box[1]):
        raise ValueError(f"box must be None or a pair (lo, hi) with lo < hi, got {box!r}")
