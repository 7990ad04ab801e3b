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


def _input_box(model: nn.Module, x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The Linf ball of radius eps around x, intersected with [0,1], after the model's Normalize layer
    (a per-channel increasing affine map, so the box maps to a box), flattened: (lower, upper), each (N, D)."""
    lower, upper = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    mean, std = model.normalize.mean, model.normalize.std
    return ((lower - mean) / std).flatten(1), ((upper - mean) / std).flatten(1)


def exact_linear_margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """The exact minimum of z_y - z_j over the box for a linear model z = W u + b (u the normalised pixels):
    c = W_y - W_j is minimised coordinate by coordinate, sum_i min(c_i l_i, c_i u_i) + b_y - b_j. Any sound
    bound is at most this, and every method (dual, IBP with the last layer folded, CROWN-IBP) is exact on a
    network without a ReLU, so each must give these values."""
    lower, upper = _input_box(model, x, eps)
    w, b = model.logits.weight, model.logits.bias
    c = w[y][:, None, :] - w[None, :, :]  # (N, K, D): row j is W_y - W_j
    return torch.minimum(c * lower[:, None], c * upper[:, None]).sum(-1) + b[y][:, None] - b[None, :]


def hand_ibp_margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Gowal et al.'s interval bound (2018, Eq. (6) and Sec. 3's elision of the last layer), written out for
    Normalize -> Flatten -> Linear -> ReLU -> Linear: the hidden box |W1| r around W1 mu + b1, through the
    ReLU, then c = W2_y - W2_j bounded over the hidden box directly."""
    lower, upper = _input_box(model, x, eps)
    mid, rad = (upper + lower) / 2, (upper - lower) / 2
    w1, b1 = model.linear1.weight, model.linear1.bias
    low1 = (mid @ w1.T + b1 - rad @ w1.abs().T).clamp(min=0)
    high1 = (mid @ w1.T + b1 + rad @ w1.abs().T).clamp(min=0)
    mid, rad = (high1 + low1) / 2, (high1 - low1) / 2
    w2, b2 = model.logits.weight, model.logits.bias
    c = w2[y][:, None, :] - w2[None, :, :]
    return (c * mid[:, None]).sum(-1) - (c.abs() * rad[:, None]).sum(-1) + b2[y][:, None] - b2[None, :]


def certified_by(margins: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Certified: every other class's margin bound > 0; with the smallest such margin, to see how close to 0."""
    others = margins.masked_fill(nn.functional.one_hot(y, margins.shape[1]).bool(), float("inf")).amin(dim=1)
    assert others.abs().min() > 1e-3, others.abs().min()  # no example on the edge: float rounding cannot flip one
    return others > 0


def test_certified_accuracy_agrees_with_hand_written_bounds(small_mlp, small_train, one_thread):
    """certified_accuracy (in batches of 7, so batching is exercised) against references written here from
    the papers' formulas: the exact minimum for a linear model (all three methods), and interval bound
    propagation written out layer by layer for a ReLU MLP. The eps is chosen so that some images are
    certified and some are not, and no margin is within 1e-3 of zero."""
    relu_mlp, x, y = small_mlp(3)
    x, y = x[:100], y[:100]
    config.seed_everything(0)
    linear = models.mlp(())
    train.fit(linear, *small_train, epochs=1, seed=0, device=torch.device("cpu"))
    for eps in (0.005, 0.02):
        with torch.no_grad():
            exact = exact_linear_margins(linear, x, y, eps)
            by_hand = hand_ibp_margins(relu_mlp, x, y, eps)
        expected_linear = int(certified_by(exact, y).sum()) / len(x)
        expected_ibp = int(certified_by(by_hand, y).sum()) / len(x)
        assert 0.1 < expected_linear < 0.9 and 0.1 < expected_ibp < 0.9, (expected_linear, expected_ibp)
        for method in certify.METHODS:
            with torch.no_grad():
                bounds = certify.margin_bounds(linear, x, y, eps, method=method)
            assert torch.allclose(bounds, exact, atol=1e-4), method
            assert certify.certified_accuracy(linear, x, y, eps, method=method, batch_size=7) == expected_linear
        with torch.no_grad():
            assert torch.allclose(certify.margin_bounds(relu_mlp, x, y, eps, method="ibp"), by_hand, atol=1e-4)
        assert certify.certified_accuracy(relu_mlp, x, y, eps, method="ibp", batch_size=7) == expected_ibp
    # at eps 0 a certified example is a correctly classified one
    with torch.no_grad():
        accuracy = (relu_mlp(x).argmax(1) == y).float().mean().item()
    assert certify.certified_accuracy(relu_mlp, x, y, 0.0) == pytest.approx(accuracy)
    with pytest.raises(ValueError, match="the images hold 10 examples but y holds 9 labels"):
        certify.certified_accuracy(relu_mlp, x[:10], y[:9], 0.1)


def test_certified_training_rejects_bad_settings(small_train):
    x, y = small_train[0][:50], small_train[1][:50]
    model = models.mlp((8,))
    nan = x.clone()
    nan[4, 0, 10, 10] = float("nan")
    before = [p.detach().clone() for p in model.parameters()]
    for kwargs, error, match in (
            ({"eps": 0.0}, ValueError, "eps must be > 0 for certified training"),
            ({"eps": -0.1}, ValueError, r"eps must lie in \[0, inf\), got -0.1"),
            ({"eps": float("inf")}, ValueError, "eps must be a finite number, got inf"),
            ({"eps": EPS, "method": "lp"}, ValueError, "unknown certified training method 'lp'"),
            ({"eps": EPS, "method": "ibp", "projections": 5}, ValueError,
             "projections estimate the dual bound only; method 'ibp' takes none"),
            ({"eps": EPS, "projections": 0}, ValueError, "projections must be a whole number >= 1, got 0"),
            ({"eps": EPS, "kappa": (1.5, 0.0)}, ValueError, r"kappa\[0\] must lie in \[0, 1\], got 1.5"),
            ({"eps": EPS, "kappa": (0.5,)}, ValueError, r"kappa must be a pair \(start, end\) of numbers in \[0, 1\]"),
            ({"eps": EPS, "beta": (1.0, float("nan"))}, ValueError, r"beta\[1\] must be a finite number, got nan"),
            ({"eps": EPS, "eps_start": 0.5}, ValueError, r"eps_start must lie in \[0, eps\] = \[0, 0.1\], got 0.5"),
            ({"eps": EPS, "warmup_epochs": -1}, ValueError, r"warmup_epochs must lie in \[0, inf\), got -1"),
            ({"eps": EPS, "epochs": -1}, ValueError, "epochs must be a whole number >= 0, got -1"),
            ({"eps": EPS, "batch_size": 0}, ValueError, "batch_size must be a whole number >= 1, got 0"),
            ({"eps": EPS, "lr": 0.0}, ValueError, r"lr must lie in \(0, inf\), got 0"),
            ({"eps": EPS, "x": nan}, ValueError, "x holds 1 values that are NaN or infinite"),
            ({"eps": EPS, "y": y[:, None]}, ValueError, r"y must be a 1-D tensor of labels shaped \(N,\), got shape "
                                                         r"\(50, 1\)"),
            ({"eps": EPS, "y": y[:49]}, ValueError, "the images hold 50 examples but y holds 49 labels"),
            ({"eps": EPS, "y": y + 10}, ValueError, r"y must hold labels in \[0, 10\) \(the model has 10 classes\)"),
            ({"eps": EPS, "x": x[:0], "y": y[:0]}, ValueError, "no examples: x and y are empty")):
        data = {"x": kwargs.pop("x", x), "y": kwargs.pop("y", y)}
        with pytest.raises(error, match=match):
            certified_training(model, data["x"], data["y"], **{"epochs": 1, **kwargs})
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # refused before a step
    with pytest.raises(TypeError, match=r"unsupported layer MaxPool2d\(.*\): bounds support nn.Linear"):
        certified_training(models.small_cnn(), x, y, eps=EPS, epochs=1)
    with pytest.raises(ValueError, match=r"x must hold images in \[0, 1\], got values in \[0, 3"):
        certified_training(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), x * 3, y, eps=EPS, epochs=1)
