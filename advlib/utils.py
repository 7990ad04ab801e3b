"""Small pieces every module shares: the model's device, running a model in eval mode, checks of a
batch of examples, progress bars."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (the CPU for a model without any)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextmanager
def eval_mode(model: nn.Module):
    """Put ``model`` (and every submodule) in eval mode for the block; restore each one's mode after."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.training = training


def check_examples(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
    """``ValueError`` unless x and y hold the same, non-zero number of examples and batch_size >= 1."""
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
    if len(x) == 0:
        raise ValueError("no examples: x and y are empty")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")


def progress(iterable=None, **kwargs):
    """A tqdm progress bar on standard error (text, so it renders in executed notebooks and logs).

    ``ADVLIB_PROGRESS=0`` turns the bars off.
    """
    import os
    import sys

    from tqdm import tqdm

    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 1.0)
    kwargs.setdefault("disable", os.environ.get("ADVLIB_PROGRESS", "1") == "0")
    return tqdm(iterable, **kwargs)
