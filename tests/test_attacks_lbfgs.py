"""Szegedy et al. 2013's box-constrained L-BFGS attack and the batched projected L-BFGS beneath it.

The optimiser alone: exact solutions of box-constrained quadratics (batched, a different problem per
example), agreement with scipy's L-BFGS-B, independence of the examples of a batch. The attack, on a
small MLP trained here in seconds: targets reached, output in the box, inputs unchanged, mode restored,
batch = one by one, the search over c beats a single c, small perturbations, bad input rejected.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import scipy.optimize
import torch

from advlib import models
from advlib.attacks import lbfgs
from advlib.attacks.lbfgs import minimize_box_lbfgs

N_ATTACK = 50


# --- the optimiser ------------------------------------------------------------------------------

def quadratic(A: torch.Tensor, p: torch.Tensor):
    """f_b(z) = 1/2 (z - p_b)' A_b (z - p_b) for a batch of problems; ``fun(z, index)`` as the optimiser wants."""
    def fun(z, index):
        diff = z - p[index]
        return 0.5 * torch.einsum("bi,bij,bj->b", diff, A[index], diff)
    return fun


def random_spd(batch: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """Well-conditioned random symmetric positive definite matrices, one per example."""
    M = torch.randn(batch, n, n, generator=generator, dtype=torch.float64)
    return M @ M.transpose(1, 2) / n + 0.5 * torch.eye(n, dtype=torch.float64)


def test_separable_quadratic_reaches_the_clipped_centre():
    """With A_b diagonal the box-constrained minimiser is clip(p_b, l_b, u_b), coordinate by coordinate;
    per-example bounds, centres and curvatures (spanning a factor 100) differ across the batch."""
    gen = torch.Generator().manual_seed(0)
    batch, n = 5, 40
    A = torch.diag_embed(10 ** (2 * torch.rand(batch, n, generator=gen, dtype=torch.float64) - 1))
    p = 3 * torch.randn(batch, n, generator=gen, dtype=torch.float64)
    lower = -torch.rand(batch, 1, generator=gen, dtype=torch.float64)
    upper = torch.rand(batch, n, generator=gen, dtype=torch.float64)
    x0 = torch.zeros(batch, n, dtype=torch.float64)
    result = minimize_box_lbfgs(quadratic(A, p), x0, lower, upper, max_iter=200, pgtol=1e-9, ftol=0.0)
    expected = torch.max(torch.min(p, upper), lower)
    assert (result.x - expected).abs().max() < 1e-4
    assert result.converged.all() and result.iterations.max() <= 60
    assert ((p < lower) | (p > upper)).float().mean() > 0.3  # many constraints are active


def test_coupled_quadratic_with_interior_minimum():
    """A full SPD A_b whose unconstrained minimiser p_b lies inside the box: the solution is p_b.
    The start is a box corner, so the first steps run along the bounds (active set, projection)."""
    gen = torch.Generator().manual_seed(1)
    batch, n = 4, 30
    A = random_spd(batch, n, gen)
    p = 0.8 * torch.rand(batch, n, generator=gen, dtype=torch.float64) + 0.1
    x0 = torch.ones(batch, n, dtype=torch.float64)
    result = minimize_box_lbfgs(quadratic(A, p), x0, 0.0, 1.0, max_iter=300, pgtol=1e-9, ftol=0.0)
    assert (result.x - p).abs().max() < 1e-4
    assert result.fun.max() < 1e-8
    assert result.converged.all() and result.iterations.max() <= 60  # quasi-Newton speed (about 40 here)


def logsumexp_problem(batch: int, n: int, seed: int):
    """f_b(z) = logsumexp(W_b z + v_b) + 1/2 z' A_b z - q_b'z: smooth, convex, nonquadratic."""
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(batch, 7, n, generator=gen, dtype=torch.float64)
    v = torch.randn(batch, 7, generator=gen, dtype=torch.float64)
    A = random_spd(batch, n, gen) * 0.2
    q = 2 * torch.randn(batch, n, generator=gen, dtype=torch.float64)

    def fun(z, index):
        smooth = torch.logsumexp(torch.einsum("bkn,bn->bk", W[index], z) + v[index], dim=1)
        return smooth + 0.5 * torch.einsum("bi,bij,bj->b", z, A[index], z) - (q[index] * z).sum(1)
    return fun


def test_agrees_with_scipy_lbfgsb():
    """Objective values within 1e-7 of scipy.optimize.minimize(method="L-BFGS-B") on each example of a
    small random convex problem with bounds [-0.5, 0.5], many of them active at the solution."""
    batch, n = 4, 20
    fun = logsumexp_problem(batch, n, seed=2)
    x0 = torch.zeros(batch, n, dtype=torch.float64)
    ours = minimize_box_lbfgs(fun, x0, -0.5, 0.5, max_iter=500, pgtol=1e-10, ftol=0.0)
    for b in range(batch):
        index = torch.tensor([b])

        def value_and_grad(z, index=index):
            zt = torch.tensor(z, dtype=torch.float64)[None].requires_grad_(True)
            value = fun(zt, index).sum()
            (grad,) = torch.autograd.grad(value, zt)
            return value.item(), grad[0].numpy()

        ref = scipy.optimize.minimize(value_and_grad, np.zeros(n), jac=True, method="L-BFGS-B",
                                      bounds=[(-0.5, 0.5)] * n, options={"ftol": 1e-15, "gtol": 1e-12})
        assert ours.fun[b].item() <= ref.fun + 1e-7
        assert abs(ours.fun[b].item() - ref.fun) < 1e-7
        assert np.abs(ours.x[b].numpy() - ref.x).max() < 1e-4
    assert (ours.x.abs() > 0.5 - 1e-12).float().mean() > 0.1  # the box matters in this problem


def test_examples_of_a_batch_are_independent():
    """Solving a batch gives each example what solving it alone gives, though the examples converge
    after different numbers of steps (their curvature histories have different lengths)."""
    batch, n = 5, 20
    fun = logsumexp_problem(batch, n, seed=3)
    x0 = torch.zeros(batch, n, dtype=torch.float64)
    together = minimize_box_lbfgs(fun, x0, -0.5, 0.5, max_iter=60)
    assert len(set(together.iterations.tolist())) > 1
    for b in range(batch):
        def alone_fun(z, index, b=b):
            return fun(z, index + b)
        alone = minimize_box_lbfgs(alone_fun, x0[b:b + 1], -0.5, 0.5, max_iter=60)
        assert torch.allclose(alone.x[0], together.x[b], atol=1e-10)
        assert alone.iterations.item() == together.iterations[b].item()


def test_optimiser_rejects_bad_arguments():
    fun = quadratic(torch.eye(3, dtype=torch.float64)[None], torch.zeros(1, 3, dtype=torch.float64))
    x0 = torch.zeros(1, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="every lower bound must be <= its upper bound"):
        minimize_box_lbfgs(fun, x0, 1.0, 0.0)
    with pytest.raises(ValueError, match="max_iter must be >= 0, history and max_backtracks >= 1; got 100, 0, 20"):
        minimize_box_lbfgs(fun, x0, history=0)
    with pytest.raises(ValueError, match=r"fun must return one value per example it is given, shape \(1,\); got \(\)"):
        minimize_box_lbfgs(lambda z, index: z.sum(), x0)


# --- the attack ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(small_mlp, one_thread):
    """The shared small MLP trained for 1 epoch (conftest), 50 test images, their labels, and random
    target labels other than the true ones."""
    model, x_test, y_test = small_mlp(1)
    x, y = x_test[:N_ATTACK], y_test[:N_ATTACK]
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.6
    target = (y + torch.randint(1, 10, y.shape, generator=torch.Generator().manual_seed(0))) % 10
    return model, x, y, target


@pytest.fixture(scope="module")
def attacked(trained):
    """The attack with its default settings on the 50 images, run once for the tests that read it."""
    model, x, _, target = trained
    return targeted(model, x, target)


def predictions(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def targeted(model, x, target, **kwargs):
    """The paper's targeted attack, and which examples it brought to their targets."""
    x_adv = lbfgs(model, x, target, targeted=True, **kwargs)
    return x_adv, predictions(model, x_adv) == target


def l2(a, b):
    return (a - b).flatten(1).norm(dim=1)


def test_reaches_the_targets(trained, attacked):
    model, x, _, target = trained
    x_adv, success = attacked
    assert success.float().mean() >= 0.95
    assert torch.equal(predictions(model, x_adv[~success]), predictions(model, x[~success]))  # misses: x itself


def test_output_is_a_detached_image_batch_in_the_box(trained, attacked):
    _, x, _, _ = trained
    x_adv, _ = attacked
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_perturbations_are_small(trained, attacked):
    """The median L2 distortion is well below the median distance between test images of different
    classes (the paper's claim: the adversarial images look like the originals)."""
    _, x, y, _ = trained
    x_adv, success = attacked
    distortion = l2(x_adv, x)[success].median()
    other = torch.roll(torch.arange(len(x)), 1)
    different = y != y[other]
    between = l2(x, x[other])[different].median()
    assert distortion < 0.4 * between
    assert distortion > 0  # something moved


def test_search_over_c_beats_a_single_c(trained, attacked):
    """Searching c per example finds smaller perturbations than one solve at the starting c."""
    model, x, _, target = trained
    x_adv, success = attacked
    x_one, success_one = targeted(model, x, target, search_steps=1)
    both = success & success_one
    assert both.float().mean() > 0.9
    assert l2(x_adv, x)[both].median() < 0.8 * l2(x_one, x)[both].median()
    assert (l2(x_adv, x)[both] <= l2(x_one, x)[both] + 1e-6).all()  # kept the smallest, per example


def test_keeps_each_examples_smallest_successful_solve(trained, monkeypatch):
    """Record every solve of the search over c: each example comes back as its successful solve of
    smallest ||r||_2 (x itself when none succeeded), and the success flag says whether one did.
    The last solve's perturbations are doubled, so that a later success is not always a smaller one."""
    model, x, _, target = trained
    module = importlib.import_module("advlib.attacks.lbfgs")
    solves = []

    def recording(fun, x0, *args, **kwargs):
        result = minimize_box_lbfgs(fun, x0, *args, **kwargs)
        if len(solves) == 3:
            result = result._replace(x=(x0 + 2 * (result.x - x0)).clamp(0, 1))
        solves.append(result.x.clone())
        return result

    monkeypatch.setattr(module, "minimize_box_lbfgs", recording)
    xs, ts = x[:12], target[:12]
    x_adv, success = targeted(model, xs, ts, search_steps=4, steps=25)
    assert len(solves) == 4
    candidates = torch.stack(solves)  # (solve, example, C, H, W)
    reached = torch.stack([predictions(model, z) == ts for z in solves])
    norms = torch.where(reached, torch.stack([l2(z, xs) for z in solves]), float("inf"))
    best = norms.argmin(0)
    already = predictions(model, xs) == ts  # r = 0 would be the smallest of all there
    for i in range(len(xs)):
        expected = xs[i] if already[i] or not reached[:, i].any() else candidates[best[i], i]
        assert torch.equal(x_adv[i], expected)
    assert torch.equal(success, reached.any(0) | already)


class ModeRecorder(torch.nn.Module):
    """Passes its input through and records whether it ran in training mode."""

    def __init__(self):
        super().__init__()
        self.seen: set[bool] = set()

    def forward(self, z):
        self.seen.add(self.training)
        return z


def test_eval_mode_while_running_mode_restored_inputs_unchanged(trained):
    model, x, _, target = trained
    recorder = ModeRecorder()
    wrapped = torch.nn.Sequential(model, recorder)
    x_copy, target_copy = x[:6].clone(), target[:6].clone()
    xs, ts = x[:6], target[:6]
    wrapped.train()
    try:
        lbfgs(wrapped, xs, ts, targeted=True, search_steps=2, steps=20)
        assert recorder.seen == {False}  # every forward pass ran in eval mode
        assert all(module.training for module in wrapped.modules())  # and training mode came back
    finally:
        wrapped.eval()
    lbfgs(wrapped, xs, ts, targeted=True, search_steps=2, steps=20)
    assert not any(module.training for module in wrapped.modules())
    assert torch.equal(xs, x_copy) and torch.equal(ts, target_copy)
    assert all(p.grad is None for p in model.parameters())  # only the input's gradient was taken


def test_batch_equals_one_by_one(trained):
    """Deterministic and per example: attacking a batch equals attacking its examples one at a time.
    In float64, so that the different rounding of batched matrix products cannot steer the search."""
    model, x, _, target = trained
    model64 = models.mlp((64,)).double()
    model64.load_state_dict(model.state_dict())
    model64.eval()
    xs, ts = x[:3].double(), target[:3]
    kwargs = dict(targeted=True, search_steps=3, steps=30)
    together = lbfgs(model64, xs, ts, **kwargs)
    for i in range(len(xs)):
        alone = lbfgs(model64, xs[i:i + 1], ts[i:i + 1], **kwargs)
        assert torch.allclose(alone[0], together[i], atol=1e-8)
    again = lbfgs(model64, xs, ts, **kwargs)
    assert torch.equal(again, together)


def test_failures_return_x_unchanged(trained):
    """With no iterations the solves cannot move: examples the model does not already assign to
    their targets fail and come back equal to x; those it does succeed with r = 0."""
    model, x, y, _ = trained
    xs = x[:10]
    pred = predictions(model, xs)
    target = pred.clone()
    target[:5] = (pred[:5] + 1) % 10
    x_adv, success = targeted(model, xs, target, steps=0, search_steps=2)
    assert torch.equal(x_adv, xs)
    assert success.tolist() == [False] * 5 + [True] * 5
    assert torch.equal(lbfgs(model, xs, target, targeted=True, search_steps=0), xs)


def test_margin_loss_reaches_targets(trained):
    model, x, _, target = trained
    x_adv = lbfgs(model, x[:10], target[:10], targeted=True, loss="margin", search_steps=3, steps=30)
    assert (predictions(model, x_adv) == target[:10]).float().mean() >= 0.9


def test_untargeted_changes_the_class_with_smaller_perturbations_than_targeted(trained, attacked):
    """Untargeted, any wrong class will do: the attack succeeds on (nearly) every image, and each
    perturbation is at most the targeted one's (the nearest wrong class is at most as far as a random one)."""
    model, x, y, _ = trained
    x_target, reached = attacked
    x_adv = lbfgs(model, x, y)
    fooled = predictions(model, x_adv) != y
    assert fooled.float().mean() >= 0.95
    both = fooled & reached
    assert l2(x_adv, x)[both].median() < l2(x_target, x)[both].median()


def test_empty_batch(trained):
    model, x, _, target = trained
    out = lbfgs(model, x[:0], target[:0], targeted=True)
    assert out.shape == x[:0].shape


@pytest.mark.parametrize("bad", [
    dict(x=lambda x: x + 1.5, match=r"x must hold images in \[0, 1\], got values in \[1.5"),
    dict(x=lambda x: x - 0.5, match=r"x must hold images in \[0, 1\], got values in \[-0.5"),
    dict(x=lambda x: x[:, 0], match=r"x must be a batch of images shaped \(N, C, H, W\), got shape \(3, 28, 28\)"),
    dict(target=lambda t: t[:-1], match="the images hold 3 examples but y holds 2 labels"),
    dict(target=lambda t: t[:, None], match=r"y must be a 1-D tensor of labels shaped \(N,\), got shape \(3, 1\)"),
    dict(target=lambda t: t.float(), match=r"y must be a 1-D tensor of integer class labels \(torch.long\), got a "
                                           "tensor of dtype torch.float32", error=TypeError),
    dict(target=lambda t: t + 10, match=r"y must hold labels in \[0, 10\) \(the model has 10 classes\)"),
    dict(target=lambda t: t - 10, match="y must hold class labels >= 0, got a minimum of -"),
    dict(c_init=-1.0, match=r"c_init must lie in \(0, inf\), got -1"),
    dict(c_init=0.0, match=r"c_init must lie in \(0, inf\), got 0"),
    dict(search_steps=-1, match="search_steps must be a whole number >= 0, got -1"),
    dict(steps=-3, match="steps must be a whole number >= 0, got -3"),
    dict(history=0, match="history must be a whole number >= 1, got 0"),
    dict(loss="hinge", match="unknown loss 'hinge'; expected one of"),
    dict(max_iter=3, match=r"lbfgs\(\) got unknown argument\(s\) \['max_iter'\]", error=TypeError),
])
def test_bad_input_raises(trained, bad):
    model, x, _, target = trained
    bad = dict(bad)
    match, error = bad.pop("match"), bad.pop("error", ValueError)
    xs, ts = x[:3], target[:3]
    xs = bad.pop("x", lambda v: v)(xs)
    ts = bad.pop("target", lambda v: v)(ts)
    with pytest.raises(error, match=match):
        lbfgs(model, xs, ts, **{"targeted": True, "search_steps": 1, "steps": 1, **bad})
