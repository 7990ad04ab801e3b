"""The one contract every attack keeps (advlib.attacks.core, DESIGN.md), tested once over every attack.

Each attack runs at tiny settings on a small untrained network: the contract does not depend on the
attack succeeding. What is checked: the call convention (model, x, y by position, the rest by keyword,
``steps``), the arguments refused with a message that names the problem, the answers given without
running the algorithm (eps = 0, an empty batch), and the result (detached, in the box and the ball, on
x's device, inputs untouched, each module's mode restored, no parameter gradients).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advlib.attacks import apgd, apgd_t, cw_l0, cw_l2, cw_linf, fab, fgsm, lbfgs, nattack, one_pixel, pgd, square


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# name: (attack, tiny settings, the norm of its eps-ball or None)
ATTACKS = {
    "fgsm": (fgsm, dict(eps=0.1), "linf"),
    "pgd": (pgd, dict(eps=0.1, steps=3), "linf"),
    "pgd-l2": (pgd, dict(eps=1.0, steps=3, norm="l2"), "l2"),
    "lbfgs": (lbfgs, dict(search_steps=2, steps=4), None),
    "cw_l2": (cw_l2, dict(binary_steps=2, steps=8), None),
    "cw_linf": (cw_linf, dict(steps=8, tau_init=0.5, tau_min=0.2), None),
    "cw_l0": (cw_l0, dict(steps=8, shrink=0.5), None),
    "one_pixel": (one_pixel, dict(popsize=8, steps=2), None),
    "nattack": (nattack, dict(eps=0.1, popsize=8, steps=2), "linf"),
    "apgd": (apgd, dict(eps=0.1, steps=3), "linf"),
    "apgd-l2": (apgd, dict(eps=1.0, steps=3, norm="l2"), "l2"),
    "apgd-dlr": (apgd, dict(eps=0.1, steps=3, loss="dlr", restarts=2), "linf"),
    "apgd_t": (apgd_t, dict(eps=0.1, steps=3, targets=2), "linf"),
    "fab": (fab, dict(eps=0.3, steps=3, restarts=2), "linf"),
    "fab-l2": (fab, dict(steps=3, norm="l2", restarts=2), None),  # without eps: unbounded
    "square": (square, dict(eps=0.1, queries=20), "linf"),
    "square-l2": (square, dict(eps=1.0, queries=20, norm="l2"), "l2"),
}
RANDOM = {"pgd", "pgd-l2", "one_pixel", "nattack", "square", "square-l2", "fab", "fab-l2", "apgd", "apgd-l2",
          "apgd-dlr", "apgd_t"}  # the attacks that take a generator
NO_STEPS = {"fgsm", "square", "square-l2"}  # one step, or a budget of queries instead of steps
TRUE_LABELS = {"apgd_t"}  # AutoAttack's targeted attack: true labels in y and a number of targets, no targeted=
BOUNDED = sorted(name for name, (_, _, ball) in ATTACKS.items() if ball)


class Counting(nn.Module):
    """A small network that counts its forward passes and records the mode of every submodule it runs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Dropout(0.5), nn.Linear(12, 10))
        self.calls, self.modes = 0, set()

    def forward(self, x):
        self.calls += 1
        self.modes |= {module.training for module in self.modules()}
        return self.body(x)


def batch(n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 1, 4, 4, generator=seeded(1))
    y = torch.randint(0, 10, (n,), generator=seeded(2))
    return x, y


def run(name: str, model=None, x=None, y=None, **overrides):
    attack, kwargs, _ = ATTACKS[name]
    model = Counting() if model is None else model
    if x is None:
        x, y = batch()
    if name in RANDOM:
        kwargs = {**kwargs, "generator": seeded()}
    return attack(model, x, y, **{**kwargs, **overrides})


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_result_is_detached_in_the_box_and_ball_on_xs_device_and_inputs_untouched(name):
    model = Counting()
    model.train()
    model.body[3].eval()  # a model in mixed modes: each module's own mode must come back
    modes = [module.training for module in model.modules()]
    x, y = batch()
    x.requires_grad_(True)
    x_copy, y_copy = x.detach().clone(), y.clone()
    x_adv = run(name, model, x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert not x_adv.requires_grad and x_adv.grad_fn is None
    assert 0 <= x_adv.min() and x_adv.max() <= 1
    _, kwargs, ball = ATTACKS[name]
    if ball == "linf":
        assert (x_adv - x_copy).abs().max() <= kwargs["eps"] + 1e-6
    elif ball == "l2":
        assert (x_adv - x_copy).flatten(1).norm(dim=1).max() <= kwargs["eps"] + 1e-5
    assert torch.equal(x.detach(), x_copy) and torch.equal(y, y_copy) and x.grad is None
    assert model.calls > 0 and model.modes == {False}  # every module ran in eval mode
    assert [module.training for module in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", sorted(set(ATTACKS) - TRUE_LABELS))
def test_targeted_and_inside_no_grad(name):
    x, y = batch()
    with torch.no_grad():  # a caller's no_grad block must not break a gradient attack
        x_adv = run(name, x=x, y=(y + 1) % 10, targeted=True)
    assert x_adv.shape == x.shape and 0 <= x_adv.min() and x_adv.max() <= 1


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_the_generator_makes_it_repeat(name):
    assert torch.equal(run(name), run(name))


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_empty_batch_returns_at_once(name):
    model = Counting()
    x, y = batch()
    out = run(name, model, x[:0], y[:0])
    assert out.shape == x[:0].shape and model.calls == 0


@pytest.mark.parametrize("name", BOUNDED)
def test_eps_zero_returns_x_without_running(name):
    model = Counting()
    x, y = batch()
    out = run(name, model, x, y, eps=0.0)
    assert torch.equal(out, x) and out is not x and model.calls == 0


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_only_model_x_y_by_position(name):
    attack = ATTACKS[name][0]
    x, y = batch()
    with pytest.raises(TypeError, match="by keyword"):
        attack(Counting(), x, y, 0.1)
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['iters'\]"):
        run(name, iters=3)


def _bad_images(x):
    nan = x.clone()
    nan[1, 0, 2, 2] = float("nan")
    inf = x.clone()
    inf[0, 0, 0, 0] = float("inf")
    return {
        "NaN pixel": (nan, ValueError, "NaN or infinite"),
        "infinite pixel": (inf, ValueError, "NaN or infinite"),
        "above 1": (x * 2, ValueError, r"in \[0, 1\]"),
        "below 0": (x - 0.5, ValueError, r"in \[0, 1\]"),
        "not a batch": (x[0], ValueError, r"shaped \(N, C, H, W\)"),
        "integers": ((x * 255).to(torch.uint8), TypeError, "floating-point"),
        "half": (x.half(), TypeError, "half precision"),
        "float64 for a float32 model": (x.double(), TypeError, "float32 but the images are torch.float64"),
        "a list": (x.tolist(), TypeError, "floating-point tensor"),
    }


def _bad_labels(y):
    return {
        "column (N, 1)": (y[:, None], ValueError, r"1-D .* got shape \(5, 1\); use y.view\(-1\)"),
        "floats": (y.float(), TypeError, "integer class labels"),
        "one too few": (y[:-1], ValueError, "5 examples but y holds 4 labels"),
        "outside the classes": (y + 10, ValueError, r"labels in \[0, 10\) \(the model has 10 classes\)"),
        "negative": (y - 10, ValueError, ">= 0"),
    }


@pytest.mark.parametrize("case", sorted(_bad_images(batch()[0])))
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_bad_images_raise(name, case):
    x, y = batch()
    bad, error, match = _bad_images(x)[case]
    model = Counting()
    with pytest.raises(error, match=match):
        run(name, model, bad, y)
    assert model.calls == 0


@pytest.mark.parametrize("case", sorted(_bad_labels(batch()[1])))
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_bad_labels_raise(name, case):
    x, y = batch()
    bad, error, match = _bad_labels(y)[case]
    with pytest.raises(error, match=match):
        run(name, Counting(), x, bad)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_bad_models_raise(name):
    x, y = batch()
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        run(name, lambda z: z.flatten(1)[:, :10], x, y)
    with pytest.raises(TypeError, match=r"logits shaped \(N, K\)"):
        run(name, nn.Sequential(nn.Flatten(), nn.Linear(16, 10), nn.Flatten(0)), x, y)


@settings(max_examples=25, deadline=None)
@given(eps=st.one_of(st.floats(max_value=-1e-12, allow_infinity=True), st.just(math.inf), st.just(math.nan)))
def test_eps_that_is_negative_or_not_finite_raises(eps):
    for name in BOUNDED:
        with pytest.raises(ValueError, match="eps must"):
            run(name, eps=eps)


@settings(max_examples=15, deadline=None)
@given(eps=st.floats(min_value=1e-4, max_value=2.0))
def test_any_finite_eps_stays_in_the_ball(eps):
    x, y = batch()
    for name in ("fgsm", "pgd", "pgd-l2"):
        x_adv = run(name, x=x, y=y, eps=eps)
        assert torch.isfinite(x_adv).all() and 0 <= x_adv.min() and x_adv.max() <= 1
        size = (x_adv - x).abs().amax() if ATTACKS[name][2] == "linf" else (x_adv - x).flatten(1).norm(dim=1).max()
        assert size <= eps * (1 + 1e-5) + 1e-6


@pytest.mark.parametrize("steps, match", [(-1, "steps must be a whole number >= 0"), (2.5, "got 2.5"),
                                          (float("nan"), "got nan"), ("3", "steps must be a whole number")])
@pytest.mark.parametrize("name", sorted(set(ATTACKS) - NO_STEPS))
def test_bad_steps_raise(name, steps, match):
    with pytest.raises((TypeError, ValueError), match=match):
        run(name, steps=steps)


def test_whole_float_counts_run_as_ints_and_a_tensor_eps_as_a_float():
    x, y = batch()
    model = Counting()
    expected = pgd(model, x, y, eps=0.1, steps=3, generator=seeded())
    assert torch.equal(pgd(model, x, y, eps=torch.tensor(0.1), steps=3.0, generator=seeded()), expected)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_bad_generator_and_flags_raise(name):
    if name not in TRUE_LABELS:
        with pytest.raises(TypeError, match="targeted must be True or False"):
            run(name, targeted="yes")
    if name in RANDOM:
        with pytest.raises(TypeError, match="CPU torch.Generator"):
            run(name, generator=0)


def test_pgd_default_step_is_madrys_and_its_options_are_checked():
    """alpha defaults to 2.5 eps / steps (Madry et al.), so the call with it spelled out is the same attack."""
    x, y = batch()
    model = Counting()
    default = pgd(model, x, y, eps=0.1, steps=4, generator=seeded())
    spelled = pgd(model, x, y, eps=0.1, alpha=2.5 * 0.1 / 4, steps=4, generator=seeded())
    other = pgd(model, x, y, eps=0.1, alpha=0.1 / 4, steps=4, generator=seeded())
    assert torch.equal(default, spelled) and not torch.equal(default, other)
    with pytest.raises(ValueError, match="unknown norm 'l1'"):
        pgd(model, x, y, eps=0.1, norm="l1")
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        pgd(model, x, y, eps=0.1, loss="hinge")
    with pytest.raises(ValueError, match="restarts must be a whole number >= 1"):
        pgd(model, x, y, eps=0.1, restarts=0)
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        pgd(model, x, y, eps=0.1, alpha=math.inf)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_work_moves_to_the_models_device_and_back(name):
    model = Counting().cuda()
    x, y = batch()
    x_adv = run(name, model, x, y)
    assert x_adv.device == x.device and model.calls > 0
    on_gpu = run(name, model, x.cuda(), y.cuda())
    assert on_gpu.device.type == "cuda"
    if name in RANDOM:  # random numbers come from the CPU generator: the same on either device
        assert torch.allclose(on_gpu.cpu(), x_adv, atol=1e-4)
