"""Small pieces every module shares: the model's device and running a model in eval mode."""

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
