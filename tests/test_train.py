"""advlib.train: the losses, the sign optimiser, seeded training, input checks, the autoencoder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlib import config, models, train


def fresh(arch="fc10", seed=0, **kwargs):
    config.seed_everything(seed)
    return models.build(arch, **kwargs)


def params_equal(a, b) -> bool:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert pa.keys() == pb.keys()
    return all(torch.equal(pa[k], pb[k]) for k in pa)


def test_fit_lowers_the_loss(small_train):
    x, y = small_train
    model = fresh()
    before = train.classification_loss(model(x), y).item()
    history = train.fit(model, x, y, epochs=3, batch_size=64, lr=1e-2)
    assert len(history.epoch_losses) == 3
    assert len(history.step_losses) == 3 * 16  # ceil(1000 / 64) steps per epoch
    assert history.epoch_losses[0] > history.epoch_losses[-1]
    with torch.no_grad():
        after = train.classification_loss(model(x), y).item()
    assert after < 0.8 * before
    # the recorded epoch mean is the example-weighted mean of its steps
    steps = history.step_losses[:16]
    sizes = [64] * 15 + [1000 - 15 * 64]
    assert history.epoch_losses[0] == pytest.approx(sum(s * n for s, n in zip(steps, sizes, strict=True)) / 1000)


def test_fit_leaves_model_in_eval_mode(small_train):
    x, y = small_train
    model = models.mlp((16,))
    model.train()
    train.fit(model, x[:200], y[:200], epochs=1, batch_size=50)
    assert not any(m.training for m in model.modules())
    assert next(model.parameters()).device == config.device()


def test_same_seed_same_weights_other_seed_other_weights(small_train):
    x, y = small_train[0][:256], small_train[1][:256]
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        model = fresh("mlp", seed=0, hidden=(32,))  # same initial weights
        train.fit(model, x, y, epochs=2, batch_size=64, lr=1e-2, seed=seed)
        runs[name] = model
    assert params_equal(runs["a"], runs["b"])
    assert not params_equal(runs["a"], runs["c"])
    assert not params_equal(runs["a"], fresh("mlp", seed=0, hidden=(32,)))  # and training did change them


def test_sign_descent_moves_each_weight_by_lr():
    model = fresh("mlp", hidden=(8,))
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.arange(16) % 10
    # a ReLU unit that never fires gets zero gradient: make one so that case is exercised
    with torch.no_grad():
        model.linear1.bias[0] = -1e4
    lr = 1e-2
    opt = train.make_optimizer("sign", model.parameters(), lr=lr)
    assert isinstance(opt, train.SignDescent)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    loss = train.classification_loss(model(x), y)
    opt.zero_grad()
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    opt.step()
    zero_seen = False
    for k, p in model.named_parameters():
        g, moved = grads[k], p.detach() - before[k]
        nonzero = g != 0
        assert torch.equal(p.detach(), before[k] - lr * g.sign()), k
        assert torch.allclose(moved[nonzero].abs(), torch.full_like(moved[nonzero], lr), atol=1e-6), k
        assert torch.all(moved[nonzero] != 0), k
        assert torch.all(torch.sign(moved[nonzero]) == -torch.sign(g[nonzero])), k
        assert torch.all(moved[~nonzero] == 0), k
        zero_seen |= bool((~nonzero).any())
    assert zero_seen


def test_sign_descent_rejects_bad_lr():
    with pytest.raises(ValueError, match=r"lr must lie in \(0, inf\), got 0"):
        train.SignDescent(models.fc10().parameters(), lr=0)
    with pytest.raises(ValueError, match="lr must be a finite number, got inf"):
        train.SignDescent(models.fc10().parameters(), lr=float("inf"))


def test_make_optimizer_kinds():
    params = list(models.fc10().parameters())
    assert isinstance(train.make_optimizer("sgd", params, 0.1), torch.optim.SGD)
    assert isinstance(train.make_optimizer("adam", params, 0.1), torch.optim.Adam)
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'; expected one of"):
        train.make_optimizer("rmsprop", params, 0.1)
    with pytest.raises(ValueError, match=r"momentum must lie in \[0, inf\), got -0.5"):
        train.make_optimizer("sgd", params, 0.1, momentum=-0.5)


def test_classification_losses():
    torch.manual_seed(0)
    logits = torch.randn(6, 10)
    y = torch.tensor([0, 3, 9, 1, 1, 5])
    p = logits.softmax(dim=1)
    expected_prob = -torch.stack([p[i, y[i]] for i in range(6)]).mean()
    assert torch.allclose(train.classification_loss(logits, y, "prob"), expected_prob, atol=1e-7)
    expected_ce = -torch.stack([p[i, y[i]].log() for i in range(6)]).mean()
    assert torch.allclose(train.classification_loss(logits, y, "ce"), expected_ce, atol=1e-6)
    with pytest.raises(ValueError, match="unknown loss 'hinge'; expected one of"):
        train.classification_loss(logits, y, "hinge")


def test_perceptron_losses_are_logistic():
    z = torch.tensor([[2.0], [-1.0], [0.5], [-3.0]])
    y = torch.tensor([1, 0, 0, 1])
    s = torch.sigmoid(z[:, 0])
    bce = -(y * s.log() + (1 - y) * (1 - s).log()).mean()
    assert torch.allclose(train.classification_loss(z, y, "ce"), bce, atol=1e-6)
    assert torch.allclose(train.classification_loss(z, y, "ce"), F.binary_cross_entropy(s, y.float()), atol=1e-6)
    p_y = torch.where(y == 1, s, 1 - s)
    assert torch.allclose(train.classification_loss(z, y, "prob"), -p_y.mean(), atol=1e-7)


def test_perceptron_trains_on_two_classes(small_train):
    x, y = small_train
    keep = (y == 1) | (y == 9)  # trousers against ankle boots
    x, y = x[keep], (y[keep] == 9).long()
    model = fresh("perceptron")
    history = train.fit(model, x, y, epochs=3, batch_size=32, lr=1e-2)
    assert history.epoch_losses[0] > history.epoch_losses[-1]
    assert ((model(x)[:, 0] > 0).long() == y).float().mean() > 0.95


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_fit_rejects_images_outside_unit_interval(bad):
    x = torch.rand(8, 1, 28, 28)
    x[3, 0, 0, 0] = bad
    y = torch.zeros(8, dtype=torch.long)
    model = models.fc10()
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=rf"x must hold images in \[0, 1\], got values in \[.*{bad:g}"):
        train.fit(model, x, y)
    with pytest.raises(ValueError, match=rf"x must hold images in \[0, 1\], got values in \[.*{bad:g}"):
        train.fit_autoencoder(models.AE400(), x)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_fit_rejects_mismatched_and_empty_batches():
    x = torch.rand(8, 1, 28, 28)
    with pytest.raises(ValueError, match="the images hold 8 examples but y holds 7 labels"):
        train.fit(models.fc10(), x, torch.zeros(7, dtype=torch.long))
    with pytest.raises(ValueError, match="no examples: x and y are empty"):
        train.fit(models.fc10(), x[:0], torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1, got 0"):
        train.fit(models.fc10(), x, torch.zeros(8, dtype=torch.long), batch_size=0)


def labelled(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random images in [0,1] and labels 0..n-1 mod 10 (a batch for the input checks)."""
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)), torch.arange(n) % 10


@pytest.mark.parametrize("case, error, match", [
    ("nan image", ValueError, "x holds 1 values that are NaN or infinite; images must be finite"),
    ("3-D images", ValueError, r"x must be a batch of images shaped \(N, C, H, W\), got shape \(8, 28, 28\)"),
    ("integer images", TypeError, "x must be a floating-point tensor of images in .0, 1., got a tensor of dtype "
                                  "torch.uint8"),
    ("half images", TypeError, "x is torch.float16: half precision is not supported here"),
    ("(N, 1) labels", ValueError, r"y must be a 1-D tensor of labels shaped \(N,\), got shape \(8, 1\); use "
                                  r"y.view\(-1\)"),
    ("float labels", TypeError, r"y must be a 1-D tensor of integer class labels \(torch.long\), got a tensor of "
                                "dtype torch.float32"),
    ("label 10 of 10 classes", ValueError, r"y must hold labels in \[0, 10\) \(the model has 10 classes\), got "
                                           r"labels in \[0, 10\]"),
    ("negative label", ValueError, "y must hold class labels >= 0, got a minimum of -1"),
    ("float64 model", TypeError, "the model's parameters are torch.float64 but the images are torch.float32"),
    ("negative epochs", ValueError, "epochs must be a whole number >= 0, got -1"),
    ("fractional epochs", ValueError, "epochs must be a whole number >= 0, got 1.5"),
    ("zero lr", ValueError, r"lr must lie in \(0, inf\), got 0"),
    ("nan lr", ValueError, "lr must be a finite number, got nan"),
    ("unknown schedule", ValueError, "unknown learning-rate schedule 'cosine'; expected one of"),
    ("unknown loss", ValueError, "unknown loss 'hinge'; expected one of"),
    ("unknown optimizer", ValueError, "unknown optimizer 'rmsprop'; expected one of"),
    ("not a model", TypeError, "model must be a torch.nn.Module returning logits, got function"),
])
def test_fit_checks_its_input_before_any_step(case, error, match):
    """Each bad input is refused, with a message naming it, before the model has changed (no step taken)."""
    x, y = labelled()
    model, kwargs = models.fc10(), {}
    if case == "nan image":
        x[2, 0, 5, 5] = float("nan")
    elif case == "3-D images":
        x = x[:, 0]
    elif case == "integer images":
        x = (x * 255).to(torch.uint8)
    elif case == "half images":
        x, model = x.half(), model.half()
    elif case == "(N, 1) labels":
        y = y[:, None]
    elif case == "float labels":
        y = y.float()
    elif case == "label 10 of 10 classes":
        y[3] = 10
    elif case == "negative label":
        y[3] = -1
    elif case == "float64 model":
        model = model.double()
    elif case == "not a model":
        model = lambda z: z  # noqa: E731
    else:
        kwargs = {"negative epochs": {"epochs": -1}, "fractional epochs": {"epochs": 1.5}, "zero lr": {"lr": 0.0},
                  "nan lr": {"lr": float("nan")}, "unknown schedule": {"schedule": "cosine"},
                  "unknown loss": {"loss": "hinge"}, "unknown optimizer": {"optimizer": "rmsprop"}}[case]
    before = [p.detach().clone() for p in model.parameters()] if isinstance(model, nn.Module) else []
    with pytest.raises(error, match=match):
        train.fit(model, x, y, device=torch.device("cpu"), **kwargs)
    if before:
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_perceptron_labels_must_be_zero_or_one():
    """A one-logit model (the perceptron) has two classes, 0 and 1: a label 2 would be read as the positive
    class by the logistic loss (y.float() = 2 gives a loss without a minimum), so it is refused."""
    x, _ = labelled()
    with pytest.raises(ValueError, match=r"y must hold labels 0 and 1 for a model with one logit .* got labels in "
                                         r"\[0, 2\]"):
        train.fit(models.perceptron(), x, torch.tensor([0, 1, 2, 0, 1, 0, 1, 0]), device=torch.device("cpu"))
    history = train.fit(models.perceptron(), x, torch.tensor([0, 1] * 4), device=torch.device("cpu"))
    assert len(history.step_losses) == 1


def test_fit_autoencoder_checks_its_input():
    x, _ = labelled()
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x holds 1 values that are NaN or infinite"):
        train.fit_autoencoder(models.AE400(code=8), nan)
    with pytest.raises(ValueError, match="no examples: x is empty"):
        train.fit_autoencoder(models.AE400(code=8), x[:0])
    with pytest.raises(ValueError, match=r"sparsity \(the target mean activation of a code unit\) must lie in "
                                         r"\(0, 1\), got 1.5"):
        train.fit_autoencoder(models.AE400(code=8), x, sparsity=1.5)
    with pytest.raises(ValueError, match=r"beta must lie in \[0, inf\), got -1"):
        train.fit_autoencoder(models.AE400(code=8), x, beta=-1.0)
    with pytest.raises(ValueError, match="epochs must be a whole number >= 0, got -2"):
        train.fit_autoencoder(models.AE400(code=8), x, epochs=-2)


def test_fit_parameters_restricts_training(small_train):
    x, y = small_train[0][:200], small_train[1][:200]
    model = fresh("fc100-100-10")
    frozen = model.linear1.weight.detach().clone()
    train.fit(model, x, y, epochs=1, batch_size=50, parameters=model.logits.parameters())
    assert torch.equal(model.linear1.weight, frozen)
    assert not torch.equal(model.logits.weight, fresh("fc100-100-10").logits.weight)


def reconstruction_error(model, x) -> float:
    with torch.no_grad():
        return 0.5 * (model.reconstruct(x) - x).pow(2).flatten(1).sum(dim=1).mean().item()


def test_fit_autoencoder_lowers_reconstruction_loss(small_train):
    x = small_train[0][:300]
    model = fresh("ae400-10", code=64)
    classifier = model.classifier.weight.detach().clone()
    before = reconstruction_error(model, x)
    history = train.fit_autoencoder(model, x, epochs=3, batch_size=50, lr=1e-2)
    assert history.epoch_losses[0] > history.epoch_losses[-1]
    assert reconstruction_error(model, x) < 0.5 * before
    assert torch.equal(model.classifier.weight, classifier)  # pre-training leaves the classifier alone
    assert not model.training


def test_sparse_autoencoder_loss_formula():
    model = fresh("ae400-10", code=3)
    x = torch.rand(4, 1, 28, 28)
    code = model.encoder(x)
    recon = model.decoder(code)
    rho, beta = 0.1, 0.5
    rho_hat = code.mean(dim=0)
    kl = (rho * (rho / rho_hat).log() + (1 - rho) * ((1 - rho) / (1 - rho_hat)).log()).sum()
    expected = 0.5 * ((recon - x.flatten(1)) ** 2).sum(dim=1).mean() + beta * kl
    assert torch.allclose(train.sparse_autoencoder_loss(model, x, rho, beta), expected, atol=1e-5)


def test_keep_best_keeps_and_restores_the_weights_of_the_best_scored_epoch(small_train):
    """Early stopping (Rice et al. 2020): scored every 2 epochs, the best by the key (the earliest among
    equals) is the epoch whose weights restore() brings back, and training ran to the end."""
    x, y = small_train
    model = models.build("fc10")
    seen, weights = iter([0.3, 0.7, 0.7, 0.1]), {}

    def scores(net):
        weights[len(weights) + 1] = next(net.parameters()).detach().clone()  # per scoring, from 1
        return {"val": next(seen), "other": 0.0}

    keep = train.KeepBest(scores, "val", every=2)
    history = train.fit(model, x, y, epochs=8, lr=1e-2, epoch_end=keep, desc=None)
    assert len(history.epoch_losses) == 8  # it never stops the run
    assert [epoch for epoch, _ in keep.history] == [2, 4, 6, 8]
    assert keep.best_epoch == 4  # 0.7 first at epoch 4, not epoch 6
    last = next(model.parameters()).detach().clone()
    assert not torch.equal(last, weights[2])
    keep.restore(model)
    assert torch.equal(next(model.parameters()), weights[2])  # the second scoring was epoch 4
    with pytest.raises(KeyError, match="val"):
        train.KeepBest(lambda net: {"other": 1.0}, "val")(0, model)
    with pytest.raises(RuntimeError, match="no epoch"):
        train.KeepBest(scores, "val").restore(model)
