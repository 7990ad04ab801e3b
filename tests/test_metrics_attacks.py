"""advlib.metrics under attack: robust accuracy, perturbation norms, success rate, transfer matrix.

Attacks here are test-local callables ``attack(model, x, y) -> x_adv`` (a tiny FGSM among them), so
these tests depend on no attack module of advlib.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlib import metrics


def fgsm(model, x, y, eps):
    """Goodfellow et al.'s one step x + eps * sign(grad_x loss), clipped to [0,1] (test-local)."""
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


def identity(model, x, y):
    return x.clone()


def linear(seed, pixels=16, classes=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(pixels, classes))


class FirstPixels(nn.Module):
    """Logits are the first ``k`` pixels: the predicted class is the index of the brightest one."""

    def __init__(self, k=3):
        super().__init__()
        self.k = k
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x.flatten(1)[:, : self.k] * self.scale


def brightest(labels, k=3):
    """Images of 2x2 pixels whose brightest pixel (so FirstPixels' prediction) is ``labels[i]``."""
    x = torch.full((len(labels), 1, 2, 2), 0.1)
    x.view(len(labels), -1)[torch.arange(len(labels)), torch.as_tensor(labels)] = 0.9
    return x


@pytest.fixture
def problem():
    """A linear model, 64 images and labels it gets right except for every fifth one."""
    model = linear(0)
    x = torch.rand(64, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::5] = (y[::5] + 1) % 3
    return model, x, y


# --- robust_accuracy ----------------------------------------------------------------------------

def test_identity_attack_gives_the_clean_accuracy(problem):
    model, x, y = problem
    clean = metrics.accuracy(model, x, y)
    assert clean == pytest.approx(1 - 13 / 64)
    assert metrics.robust_accuracy(model, identity, (x, y), batch_size=10) == pytest.approx(clean)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=7)
    assert metrics.robust_accuracy(model, identity, loader) == pytest.approx(clean)


def test_fgsm_lowers_it_and_it_matches_a_manual_count(problem):
    model, x, y = problem
    attack = partial(fgsm, eps=0.2)
    robust = metrics.robust_accuracy(model, attack, (x, y), batch_size=16)
    x_adv = fgsm(model, x, y, eps=0.2)  # per-example gradients: batching does not change it
    manual = ((metrics.predict(model, x) == y) & (metrics.predict(model, x_adv) == y)).float().mean().item()
    assert robust == pytest.approx(manual)
    assert robust < metrics.accuracy(model, x, y)


def test_examples_wrong_when_clean_are_never_robust():
    """An "attack" that makes every image classified as its label still cannot make them robust."""
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    x = brightest(labels)
    y = labels.clone()
    y[:2] = torch.tensor([2, 2])  # two examples wrong when clean

    def fix(model, x, y):
        return brightest(y)

    assert metrics.accuracy(FirstPixels(), brightest(y), y) == 1.0
    assert metrics.robust_accuracy(FirstPixels(), fix, (x, y)) == pytest.approx(4 / 6)


def test_batches_reach_the_attack_on_the_models_device_and_attack_sees_every_example(problem):
    model, x, y = problem
    seen = []

    def spy(model, xb, yb):
        seen.append((len(xb), xb.device, yb.device))
        return xb

    metrics.robust_accuracy(model, spy, (x, y), batch_size=30)
    assert [n for n, _, _ in seen] == [30, 30, 4]
    device = next(model.parameters()).device
    assert all(d1 == device and d2 == device for _, d1, d2 in seen)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_robust_accuracy_on_a_gpu_model_with_cpu_data(problem):
    model, x, y = problem
    expected = metrics.robust_accuracy(model, partial(fgsm, eps=0.2), (x, y))
    gpu = model.cuda()
    assert metrics.robust_accuracy(gpu, partial(fgsm, eps=0.2), (x, y)) == pytest.approx(expected)


def test_robust_accuracy_rejects_bad_input(problem):
    model, x, y = problem
    with pytest.raises(ValueError, match="examples"):
        metrics.robust_accuracy(model, identity, (x, y[:-1]))
    with pytest.raises(ValueError, match="empty"):
        metrics.robust_accuracy(model, identity, (x[:0], y[:0]))
    with pytest.raises(ValueError, match="no batch"):
        metrics.robust_accuracy(model, identity, [])
    with pytest.raises(ValueError, match="shaped like"):
        metrics.robust_accuracy(model, lambda m, xb, yb: xb[:1], (x, y))
    with pytest.raises(TypeError):
        metrics.robust_accuracy(model, identity, x)


# --- perturbation norms -------------------------------------------------------------------------

def test_norms_of_hand_made_perturbations():
    x = torch.full((3, 3, 4, 4), 0.5)
    x_adv = x.clone()
    # example 0: one channel of pixel (0, 0) and two channels of pixel (1, 1) changed: 2 pixels
    x_adv[0, 0, 0, 0] += 0.3
    x_adv[0, 1, 1, 1] -= 0.2
    x_adv[0, 2, 1, 1] += 0.4
    # example 1: the 12 pixels of rows 0-2 moved by 0.1 in channel 2, and pixel (3, 3) by less than
    # the tolerance 1e-6 in channel 0
    x_adv[1, 2, :3] += 0.1
    x_adv[1, 0, 3, 3] += 5e-7
    # example 2: unchanged
    before = x_adv.clone()
    norms = metrics.perturbation_norms(x, x_adv)
    assert set(norms) == {"l0", "l2", "linf"}
    torch.testing.assert_close(norms["l0"], torch.tensor([2.0, 12.0, 0.0]))
    torch.testing.assert_close(norms["l2"], torch.tensor([math.sqrt(0.09 + 0.04 + 0.16), math.sqrt(0.12), 0.0]))
    torch.testing.assert_close(norms["linf"], torch.tensor([0.4, 0.1, 0.0]))
    assert torch.equal(x_adv, before)
    # the per-norm helpers take the perturbation itself
    torch.testing.assert_close(metrics.l0_norm(x_adv - x), norms["l0"])
    torch.testing.assert_close(metrics.l2_norm(x_adv - x), norms["l2"])
    torch.testing.assert_close(metrics.linf_norm(x_adv - x), norms["linf"])
    assert metrics.perturbation_norms(x, x_adv, tol=0)["l0"][1] == 13  # the tiny change counts now


def test_l0_counts_pixels_not_channel_values():
    delta = torch.zeros(1, 3, 2, 2)
    delta[0, :, 0, 1] = 0.5  # one pixel, three channels
    assert metrics.l0_norm(delta).item() == 1
    assert metrics.l0_norm(delta[:, :1]).item() == 1


def test_norms_reject_bad_input():
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="one shape"):
        metrics.perturbation_norms(x, x[:1])
    with pytest.raises(ValueError, match="empty"):
        metrics.perturbation_norms(x[:0], x[:0])
    with pytest.raises(ValueError, match="N, C, H, W"):
        metrics.perturbation_norms(x[0], x[0])


# --- attack success rate ------------------------------------------------------------------------

def test_success_rate_definitions():
    model = FirstPixels()
    y = torch.tensor([0, 1, 2, 0, 1])
    x = brightest(torch.tensor([0, 1, 2, 0, 2]))  # the last one is wrong when clean
    x_adv = brightest(torch.tensor([1, 1, 0, 0, 0]))  # examples 0 and 2 (and 4) misclassified
    assert metrics.attack_success_rate(model, x_adv, y) == pytest.approx(3 / 5)
    # only the 4 examples right on clean x count; 2 of them are fooled
    assert metrics.attack_success_rate(model, x_adv, y, x=x) == pytest.approx(2 / 4)
    targets = torch.tensor([1, 2, 0, 2, 0])
    assert metrics.attack_success_rate(model, x_adv, targets, targeted=True) == pytest.approx(3 / 5)


def test_success_rate_edge_cases():
    model = FirstPixels()
    y = torch.tensor([0, 1])
    wrong = brightest(torch.tensor([1, 2]))
    assert math.isnan(metrics.attack_success_rate(model, wrong, y, x=wrong))
    with pytest.raises(ValueError, match="examples"):
        metrics.attack_success_rate(model, wrong, y[:1])
    with pytest.raises(ValueError, match="empty"):
        metrics.attack_success_rate(model, wrong[:0], y[:0])
    with pytest.raises(ValueError, match="one shape"):
        metrics.attack_success_rate(model, wrong, y, x=wrong[:, :, :1])


# --- transfer matrix ----------------------------------------------------------------------------

def test_transfer_matrix_of_two_tiny_models(problem):
    _, x, y = problem
    models = {"A": linear(0), "B": linear(1)}
    targets = {**models, "C": linear(2)}
    attack = partial(fgsm, eps=0.25)
    calls = []

    def counted(model, xb, yb):
        calls.append(len(xb))
        return attack(model, xb, yb)

    result = metrics.transfer_matrix(models, targets, counted, x, y, batch_size=1000)
    errors, rows, cols, distortion = result
    assert rows == ["A", "B"] and cols == ["A", "B", "C"]
    assert errors.shape == (2, 3)
    assert calls == [64, 64]  # each source's examples are made once, and every target reuses them
    for i, source in enumerate(models.values()):
        x_adv = attack(source, x, y)
        assert errors[i, i].item() == pytest.approx(1 - metrics.accuracy(source, x_adv, y))  # white-box
        for j, target in enumerate(targets.values()):
            assert errors[i, j].item() == pytest.approx(1 - metrics.accuracy(target, x_adv, y))
        rms = (x_adv - x).flatten(1).pow(2).mean(1).sqrt().mean().item()
        assert distortion[i].item() == pytest.approx(rms, rel=1e-5)
    assert errors[0, 0] > 0.5 and errors[1, 1] > 0.5
    assert result.to_dict()["B"]["C"] == pytest.approx(errors[1, 2].item())
    # batching changes nothing for a per-example attack
    small = metrics.transfer_matrix(models, targets, attack, x, y, batch_size=9)
    torch.testing.assert_close(small.errors, errors)


def test_transfer_matrix_with_an_attack_per_source(problem):
    """Szegedy's noise rows: a source whose "attack" ignores the model."""
    _, x, y = problem
    model = linear(0)

    def nothing(m, xb, yb):
        return xb

    result = metrics.transfer_matrix({"fgsm": model, "none": model}, {"m": model},
                                     {"fgsm": partial(fgsm, eps=0.25), "none": nothing}, x, y)
    assert result.errors[1, 0].item() == pytest.approx(1 - metrics.accuracy(model, x, y))
    assert result.errors[0, 0] > result.errors[1, 0]
    assert result.distortion[1].item() == 0


def test_transfer_matrix_rejects_bad_input(problem):
    model, x, y = problem
    with pytest.raises(ValueError, match="at least one"):
        metrics.transfer_matrix({}, {"m": model}, identity, x, y)
    with pytest.raises(ValueError, match="examples"):
        metrics.transfer_matrix({"m": model}, {"m": model}, identity, x, y[:3])
    with pytest.raises(ValueError, match="empty"):
        metrics.transfer_matrix({"m": model}, {"m": model}, identity, x[:0], y[:0])
    with pytest.raises(ValueError, match="no attack"):
        metrics.transfer_matrix({"m": model, "n": model}, {"m": model}, {"m": identity}, x, y)
