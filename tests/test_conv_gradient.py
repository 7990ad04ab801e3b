"""The input gradient of a convolution by one forward convolution (advlib.attacks.conv_gradient): equal to
autograd's on many shapes, swapped in only where it applies (few input channels, a stride that divides the
kernel), restored afterwards, twice differentiable, working under autocast, entered by every attack of the
contract, and used by the attacks without changing what they return."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from advlib import models
from advlib.attacks import apgd, conv_gradient, fgsm, pgd
from advlib.attacks.conv_gradient import conv_input_gradients

# (C_in, C_out, kernel, stride, padding, (H, W)): square and rectangular kernels and strides, kernels that
# the stride does not divide, strides larger than the kernel, padding beyond the kernel, inputs the windows
# do not cover to the end, inputs no larger than the kernel, and wider layers (not swapped, computed directly)
SHAPES = [(c_in, 3, k, s, p, size)
          for c_in, k, s, p, size in itertools.product((1, 4, 8), (1, 2, 3, 4, 5), (1, 2, 3), (0, 1, 2),
                                                        ((8, 8), (9, 7)))
          if p < k] + [(2, 3, (3, 2), (2, 1), (1, 0), (9, 8)), (3, 2, (2, 5), (1, 3), (0, 2), (7, 10)),
                       (4, 3, (4, 2), (2, 2), (1, 0), (8, 9)), (8, 3, (2, 6), (2, 3), (0, 1), (6, 12)),
                       (1, 2, 2, 2, 3, (5, 6)), (2, 2, 4, 2, 0, (4, 4)), (16, 32, 4, 2, 1, (14, 14))]


def swapped_here(c_in, kernel, stride) -> bool:
    """Whether conv_input_gradients swaps a plain convolution of these settings."""
    pairs = list(zip(*(v if isinstance(v, tuple) else (v, v) for v in (kernel, stride)), strict=True))
    strided = any(s > 1 for _, s in pairs)
    return c_in <= conv_gradient.FEW_CHANNELS and strided and all(k % s == 0 for k, s in pairs)


def gradients(conv: nn.Conv2d, x: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, input gradient) of ``conv`` at ``x`` for a fixed random output gradient."""
    x = x.detach().requires_grad_(True)
    out = conv(x)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    (grad,) = torch.autograd.grad(out, x, grad_out)
    return out.detach(), grad


@pytest.mark.parametrize(("c_in", "c_out", "kernel", "stride", "padding", "size"), SHAPES)
def test_equals_autograd(c_in, c_out, kernel, stride, padding, size):
    torch.manual_seed(0)
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding).double()
    x = torch.randn(3, c_in, *size, dtype=torch.double)
    out, expected = gradients(conv, x)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(0), dtype=out.dtype)
    phases = conv_gradient.phase_kernel(conv.weight.detach(), conv.stride)
    direct = conv_gradient.conv_transpose_gradient(grad_out, phases, conv.stride, conv.padding, tuple(size))
    torch.testing.assert_close(direct, expected, rtol=0, atol=1e-12)
    with conv_input_gradients(conv):
        assert ("forward" in conv.__dict__) == swapped_here(c_in, kernel, stride)
        swapped_out, grad = gradients(conv, x)
    assert torch.equal(swapped_out, out)
    assert grad.shape == x.shape and grad.is_contiguous()
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)


def test_network_gradient_in_float32():
    """Chapter 10's network (two strided convolutions, ReLUs, linear layers) in float32."""
    torch.manual_seed(0)
    model = models.wong_kolter_cnn().eval()
    x = torch.rand(20, 1, 28, 28)
    _, expected = gradients(model, x)
    with conv_input_gradients(model):
        _, grad = gradients(model, x)
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6)


def test_batch_of_one_and_channels_last_input():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 4, stride=2, padding=1).double()
    for x in (torch.randn(1, 3, 10, 10, dtype=torch.double),
              torch.randn(4, 3, 10, 10, dtype=torch.double).contiguous(memory_format=torch.channels_last)):
        _, expected = gradients(conv, x)
        with conv_input_gradients(conv):
            assert "forward" in conv.__dict__
            _, grad = gradients(conv, x)
        torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)


def test_swaps_only_where_it_pays_and_restores_them():
    class Custom(nn.Conv2d):
        pass

    plain = nn.Conv2d(1, 2, 4, stride=2)
    skipped = [nn.Conv2d(2, 2, 3),  # stride 1
               nn.Conv2d(2, 2, 3, stride=2),  # the stride does not divide the kernel
               nn.Conv2d(8, 2, 4, stride=2),  # too many input channels
               nn.Conv2d(2, 2, 4, stride=2, groups=2), nn.Conv2d(2, 2, 4, stride=2, dilation=2),
               nn.Conv2d(2, 2, 4, stride=2, padding=1, padding_mode="reflect"), Custom(2, 2, 4, stride=2)]
    model = nn.Sequential(plain, *skipped)
    with conv_input_gradients(model):
        assert "forward" in plain.__dict__
        assert all("forward" not in module.__dict__ for module in skipped)
    assert all("forward" not in module.__dict__ for module in model.modules())


def test_restored_after_an_error():
    conv = nn.Conv2d(1, 2, 4, stride=2)
    with pytest.raises(RuntimeError, match="boom"), conv_input_gradients(conv):
        assert "forward" in conv.__dict__
        raise RuntimeError("boom")
    assert "forward" not in conv.__dict__


def test_weights_get_no_gradient_and_forward_only_passes_are_the_class_s():
    conv = nn.Conv2d(1, 2, 4, stride=2)
    x = torch.rand(2, 1, 9, 9)
    with conv_input_gradients(conv):
        conv(x.requires_grad_(True)).sum().backward()
        with torch.no_grad():
            out = conv(x)
    assert conv.weight.grad is None and conv.bias.grad is None
    assert torch.equal(out, conv(x).detach())


def test_twice_differentiable():
    """The backward is differentiable: gradgradcheck through a swapped layer followed by a nonlinearity."""
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 4, stride=2, padding=1).double()
    x = torch.randn(2, 2, 6, 6, dtype=torch.double, requires_grad=True)
    with conv_input_gradients(conv):
        assert torch.autograd.gradcheck(lambda v: conv(v).tanh(), (x,))
        assert torch.autograd.gradgradcheck(lambda v: conv(v).tanh(), (x,))


def test_an_attack_on_a_model_under_autocast():
    """A model computing in bfloat16 under autocast hands the backward a bfloat16 gradient: it still works."""
    class Autocast(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = models.wong_kolter_cnn()

        def forward(self, x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.net(x).float()

    torch.manual_seed(0)
    model = Autocast().eval()
    x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    x_adv = fgsm(model, x, y, eps=0.1)
    assert (x_adv - x).abs().amax() <= 0.1 + 1e-6 and (x_adv != x).any()


def test_every_attack_of_the_contract_runs_inside_the_swap():
    torch.manual_seed(0)
    model = models.wong_kolter_cnn().eval()
    first = next(module for module in model.modules() if isinstance(module, nn.Conv2d))
    seen = []
    first.register_forward_pre_hook(lambda module, inputs: seen.append("forward" in module.__dict__))
    x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    fgsm(model, x, y, eps=0.1)
    assert seen and all(seen)
    assert "forward" not in first.__dict__


@pytest.mark.parametrize("attack", ["pgd", "apgd"])
def test_attacks_return_what_autograd_gives(attack, monkeypatch):
    """An attack through the swapped layers returns the images it returns with autograd's own gradient (up to
    float rounding, which can flip a sign step at a tie: compared to 1e-4 on all but a few pixels)."""
    torch.manual_seed(0)
    model = models.wong_kolter_cnn().eval()
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    run = {"pgd": lambda: pgd(model, x, y, eps=0.1, alpha=0.02, steps=10, generator=torch.Generator().manual_seed(0)),
           "apgd": lambda: apgd(model, x, y, eps=0.1, steps=10, generator=torch.Generator().manual_seed(0))}[attack]
    swapped = run()
    monkeypatch.setattr(conv_gradient, "_swappable", lambda module: False)
    plain = run()
    assert ((swapped - plain).abs() > 1e-4).float().mean() < 0.01
