"""Gradient attacks: FGSM (Goodfellow et al. 2014) and PGD (Madry et al. 2017), and the CW margin they share.

Contract tests (ball and box, inputs unchanged, eps = 0, mode restored, batch = one by one, bad input),
agreement with independent references (FGSM's closed form from a manual autograd call, a plain PGD loop
written here, torchattacks' PGD), and strength orderings, on a small MLP trained here in seconds.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from advlib.attacks import core, fgsm, pgd

N_ATTACK = 200  # examples in the strength comparisons


@pytest.fixture(scope="module")
def trained(small_mlp, one_thread):
    """The shared small MLP trained for 3 epochs (conftest), and 200 test images with their labels."""
    model, x_test, y_test = small_mlp(3)
    x, y = x_test[:N_ATTACK], y_test[:N_ATTACK]
    assert accuracy(model, x, y) > 0.7  # the model learned something, so attacks have work to do
    return model, x, y


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def other_labels(y: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A random target label different from each true label."""
    shift = torch.randint(1, 10, y.shape, generator=torch.Generator().manual_seed(seed))
    return (y + shift) % 10


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def pgd_linf(model, x, y, **kw):
    kw = {"eps": 0.1, "alpha": 0.02, "steps": 10, **kw}
    return pgd(model, x, y, **kw)


ATTACKS = {
    "fgsm": lambda model, x, y, eps: fgsm(model, x, y, eps=eps),
    "fgsm-targeted-margin": lambda model, x, y, eps: fgsm(model, x, other_labels(y), eps=eps, targeted=True,
                                                          loss="margin"),
    "pgd-linf": lambda model, x, y, eps: pgd(model, x, y, eps=eps, alpha=eps / 4, steps=10, generator=seeded()),
    "pgd-linf-restarts-margin": lambda model, x, y, eps: pgd(model, x, y, eps=eps, alpha=eps / 4, steps=5, restarts=2,
                                                             loss="margin", generator=seeded()),
    "pgd-linf-targeted": lambda model, x, y, eps: pgd(model, x, other_labels(y), eps=eps, alpha=eps / 4, steps=10,
                                                      targeted=True, generator=seeded()),
    "pgd-l2": lambda model, x, y, eps: pgd(model, x, y, eps=10 * eps, alpha=2.5 * eps, steps=10, norm="l2",
                                           generator=seeded()),
    "pgd-l2-no-start": lambda model, x, y, eps: pgd(model, x, y, eps=10 * eps, alpha=2.5 * eps, steps=10, norm="l2",
                                                    random_start=False),
}
L2_ATTACKS = {"pgd-l2", "pgd-l2-no-start"}


# --- the contract ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_result_in_ball_and_box_and_moves(trained, name):
    model, x, y = trained
    x, y = x[:64], y[:64]
    eps = 0.1
    x_adv = ATTACKS[name](model, x, y, eps)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    delta = (x_adv - x).flatten(1)
    if name in L2_ATTACKS:
        assert (delta.norm(dim=1) <= 10 * eps + 1e-5).all()
    else:
        assert delta.abs().max() <= eps + 1e-6
    assert (delta.abs().amax(dim=1) > 0).float().mean() > 0.9  # it does perturb (nearly) every image


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_inputs_unchanged(trained, name):
    model, x, y = trained
    x, y = x[:32].clone(), y[:32].clone()
    x_before, y_before = x.clone(), y.clone()
    params_before = [p.detach().clone() for p in model.parameters()]
    ATTACKS[name](model, x, y, 0.1)
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params_before, strict=True))
    assert all(p.grad is None for p in model.parameters())  # only the input's gradient was computed


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_eps_zero_returns_x(trained, name):
    model, x, y = trained
    x_adv = ATTACKS[name](model, x[:32], y[:32], 0.0)
    assert torch.equal(x_adv, x[:32])
    assert x_adv.data_ptr() != x.data_ptr()  # a copy, so the caller may modify it


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("start_training", [True, False])
def test_model_runs_in_eval_mode_and_its_mode_is_restored(trained, name, start_training):
    model = copy.deepcopy(trained[0])
    x, y = trained[1][:16], trained[2][:16]
    seen = []
    handles = [m.register_forward_hook(lambda m, i, o: seen.append(m.training)) for m in model.modules()]
    model.train(start_training)
    ATTACKS[name](model, x, y, 0.1)
    for h in handles:
        h.remove()
    assert seen and not any(seen)  # every module ran in eval mode
    assert all(m.training == start_training for m in model.modules())


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_batch_equals_examples_one_by_one(trained, norm, loss):
    # float64, so batched and single-example kernels agree to ~1e-16 and no gradient sign flips
    model = copy.deepcopy(trained[0]).double()
    x, y = trained[1][:6].double(), trained[2][:6]
    eps, alpha = (0.1, 0.02) if norm == "linf" else (1.0, 0.25)
    kw = {"eps": eps, "alpha": alpha, "steps": 5, "norm": norm, "restarts": 2, "loss": loss}
    whole = pgd(model, x, y, generator=seeded(7), **kw)
    g = seeded(7)
    pieces = torch.cat([pgd(model, x[i:i + 1], y[i:i + 1], generator=g, **kw) for i in range(len(x))])
    torch.testing.assert_close(whole, pieces, rtol=0, atol=1e-12)
    g = seeded(7)  # any split into consecutive pieces, not just single examples
    split = torch.cat([pgd(model, x[:4], y[:4], generator=g, **kw), pgd(model, x[4:], y[4:], generator=g, **kw)])
    torch.testing.assert_close(whole, split, rtol=0, atol=1e-12)
    # the global generator works the same way
    torch.manual_seed(3)
    whole = pgd(model, x, y, **kw)
    torch.manual_seed(3)
    pieces = torch.cat([pgd(model, x[i:i + 1], y[i:i + 1], **kw) for i in range(len(x))])
    torch.testing.assert_close(whole, pieces, rtol=0, atol=1e-12)


def test_seed_repeats_and_random_start_is_random(trained):
    model, x, y = trained
    x, y = x[:32], y[:32]
    a = pgd_linf(model, x, y, generator=seeded(1))
    assert torch.equal(a, pgd_linf(model, x, y, generator=seeded(1)))
    assert not torch.equal(a, pgd_linf(model, x, y, generator=seeded(2)))
    assert torch.equal(pgd_linf(model, x, y, random_start=False), pgd_linf(model, x, y, random_start=False))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_start_is_uniform_in_the_ball(trained, norm):
    model, x, y = trained
    eps = 0.05 if norm == "linf" else 2.0
    # steps=0: the random start itself
    start = pgd(model, x, y, eps=eps, alpha=0.0, steps=0, norm=norm, generator=seeded(0))
    delta = start - x
    if norm == "linf":
        inside = (x > eps) & (x < 1 - eps)  # pixels the box does not clip
        assert delta.abs().max() <= eps + 1e-6
        d = delta[inside] / eps  # uniform on [-1, 1]: mean 0, E|d| = 1/2, E d^2 = 1/3
        assert abs(d.mean().item()) < 0.02 and abs(d.abs().mean().item() - 0.5) < 0.02
        assert abs((d ** 2).mean().item() - 1 / 3) < 0.02
    else:
        norms = delta.flatten(1).norm(dim=1)
        assert (norms <= eps + 1e-5).all() and (norms > 0.3 * eps).all()
        # a Gaussian direction in 784 dimensions: coordinates ~ N(0, eps^2 / d), symmetric (sd 0.07 here,
        # so pixels in [0.3, 0.7] are not clipped)
        inside = (x > 0.3) & (x < 0.7)
        d = delta[inside] * (784 ** 0.5) / eps
        assert abs(d.mean().item()) < 0.05 and abs(d.std().item() - 1.0) < 0.05


# --- bad input ------------------------------------------------------------------------------------

BAD = {
    "negative eps": ({"eps": -0.1}, r"eps must lie in \[0, inf\), got -0.1"),
    "infinite eps": ({"eps": float("inf")}, "eps must be a finite number, got inf"),
    "negative alpha": ({"alpha": -0.01}, r"alpha must lie in \[0, inf\), got -0.01"),
    "negative steps": ({"steps": -1}, "steps must be a whole number >= 0, got -1"),
    "fractional steps": ({"steps": 2.5}, "steps must be a whole number >= 0, got 2.5"),
    "no restarts": ({"restarts": 0}, "restarts must be a whole number >= 1, got 0"),
    "unknown norm": ({"norm": "l1"}, "unknown norm 'l1'; expected one of"),
    "unknown loss": ({"loss": "hinge"}, "unknown loss 'hinge'; expected one of"),
    "cuda generator": ({"generator": "cuda"}, "generator must be None or a CPU torch.Generator"),
    "unknown keep": ({"keep": "first"}, "keep must be 'best' or 'last', got 'first'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_pgd_bad_arguments_raise(trained, case):
    model, x, y = trained
    kw, word = BAD[case]
    kw = {"eps": 0.1, "alpha": 0.01, "steps": 3, **kw}
    if kw.get("generator") == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA generator")
        kw["generator"] = torch.Generator(device="cuda")
    with pytest.raises(TypeError if case == "cuda generator" else ValueError, match=word):
        pgd(model, x[:4], y[:4], **kw)


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_bad_images_and_labels_raise(trained, attack):
    model, x, y = trained
    x, y = x[:4], y[:4]
    run = (lambda xx, yy, **kw: fgsm(model, xx, yy, eps=0.1, **kw)) if attack == "fgsm" else \
        (lambda xx, yy, **kw: pgd(model, xx, yy, eps=0.1, alpha=0.01, steps=3, **kw))
    with pytest.raises(ValueError, match=r"x must hold images in \[0, 1\], got values in \[-0.5, 1.5\]"):
        run(x * 2 - 0.5, y)
    with pytest.raises(ValueError, match="the images hold 4 examples but y holds 3 labels"):
        run(x, y[:3])
    with pytest.raises(ValueError, match=r"y must be a 1-D tensor of labels shaped \(N,\), got shape \(4, 1\)"):
        run(x, y[:, None])
    nan = x.clone()
    nan[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="x holds 1 values that are NaN or infinite"):
        run(nan, y)
    with pytest.raises(ValueError, match=r"x must be a batch of images shaped \(N, C, H, W\), got shape \(4, 784\)"):
        run(x.flatten(1), y)
    with pytest.raises(ValueError, match="unknown loss 'hinge'; expected one of"):
        run(x, y, loss="hinge")
    with pytest.raises(ValueError, match=r"eps must lie in \[0, inf\), got -0.1"):
        (fgsm(model, x, y, eps=-0.1) if attack == "fgsm" else pgd(model, x, y, eps=-0.1, alpha=0.01, steps=3))


# --- agreement with references --------------------------------------------------------------------

@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_is_its_closed_form(trained, targeted):
    model, x, y = trained
    labels = other_labels(y) if targeted else y
    eps = 0.07
    x_var = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x_var), labels, reduction="sum"), x_var)
    sign = -grad.sign() if targeted else grad.sign()
    expected = (x + eps * sign).clamp(0, 1)
    assert torch.equal(fgsm(model, x, labels, eps=eps, targeted=targeted), expected)


def test_fgsm_margin_is_its_closed_form(trained):
    model, x, y = trained
    x_var = x.clone().requires_grad_(True)
    logits = model(x_var)
    own = logits[torch.arange(len(y)), y]
    others = logits.clone()
    others[torch.arange(len(y)), y] = float("-inf")
    (grad,) = torch.autograd.grad((others.max(1).values - own).sum(), x_var)  # ascend minus the margin
    assert torch.equal(fgsm(model, x, y, eps=0.05, loss="margin"), (x + 0.05 * grad.sign()).clamp(0, 1))


def plain_pgd_last_iterate(model, x, y, eps, alpha, steps):
    """Madry et al.'s Linf PGD from x itself, written out independently; returns its last iterate."""
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y, reduction="sum"), x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv


def goal_and_loss(model, x_adv, y, loss="ce", targeted=False):
    with torch.no_grad():
        logits = model(x_adv)
    success = (logits.argmax(1) == y) if targeted else (logits.argmax(1) != y)
    return success, core.loss_on_logits(logits, y, loss, targeted=targeted)


def at_least_as_good(a, b, atol=1e-5):
    """Per example: (success, loss) of a >= that of b, lexicographically."""
    (sa, la), (sb, lb) = a, b
    return (sa & ~sb) | ((sa == sb) & (la >= lb - atol))


def test_pgd_keeps_the_best_iterate_of_madry_trajectory(trained):
    model, x, y = trained
    eps, alpha, steps = 0.08, 0.02, 10
    reference = plain_pgd_last_iterate(model, x, y, eps, alpha, steps)
    ours = pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, random_start=False)
    ours_score, ref_score = goal_and_loss(model, ours, y), goal_and_loss(model, reference, y)
    assert at_least_as_good(ours_score, ref_score).all()
    # on the same trajectory, the best iterate is often the last one: most examples agree exactly
    same = (ours - reference).flatten(1).abs().amax(1) < 1e-6
    assert same.float().mean() > 0.5


def test_keep_last_is_madry_last_iterate(trained):
    """``keep="last"`` (adversarial training's inner maximisation) returns the last iterate exactly."""
    model, x, y = trained
    eps, alpha, steps = 0.08, 0.02, 10
    reference = plain_pgd_last_iterate(model, x, y, eps, alpha, steps)
    ours = pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, random_start=False, keep="last")
    assert torch.allclose(ours, reference, atol=1e-6)
    assert not ours.requires_grad
    # with a random start: in the ball and the box, and the same start as keep="best" under one seed
    last = pgd(model, x, y, eps=eps, alpha=alpha, steps=1, keep="last", generator=seeded(3))
    assert (last - x).abs().max() <= eps + 1e-6 and last.min() >= 0 and last.max() <= 1
    start = pgd(model, x, y, eps=eps, alpha=alpha, steps=0, keep="last", generator=seeded(3))
    first_step = start + alpha * core.input_gradient(model, start, y)[0].sign()
    assert torch.allclose(last, core.project_linf(first_step, x, eps), atol=1e-6)


def test_pgd_at_least_as_strong_as_fgsm(trained):
    model, x, y = trained
    for eps in (0.03, 0.1, 0.2):
        acc_fgsm = accuracy(model, fgsm(model, x, y, eps=eps), y)
        acc_pgd = accuracy(model, pgd(model, x, y, eps=eps, alpha=eps / 4, steps=20, generator=seeded()), y)
        assert acc_pgd <= acc_fgsm, (eps, acc_pgd, acc_fgsm)
    assert acc_pgd < accuracy(model, x, y) - 0.3  # at eps 0.2 the attack breaks the model


def test_pgd_at_least_as_strong_as_torchattacks(trained):
    """Same model, images and budget as torchattacks.PGD (random start, 20 steps). Both starts are random,
    so ours may lose an example or two by chance: accuracy under ours <= under theirs + 0.01."""
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = trained
    for eps in (0.05, 0.1):
        ours = accuracy(model, pgd(model, x, y, eps=eps, alpha=eps / 4, steps=20, generator=seeded()), y)
        torch.manual_seed(0)
        theirs = accuracy(model, torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=20, random_start=True)(x, y), y)
        assert ours <= theirs + 0.01, (eps, ours, theirs)


@pytest.mark.parametrize("loss", ["ce", "margin"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_restarts_keep_each_examples_best(trained, loss, norm):
    """With R restarts, example i's starts are the stream's blocks i*R .. i*R + R - 1: exactly the starts
    that one restart gives to x.repeat_interleave(R). So the R-restart result of each example must be at
    least as good as each of those R single runs (no loss lost: a worse restart never overwrites a better
    one, and the choice is per example, not per batch)."""
    model = copy.deepcopy(trained[0]).double()
    x, y = trained[1][:64].double(), trained[2][:64]
    restarts = 3
    eps, alpha = (0.05, 0.0125) if norm == "linf" else (1.0, 0.25)
    kw = {"eps": eps, "alpha": alpha, "steps": 5, "norm": norm, "loss": loss}
    multi = pgd(model, x, y, restarts=restarts, generator=seeded(5), **kw)
    singles = pgd(model, x.repeat_interleave(restarts, 0), y.repeat_interleave(restarts), generator=seeded(5), **kw)
    s_multi, l_multi = goal_and_loss(model, multi, y, loss)
    s_single, l_single = goal_and_loss(model, singles, y.repeat_interleave(restarts), loss)
    s_single, l_single = s_single.view(-1, restarts), l_single.view(-1, restarts)
    for r in range(restarts):
        assert at_least_as_good((s_multi, l_multi), (s_single[:, r], l_single[:, r]), atol=1e-9).all()
    # and it is one of them (the best), not something new
    dist = (multi.repeat_interleave(restarts, 0) - singles).flatten(1).abs().amax(1).view(-1, restarts)
    assert (dist.amin(1) < 1e-9).all()
    # the restarts did differ, so the test compared something
    assert (dist.amax(1) > 1e-3).float().mean() > 0.5
    if loss == "margin":  # success <=> minus the margin > 0, so the loss itself never decreases
        assert (l_multi >= l_single.amax(1) - 1e-9).all()


class Trap(torch.nn.Module):
    """Logits of one-pixel images whose loss and success disagree: with brightness p, the true class 0
    has logit 0; class 1 has min(20 (p - 0.8), 0.5), the argmax only above p = 0.8, where the
    cross-entropy is at most log(1 + e^0.5) = 0.97; classes 2-9 have -0.01 - 20 relu(p - 0.3), so
    below p = 0.3 the image is classified right with a higher cross-entropy, about log(1 + 8) = 2.2."""

    def forward(self, x):
        p = x.flatten(1).mean(1, keepdim=True)
        rest = (-0.01 - 20 * torch.relu(p - 0.3)).expand(-1, 8)
        return torch.cat([torch.zeros_like(p), (20 * (p - 0.8)).clamp(max=0.5), rest], dim=1)


def test_a_success_beats_a_higher_loss():
    model, x, y = Trap(), torch.full((16, 1, 1, 1), 0.5), torch.zeros(16, dtype=torch.long)
    # steps = 0: the candidates are the 40 random starts, uniform on [0, 1]
    x_adv = pgd(model, x, y, eps=0.5, alpha=0.0, steps=0, restarts=40, generator=seeded(0))
    success, ce = goal_and_loss(model, x_adv, y)
    assert success.all()  # every example keeps a misclassified start ...
    high = goal_and_loss(model, torch.full((1, 1, 1, 1), 0.2), y[:1])[1]
    assert (ce < high).all()  # ... over the higher-loss, correctly classified ones it also drew


def test_targeted_pgd_reaches_its_targets(trained):
    model, x, y = trained
    targets = other_labels(y, seed=1)
    for loss in ("ce", "margin"):
        x_adv = pgd(model, x, targets, eps=0.3, alpha=0.02, steps=40, targeted=True, loss=loss, generator=seeded())
        assert accuracy(model, x_adv, targets) >= 0.9, loss
    assert accuracy(model, x, targets) < 0.05  # the targets are not what the model said already


def test_margin_loss_variant_breaks_the_model(trained):
    model, x, y = trained
    eps = 0.1
    x_margin = pgd(model, x, y, eps=eps, alpha=eps / 4, steps=20, loss="margin", generator=seeded())
    acc_margin = accuracy(model, x_margin, y)
    assert acc_margin <= accuracy(model, fgsm(model, x, y, eps=eps), y)
    assert acc_margin < accuracy(model, x, y) - 0.3
    x_l2 = pgd(model, x, y, eps=1.5, alpha=0.3, steps=20, norm="l2", loss="margin", generator=seeded())
    acc_l2 = accuracy(model, x_l2, y)
    assert acc_l2 < accuracy(model, x, y) - 0.2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_works_on_the_models_device_and_returns_on_xs(trained):
    model = copy.deepcopy(trained[0]).cuda()
    x, y = trained[1][:16], trained[2][:16]
    for x_adv in (fgsm(model, x, y, eps=0.1), pgd(model, x, y, eps=0.1, alpha=0.02, steps=5, generator=seeded())):
        assert x_adv.device == x.device and (x_adv - x).abs().max() <= 0.1 + 1e-6
    # the random starts (steps = 0) are drawn on the CPU, so they are the same whatever the model's device
    for norm, eps in (("linf", 0.1), ("l2", 1.0)):
        cpu = pgd(trained[0], x, y, eps=eps, alpha=0.0, steps=0, norm=norm, generator=seeded())
        gpu = pgd(model, x, y, eps=eps, alpha=0.0, steps=0, norm=norm, generator=seeded())
        torch.testing.assert_close(cpu, gpu, rtol=0, atol=1e-6)


# --- the Carlini-Wagner margin in core --------------------------------------------------------------

def test_margin_is_unchanged_by_a_constant_added_to_every_logit():
    logits = torch.randn(50, 10, generator=seeded(0), dtype=torch.float64)
    y = torch.randint(0, 10, (50,), generator=seeded(1))
    for targeted in (False, True):
        for kappa in (0.0, 0.5):
            base = core.margin(logits, y, targeted=targeted, kappa=kappa)
            for c in (-100.0, -3.0, 7.5):
                torch.testing.assert_close(core.margin(logits + c, y, targeted=targeted, kappa=kappa), base)


def test_margin_is_right_when_every_logit_is_negative():
    logits = torch.tensor([[-5.0, -1.0, -3.0], [-2.0, -4.0, -6.0]])
    inf = float("inf")
    # untargeted, max(Z_y - max_{j != y} Z_j, -kappa), by hand: y = (0, 2): -5 - (-1) = -4, -6 - (-2) = -4
    y = torch.tensor([0, 2])
    assert core.margin(logits, y, kappa=inf).tolist() == [-4.0, -4.0]
    # (a one-hot product would take max(0, -1, -3) = 0 as row 0's other maximum and give -5)
    assert core.margin(logits, y, kappa=1.0).tolist() == [-1.0, -1.0]
    assert core.margin(logits, y).tolist() == [0.0, 0.0]  # kappa = 0: clipped at 0 once misclassified
    # y = (1, 0), each the argmax: -1 - (-3) = 2 and -2 - (-4) = 2
    assert core.margin(logits, torch.tensor([1, 0])).tolist() == [2.0, 2.0]
    # targeted at t, max(max_{j != t} Z_j - Z_t, -kappa): t = (0, 2): -1 - (-5) = 4, -2 - (-6) = 4
    assert core.margin(logits, y, targeted=True).tolist() == [4.0, 4.0]
    # t = (1, 0), already the argmax: -3 - (-1) = -2 and -4 - (-2) = -2
    assert core.margin(logits, torch.tensor([1, 0]), targeted=True, kappa=inf).tolist() == [-2.0, -2.0]
    assert core.margin(logits, torch.tensor([1, 0]), targeted=True).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_keep_rows_is_torch_where_over_the_rows_bit_for_bit(dtype):
    """core.keep_rows (lerp with weights 0 and 1) must pick each example's row exactly as torch.where does,
    on values spanning many magnitudes, where any rounding in a + w (b - a) would show."""
    g = torch.Generator().manual_seed(0)
    old = torch.rand(64, 3, 5, 5, generator=g, dtype=dtype) * 10.0 ** torch.randint(-30, 30, (64, 3, 5, 5), generator=g)
    new = torch.rand(64, 3, 5, 5, generator=g, dtype=dtype) * 10.0 ** torch.randint(-30, 30, (64, 3, 5, 5), generator=g)
    keep = torch.rand(64, generator=g) > 0.5
    assert 0 < keep.sum() < 64
    expected = torch.where(keep[:, None, None, None], new, old)
    assert torch.equal(core.keep_rows(keep, new, old), expected)
