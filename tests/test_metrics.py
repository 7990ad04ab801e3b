"""advlib.metrics: predictions, accuracy, perturbation norms, success rates and confidence intervals, on models
whose answers are known, and the checks of their inputs."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import binomtest
from torch import nn

from advlib import metrics


class FirstPixels(nn.Module):
    """Logits are the first ``k`` pixels, so the predicted class is the index of the brightest one.

    It records the mode it ran in, and holds a dropout that would scramble the logits in train mode.
    """

    def __init__(self, k=3):
        super().__init__()
        self.k = k
        self.dropout = nn.Dropout(p=0.9)
        self.scale = nn.Parameter(torch.ones(()))
        self.modes = []

    def forward(self, x):
        self.modes.append(self.training)
        return self.dropout(x.flatten(1)[:, : self.k] * self.scale)


class Failing(FirstPixels):
    """FirstPixels whose forward pass fails after recording its mode."""

    def forward(self, x):
        super().forward(x)
        raise RuntimeError("forward failed on purpose")


def images_with_brightest(labels, k=3):
    x = torch.full((len(labels), 1, 2, 2), 0.1)
    x.view(len(labels), -1)[torch.arange(len(labels)), torch.as_tensor(labels)] = 0.9
    return x


brightest = images_with_brightest


def test_predict_and_accuracy_known_answers():
    labels = torch.tensor([0, 2, 1, 1, 0, 2, 2])
    x = images_with_brightest(labels)
    model = FirstPixels()
    predicted = metrics.predict(model, x, batch_size=3)  # several batches, the last one short
    assert predicted.dtype == torch.int64 and predicted.device.type == "cpu"
    assert torch.equal(predicted, labels)
    assert metrics.accuracy(model, x, labels) == 1.0
    wrong = labels.clone()
    wrong[:2] = (wrong[:2] + 1) % 3
    assert metrics.accuracy(model, x, wrong, batch_size=2) == pytest.approx(5 / 7)
    assert torch.equal(metrics.correct(model, x, wrong), torch.tensor([False, False, True, True, True, True, True]))
    assert model.modes and not any(model.modes)  # every forward ran in eval mode


def test_predict_one_logit_perceptron():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 1))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
        model[1].bias.fill_(-0.5)
    x = torch.tensor([0.9, 0.1, 0.7, 0.2]).view(4, 1, 1, 1).expand(4, 1, 2, 2).contiguous()
    assert torch.equal(metrics.predict(model, x), torch.tensor([1, 0, 1, 0]))
    assert metrics.accuracy(model, x, torch.tensor([1, 0, 0, 0])) == 0.75
    with pytest.raises(ValueError, match=r"labels in \[0, 2\) \(the model has 2 classes\)"):
        metrics.accuracy(model, x, torch.tensor([1, 0, 2, 0]))


def test_predict_restores_each_modules_mode():
    model = FirstPixels()
    model.train()
    model.dropout.eval()  # a mixed state must come back as it was
    metrics.predict(model, images_with_brightest([0, 1]))
    assert model.training and not model.dropout.training
    model.eval()
    metrics.predict(model, images_with_brightest([0, 1]))
    assert not model.training


def test_predict_restores_mode_after_an_error():
    model = Failing()
    model.train()
    with pytest.raises(RuntimeError, match="on purpose"):
        metrics.predict(model, images_with_brightest([0, 1]))
    assert model.modes == [False]  # it ran in eval mode ...
    assert model.training and model.dropout.training  # ... and got its train mode back


def test_predict_keeps_gradients_off():
    model = FirstPixels()
    x = images_with_brightest([0, 1]).requires_grad_()
    metrics.predict(model, x)
    assert model.scale.grad is None and x.grad is None


def test_empty_and_mismatched_inputs():
    model = FirstPixels()
    assert metrics.predict(model, torch.zeros(0, 1, 2, 2)).shape == (0,)
    with pytest.raises(ValueError, match="empty"):
        metrics.accuracy(model, torch.zeros(0, 1, 2, 2), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="3 examples but y holds 2 labels"):
        metrics.accuracy(model, images_with_brightest([0, 1, 2]), torch.tensor([0, 1]))


def test_half_precision_images_of_a_half_model():
    labels = torch.tensor([0, 2, 1, 1])
    x = images_with_brightest(labels).half()
    model = FirstPixels().half()
    assert metrics.accuracy(model, x, torch.tensor([0, 2, 1, 0])) == 0.75
    with pytest.raises(TypeError, match="float32 but the images are torch.float16"):
        metrics.accuracy(FirstPixels(), x, labels)


# --- what accuracy refuses ----------------------------------------------------------------------

def labelled(n=50, seed=0):
    """n images whose brightest pixel is a random class of 3, and those classes as labels."""
    labels = torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(seed))
    return images_with_brightest(labels), labels


def test_labels_shaped_as_a_column_are_refused_not_broadcast():
    """(N, 1) labels against (N,) predictions would compare an (N, N) table: about 1/3 here, not 1."""
    x, y = labelled()
    model = FirstPixels()
    assert metrics.accuracy(model, x, y) == 1.0
    assert (metrics.predict(model, x) == y[:, None]).float().mean() < 0.5  # the silent wrong answer
    with pytest.raises(ValueError, match=r"y must be a 1-D tensor of labels shaped \(N,\), got shape \(50, 1\); "
                                         r"use y.view\(-1\)"):
        metrics.accuracy(model, x, y[:, None])
    with pytest.raises(ValueError, match=r"shaped \(N,\)"):
        metrics.correct(model, x, y[:, None])


@pytest.mark.parametrize("bad, error, message", [
    (lambda y: y + 3, ValueError,
     r"y must hold labels in \[0, 3\) \(the model has 3 classes\), got labels in \[3, 5\]"),
    (lambda y: y - 1, ValueError, r"y must hold class labels >= 0, got a minimum of -1"),
    (lambda y: y.float(), TypeError, r"y must be a 1-D tensor of integer class labels"),
    (lambda y: y.bool(), TypeError, r"integer class labels"),
    (lambda y: y[:-1], ValueError, r"the images hold 50 examples but y holds 49 labels"),
])
def test_accuracy_refuses_bad_labels(bad, error, message):
    x, y = labelled()
    with pytest.raises(error, match=message):
        metrics.accuracy(FirstPixels(), x, bad(y))


def test_accuracy_refuses_bad_images_and_arguments():
    x, y = labelled()
    model = FirstPixels()
    nan = x.clone()
    nan[3, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="x holds 1 values that are NaN or infinite"):
        metrics.accuracy(model, nan, y)
    # values outside [0, 1] are allowed: randomized smoothing classifies unclipped noisy copies x + N(0, s^2 I)
    assert metrics.accuracy(model, 2 * x - 0.5, y) == metrics.accuracy(model, x, y)
    with pytest.raises(ValueError, match=r"x must be a batch of images shaped \(N, C, H, W\), got shape \(50, 4\)"):
        metrics.accuracy(model, x.flatten(1), y)
    with pytest.raises(TypeError, match="x must be a floating-point tensor of images"):
        metrics.accuracy(model, (x * 255).long(), y)
    with pytest.raises(TypeError, match="float32 but the images are torch.float64"):
        metrics.accuracy(model, x.double(), y)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        metrics.accuracy(lambda images: images, x, y)
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1, got 0"):
        metrics.accuracy(model, x, y, batch_size=0)
    with pytest.raises(TypeError, match="batch_size must be a whole number"):
        metrics.predict(model, x, batch_size=None)


def test_a_model_that_returns_no_logits_is_refused():
    x, y = labelled()
    with pytest.raises(TypeError, match=r"logits shaped \(N, K\) with K >= 2 classes, got \(50,\)"):
        metrics.accuracy(nn.Sequential(nn.Flatten(0)), x.flatten(1)[:, :1].view(50, 1, 1, 1), y)


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
    with pytest.raises(ValueError, match=r"x must be a batch of images shaped \(N, C, H, W\)"):
        metrics.perturbation_norms(x[0], x[0])
    nan = x.clone()
    nan[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="x_adv holds 1 values that are NaN or infinite"):
        metrics.perturbation_norms(x, nan)
    with pytest.raises(ValueError, match=r"x_adv must hold images in \[0, 1\]"):
        metrics.perturbation_norms(x, x - 0.5)
    with pytest.raises(ValueError, match="tol must lie in"):
        metrics.perturbation_norms(x, x, tol=-1.0)
    with pytest.raises(ValueError, match=r"perturbations shaped \(N, C, H, W\), got shape \(2, 16\)"):
        metrics.l2_norm(x.flatten(1))
    with pytest.raises(ValueError, match="delta holds values that are NaN or infinite"):
        metrics.linf_norm(torch.full((1, 1, 2, 2), float("inf")))
    with pytest.raises(TypeError, match="delta must be a floating-point tensor"):
        metrics.l0_norm(torch.zeros(1, 1, 2, 2, dtype=torch.long))


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
    with pytest.raises(ValueError, match="the images hold 2 examples but y holds 1 labels"):
        metrics.attack_success_rate(model, wrong, y[:1])
    with pytest.raises(ValueError, match="empty"):
        metrics.attack_success_rate(model, wrong[:0], y[:0])
    with pytest.raises(ValueError, match="one shape"):
        metrics.attack_success_rate(model, wrong, y, x=wrong[:, :, :1])


def test_success_rate_refuses_bad_input():
    model = FirstPixels()
    y = torch.tensor([0, 1])
    x_adv = brightest(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"shaped \(N,\), got shape \(2, 1\)"):
        metrics.attack_success_rate(model, x_adv, y[:, None])
    with pytest.raises(ValueError, match=r"labels in \[0, 3\)"):
        metrics.attack_success_rate(model, x_adv, torch.tensor([0, 7]), targeted=True)
    nan = x_adv.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x_adv holds 1 values that are NaN"):
        metrics.attack_success_rate(model, nan, y)
    with pytest.raises(ValueError, match="x holds 1 values that are NaN"):
        metrics.attack_success_rate(model, x_adv, y, x=nan)
    with pytest.raises(TypeError, match="targeted must be True or False"):
        metrics.attack_success_rate(model, x_adv, y, targeted="yes")


# --- confidence intervals -----------------------------------------------------------------------

@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (10, 10), (82, 100), (1, 1000), (999, 1000), (417, 600)])
def test_confidence_interval_is_scipys_exact_interval(k, n):
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    low, high = metrics.confidence_interval(k, n)
    assert low == pytest.approx(expected.low, abs=1e-10) and high == pytest.approx(expected.high, abs=1e-10)
    assert 0 <= low <= k / n <= high <= 1


def test_confidence_interval_closed_forms():
    """At k = 0 the upper end solves (1 - p)^n = alpha/2, at k = n the lower end p^n = alpha/2."""
    n = 20
    assert metrics.confidence_interval(0, n) == pytest.approx((0.0, 1 - 0.025 ** (1 / n)))
    assert metrics.confidence_interval(n, n) == pytest.approx((0.025 ** (1 / n), 1.0))
    assert metrics.confidence_interval(0, n, level=0.9) == pytest.approx((0.0, 1 - 0.05 ** (1 / n)))
    narrow, wide = metrics.confidence_interval(50, 100), metrics.confidence_interval(500, 1000)
    assert wide[1] - wide[0] < narrow[1] - narrow[0]  # ten times the examples, a narrower interval


def test_confidence_interval_refuses_bad_counts():
    with pytest.raises(ValueError, match=r"successes must lie in \[0, trials = 10\], got 11"):
        metrics.confidence_interval(11, 10)
    with pytest.raises(ValueError, match="trials must be a whole number >= 1, got 0"):
        metrics.confidence_interval(0, 0)
    with pytest.raises(ValueError, match="successes must be a whole number >= 0, got 2.5"):
        metrics.confidence_interval(2.5, 10)
    with pytest.raises(ValueError, match=r"level must lie in \(0, 1\), got 1"):
        metrics.confidence_interval(3, 10, level=1)
    with pytest.raises(ValueError, match="level must be a finite number, got nan"):
        metrics.confidence_interval(3, 10, level=float("nan"))
    with pytest.raises(ValueError, match=r"level must lie in \(0, 1\]"):
        metrics.confidence_interval(3, 10, level=95)


def test_confidence_interval_of_per_example_outcomes():
    """A boolean (or 0/1) tensor of outcomes gives the interval of its sum out of its length."""
    outcomes = torch.tensor([True, False, True, True, False, True, True])
    assert metrics.confidence_interval(outcomes) == metrics.confidence_interval(5, 7)
    assert metrics.confidence_interval(outcomes.long(), level=0.9) == metrics.confidence_interval(5, 7, level=0.9)
    assert metrics.outcome_counts(outcomes) == (5, 7)
    with pytest.raises(TypeError, match="tensor of per-example outcomes alone"):
        metrics.confidence_interval(outcomes, 7)
    with pytest.raises(ValueError, match="1-D tensor"):
        metrics.confidence_interval(outcomes.view(1, -1))
    with pytest.raises(ValueError, match="trials must be a whole number >= 1, got 0"):
        metrics.confidence_interval(torch.zeros(0, dtype=torch.bool))
    with pytest.raises(TypeError, match="give the number of trials"):
        metrics.confidence_interval(5)


def test_clearly_above_is_intervals_apart():
    """Apart exactly when the lower end of one 95% interval passes the upper end of the other; outcomes
    or (successes, trials) alike; never both ways; a rate is never clearly above itself."""
    for (k, n), (j, m) in [((80, 100), (50, 100)), ((60, 100), (50, 100)), ((9, 10), (1, 10)),
                           ((700, 1000), (640, 1000)), ((5, 5), (0, 5))]:
        expected = metrics.confidence_interval(k, n)[0] > metrics.confidence_interval(j, m)[1]
        assert metrics.clearly_above((k, n), (j, m)) == expected
        assert not (metrics.clearly_above((k, n), (j, m)) and metrics.clearly_above((j, m), (k, n)))
        assert not metrics.clearly_above((k, n), (k, n))
    assert metrics.clearly_above((80, 100), (50, 100)) and not metrics.clearly_above((60, 100), (50, 100))
    high, low = torch.arange(100) < 80, torch.arange(100) < 50
    assert metrics.clearly_above(high, low) and not metrics.clearly_above(low, high)
    assert metrics.clearly_above(high, (50, 100)) and metrics.clearly_above([80, 100], low)
    # a looser level separates what 95% does not
    assert not metrics.clearly_above((60, 100), (45, 100))
    assert metrics.clearly_above((60, 100), (45, 100), level=0.5)
    with pytest.raises(TypeError, match=r"pair \(successes, trials\)"):
        metrics.clearly_above(0.8, (50, 100))
    with pytest.raises(ValueError, match="successes must lie in"):
        metrics.clearly_above((101, 100), (50, 100))
