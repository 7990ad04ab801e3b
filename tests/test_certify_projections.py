"""advlib.certify.dual_bounds(projections=k): Wong et al.'s (2018) random-projection estimate of the layer
bounds converges to the exact dual bound, is seeded by its generator, and is exact where it claims to be."""

from __future__ import annotations

import torch
from torch import nn

from advlib import certify, models


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(models.normalize(), nn.Flatten(), nn.Linear(784, 40), nn.ReLU(), nn.Linear(40, 30),
                         nn.ReLU(), nn.Linear(30, 10)).eval()


def conv_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 4, stride=2, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(4 * 7 * 7, 10)).eval()


def data(n=8):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def estimate(model, x, y, eps, k, seed, box=(0.0, 1.0)):
    with torch.no_grad():
        return certify.dual_bounds(model, x, y, eps, box, projections=k, generator=torch.Generator().manual_seed(seed))


def relative_error(estimated, exact):
    return ((estimated - exact).abs().max() / exact.abs().max()).item()


def test_many_projections_approach_the_exact_bound(one_thread):
    x, y = data()
    for model in (net(), conv_net()):
        for box in ((0.0, 1.0), None):
            with torch.no_grad():
                exact = certify.dual_bounds(model, x, y, 0.02, box)
            few = [relative_error(estimate(model, x, y, 0.02, 10, seed, box), exact) for seed in range(3)]
            many = relative_error(estimate(model, x, y, 0.02, 2000, 0, box), exact)
            assert many < 0.05
            assert many < min(few)
            assert min(few) > 0.01  # ten projections are visibly an estimate


def test_projections_are_seeded_by_the_generator():
    model = net()
    x, y = data()
    first, again = estimate(model, x, y, 0.05, 20, seed=7), estimate(model, x, y, 0.05, 20, seed=7)
    other = estimate(model, x, y, 0.05, 20, seed=8)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_exact_where_nothing_is_estimated():
    """One hidden layer: its bounds come from interval arithmetic (exact), so the projections change nothing;
    at eps = 0 every bound is the margin itself."""
    torch.manual_seed(2)
    shallow = nn.Sequential(models.normalize(), nn.Flatten(), nn.Linear(784, 30), nn.ReLU(), nn.Linear(30, 10)).eval()
    x, y = data()
    with torch.no_grad():
        assert torch.allclose(estimate(shallow, x, y, 0.05, 5, 0), certify.dual_bounds(shallow, x, y, 0.05), atol=1e-6)
        logits = net()(x)
        assert torch.allclose(estimate(net(), x, y, 0.0, 5, 0), logits.gather(1, y[:, None]) - logits, atol=1e-5)


def test_robust_loss_with_projections_trains():
    model = net().train()
    x, y = data()
    loss, error = certify.robust_loss(model, x, y, 0.02, projections=10, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert 0 <= error <= 1
