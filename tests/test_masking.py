"""Obfuscated gradients (Athalye, Carlini and Wagner 2018): the gradient-masking defenses, BPDA and EOT,
and the gradient-masking diagnostics.

The defenses' transforms (quantization's gradient is exactly zero; random resizing and padding draws anew
per call), BPDA's backward pass (the stand-in's gradient), EOT's gradient (the mean of the draws'), PGD
failing on input quantization while PGD through BPDA breaks it, and the diagnostics flagging the masked
model while passing the undefended one, on a small MLP trained here in seconds.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlib import evaluate
from advlib.attacks import bpda, eot, nattack, pgd
from advlib.defenses import InputQuantization, RandomResizePad, quantize

EPS = 0.1
N_ATTACK = 60


@pytest.fixture(scope="module")
def trained(attacked_images, one_thread):
    """The shared small MLP trained for 3 epochs and its first 60 test images with their labels (conftest)."""
    return attacked_images(N_ATTACK)


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def input_grad(model, x, y) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return grad


# --- the defenses ---------------------------------------------------------------------------------

def test_quantize_maps_to_the_levels_and_its_gradient_is_exactly_zero(trained):
    model, x, y = trained
    q = quantize(x, 16)
    assert torch.equal(q, torch.round(x * 15) / 15) and (q - x).abs().max() <= 1 / 30 + 1e-6
    defense = InputQuantization(model, levels=16)
    grad = input_grad(defense, x, y)
    assert torch.count_nonzero(grad) == 0
    assert torch.count_nonzero(input_grad(model, x, y)) > 0  # the undefended model has a gradient
    assert accuracy(defense, x, y) >= accuracy(model, x, y) - 0.05  # and the defense costs little accuracy
    for bad in (1, 2.5, True):
        with pytest.raises(ValueError, match="levels"):
            InputQuantization(model, levels=bad)


def test_random_resize_pad_draws_anew_per_call_and_repeats_under_a_seed(trained):
    model, x, _ = trained
    defense = RandomResizePad(model, min_scale=0.7, generator=seeded(0))
    first, second = defense.transform(x[:8]), defense.transform(x[:8])
    assert first.shape == x[:8].shape and not torch.equal(first, second)
    assert first.min() >= 0 and first.max() <= 1
    assert torch.equal(RandomResizePad(model, 0.7, generator=seeded(0)).transform(x[:8]), first)
    # scale 1 leaves the image in place: the transform is the identity
    assert torch.allclose(RandomResizePad(model, min_scale=1.0).transform(x[:8]), x[:8], atol=1e-5)
    # the shrunk image is surrounded by zeros: the border of a strongly shrunk image is empty
    small = RandomResizePad(model, min_scale=0.5, generator=seeded(1)).transform(torch.ones(4, 1, 28, 28))
    assert small.sum() < 0.95 * 4 * 28 * 28
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="min_scale"):
            RandomResizePad(model, min_scale=bad)


# --- BPDA and EOT ---------------------------------------------------------------------------------

def test_bpda_forward_is_the_transform_and_backward_the_identity(trained):
    model, x, y = trained
    defense = InputQuantization(model)
    attacked = nn.Sequential(bpda(defense.transform), model)
    with torch.no_grad():
        assert torch.equal(attacked(x), defense(x))
    assert torch.equal(attacked(x.clone().requires_grad_(True)).detach(), defense(x))  # also on the autograd path
    # the gradient with respect to x is the model's gradient at the transformed input
    assert torch.allclose(input_grad(attacked, x, y), input_grad(model, defense.transform(x), y), atol=1e-7)


def test_bpda_backward_is_the_approximations_gradient(trained):
    model, x, y = trained
    x = x[:10]
    attacked = nn.Sequential(bpda(partial(quantize, levels=8), approximation=torch.sin), model)
    upstream = input_grad(model, quantize(x, 8), y[:10])
    assert torch.allclose(input_grad(attacked, x, y[:10]), torch.cos(x) * upstream, atol=1e-7)
    with pytest.raises(TypeError, match="transform must be callable, got str"):
        bpda("not a transform")


class RandomScale(nn.Module):
    """A randomized defense with a known family of transforms: model(s x), s ~ U[0.5, 1.5] per row."""

    def __init__(self, model, generator):
        super().__init__()
        self.model, self.generator = model, generator

    def forward(self, x):
        s = 0.5 + torch.rand(len(x), generator=self.generator, dtype=x.dtype)
        return self.model(x * s.view(-1, 1, 1, 1))


def test_eot_gradient_is_the_mean_of_the_draws_gradients(trained):
    model, x, y = trained
    x, y, k = x[:6], y[:6], 5
    wrapped = eot(RandomScale(model, seeded(3)), samples=k)
    v = torch.randn(len(x), 10, generator=seeded(4))
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((wrapped(xr) * v).sum(), xr)
    # the same draws, one copy of the batch at a time: EOT stacks copy j as rows j n ... (j + 1) n - 1
    scales = 0.5 + torch.rand(k * len(x), generator=seeded(3)).view(k, len(x))
    per_draw = []
    for s in scales:
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad((model(xr * s.view(-1, 1, 1, 1)) * v).sum(), xr)
        per_draw.append(g)
    assert torch.allclose(grad, torch.stack(per_draw).mean(0), atol=1e-7)
    # the outputs: mean logits, or the log of the mean probabilities
    with torch.no_grad():
        logits = torch.stack([model(x * s.view(-1, 1, 1, 1)) for s in scales])
        assert torch.allclose(eot(RandomScale(model, seeded(3)), k)(x), logits.mean(0), atol=1e-6)
        probs = eot(RandomScale(model, seeded(3)), k, average="probs")(x)
        assert torch.allclose(probs.exp(), logits.softmax(-1).mean(0), atol=1e-6)
    for bad, match in (({"samples": 0}, "samples must be a whole number >= 1"), ({"average": "median"},
                                                                                 "unknown average 'median'")):
        with pytest.raises(ValueError, match=match):
            eot(model, **bad)


# --- attacking the defenses ------------------------------------------------------------------------

def test_pgd_fails_on_quantization_and_bpda_breaks_it(trained):
    model, x, y = trained
    defense = InputQuantization(model)
    attack = partial(pgd, eps=EPS, alpha=EPS / 8, steps=20)
    plain = accuracy(model, attack(model, x, y, generator=seeded()), y)
    masked = accuracy(defense, attack(defense, x, y, generator=seeded()), y)
    through = nn.Sequential(bpda(defense.transform), model)
    broken = accuracy(defense, attack(through, x, y, generator=seeded()), y)
    clean = accuracy(defense, x, y)
    assert masked >= 0.85 * clean, (masked, clean)  # the gradient is zero: PGD goes nowhere
    assert broken <= plain + 0.05 and broken < masked - 0.3, (broken, plain, masked)  # as weak as without


def test_pgd_through_eot_is_at_least_as_strong_on_random_resize_pad(trained):
    model, x, y = trained
    defense = RandomResizePad(model, min_scale=0.8, generator=seeded(5))
    x_plain = pgd(defense, x, y, eps=EPS, alpha=EPS / 8, steps=10, generator=seeded())
    x_eot = pgd(eot(defense, samples=8), x, y, eps=EPS, alpha=EPS / 8, steps=10, generator=seeded())
    # judged by the expected vote over many draws, so the defense's own noise does not decide
    judge = eot(defense, samples=32)
    assert accuracy(judge, x_eot, y) <= accuracy(judge, x_plain, y) + 0.02
    assert accuracy(judge, x_eot, y) < accuracy(judge, x, y) - 0.2


# --- the diagnostics -------------------------------------------------------------------------------

def test_masking_checks_flag_quantization_and_pass_the_undefended_model(trained):
    model, x, y = trained
    black_box = partial(nattack, eps=EPS, popsize=30, steps=60, generator=seeded())
    checks = partial(evaluate.gradient_masking_checks, eps=EPS, steps=10, black_box=black_box)
    undefended = checks(model, x, y)
    assert not undefended.masked, undefended
    assert undefended.unbounded_success == 1.0 and undefended.zero_gradient == 0.0
    for eps, robust in undefended.pgd_robust.items():  # per example, and the accuracies their means
        assert robust.dtype == torch.bool and robust.shape == (len(x),)
        assert robust.float().mean().item() == undefended.pgd_accuracy[eps]
    assert undefended.black_box_robust.float().mean().item() == undefended.black_box_accuracy
    assert not any(undefended.flags[k] for k in ("randomized", "softmax", "dynamic")), undefended.flags
    masked = checks(InputQuantization(model), x, y)
    assert masked.masked and masked.flags["zero_gradient"] and masked.flags["unbounded"], masked
    assert masked.flags["black_box"] and masked.flags["eps_growth"], masked
    with pytest.raises(ValueError, match="eps"):
        evaluate.gradient_masking_checks(model, x, y, eps=1.0)
