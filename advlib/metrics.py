"""Accuracy and predictions of a classifier, evaluated in batches on the model's device."""

from __future__ import annotations

import torch
from torch import nn

from .utils import eval_mode, model_device


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Class(x) = argmax_i p_i(x) for each image (for a one-logit perceptron: 1 if the logit > 0).

    Runs in batches on the model's device, in eval mode (the model's own mode is restored after);
    returns int64 labels on the CPU.
    """
    device = model_device(model)
    labels = []
    with eval_mode(model):
        for start in range(0, len(x), batch_size):
            logits = model(x[start:start + batch_size].to(device))
            if logits.shape[1] == 1:
                labels.append((logits[:, 0] > 0).long().cpu())
            else:
                labels.append(logits.argmax(dim=1).cpu())
    return torch.cat(labels) if labels else torch.empty(0, dtype=torch.int64)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """The fraction of images whose predicted class equals the label."""
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
    if len(x) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return (predict(model, x, batch_size) == y.cpu()).float().mean().item()
