"""TRADES (Zhang et al. 2019): its KL attack stays in the ball and raises the divergence, its loss is the paper's,
and training on it buys robustness that natural training does not have."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlib import data, defenses, evaluate, train


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))


@pytest.fixture(scope="module")
def fashion():
    (x, y), (xt, yt) = data.load_subsets("fashion-mnist", 2000, 500)
    return x, y, xt, yt


def test_the_kl_attack_stays_in_the_ball_and_raises_the_divergence(fashion):
    x, y, _, _ = fashion
    model = _mlp()
    train.fit(model, x, y, epochs=1, device="cpu", desc=None)
    xb = x[:64]
    x_adv = defenses.trades_kl_attack(model, xb, eps=0.1, alpha=0.025, steps=10,
                                      generator=torch.Generator().manual_seed(0))
    assert (x_adv - xb).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        p = F.softmax(model(xb), dim=1)
        def kl(points):
            return F.kl_div(F.log_softmax(model(points), dim=1), p, reduction="none").sum(1)
        start = (xb + 0.001 * torch.randn(xb.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
        assert kl(x_adv).mean() > 10 * kl(start).mean()
    assert model.training is False  # fit leaves eval mode; the attack restores it


def test_training_buys_robustness_and_beta_zero_is_natural_training(fashion):
    x, y, xt, yt = fashion
    natural, trades, zero = _mlp(), _mlp(), _mlp()
    train.fit(natural, x, y, epochs=5, device="cpu", desc=None)
    defenses.trades_training(trades, x, y, eps=0.15, beta=6.0, steps=5, epochs=5, device="cpu", desc=None)
    history = defenses.trades_training(zero, x, y, eps=0.1, beta=0.0, steps=1, epochs=3, device="cpu", desc=None)
    robust = {name: evaluate.pgd_accuracy(model, xt, yt, eps=0.15, steps=20)
              for name, model in (("natural", natural), ("trades", trades))}
    assert robust["trades"] > robust["natural"] + 0.15, robust
    # beta = 0: the loss is the cross-entropy alone, so the run matches natural training's losses
    assert history.epoch_losses == pytest.approx(train.fit(_mlp(), x, y, epochs=3, device="cpu",
                                                           desc=None).epoch_losses, rel=1e-5)


def test_a_seeded_run_repeats(fashion):
    x, y, _, _ = fashion
    runs = []
    for _ in range(2):
        model = _mlp()
        defenses.trades_training(model, x[:256], y[:256], eps=0.1, steps=2, device="cpu", desc=None)
        runs.append(model[1].weight.detach().clone())
    assert torch.equal(*runs)


def test_bad_settings_get_clear_errors(fashion):
    x, y, _, _ = fashion
    for bad, match in (({"eps": 0.0}, "eps"), ({"eps": 0.1, "beta": -1.0}, "beta"),
                       ({"eps": 0.1, "steps": 0}, "steps"), ({"eps": 0.1, "alpha": float("nan")}, "alpha")):
        with pytest.raises(ValueError, match=match):
            defenses.trades_training(_mlp(), x[:8], y[:8], device="cpu", desc=None, **bad)


def test_the_loss_is_cross_entropy_plus_beta_times_the_kl_at_the_attack_point(fashion):
    """Eq. (5) on one batch: CE at x plus beta KL(p(x) || p(x')), x' the KL attack's point from the same noise."""
    x, y, _, _ = fashion
    model = _mlp()
    train.fit(model, x, y, epochs=1, device="cpu", desc=None)
    xb, yb = x[:32], y[:32]
    settings = dict(eps=0.1, alpha=0.025, steps=5)
    loss = defenses.trades_loss(model, xb, yb, beta=6.0, generator=torch.Generator().manual_seed(3), **settings)
    x_adv = defenses.trades_kl_attack(model, xb, generator=torch.Generator().manual_seed(3), **settings)
    p, log_q = F.softmax(model(xb), dim=1), F.log_softmax(model(x_adv), dim=1)
    kl = (p * (p.log() - log_q)).sum(1).mean()
    expected = F.cross_entropy(model(xb), yb) + 6.0 * kl
    assert torch.allclose(loss, expected, atol=1e-5) and kl > 1e-3
    natural = defenses.trades_loss(model, xb, yb, beta=0.0, **settings)
    assert torch.allclose(natural, F.cross_entropy(model(xb), yb))
    loss.backward()  # gradients reach the weights through both terms
    assert all(p.grad is not None for p in model.parameters())
