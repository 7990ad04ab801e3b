"""The input gradient of an image's first convolution computed by a forward convolution, for attacks on
the CPU.

An attack needs d loss / d x, and for a convolution layer y = conv(x, W, stride s, padding p) that is the
transposed convolution of the output gradient g. On the CPU, oneDNN's backward-data kernel for a strided
convolution with few input channels (an image's first layer: 1, 3 or 4 channels) is several times slower
than its forward kernel: 20 ms against 1.7 ms for the first layer of chapter 10's network (1 to 16 channels,
4x4, stride 2; 495 images, one AMD EPYC core), and an attack spends most of its time in backward passes.

The polyphase form (the "sub-pixel" view of a transposed convolution) computes the same gradient with one
forward convolution. Write an input position as a = s m + r with phase r in {0, ..., s - 1}; the taps
u of the kernel that reach it are u = r + s t, so

    dx_pad[c, s m + r, s m' + r'] = sum_{o, t, t'} g[o, m - t, m' - t'] W[o, c, r + s t, r' + s t'],

a full correlation of g with the kernel's phase (r, r') flipped, T = ceil(k / s) taps per axis (the kernel
padded with zero taps to s T). All s^2 phases are output channels of one ``conv2d`` (C_in s^2 of them, from
C_out), ``pixel_shuffle`` interleaves them back into the image grid, and cropping the padding p gives dx.
Where the stride divides the kernel the products are the forward pass's (k^2 C_in C_out per output
position); otherwise (s T / k)^2 times as many, against zero taps. The result equals autograd's up to
rounding (tests compare them on many shapes).

Where it pays: measured on one core, the swap took the first layer's input gradient from 20 ms to 6 ms and a
forward and backward pass of chapter 10's network from 72 to 56 microseconds an image (144 images a pass),
but made wider layers slower (16 to 32 channels: 0.9 to 1.4 times autograd's time with the batch; 64 to 128
channels, 3x3, stride 2: 1.35 times; 1x1, stride 2: 1.7 times). So :func:`conv_input_gradients` swaps it
in, for the block, only on a plain ``nn.Conv2d`` on the CPU with at most ``FEW_CHANNELS`` input channels, a
stride other than 1 that divides the kernel, groups 1, dilation 1 and zero padding given as numbers; every
attack built with :func:`advlib.attacks.core.attack` runs inside it. Only the input gradient flows through
a swapped layer: its weights get none (no attack differentiates with respect to them; a model that adapts
its own first-layer weights by gradient inside its forward would not see that gradient during an attack),
and the layer is restored afterwards. Double backward through it works (the backward is differentiable).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FEW_CHANNELS", "conv_input_gradients", "conv_transpose_gradient", "phase_kernel"]

FEW_CHANNELS = 4  # the most input channels of a swapped convolution (an image's: grey, RGB, RGBA)


def phase_kernel(weight: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """The kernel of the polyphase convolution: (C_out, C_in, kh, kw) -> (C_in s_h s_w, C_out, T_h, T_w), output
    channel c s_h s_w + r s_w + r' holding phase (r, r') of input channel c, flipped (module docstring)."""
    c_out, c_in, kh, kw = weight.shape
    sh, sw = stride
    th, tw = -(-kh // sh), -(-kw // sw)
    padded = F.pad(weight, (0, sw * tw - kw, 0, sh * th - kh))  # zero taps up to s T
    phases = padded.view(c_out, c_in, th, sh, tw, sw).permute(1, 3, 5, 0, 2, 4).flip(-1, -2)
    return phases.reshape(c_in * sh * sw, c_out, th, tw).contiguous()


def conv_transpose_gradient(grad: torch.Tensor, kernel: torch.Tensor, stride: tuple[int, int],
                            padding: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """d loss / d x of ``conv2d(x, W, stride, padding)`` from the output gradient ``grad`` and
    ``kernel = phase_kernel(W, stride)``, for inputs of spatial ``size`` (H, W)."""
    (sh, sw), (ph, pw), (height, width) = stride, padding, size
    th, tw = kernel.shape[-2:]
    phases = F.conv2d(grad, kernel, padding=(th - 1, tw - 1))
    n, _, rows, cols = phases.shape
    c_in = kernel.shape[0] // (sh * sw)
    # interleave the phases: channel (c, r, r') at (m, m') goes to (s_h m + r, s_w m' + r')
    if sh == sw:
        full = F.pixel_shuffle(phases, sh)
    else:
        full = phases.unflatten(1, (c_in, sh, sw)).permute(0, 1, 4, 2, 5, 3).reshape(n, c_in, rows * sh, cols * sw)
    # positions past the last window (where the grid ends before the padded input) get no gradient
    full = F.pad(full, (0, max(0, width + 2 * pw - full.shape[-1]), 0, max(0, height + 2 * ph - full.shape[-2])))
    return full[..., ph:ph + height, pw:pw + width].contiguous(memory_format=torch.contiguous_format)


class _Conv2dInputGradient(torch.autograd.Function):
    """conv2d forward as usual; backward gives the input gradient by :func:`conv_transpose_gradient` and no
    gradient to the weights (passed in detached). The backward is made of differentiable operations, linear
    in the output gradient, so a second backward pass through it works."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        ctx.stride, ctx.padding, ctx.size = stride, padding, tuple(x.shape[-2:])
        ctx.save_for_backward(weight)
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        kernel = phase_kernel(weight.to(grad.dtype), ctx.stride)  # under autocast the gradient may be lower
        dx = conv_transpose_gradient(grad, kernel, ctx.stride, ctx.padding, ctx.size)
        return dx, None, None, None, None


def _swappable(module: nn.Module) -> bool:
    """A plain ``nn.Conv2d`` on the CPU whose forward is the class's, with at most ``FEW_CHANNELS`` input
    channels, a stride other than (1, 1) that divides the kernel, groups 1, dilation 1 and zero padding given
    as numbers (not "same"/"valid"); the module docstring says why. Stride 1 is left to autograd too: its
    backward kernel is not slow, and the swap made ``advlib.models.small_cnn`` (3x3, stride 1) 15% slower."""
    if type(module) is not nn.Conv2d:
        return False
    divides = all(k % s == 0 for k, s in zip(module.kernel_size, module.stride, strict=True))
    return ("forward" not in module.__dict__ and module.groups == 1 and module.stride != (1, 1) and divides
            and module.in_channels <= FEW_CHANNELS
            and module.dilation == (1, 1) and module.padding_mode == "zeros"
            and not isinstance(module.padding, str) and module.weight.device.type == "cpu")


def _forward(module: nn.Conv2d):
    """The swapped forward of ``module``: the polyphase input gradient when one is wanted, else the class's."""
    def forward(x: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and x.requires_grad) or x.ndim != 4:
            return nn.Conv2d.forward(module, x)
        bias = None if module.bias is None else module.bias.detach()
        return _Conv2dInputGradient.apply(x, module.weight.detach(), bias, module.stride, module.padding)
    forward.computes_conv2d = True  # the layer's values are conv2d's (advlib.attacks.window_forward reads this)
    return forward


@contextmanager
def conv_input_gradients(model: nn.Module):
    """For the block, every swappable ``nn.Conv2d`` of ``model`` (on the CPU, few input channels, a stride that
    divides the kernel: module docstring) computes its input gradient by one forward convolution and passes
    no gradient to its weights; restored afterwards, also after an error."""
    swapped = [module for module in model.modules() if _swappable(module)]
    for module in swapped:
        module.forward = _forward(module)
    try:
        yield model
    finally:
        for module in swapped:
            module.__dict__.pop("forward", None)
