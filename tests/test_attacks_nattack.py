"""NATTACK (Li, Li, Wang, Zhang and Gong 2019): natural evolution strategies on a Gaussian search
distribution, from the model's outputs alone.

It works on a model whose output carries no gradient, fools a good fraction of a small MLP's correct
answers, goes on to a margin of -kappa when asked for a confidence, keeps the contract (ball and box,
inputs unchanged, mode restored, bad input), and a batch equals its images attacked one by one under the
same seed; its counter-based Gaussians are standard normal.
Small populations and few iterations keep the file fast.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from advlib.attacks import core, nattack, pgd
from advlib.attacks.nattack import _gaussians

EPS = 0.1
N_IMAGES = 40


@pytest.fixture(scope="module")
def trained(attacked_images, one_thread):
    """The shared small MLP trained for 3 epochs and its first 40 test images with their labels (conftest)."""
    return attacked_images(N_IMAGES)


def predict(model, x) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class OutputsOnly(nn.Module):
    """The model behind a wall: its forward runs without autograd and hands back detached logits, so no
    gradient can reach the input (a black box, or a defense whose gradient is useless)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        with torch.no_grad():
            return self.model(x).detach()


def test_fools_a_model_without_gradients_and_stays_in_ball_and_box(trained):
    model, x, y = trained
    wall = OutputsOnly(model)
    with pytest.raises(RuntimeError, match="does not require grad"):  # a gradient attack cannot even start
        pgd(wall, x, y, eps=EPS, alpha=EPS / 4, steps=2)
    x_before, y_before = x.clone(), y.clone()
    x_adv = nattack(wall, x, y, eps=EPS, popsize=40, steps=80, generator=seeded())
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    assert not x_adv.requires_grad and x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    right = predict(model, x) == y
    fooled = (predict(model, x_adv) != y) & right
    assert fooled.sum() >= 0.5 * right.sum(), (int(fooled.sum()), int(right.sum()))


def test_early_stop_and_iters_zero(trained):
    """steps = 0 looks only at the initial mean. An image already misclassified at the first candidate stops
    there: the candidate at mu ~ 0 is the image with each pixel moved towards 1/2 by about eps/2 (the tanh
    space's shrink). Its label is chosen to be neither the class of the image nor that of the candidate, so
    that the case is exercised whatever the trained model answers (and the test asserts that it is)."""
    model, x, y = trained
    wall = OutputsOnly(model)
    nattack(wall, x[:4], y[:4], eps=EPS, popsize=10, steps=0, generator=seeded())
    assert wall.calls == 1  # only the candidates at the initial mean
    image = x[:1]
    start = 0.5 + (image - 0.5) * (1 - EPS)
    taken = {int(predict(model, image)), int(predict(model, start))}
    label = torch.tensor([min(set(range(10)) - taken)])
    assert predict(model, image) != label and predict(model, start) != label  # wrong already, and at the start
    wall.calls = 0
    out = nattack(wall, image, label, eps=EPS, popsize=10, steps=50, generator=seeded())
    assert wall.calls == 1 and (out - start).abs().max() < 5e-3
    # the same image under its true label (classified correctly) is not stopped at once
    assert predict(model, image) == y[:1] and predict(model, start) == y[:1]
    wall.calls = 0
    nattack(wall, image, y[:1], eps=EPS, popsize=10, steps=3, generator=seeded())
    assert wall.calls > 1


def test_confidence_kappa_goes_past_the_first_success(trained):
    """With kappa = 0 an image stops as soon as it is misclassified, barely past the boundary; with kappa = 2 it
    stops only at a margin of -2 or below (Carlini and Wagner's confidence), so its margins are far lower."""
    model, x, y = trained
    margins = {}
    for kappa in (0.0, 2.0):
        x_adv = nattack(model, x, y, eps=EPS, popsize=40, steps=80, kappa=kappa, generator=seeded())
        assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
        with torch.no_grad():
            logits = model(x_adv)
        fooled = (logits.argmax(1) != y) & (predict(model, x) == y)
        margins[kappa] = core.margin(logits, y, kappa=float("inf"))[fooled]
        assert len(margins[kappa]) >= 10
    assert margins[0.0].median() > -0.5, margins[0.0]  # stopped just past the boundary
    # with the confidence, many reach -2 within the 80 iterations, and the typical margin is far lower
    assert (margins[2.0] <= -2.0 + 1e-5).float().mean() >= 0.4, margins[2.0]
    assert margins[2.0].median() < margins[0.0].median() - 1.0, margins


def test_targeted_reaches_targets_sometimes(trained):
    model, x, y = trained
    target = (y + 1) % 10
    x_adv = nattack(model, x[:20], target[:20], eps=0.3, popsize=40, steps=80, targeted=True, generator=seeded())
    assert (x_adv - x[:20]).abs().max() <= 0.3 + 1e-6
    assert (predict(model, x_adv) == target[:20]).float().mean() >= 0.3


def test_batch_equals_one_by_one_under_the_same_seed(trained):
    model, x, y = trained
    model64 = copy.deepcopy(model).double()
    x64 = x[:6].double()
    whole = nattack(model64, x64, y[:6], eps=EPS, popsize=12, steps=15, generator=seeded(7), chunk=30)
    g = seeded(7)
    pieces = torch.cat([nattack(model64, x64[i:i + 1], y[i:i + 1], eps=EPS, popsize=12, steps=15, generator=g)
                        for i in range(6)])
    assert torch.allclose(whole, pieces, atol=1e-10)
    again = nattack(model64, x64, y[:6], eps=EPS, popsize=12, steps=15, generator=seeded(7), chunk=5)
    assert torch.allclose(whole, again, atol=1e-10)  # the chunk does not change the result


def test_mode_restored_and_model_untouched(trained):
    model, x, y = trained
    model = copy.deepcopy(model).train()
    state = copy.deepcopy(model.state_dict())
    nattack(model, x[:3], y[:3], eps=EPS, popsize=8, steps=3, generator=seeded())
    assert model.training and all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("bad, error, match", [
    ({"eps": -0.1}, ValueError, r"eps must lie in \[0, inf\)"),
    ({"popsize": 1}, ValueError, "popsize must be a whole number >= 2"),
    ({"popsize": 2.5}, ValueError, "popsize must be a whole number >= 2, got 2.5"),
    ({"sigma": 0.0}, ValueError, r"sigma must lie in \(0, inf\)"),
    ({"lr": -1.0}, ValueError, r"lr must lie in \(0, inf\)"),
    ({"steps": -1}, ValueError, "steps must be a whole number >= 0"),
    ({"chunk": 0}, ValueError, "chunk must be a whole number >= 1"),
    ({"generator": "seed"}, TypeError, "generator must be None or a CPU torch.Generator"),
    ({"kappa": -1.0}, ValueError, r"kappa must lie in \[0, inf\)"),
    ({"kappa": float("inf")}, ValueError, "kappa must be a finite number"),
])
def test_bad_arguments_raise(trained, bad, error, match):
    model, x, y = trained
    kwargs = {"eps": EPS, **bad}
    with pytest.raises(error, match=match):
        nattack(model, x[:2], y[:2], **kwargs)


def test_labels_outside_the_classes_raise_instead_of_counting_as_fooled(trained):
    """Labels the model does not have once made every image count as fooled; now they are refused."""
    model, x, y = trained
    with pytest.raises(ValueError, match=r"labels in \[0, 10\)"):
        nattack(model, x[:2], y[:2] + 10, eps=EPS, popsize=8, steps=2, generator=seeded())


def test_gaussians_are_standard_normal_and_depend_only_on_their_counter():
    seeds = torch.tensor([1, 2, 3], dtype=torch.long).repeat_interleave(200)
    slots = torch.arange(200).repeat(3)
    z = _gaussians(seeds, 5, slots, 101)
    assert z.shape == (600, 101) and abs(z.mean().item()) < 0.02 and abs(z.std().item() - 1) < 0.02
    assert torch.equal(_gaussians(seeds[250:251], 5, slots[250:251], 101), z[250:251])
    assert not torch.equal(_gaussians(seeds, 6, slots, 101), z)


def test_gaussians_are_box_muller_on_the_hashed_counters():
    """Row r, component m of :func:`_gaussians` from its definition, in plain Python: the hash chain of
    (seed, iteration, slot, component), its top 24 bits as u = (bits + 1/2) / 2^24, then Box-Muller."""
    import math

    from advlib.attacks.one_pixel import _mix

    def hashed(*keys):
        v = torch.tensor([keys[0] ^ 0x9E3779B9])
        for key in keys[1:]:
            v = _mix(v) ^ key
        return _mix(v).item()

    seeds, slots, d = torch.tensor([7, 2**32 - 5]), torch.tensor([0, 3]), 9
    z = _gaussians(seeds, 4, slots, d, torch.float64)
    half = (d + 1) // 2
    for r in range(2):
        for m in range(d):
            first = m if m < half else m - half
            u, v = ((hashed(int(seeds[r]), 4, int(slots[r]), c) >> 8) / 2**24 + 0.5 / 2**24
                    for c in (first, first + half))
            trig = math.cos if m < half else math.sin
            assert z[r, m].item() == pytest.approx(math.sqrt(-2 * math.log(u)) * trig(2 * math.pi * v), abs=1e-12)
