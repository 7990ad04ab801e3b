"""Certified training (advlib.defenses.certified_training), fit's criterion hook, and certified accuracy."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advlib import certify, config, models, train
from advlib.defenses import certified_training

EPS = 0.1


@pytest.fixture(scope="module")
def split(fashion_train, fashion_test):
    from advlib import data

    (x, y), (xt, yt) = data.subset(*fashion_train, 1000, seed=1), data.subset(*fashion_test, 500, seed=1)
    return x.clone(), y.clone(), xt.clone(), yt.clone()


def test_fit_criterion_gets_the_batch_and_the_progress(small_train):
    x, y = small_train[0][:200], small_train[1][:200]
    seen = []

    def criterion(model, xb, yb, progress):
        seen.append((len(xb), progress))
        return train.classification_loss(model(xb), yb)

    config.seed_everything(0)
    hooked = models.mlp((16,))
    config.seed_everything(0)
    plain = models.mlp((16,))
    history = train.fit(hooked, x, y, epochs=2, batch_size=64, criterion=criterion, device=torch.device("cpu"))
    train.fit(plain, x, y, epochs=2, batch_size=64, device=torch.device("cpu"))
    assert [n for n, _ in seen] == [64, 64, 64, 8] * 2
    assert [p for _, p in seen] == [i / 8 for i in range(8)]
    assert len(history.step_losses) == 8
    for a, b in zip(hooked.parameters(), plain.parameters(), strict=True):  # the same loss, the same run
        assert torch.equal(a, b)


def test_the_eps_ramp_is_per_step(small_train):
    x, y = small_train[0][:100], small_train[1][:100]
    torch.manual_seed(0)
    history = certified_training(models.mlp((16,)), x, y, eps=EPS, method="ibp", epochs=4, batch_size=25,
                                 eps_start=0.02, warmup_epochs=2, device=torch.device("cpu"))
    eps = history.eps
    assert len(eps) == 16
    assert eps[0] == pytest.approx(0.02) and eps[8:] == pytest.approx([EPS] * 8)
    steps = [b - a for a, b in zip(eps[:8], eps[1:9], strict=True)]
    assert steps == pytest.approx([(EPS - 0.02) / 8] * 8)  # one equal step per batch, not per epoch
    # IBP's kappa starts at 1: the clean loss alone, no bound computed on the first step, on the next ones
    assert math.isnan(history.certified_error[0]) and not math.isnan(history.certified_error[1])
    history = certified_training(models.mlp((16,)), x, y, eps=EPS, method="crown-ibp", epochs=2, batch_size=50,
                                 device=torch.device("cpu"))
    assert history.eps[0] == 0 and math.isnan(history.certified_error[0])  # eps 0: the clean loss
    assert not math.isnan(history.certified_error[-1])


@pytest.mark.parametrize("method", ["dual", "ibp", "crown-ibp"])
def test_certified_training_certifies(method, split, small_mlp, one_thread):
    """200 steps on 1,000 images at eps 0.1: the robust loss falls, and a clearly larger share of the test
    images is certified than for a normally trained MLP (about none at eps 0.1)."""
    x, y, xt, yt = split
    torch.manual_seed(0)
    model = models.mlp((64,))
    with torch.no_grad():
        before, _ = certify.robust_loss(model, x[:500], y[:500], EPS, method=method)
    history = certified_training(model, x, y, eps=EPS, method=method, epochs=10, batch_size=50,
                                 device=torch.device("cpu"))
    assert not model.training
    assert len(history.step_losses) == 200
    with torch.no_grad():
        after, error = certify.robust_loss(model, x[:500], y[:500], EPS, method=method)
    assert after < 0.5 * before and error < 0.8
    certified_here = certify.certified_accuracy(model, xt, yt, EPS, method=method)
    normal, _, _ = small_mlp(3)
    certified_normal = certify.certified_accuracy(normal, xt, yt, EPS, method=method)
    assert certified_normal < 0.05
    assert certified_here > 0.3


def test_projection_training_repeats_with_its_seed(small_train, one_thread):
    x, y = small_train[0][:200], small_train[1][:200]
    weights = []
    for seed in (3, 3, 4):
        config.seed_everything(0)
        model = models.mlp((24, 24))
        history = certified_training(model, x, y, eps=EPS, method="dual", projections=8, epochs=2, batch_size=50,
                                     seed=seed, device=torch.device("cpu"))
        weights.append(torch.cat([p.flatten() for p in model.parameters()]))
        assert all(math.isfinite(v) for v in history.step_losses)
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])


def test_certified_accuracy_counts_certified_examples(split):
    _, _, xt, yt = split
    torch.manual_seed(0)
    model = models.mlp((32,)).eval()
    for method in certify.METHODS:
        with torch.no_grad():
            bounds = certify.margin_bounds(model, xt[:60], yt[:60], 0.001, method=method)
        expected = int(certify.certified(bounds, yt[:60]).sum()) / 60
        assert certify.certified_accuracy(model, xt[:60], yt[:60], 0.001, method=method, batch_size=7) == expected
    # at eps 0 a certified example is a correctly classified one
    accuracy = (model(xt[:60]).argmax(1) == yt[:60]).float().mean().item()
    assert certify.certified_accuracy(model, xt[:60], yt[:60], 0.0) == pytest.approx(accuracy)
    with pytest.raises(ValueError, match="labels|examples"):
        certify.certified_accuracy(model, xt[:10], yt[:9], 0.1)


def test_certified_training_rejects_bad_settings(small_train):
    x, y = small_train[0][:50], small_train[1][:50]
    model = models.mlp((8,))
    for kwargs, error, match in (
            ({"eps": 0.0}, ValueError, "eps"),
            ({"eps": -0.1}, ValueError, "eps"),
            ({"eps": EPS, "method": "lp"}, ValueError, "method"),
            ({"eps": EPS, "method": "ibp", "projections": 5}, ValueError, "projections"),
            ({"eps": EPS, "kappa": (1.5, 0.0)}, ValueError, "kappa"),
            ({"eps": EPS, "eps_start": 0.5}, ValueError, "eps_start")):
        with pytest.raises(error, match=match):
            certified_training(model, x, y, epochs=1, **kwargs)
    with pytest.raises(TypeError, match="MaxPool2d"):
        certified_training(models.small_cnn(), x, y, eps=EPS, epochs=1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        certified_training(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), x * 3, y, eps=EPS, epochs=1)
