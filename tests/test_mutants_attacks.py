"""Tests that bite (issue 14): each one kills a class of mutants of advlib.attacks that the older suite let
through (mutation testing with mutmut over core.py, pgd.py, fgsm.py and patch.py).

Every expected value is the paper's or the mathematics' own, computed here independently (by hand, in
closed form on a linear model, or with a plain autograd call), never with the function under test. The
models are tiny linear or one-hidden-layer networks on 2x2 images: each test runs in milliseconds.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlib.attacks import core, fgsm, pgd
from advlib.attacks.patch import patch


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def linear_model(weight, bias=None) -> nn.Sequential:
    """logits = W vec(x) + b: the gradient of every loss is known in closed form."""
    weight = torch.as_tensor(weight, dtype=torch.float32)
    model = nn.Sequential(nn.Flatten(), nn.Linear(weight.shape[1], weight.shape[0]))
    with torch.no_grad():
        model[1].weight.copy_(weight)
        model[1].bias.copy_(torch.zeros(weight.shape[0]) if bias is None else torch.as_tensor(bias))
    return model.eval()


# Two classes on 2x2 images. For label 0, the cross-entropy's input gradient is p_1 (w_1 - w_0): its sign is
# sign(w_1 - w_0) = (+, -, 0, +) and its direction (w_1 - w_0) / ||w_1 - w_0||. The third pixel has a zero
# gradient (w_1 and w_0 agree there).
W2 = [[0.0, 1.0, 0.0, -1.0], [2.0, -1.0, 0.0, 1.0]]
D2 = torch.tensor(W2[1]) - torch.tensor(W2[0])  # (2, -2, 0, 2)


def image(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 2, 2)


# --- core.project_l2 / project_linf -----------------------------------------------------------------

def test_project_l2_keeps_the_inside_and_scales_the_outside_onto_the_sphere():
    """Kills: scaling every perturbation onto the sphere (clamp(max=1) dropped or changed), scaling by the
    wrong factor, one norm for the whole batch instead of one per example, the box clip dropped or moved."""
    x = torch.full((3, 1, 2, 2), 0.5)
    inside = torch.tensor([0.1, -0.1, 0.05, 0.0]).view(1, 2, 2)  # norm 0.15 < eps = 0.3
    outside = torch.tensor([0.3, 0.4, 0.0, 0.0]).view(1, 2, 2)  # norm 0.5 > 0.3
    zero = torch.zeros(1, 2, 2)
    x_adv = x + torch.stack([inside, outside, zero])
    out = core.project_l2(x_adv, x, 0.3)
    assert torch.allclose(out[0], x_adv[0], atol=1e-7)  # inside: unchanged
    assert torch.allclose(out[1] - x[1], outside * (0.3 / 0.5), atol=1e-6)  # outside: onto the sphere, same ray
    assert (out[1] - x[1]).norm().item() == pytest.approx(0.3, rel=1e-5)
    assert torch.equal(out[2], x[2])  # no perturbation: no NaN, nothing moves
    # then the box: a perturbation inside the ball that leaves [0,1] is clipped coordinate-wise
    x = torch.tensor([0.95, 0.05, 0.5, 0.5]).view(1, 1, 2, 2)
    delta = torch.tensor([0.1, -0.1, 0.1, 0.0]).view(1, 1, 2, 2)
    assert torch.allclose(core.project_l2(x + delta, x, 1.0), torch.tensor([1.0, 0.0, 0.6, 0.5]).view(1, 1, 2, 2))


def test_project_linf_is_the_coordinatewise_clip_to_the_ball_and_the_box():
    """Kills: a swapped min/max, x - eps and x + eps exchanged or mis-signed, the box clip dropped."""
    x = torch.tensor([0.5, 0.5, 0.95, 0.05]).view(1, 1, 2, 2)
    x_adv = torch.tensor([0.9, 0.45, 1.3, -0.2]).view(1, 1, 2, 2)
    expected = torch.tensor([0.6, 0.45, 1.0, 0.0]).view(1, 1, 2, 2)  # by hand, eps = 0.1
    assert torch.allclose(core.project_linf(x_adv, x, 0.1), expected)
    assert torch.equal(core.project_linf(x, x, 0.1), x)


# --- core.margin / loss_on_logits / input_gradient -----------------------------------------------------

def test_margin_values_by_hand():
    """Carlini-Wagner's f_6: own - best other (untargeted), best other - target (targeted), floored at -kappa.
    Kills: the wrong class masked, min instead of max, the two directions exchanged, the floor dropped."""
    logits = torch.tensor([[3.0, 1.0, 2.0], [-5.0, -1.0, -2.0]])
    y = torch.tensor([0, 2])
    inf = float("inf")
    assert core.margin(logits, y, kappa=inf).tolist() == pytest.approx([1.0, -1.0])
    assert core.margin(logits, y, targeted=True, kappa=inf).tolist() == pytest.approx([-1.0, 1.0])
    assert core.margin(logits, y, kappa=0.5).tolist() == pytest.approx([1.0, -0.5])
    assert core.margin(logits, y, targeted=True, kappa=0.25).tolist() == pytest.approx([-0.25, 1.0])
    assert core.margin(logits, y).tolist() == pytest.approx([1.0, 0.0])  # the default kappa is 0


def test_loss_on_logits_by_hand():
    """The ascended loss: CE, minus CE to the target, minus the (unfloored) margin. Kills: a sign flipped,
    a reduction other than per example, a finite kappa in the margin loss, an unknown loss accepted."""
    logits = torch.tensor([[3.0, 1.0, 2.0], [-5.0, -1.0, -2.0]])
    y = torch.tensor([0, 2])
    ce = [-(3 - math.log(math.exp(3) + math.exp(1) + math.exp(2))),
          -(-2 - math.log(math.exp(-5) + math.exp(-1) + math.exp(-2)))]
    assert core.loss_on_logits(logits, y).tolist() == pytest.approx(ce)
    assert core.loss_on_logits(logits, y, "ce", targeted=True).tolist() == pytest.approx([-v for v in ce])
    assert core.loss_on_logits(logits, y, "margin").tolist() == pytest.approx([-1.0, 1.0])
    assert core.loss_on_logits(logits, y, "margin", targeted=True).tolist() == pytest.approx([1.0, -1.0])
    far = torch.tensor([[30.0, 1.0, 2.0]])  # margin 28: no floor on the margin loss
    assert core.loss_on_logits(far, torch.tensor([0]), "margin").item() == pytest.approx(-28.0)
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        core.loss_on_logits(logits, y, "hinge")


def test_input_gradient_is_each_examples_own_gradient():
    """For label 0 on the linear model, d CE / dx = p_1 (w_1 - w_0); the per-example loss comes with it.
    Kills: the gradient of a mean (scaled by 1/N), a sign flip, the targeted flag ignored."""
    model = linear_model(W2)
    x = image([[0.1, 0.2, 0.3, 0.4], [0.9, 0.1, 0.5, 0.2]])
    y = torch.tensor([0, 0])
    grad, loss = core.input_gradient(model, x, y)
    logits = x.flatten(1) @ torch.tensor(W2).T
    p1 = logits.softmax(1)[:, 1]
    assert torch.allclose(grad.flatten(1), p1[:, None] * D2, atol=1e-6)
    assert torch.allclose(loss, -logits.log_softmax(1)[:, 0], atol=1e-6)
    grad_t, loss_t = core.input_gradient(model, x, y, targeted=True)
    assert torch.allclose(grad_t, -grad, atol=1e-7) and torch.allclose(loss_t, -loss, atol=1e-7)
    assert all(q.grad is None for q in model.parameters())


# --- FGSM ---------------------------------------------------------------------------------------------

def test_fgsm_is_clip_x_plus_eps_sign_grad_in_closed_form():
    """FGSM (Goodfellow et al. 2014): exactly clip(x + eps sign(grad)); sign(grad) = sign(w_1 - w_0) here,
    a zero-gradient pixel does not move, and the targeted attack steps down the loss to the target.
    Kills: the sign dropped (raw gradient), a sign flip, eps scaled, the clip or the targeted flag lost."""
    model = linear_model(W2)
    x = image([[0.5, 0.5, 0.5, 0.5], [0.95, 0.02, 0.3, 0.7]])
    y0 = torch.tensor([0, 0])
    sign = torch.tensor([1.0, -1.0, 0.0, 1.0])
    eps = 0.1
    expected = (x.flatten(1) + eps * sign).clamp(0, 1).view_as(x)
    assert torch.equal(fgsm(model, x, y0, eps=eps), expected)
    # targeted to class 1: down the cross-entropy of class 1, whose gradient is -p_0 (w_1 - w_0): same step
    assert torch.equal(fgsm(model, x, torch.tensor([1, 1]), eps=eps, targeted=True), expected)
    # untargeted from class 1: the opposite step
    expected_1 = (x.flatten(1) - eps * sign).clamp(0, 1).view_as(x)
    assert torch.equal(fgsm(model, x, torch.tensor([1, 1]), eps=eps), expected_1)
    # the margin loss has the same gradient direction on a linear model (w_1 - w_0 for label 0)
    assert torch.equal(fgsm(model, x, y0, eps=eps, loss="margin"), expected)


# --- PGD ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("keep", ["best", "last"])
def test_l2_pgd_step_has_length_alpha_along_the_gradient(keep):
    """Madry et al.'s L2 step: x + alpha grad / ||grad||_2, per example (length alpha, parallel to the
    gradient, not its sign). On the linear model the gradient of label 0 is along w_1 - w_0, and the loss
    grows along it, so the best iterate is the last one. Kills: a sign step in L2, the norm over the batch
    or left out, alpha lost, the step taken in the wrong direction, keep mixed up."""
    model = linear_model(W2)
    x = image([[0.5, 0.5, 0.5, 0.5], [0.4, 0.6, 0.5, 0.45]])
    y = torch.tensor([0, 0])
    alpha = 0.05
    direction = D2 / D2.norm()
    one = pgd(model, x, y, eps=1.0, alpha=alpha, steps=1, norm="l2", random_start=False, keep=keep)
    assert torch.allclose((one - x).flatten(1), alpha * direction.expand(2, 4), atol=1e-6)
    three = pgd(model, x, y, eps=1.0, alpha=alpha, steps=3, norm="l2", random_start=False, keep=keep)
    assert torch.allclose((three - x).flatten(1), 3 * alpha * direction.expand(2, 4), atol=1e-6)
    # many steps: the projection stops it on the sphere of radius eps, still along the gradient
    far = pgd(model, x, y, eps=0.2, alpha=alpha, steps=8, norm="l2", random_start=False, keep=keep)
    assert torch.allclose((far - x).flatten(1), 0.2 * direction.expand(2, 4), atol=1e-6)
    # a gradient much shorter than 1 (weights / 100): the step still has length alpha
    small = linear_model([[v / 100 for v in row] for row in W2])
    short = pgd(small, x, y, eps=1.0, alpha=alpha, steps=1, norm="l2", random_start=False, keep=keep)
    assert torch.allclose((short - x).flatten(1), alpha * direction.expand(2, 4), atol=1e-6)


@pytest.mark.parametrize("keep", ["best", "last"])
def test_linf_pgd_steps_alpha_sign_grad_and_stops_at_the_ball(keep):
    """Madry et al.'s Linf step x + alpha sign(grad), projected onto the ball and the box. Kills: a wrong
    step size or sign, the ball [x - eps, x + eps] or the box clip wrong."""
    model = linear_model(W2)
    x = image([[0.5, 0.5, 0.5, 0.5], [0.98, 0.3, 0.5, 0.5]])
    y = torch.tensor([0, 0])
    sign = torch.tensor([1.0, -1.0, 0.0, 1.0])
    one = pgd(model, x, y, eps=0.5, alpha=0.03, steps=1, random_start=False, keep=keep)
    assert torch.allclose(one.flatten(1), (x.flatten(1) + 0.03 * sign).clamp(0, 1), atol=1e-6)
    far = pgd(model, x, y, eps=0.1, alpha=0.03, steps=6, random_start=False, keep=keep)
    assert torch.allclose(far.flatten(1), (x.flatten(1) + 0.1 * sign).clamp(0, 1), atol=1e-6)


def test_targeted_pgd_descends_the_loss_to_the_target():
    """Three classes: the untargeted step from class 0 and the targeted step toward class 2 differ, and each
    is its closed form (targeted: down the CE of the target, -grad CE_t = sum_k p_k w_2 - ... )."""
    w = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]])
    model = linear_model(w)
    x = image([[0.5, 0.5, 0.5, 0.5]])
    logits = x.flatten(1) @ w.T
    p = logits.softmax(1)[0]
    toward_2 = w[2] - p @ w  # minus the gradient of CE(x, 2): w_2 - E_p[w]
    got = pgd(model, x, torch.tensor([2]), eps=1.0, alpha=0.01, steps=1, random_start=False, targeted=True)
    assert torch.allclose((got - x).flatten(), 0.01 * toward_2.sign(), atol=1e-7)
    got_l2 = pgd(model, x, torch.tensor([2]), eps=1.0, alpha=0.01, steps=1, random_start=False, targeted=True,
                 norm="l2")
    assert torch.allclose((got_l2 - x).flatten(), 0.01 * toward_2 / toward_2.norm(), atol=1e-6)


def test_pgd_best_prefers_success_then_higher_loss():
    """keep="best": among the iterates, a successful one beats a failed one, and otherwise the higher loss
    wins. On the linear model the loss grows along the path, so from label 0 every later iterate is better,
    while for a label it already gets wrong the starting point... Kills: `>` turned into `<` or `>=` mixups
    in the best-iterate tracking, and tracking only one restart."""
    model = linear_model(W2)
    x = image([[0.5, 0.5, 0.5, 0.5]])
    # label 1 is already wrong? logits at x: w0.x = 0.125, w1.x = 1.25: class 1 is predicted. Untargeted
    # from label 1, ascending CE(1) moves along -(w_1 - w_0): the success (argmax != 1) comes after a few
    # steps, and then the loss keeps growing, so the best is the last iterate.
    y = torch.tensor([1])
    last = pgd(model, x, y, eps=1.0, alpha=0.1, steps=5, random_start=False, keep="last")
    best = pgd(model, x, y, eps=1.0, alpha=0.1, steps=5, random_start=False)
    assert torch.equal(best, last)
    # targeted to the class it already has: success at x^0; steps go *down* the target's CE (loss grows),
    # every iterate succeeds, so the best is the one of highest ascended loss: the last one again
    best_t = pgd(model, x, y, eps=1.0, alpha=0.1, steps=3, random_start=False, targeted=True)
    last_t = pgd(model, x, y, eps=1.0, alpha=0.1, steps=3, random_start=False, targeted=True, keep="last")
    assert torch.equal(best_t, last_t)


class Peak(nn.Module):
    """A model whose cross-entropy for class 0 is largest at x = 0.5 (every pixel) and falls away from it."""

    def forward(self, x):
        s = (x.flatten(1) - 0.5).pow(2).sum(1)  # 0 at x = 0.5, growing away from it
        return torch.stack([2.0 + s, -s], dim=1)  # CE of class 0 falls as s grows


def test_pgd_best_returns_the_start_when_every_step_is_worse():
    """From x = 0.51, steps of 0.05 overshoot the peak at 0.5 and the ball [0.48, 0.54] holds them at distance
    0.02 or 0.03 from it: every iterate after x^0 has a lower loss, so keep="best" returns x itself while the
    last iterate moved. Kills: returning the last iterate under keep="best", `>` turned into `<`, the best
    loss initialised above the start's."""
    model = Peak()
    x = torch.full((2, 1, 2, 2), 0.5) + torch.tensor([0.0, 0.01]).view(2, 1, 1, 1)
    y = torch.tensor([0, 0])
    best = pgd(model, x, y, eps=0.03, alpha=0.05, steps=4, random_start=False)
    last = pgd(model, x, y, eps=0.03, alpha=0.05, steps=4, random_start=False, keep="last")
    assert torch.equal(best[0], x[0])  # its gradient is 0: nothing moves
    assert torch.equal(best[1], x[1]) and not torch.allclose(last[1], x[1], atol=1e-3)


def test_pgd_restarts_keep_the_best_and_the_random_starts_fill_the_ball():
    """With steps=0 the result is the best random start over the restarts; L2 starts lie in the ball and are
    not all on its sphere or at its centre; Linf starts cover [-eps, eps]. Kills: a start of the wrong size
    (eps U^(1/d) replaced), restarts ignored, the noise not added."""
    model = linear_model(W2)
    n = 400
    x = torch.full((n, 1, 2, 2), 0.5)
    y = torch.zeros(n, dtype=torch.long)
    for norm, eps in (("l2", 0.3), ("linf", 0.2)):
        one = pgd(model, x, y, eps=eps, steps=0, norm=norm, generator=seeded(1))
        delta = (one - x).flatten(1)
        size = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(1)
        assert (size <= eps * (1 + 1e-5)).all() and (size > 0).all()
        if norm == "l2":  # uniform in the 4-ball: P(||delta|| <= eps r) = r^4; median radius 0.5^(1/4) eps
            assert abs((size <= eps * 0.5 ** 0.25).float().mean().item() - 0.5) < 0.1
            assert (size < 0.99 * eps).float().mean() > 0.02
        else:  # coordinates uniform on [-eps, eps]: mean |d| = eps / 2
            assert abs(delta.abs().mean().item() - eps / 2) < 0.02
            assert delta.min() < -0.9 * eps and delta.max() > 0.9 * eps
        # steps=0: each example's best of its random starts; the best of 4 has a higher loss on average
        many = pgd(model, x, y, eps=eps, steps=0, norm=norm, restarts=4, generator=seeded(1))
        with torch.no_grad():
            loss_one = F.cross_entropy(model(one), y, reduction="none")
            loss_many = F.cross_entropy(model(many), y, reduction="none")
        assert loss_many.mean() > loss_one.mean() + 0.1 * loss_one.std()


def test_pgd_without_steps_or_start_returns_x_and_default_alpha_is_madrys():
    """steps=0 without a random start: x itself. alpha defaults to 2.5 eps / steps: with one L2 step, the move
    is 2.5 eps long before the projection, so it ends on the sphere of radius eps."""
    model = linear_model(W2)
    x = image([[0.5, 0.5, 0.5, 0.5]])
    y = torch.tensor([0])
    assert torch.equal(pgd(model, x, y, eps=0.1, steps=0, random_start=False), x)
    four = pgd(model, x, y, eps=0.2, steps=4, norm="l2", random_start=False, keep="last")  # alpha 0.125
    assert torch.allclose((four - x).flatten(), 0.2 * D2 / D2.norm(), atol=1e-6)
    one = pgd(model, x, y, eps=0.2, steps=5, random_start=False, keep="last")  # Linf, alpha 0.1: 2 steps reach eps
    sign = torch.tensor([1.0, -1.0, 0.0, 1.0])
    assert torch.allclose((one - x).flatten(), 0.2 * sign, atol=1e-6)
    with pytest.raises(ValueError, match="keep must be 'best' or 'last'"):
        pgd(model, x, y, eps=0.1, keep="first")


# --- core.attack: the contract wrapper -----------------------------------------------------------------

def test_wrapper_projects_an_out_of_ball_body_result_by_the_attacks_norm():
    """Whatever the body returns, the wrapper clamps it to the box and to the ball of the attack's norm
    ("norm" reads the call's own ``norm``). Kills: the wrong ball chosen, eps lost, no projection."""

    def body(model, x, y, *, eps, norm="linf"):
        return x + 5.0 * torch.tensor([1.0, -1.0, 0.5, 0.0]).view(1, 1, 2, 2)

    model = linear_model(W2)
    x, y = image([[0.5, 0.5, 0.5, 0.5]]), torch.tensor([0])
    by_norm = core.attack("norm")(body)
    linf = by_norm(model, x, y, eps=0.1)
    assert torch.allclose((linf - x).flatten(), torch.tensor([0.1, -0.1, 0.1, 0.0]))
    l2 = by_norm(model, x, y, eps=0.1, norm="l2")
    d = torch.tensor([1.0, -1.0, 0.5, 0.0])
    assert torch.allclose((l2 - x).flatten(), 0.1 * d / d.norm(), atol=1e-6)
    unbounded = core.attack(None)(body)(model, x, y, eps=0.1)
    assert torch.allclose(unbounded.flatten(), torch.tensor([1.0, 0.0, 1.0, 0.5]))
    assert core.attack("l2")(body).bounded == "l2" and core.attack(None)(body).bounded is None
    # the attack keeps its name and docstring (help(pgd) shows the algorithm's documentation)
    assert by_norm.__name__ == "body" and pgd.__name__ == "pgd" and "Madry" in pgd.__doc__


def test_wrapper_checks_extra_reals_positives_and_counts():
    """``reals`` must be finite and >= 0, ``positive`` > 0, ``counts`` whole numbers >= their minimum; the
    defaults (steps >= 0, restarts >= 1) stay. Kills: the extra checks dropped or the defaults overwritten."""

    def body(model, x, y, *, eps=0.1, c=1.0, lr=1.0, rounds=2, steps=1, restarts=1):
        return x

    model = linear_model(W2)
    x, y = image([[0.5, 0.5, 0.5, 0.5]]), torch.tensor([0])
    wrapped = core.attack("linf", reals=("c",), positive=("lr",), counts={"rounds": 2})(body)
    assert torch.equal(wrapped(model, x, y), x)
    assert torch.equal(wrapped(model, x, y, c=0.0), x)
    with pytest.raises(ValueError, match="c must"):
        wrapped(model, x, y, c=-1.0)
    with pytest.raises(ValueError, match="lr must"):
        wrapped(model, x, y, lr=0.0)
    with pytest.raises(ValueError, match="rounds must be a whole number >= 2"):
        wrapped(model, x, y, rounds=1)
    with pytest.raises(ValueError, match="steps must be a whole number >= 0"):
        wrapped(model, x, y, steps=-1)
    with pytest.raises(ValueError, match="restarts must be a whole number >= 1"):
        wrapped(model, x, y, restarts=0)
    with pytest.raises(TypeError, match=r"body\(\) takes model, x and y by position"):
        wrapped(model, x, y, 0.1)
    with pytest.raises(TypeError, match=r"body\(\) got unknown argument\(s\) \['alpha'\]"):
        wrapped(model, x, y, alpha=0.1)


def test_arguments_are_checked_before_any_forward_pass():
    """The contract checks every argument before any work: an unknown loss or norm is refused before the model
    runs once. Kills: a check left to the algorithm (which would raise only after its first forward pass)."""
    model = Counting()
    x, y = image([[0.5, 0.5, 0.5, 0.5]]), torch.tensor([0])
    for kw in ({"loss": "hinge"}, {"norm": "l1"}):
        with pytest.raises(ValueError, match="unknown"):
            pgd(model, x, y, eps=0.1, steps=2, **kw)
        with pytest.raises(ValueError, match="unknown"):
            fgsm(model, x, y, eps=0.1, **kw) if "loss" in kw else pgd(model, x, y, eps=0.1, random_start=False, **kw)
    assert model.calls == 0


def test_wrapper_answers_eps_zero_and_runs_the_body_otherwise():
    """eps = 0 or an empty batch: a copy of x without calling the body; eps > 0: the body runs (also with
    eps=None for an unbounded attack). Kills: the early return taken always or never."""
    calls = []

    def body(model, x, y, *, eps=None):
        calls.append(len(x))
        return x + 0.05

    model = linear_model(W2)
    x, y = image([[0.5, 0.5, 0.5, 0.5]]), torch.tensor([0])
    wrapped = core.attack("linf")(body)
    out = wrapped(model, x, y, eps=0.0)
    assert torch.equal(out, x) and out is not x and calls == []
    assert wrapped(model, x[:0], y[:0], eps=0.1).shape == (0, 1, 2, 2) and calls == []
    assert torch.allclose(wrapped(model, x, y, eps=0.1), x + 0.05) and calls == [1]
    assert torch.allclose(core.attack(None)(body)(model, x, y), x + 0.05) and calls == [1, 1]


def test_wrapper_checks_the_labels_against_the_models_logits():
    """A label outside the model's classes is refused on the first logits the body computes."""

    def body(model, x, y, *, eps=0.1):
        model(x)
        return x

    model = linear_model(W2)  # 2 classes
    x = image([[0.5, 0.5, 0.5, 0.5]])
    wrapped = core.attack("linf")(body)
    with pytest.raises(ValueError, match="label"):
        wrapped(model, x, torch.tensor([2]))
    assert torch.equal(wrapped(model, x, torch.tensor([1])), x)


# --- the adversarial patch -----------------------------------------------------------------------------

class Recorder(nn.Module):
    """A linear model on 6x6 images that keeps every batch it sees."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(36, 3)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.linear(x.flatten(1))


def pasted(batch: torch.Tensor, background: float, size: int) -> list[torch.Tensor]:
    """The size x size content written over each image of a constant background."""
    out = []
    for img in batch[:, 0]:
        rows, cols = torch.nonzero(img != background, as_tuple=True)
        r, c = int(rows.min()), int(cols.min())
        out.append(img[r:r + size, c:c + size])
    return out


def orientation(content: torch.Tensor, p: torch.Tensor) -> int:
    """Which k makes content == rot90(p, k) (up to the tiny drift of the patch), -1 for none."""
    hits = [k for k in range(4) if torch.allclose(content, p.rot90(k, (0, 1)), atol=1e-4)]
    assert len(hits) <= 1
    return hits[0] if hits else -1


@pytest.mark.parametrize("rotate", [False, True])
def test_patch_is_pasted_in_all_four_orientations_only_with_rotate(rotate):
    """Brown et al.'s transformations T: with rotate=True each pasted patch is one of the four turns of p,
    and all four occur; without, every pasted patch is p itself. A tiny step size keeps p (almost) fixed,
    so the returned patch shows what was pasted. Kills: a patch that never rotates, or always does."""
    model = Recorder()
    background = 0.123456
    x = torch.full((64, 1, 6, 6), background)
    y = torch.zeros(64, dtype=torch.long)
    p = patch(model, x, y, size=3, epochs=2, batch_size=16, lr=1e-7, rotate=rotate, generator=seeded(0))[0]
    contents = [c for batch in model.seen[1:] for c in pasted(batch, background, 3)]
    assert len(contents) == 2 * 64
    turns = [orientation(c, p) for c in contents]
    assert -1 not in turns
    assert set(turns) == ({0, 1, 2, 3} if rotate else {0})


def test_patch_sees_every_image_once_per_epoch_and_skips_the_targets_own():
    """An epoch is one pass over the images in mini-batches of batch_size; a targeted patch given labels
    leaves out the images already of the target class. Kills: wrong batch split, wrong filter."""
    model = Recorder()
    x = torch.rand(10, 1, 6, 6, generator=seeded(1))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    patch(model, x, y, size=2, epochs=2, batch_size=3, target=1, generator=seeded(0))
    sizes = [len(b) for b in model.seen[1:]]
    assert sizes == [3, 3, 1] * 2  # 7 images not of class 1, per epoch
    model.seen.clear()
    patch(model, x, None, size=2, epochs=1, batch_size=4, target=1, generator=seeded(0))
    assert [len(b) for b in model.seen[1:]] == [4, 4, 2]


def ce_of(model, x, labels, p, at):
    from advlib.attacks.patch import apply_patch
    with torch.no_grad():
        return F.cross_entropy(model.linear(apply_patch(x, p, at=at).flatten(1)), labels).item()


def test_untargeted_patch_raises_the_true_class_loss_and_targeted_lowers_the_targets():
    """The untargeted patch ascends the cross-entropy of the true class, the targeted one descends that of
    its target (Brown et al.'s Eq. 1): after training, each is better than the start at its own goal.
    On a linear model the best patch pixel values are 0 or 1 by the sign of a weight, so a few Adam steps
    move the loss a lot. Kills: the sign of either objective flipped, the wrong goal labels."""
    model = Recorder()
    x = torch.rand(32, 1, 6, 6, generator=seeded(2))
    y = torch.zeros(32, dtype=torch.long)
    at = torch.tensor([1, 1])
    start = patch(model, x, y, size=4, epochs=0, generator=seeded(0))
    untargeted = patch(model, x, y, size=4, epochs=3, batch_size=8, lr=0.1, generator=seeded(0))
    assert ce_of(model, x, y, untargeted, at) > ce_of(model, x, y, start, at) + 0.05
    two = torch.full((32,), 2, dtype=torch.long)
    targeted = patch(model, x, y, size=4, epochs=3, batch_size=8, lr=0.1, target=2, generator=seeded(0))
    assert ce_of(model, x, two, targeted, at) < ce_of(model, x, two, start, at) - 0.05
    assert targeted.min() >= 0 and targeted.max() <= 1


def test_l2_random_start_in_one_dimension_is_uniform_on_the_interval():
    """In one dimension the L2 ball is [-eps, eps], and a uniform start in it is uniform on that interval:
    a unit direction +-1 times eps U. Kills: a direction not normalised to length 1 (a clamp on its norm
    above 1e-12), the length drawn from the wrong uniforms."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(1, 2)).eval()
    n = 4000
    x = torch.full((n, 1, 1, 1), 0.5)
    y = torch.zeros(n, dtype=torch.long)
    delta = (pgd(model, x, y, eps=0.3, steps=0, norm="l2", generator=seeded(2)) - x).flatten()
    assert delta.abs().max() <= 0.3 + 1e-6
    assert abs(delta.abs().mean().item() - 0.15) < 0.01  # E|U(-eps, eps)| = eps / 2
    assert abs((delta > 0).float().mean().item() - 0.5) < 0.03  # both signs
    assert abs((delta.abs() < 0.15).float().mean().item() - 0.5) < 0.03  # |delta| / eps uniform on [0, 1]


class Counting(nn.Module):
    """The linear model of W2, counting its forward passes."""

    def __init__(self):
        super().__init__()
        self.inner = linear_model(W2)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def test_pgd_defaults_are_the_documented_ones_and_the_passes_are_counted():
    """The defaults (steps=40, norm="linf", random_start=True, restarts=1, targeted=False, loss="ce",
    keep="best", alpha = 2.5 eps / steps) give the same attack as spelling them out; keep="best" costs
    steps + 1 forward passes per restart (the last iterate's loss), keep="last" exactly steps. steps=0 with
    the default alpha returns the random start. Kills: any changed default, the extra pass under keep="last"."""
    x = torch.rand(3, 1, 2, 2, generator=seeded(5))
    y = torch.tensor([0, 1, 0])
    model = Counting()
    default = pgd(model, x, y, eps=0.1, generator=seeded(1))
    assert model.calls == 41
    spelled = pgd(model, x, y, eps=0.1, alpha=2.5 * 0.1 / 40, steps=40, norm="linf", random_start=True, restarts=1,
                  targeted=False, loss="ce", generator=seeded(1), keep="best")
    assert torch.equal(default, spelled)
    model.calls = 0
    pgd(model, x, y, eps=0.1, steps=5, restarts=2, keep="last", generator=seeded(1))
    assert model.calls == 10
    start = pgd(model, x, y, eps=0.1, steps=0, generator=seeded(1))
    assert torch.equal(start, pgd(model, x, y, eps=0.1, alpha=0.0, steps=0, generator=seeded(1)))
    assert not torch.equal(start, x) and (start - x).abs().max() <= 0.1 + 1e-7


def test_fgsm_defaults_are_untargeted_cross_entropy():
    model = linear_model(W2)
    x = image([[0.5, 0.5, 0.5, 0.5]])
    y = torch.tensor([0])
    assert torch.equal(fgsm(model, x, y, eps=0.1), fgsm(model, x, y, eps=0.1, targeted=False, loss="ce"))
    assert not torch.equal(fgsm(model, x, y, eps=0.1), fgsm(model, x, y, eps=0.1, targeted=True))


class TargetTrap(nn.Module):
    """Ten logits of a one-pixel image p whose targeted loss and success disagree for the target 0: its logit
    is 0; class 1 has min(-0.01 + 20 relu(p - 0.3), 0.5) and classes 2-9 have -0.01 - 20 relu(p - 0.3). Below
    p = 0.3 the target is the argmax (just) but has probability about 1/9, minus the cross-entropy about -2.2;
    above p = 0.3005 class 1 wins, while the target's probability grows toward 1 / (1 + e^0.5): minus the
    cross-entropy up to -0.97, a higher ascended loss."""

    def forward(self, x):
        p = x.flatten(1).mean(1, keepdim=True)
        rise = 20 * torch.relu(p - 0.3)
        return torch.cat([torch.zeros_like(p), (rise - 0.01).clamp(max=0.5), (-0.01 - rise).expand(-1, 8)], dim=1)


def test_targeted_pgd_keeps_a_success_over_a_higher_loss():
    """Targeted keep="best": a start classified as the target beats one with a higher ascended loss that is
    not. With steps=0 the candidates are 40 uniform starts in [0, 1]. Kills: the targeted success test
    computed on the wrong axis (or not per example)."""
    model = TargetTrap()
    x = torch.full((4, 1, 1, 1), 0.5)
    t = torch.zeros(4, dtype=torch.long)
    x_adv = pgd(model, x, t, eps=0.5, steps=0, restarts=40, targeted=True, generator=seeded(0))
    with torch.no_grad():
        assert (model(x_adv).argmax(1) == 0).all()  # every example keeps a start classified as the target
        higher = -F.cross_entropy(model(torch.full((1, 1, 1, 1), 0.9)), t[:1])  # a failing point's higher loss
        assert (-F.cross_entropy(model(x_adv), t, reduction="none") < higher).all()


def test_a_seeded_rotating_patch_repeats_and_the_seed_matters():
    """Every random choice of the patch (its start, the shuffles, the positions and the turns) comes from
    ``generator``: the same seed gives the same patch, another seed another. Kills: turns drawn from torch's
    global generator instead of ``generator``."""
    torch.manual_seed(123)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 10))
    x = torch.rand(32, 1, 6, 6, generator=seeded(2))
    y = torch.randint(0, 10, (32,), generator=seeded(3))
    runs = []
    for seed, global_seed in ((0, 1), (0, 2), (1, 1)):
        torch.manual_seed(global_seed)  # the global generator must not matter
        runs.append(patch(model, x, y, size=3, epochs=2, batch_size=8, rotate=True, generator=seeded(seed)))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


# --- patch.py, second pass: validation, the documented defaults, the extreme sizes and targets ---------

def test_apply_patch_refuses_integer_images_or_patches_images_above_one_and_boolean_corners():
    """apply_patch's documented refusals, each on its own: integer images, an integer patch, images above 1
    (but below 2), boolean corners. Kills: an `and` for an `or` in the type checks, a bound of 2 for 1."""
    from advlib.attacks.patch import apply_patch
    x, p = torch.rand(2, 1, 4, 4, generator=seeded(1)), torch.rand(1, 2, 2, generator=seeded(0))
    with pytest.raises(ValueError, match="^x must be a floating-point batch of images"):
        apply_patch(torch.zeros(2, 1, 4, 4, dtype=torch.long), p, at=(0, 0))
    with pytest.raises(ValueError, match="^patch must be a floating-point tensor"):
        apply_patch(x, torch.ones(1, 2, 2, dtype=torch.long), at=(0, 0))
    with pytest.raises(ValueError, match=r"^images must lie in \[0, 1\]"):
        apply_patch(torch.full((2, 1, 4, 4), 1.5), p, at=(0, 0))
    with pytest.raises(ValueError, match="^at must hold integer"):
        apply_patch(x, p, at=torch.tensor([True, False]))


class SizeRecorder(nn.Module):
    """A linear model on 10x10 images that keeps the size of every batch it sees."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(100, 3)
        self.sizes: list[int] = []

    def forward(self, x):
        self.sizes.append(len(x))
        return self.linear(x.flatten(1))


def test_patch_defaults_are_the_documented_ones():
    """size=8, epochs=5, batch_size=128, lr=0.05: five passes of mini-batches of 128 over 300 images, an 8x8
    patch; Adam's first step moves every pixel with a gradient by lr (m/sqrt(v) = sign(g)), so one step from
    the uniform start moves each unclamped pixel by 0.05. Kills: any changed default."""
    model = SizeRecorder()
    x = torch.rand(300, 1, 10, 10, generator=seeded(1))
    y = torch.randint(0, 3, (300,), generator=seeded(2))
    p = patch(model, x, y, generator=seeded(0))
    assert p.shape == (1, 8, 8)
    assert model.sizes[1:] == [128, 128, 44] * 5
    start = patch(model, x[:100], y[:100], epochs=0, generator=seeded(0))
    model.sizes.clear()
    one = patch(model, x[:100], y[:100], epochs=1, generator=seeded(0))
    assert model.sizes[1:] == [100]  # one step: 100 images fit in one default batch
    inside = (one > 0) & (one < 1)
    assert inside.sum() > 32
    assert torch.allclose((one - start)[inside].abs(), torch.full((int(inside.sum()),), 0.05), atol=1e-4)


def test_patch_accepts_size_one_the_whole_image_and_target_zero():
    """The documented ranges are closed: size in [1, min(H, W)], target in [0, number of logits). Kills:
    a bound of 2 for 1, a strict comparison for <= at either end, a target range starting at 1."""
    model = Recorder()
    x = torch.rand(8, 1, 6, 6, generator=seeded(1))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    assert patch(model, x, y, size=1, epochs=1, generator=seeded(0)).shape == (1, 1, 1)
    assert patch(model, x, y, size=6, epochs=1, generator=seeded(0)).shape == (1, 6, 6)
    model.seen.clear()
    assert patch(model, x, y, size=2, epochs=1, target=0, generator=seeded(0)).shape == (1, 2, 2)
    assert [len(b) for b in model.seen[1:]] == [5]  # the 3 images of class 0 left out


def test_patch_checks_the_images_dtype_against_the_model_and_the_generator():
    """Its arguments go through the shared validators: float64 images for a float32 model and a generator
    that is not a torch.Generator are refused up front with their own messages. Kills: the dtype check
    dropped (check_model without x), the generator check dropped."""
    model = Recorder()
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(TypeError, match="the model's parameters are torch.float32 but the images are torch.float64"):
        patch(model, torch.rand(4, 1, 6, 6, dtype=torch.float64), y, size=2, epochs=1)
    with pytest.raises(TypeError, match="generator must be None or a CPU torch.Generator"):
        patch(model, torch.rand(4, 1, 6, 6), y, size=2, epochs=1, generator=123)


def test_patch_in_double_precision_is_a_double_patch():
    """The patch has the images' dtype (the docstring: (C, size, size) like x): float64 images and model give
    a float64 patch. Kills: the uniform start drawn in torch's default float32."""
    model = Recorder().double()
    x = torch.rand(8, 1, 6, 6, generator=seeded(1), dtype=torch.float64)
    y = torch.zeros(8, dtype=torch.long)
    for epochs in (0, 1):
        p = patch(model, x, y, size=3, epochs=epochs, generator=seeded(0))
        assert p.dtype == torch.float64 and p.shape == (1, 3, 3)


def test_patch_on_colour_images_is_a_colour_patch():
    """A patch has the images' channels (C, size, size): on 3-channel images it is an RGB patch, with and
    without turns. Kills: the patch expanded to one channel per image."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 3))
    x = torch.rand(8, 3, 6, 6, generator=seeded(1))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    for rotate in (False, True):
        p = patch(model, x, y, size=3, epochs=1, batch_size=4, rotate=rotate, generator=seeded(0))
        assert p.shape == (3, 3, 3) and p.min() >= 0 and p.max() <= 1


@pytest.mark.parametrize("n", [2.0, True])
def test_random_positions_refuses_a_count_that_is_not_a_whole_number(n):
    """n must be an int (not a bool, not a float that happens to be whole). Kills: an `and` for an `or` in
    the type check (a float reached torch.rand, a bool drew one position)."""
    from advlib.attacks.patch import random_positions
    with pytest.raises(ValueError, match="^n must be a whole number >= 0, got "):
        random_positions(n, 28, 8)


@pytest.mark.parametrize("size", [(2.5, 3), (True, 3), (3, 2.0)])
def test_random_positions_refuses_a_pair_that_is_not_two_ints(size):
    """size (and image_size) is an int or a pair of ints; a float or a bool inside a pair is refused. Kills:
    an `or` for the `and` in the pair's element check."""
    from advlib.attacks.patch import random_positions
    with pytest.raises(ValueError, match="^size must be an int or a pair of ints, got "):
        random_positions(5, 28, size)


def test_apply_patch_writes_a_float32_patch_into_float64_images():
    """The result is a copy of x (its dtype) with the patch's values written in, whatever the patch's own
    floating dtype. Kills: the patch not converted to the images' dtype before the indexed assignment."""
    from advlib.attacks.patch import apply_patch
    x = torch.rand(3, 1, 5, 5, generator=seeded(1), dtype=torch.float64)
    p = torch.rand(1, 2, 2, generator=seeded(2))
    out = apply_patch(x, p, at=(1, 2))
    assert out.dtype == torch.float64
    assert torch.equal(out[:, :, 1:3, 2:4], p.double().expand(3, -1, -1, -1))
