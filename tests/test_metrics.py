"""advlib.metrics: predictions and accuracy of models whose answers are known."""

from __future__ import annotations

import pytest
import torch
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


def images_with_brightest(labels, k=3):
    x = torch.full((len(labels), 1, 2, 2), 0.1)
    x.view(len(labels), -1)[torch.arange(len(labels)), torch.as_tensor(labels)] = 0.9
    return x


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
    assert model.modes and not any(model.modes)  # every forward ran in eval mode


def test_predict_one_logit_perceptron():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 1))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
        model[1].bias.fill_(-0.5)
    x = torch.tensor([0.9, 0.1, 0.7, 0.2]).view(4, 1, 1, 1).expand(4, 1, 2, 2).contiguous()
    assert torch.equal(metrics.predict(model, x), torch.tensor([1, 0, 1, 0]))


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
    model = FirstPixels()
    model.train()
    with pytest.raises((IndexError, RuntimeError)):
        metrics.predict(model, torch.rand(2))  # not a batch of images: the forward fails
    assert model.training and model.dropout.training


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
    with pytest.raises(ValueError, match="3"):
        metrics.accuracy(model, images_with_brightest([0, 1, 2]), torch.tensor([0, 1]))
