"""advlib.certify: the dual, IBP and CROWN-IBP margin bounds are sound, exact at eps = 0, and ordered.

Soundness: no point of the eps-ball (intersected with [0,1]) that sampling or PGD finds has a margin
f_y - f_j below any method's bound, on random nets (MLP, conv nets, with and without Normalize, odd
strides and paddings) and on a trained MLP. Also: the contracts (eval mode, inputs untouched, bad input).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlib import certify, models
from advlib.attacks import pgd

BOUNDS = {
    "dual": lambda m, x, y, eps, box: certify.dual_bounds(m, x, y, eps, box),
    "ibp": lambda m, x, y, eps, box: certify.ibp_margin_bounds(m, x, y, eps, box),
    "crown-ibp": lambda m, x, y, eps, box: certify.crown_ibp_bounds(m, x, y, eps, box),
}


def random_mlp() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 10))


def random_cnn() -> nn.Sequential:
    """Starts with Normalize; a stride-2 convolution without padding on 28x28 (the transposed map needs an
    output padding), then one with padding."""
    return nn.Sequential(models.normalize(), nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(),
                         nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(6 * 7 * 7, 16), nn.ReLU(), nn.Linear(16, 10))


def random_normalized_mlp() -> nn.Sequential:
    return nn.Sequential(nn.Sequential(models.normalize(), nn.Flatten()), nn.Linear(784, 20), nn.ReLU(),
                         nn.Linear(20, 10))


def margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """f_y(x) - f_j(x), (N, K)."""
    with torch.no_grad():
        logits = model(x)
    return logits.gather(1, y[:, None]) - logits


def worst_found(model, x, y, eps, box, generator) -> torch.Tensor:
    """Per example and class j, the smallest margin f_y - f_j over random corners and uniform points of the
    ball (intersected with the box) and over the points targeted PGD (margin loss) reaches toward each j."""
    lo, hi = (x - eps, x + eps) if box is None else ((x - eps).clamp(min=box[0]), (x + eps).clamp(max=box[1]))
    worst = margins(model, x, y)
    for _ in range(20):
        corner = torch.where(torch.rand(x.shape, generator=generator) < 0.5, lo, hi)
        uniform = lo + (hi - lo) * torch.rand(x.shape, generator=generator)
        worst = torch.minimum(worst, torch.minimum(margins(model, corner, y), margins(model, uniform, y)))
    if box == (0.0, 1.0):  # pgd's projection is onto the ball intersected with [0,1]
        for j in range(10):
            target = torch.full_like(y, j)
            x_adv = pgd(model, x, target, eps=eps, alpha=eps / 4, steps=20, loss="margin", targeted=True,
                        generator=generator)
            assert (x_adv >= lo - 1e-6).all() and (x_adv <= hi + 1e-6).all()
            worst = torch.minimum(worst, margins(model, x_adv, y))
    return worst


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(12, 1, 28, 28, generator=g), torch.randint(0, 10, (12,), generator=g)


@pytest.mark.parametrize("build", [random_mlp, random_cnn, random_normalized_mlp])
@pytest.mark.parametrize("box", [(0.0, 1.0), None])
def test_bounds_are_sound_on_random_nets(build, box, images, one_thread):
    torch.manual_seed(1)
    model = build().eval()
    x, y = images
    eps = 0.02
    worst = worst_found(model, x, y, eps, box, torch.Generator().manual_seed(2))
    for name, bound in BOUNDS.items():
        with torch.no_grad():
            b = bound(model, x, y, eps, box)
        assert b.shape == (len(x), 10)
        assert (b <= worst + 1e-5).all(), name
        assert (b.gather(1, y[:, None]) == 0).all(), name
        # and not vacuous: within a few units of the worst margin found
        assert (worst - b).max() < 50, name


def test_bounds_are_sound_on_a_trained_mlp(small_mlp, one_thread):
    model, x, y = small_mlp(3)
    x, y = x[:40], y[:40]
    eps = 0.05
    worst = worst_found(model, x, y, eps, (0.0, 1.0), torch.Generator().manual_seed(0))
    found_broken = (worst.masked_fill(torch.eye(10, dtype=torch.bool)[y], 1.0) <= 0).any(dim=1)
    for name, bound in BOUNDS.items():
        with torch.no_grad():
            b = bound(model, x, y, eps, (0.0, 1.0))
        assert (b <= worst + 1e-5).all(), name
        # an example an attack broke is never certified
        assert not (certify.certified(b, y) & found_broken).any(), name
    # at eps 0.05 the normally trained MLP is broken on some examples (the check above is not idle)
    assert found_broken.any()


def test_dual_is_tighter_than_ibp_on_these_nets(images, small_mlp, one_thread):
    """On random and normally trained nets the dual bound dominates IBP's (elementwise). Not a theorem:
    see test_dual_is_not_always_tighter_than_ibp."""
    x, y = images
    cases = [(build(), x, y) for build in (random_mlp, random_cnn)]
    trained, xt, yt = small_mlp(3)
    cases.append((trained, xt[:40], yt[:40]))
    for seed, (model, xs, ys) in enumerate(cases):
        torch.manual_seed(seed)
        for eps in (0.005, 0.05):
            with torch.no_grad():
                dual = certify.dual_bounds(model.eval(), xs, ys, eps)
                ibp = certify.ibp_margin_bounds(model, xs, ys, eps)
            assert (ibp <= dual + 1e-5).all()
            assert (ibp < dual - 1e-3).any()  # strictly tighter somewhere


def test_one_crossing_unit_and_why_the_dual_is_not_always_tighter_than_ibp():
    """One crossing unit z in [-1, 1], logits (a, 0) with a = relu(z). For the margin a (label 0): IBP
    knows a >= 0; the dual network's lower line a >= z/2 gives -1/2; CROWN's adaptive lower line (slope 1,
    as u >= -l) gives -1. For the margin -a (label 1) all three use the upper line a <= (z + 1)/2: -1, exact."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 2))
    with torch.no_grad():
        model[1].weight.fill_(2.0), model[1].bias.fill_(-1.0)
        model[3].weight.copy_(torch.tensor([[1.0], [0.0]])), model[3].bias.zero_()
    x, y = torch.full((2, 1, 1, 1), 0.5), torch.tensor([0, 1])
    with torch.no_grad():
        ibp = certify.ibp_margin_bounds(model, x, y, 0.5)
        dual = certify.dual_bounds(model, x, y, 0.5)
        crown = certify.crown_ibp_bounds(model, x, y, 0.5)
    assert (ibp[0, 1].item(), dual[0, 1].item(), crown[0, 1].item()) == pytest.approx((0.0, -0.5, -1.0))
    assert (ibp[1, 0].item(), dual[1, 0].item(), crown[1, 0].item()) == pytest.approx((-1.0, -1.0, -1.0))


def test_bounds_are_attained_on_affine_nets(images):
    """Without ReLUs every bound is the exact minimum over the box, attained at the corner x' = lo where the
    gradient of the bounded quantity is positive, hi where it is negative."""
    torch.manual_seed(5)
    model = nn.Sequential(models.normalize(), nn.Conv2d(1, 2, 5, stride=3, padding=2), nn.Flatten(),
                          nn.Linear(2 * 10 * 10, 10)).eval()
    conv_only = model[:3]
    x, y = images[0][:3], images[1][:3]
    eps = 0.1
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)

    def attained(f, k):  # the minimum of f(x')[:, k] over the box, per example
        x_var = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(f(x_var)[:, k].sum(), x_var)
        with torch.no_grad():
            return f(torch.where(grad > 0, lo, hi))[:, k]

    lower, _ = certify.ibp_bounds(conv_only, x, eps)
    for k in range(0, 200, 17):
        assert torch.allclose(lower[:, k], attained(conv_only, k), atol=1e-5)
    for name, bound in BOUNDS.items():
        b = bound(model, x, y, eps, (0.0, 1.0))
        for j in range(10):
            margin_j = lambda z, j=j: model(z).gather(1, y[:, None]) - model(z)[:, j:j + 1]  # noqa: E731
            assert torch.allclose(b[:, j], attained(margin_j, 0), atol=1e-4), name


def test_bounds_at_eps_zero_are_the_margins(images, small_mlp):
    x, y = images
    trained, xt, yt = small_mlp(3)
    for model, xs, ys in ((random_cnn().eval(), x, y), (random_mlp().eval(), x, y), (trained, xt[:20], yt[:20])):
        exact = margins(model, xs, ys)
        for name, bound in BOUNDS.items():
            with torch.no_grad():
                assert torch.allclose(bound(model, xs, ys, 0.0, (0.0, 1.0)), exact, atol=1e-5), name
        with torch.no_grad():
            lower, upper = certify.ibp_bounds(model, xs, 0.0)
            assert torch.allclose(lower, model(xs), atol=1e-5) and torch.allclose(upper, model(xs), atol=1e-5)


def test_ibp_bounds_contain_the_logits_and_fold_tighter(images):
    torch.manual_seed(3)
    model = random_cnn().eval()
    x, y = images
    lower, upper = certify.ibp_bounds(model, x, 0.05)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(10):
            logits = model((x + 0.05 * (2 * torch.rand(x.shape, generator=g) - 1)).clamp(0, 1))
            assert (lower <= logits + 1e-5).all() and (logits <= upper + 1e-5).all()
        folded = certify.ibp_margin_bounds(model, x, y, 0.05)
    naive = lower.gather(1, y[:, None]) - upper
    assert (folded >= naive - 1e-5).all()
    assert (folded > naive + 1e-3).any()


def test_the_box_only_tightens(images):
    torch.manual_seed(4)
    model = random_mlp().eval()
    x, y = images
    x = x.clone()
    x[:, :, :10] = 0.0  # pixels at the box's edge, where the box cuts the ball
    for name, bound in BOUNDS.items():
        with torch.no_grad():
            boxed, plain = bound(model, x, y, 0.05, (0.0, 1.0)), bound(model, x, y, 0.05, None)
        assert (boxed >= plain - 1e-5).all(), name
        assert (boxed > plain + 1e-4).any(), name


def test_contracts_eval_mode_inputs_untouched_gradients(images):
    model = random_cnn().train()
    x, y = images
    x0, y0 = x.clone(), y.clone()
    for name, bound in BOUNDS.items():
        b = bound(model, x, y, 0.01, (0.0, 1.0))
        assert model.training and all(m.training for m in model.modules()), name
        assert torch.equal(x, x0) and torch.equal(y, y0), name
        b.sum().backward()  # differentiable in the parameters (for certified training)
        assert model[1].weight.grad is not None and model[1].weight.grad.abs().sum() > 0, name
        model.zero_grad()


def test_bad_input_is_rejected(images):
    model = random_mlp()
    x, y = images
    for bound in BOUNDS.values():
        with pytest.raises(ValueError, match=r"eps must lie in \[0, inf\), got -0.1"):
            bound(model, x, y, -0.1, (0.0, 1.0))
        with pytest.raises(ValueError, match=r"x must hold images in \[0, 1\], got values in \[0"):
            bound(model, x * 2, y, 0.1, (0.0, 1.0))
        with pytest.raises(ValueError, match="the images hold 12 examples but y holds 3 labels"):
            bound(model, x, y[:3], 0.1, (0.0, 1.0))
        with pytest.raises(ValueError, match=r"box must be None or a pair \(lo, hi\) with lo < hi, got \(1.0, 0.0\)"):
            bound(model, x, y, 0.1, (1.0, 0.0))
        pooled = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(338, 10))
        with pytest.raises(TypeError, match=r"unsupported layer MaxPool2d\(.*\): bounds support nn.Linear"):
            bound(pooled, x, y, 0.1, (0.0, 1.0))
        with pytest.raises(TypeError, match=r"unsupported layer Sigmoid\(\) \(Sigmoid\): bounds support nn.Linear"):
            bound(nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Sigmoid()), x, y, 0.1, (0.0, 1.0))
        with pytest.raises(TypeError, match="bounds need an nn.Sequential of Linear, Conv2d, ReLU, Flatten and "
                                            "Normalize layers, got AE400"):
            bound(models.AE400(), x, y, 0.1, (0.0, 1.0))
    with pytest.raises(TypeError, match=r"unsupported layer MaxPool2d\(.*\): bounds support nn.Linear"):
        certify.ibp_bounds(models.small_cnn(), x, 0.1)
    with pytest.raises(ValueError, match="unknown bound method 'lp'; expected one of"):
        certify.margin_bounds(model, x, y, 0.1, method="lp")
    with pytest.raises(ValueError, match="projections estimate the dual bound only; method 'ibp' takes none"):
        certify.margin_bounds(model, x, y, 0.1, method="ibp", projections=10)
    with pytest.raises(ValueError, match="projections must be None or a positive number of projections, got 0"):
        certify.dual_bounds(model, x, y, 0.1, projections=0)
    with pytest.raises(TypeError, match="generator must be None or a CPU torch.Generator"):
        certify.dual_bounds(model, x, y, 0.1, projections=5, generator=0)


def test_bad_values_the_bounds_once_took_silently_are_refused(images):
    """NaN pixels, an infinite eps, labels outside the classes and a Linear layer on unflattened images
    (which torch applies to the last dimension only) each get an error that names them."""
    model = models.mlp((32,))
    x, y = images
    nan = x.clone()
    nan[0, 0, 3, 3] = float("nan")
    unflattened = nn.Sequential(nn.Linear(28, 10), nn.ReLU(), nn.Flatten(), nn.Linear(280, 10))
    for bound in BOUNDS.values():
        with pytest.raises(ValueError, match="NaN or infinite"):
            bound(model, nan, y, 0.1, (0.0, 1.0))
        with pytest.raises(ValueError, match="eps must be a finite number"):
            bound(model, x, y, float("inf"), (0.0, 1.0))
        with pytest.raises(ValueError, match=r"labels in \[0, 10\)"):
            bound(model, x, y + 10, 0.1, (0.0, 1.0))
        with pytest.raises(TypeError, match=r"Linear layer to act on flat vectors .* put an nn.Flatten\(\) before it"):
            bound(unflattened, x, y, 0.1, (0.0, 1.0))
