"""Gaussian data augmentation: train the base classifier of randomized smoothing on noisy images.

Cohen, Rosenfeld and Kolter (2019, "Certified adversarial robustness via randomized smoothing", Sec. 4)
train the base classifier f with every training image replaced by x + eps, eps ~ N(0, sigma^2 I), at
the sigma the smoothed classifier will use (the noise is not clipped to [0,1], as at certification), so
that f is right under the very noise :class:`advlib.smoothing.Smooth` adds (Lecuyer et al. 2019 train
PixelDP's networks the same way). A classifier trained on clean images only is far less accurate under
such noise, and its smoothed classifier certifies less.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import config, train
from ..utils import check_examples, check_model, check_real

__all__ = ["gaussian_noise_training"]


def gaussian_noise_training(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, sigma: float, epochs: int,
                            batch_size: int = 128, lr: float = 1e-3, optimizer: str = "adam",
                            schedule: str = "constant", seed: int = 0, device: torch.device | None = None,
                            desc: str = "noise training") -> train.History:
    """Cohen et al.'s training of the base classifier (2019, Sec. 4): :func:`advlib.train.fit` where each
    batch is replaced by x + eps, eps ~ N(0, sigma^2 I), drawn afresh for every batch and not clipped to
    [0,1]; the loss is the cross-entropy at the noisy images.

    The noise comes from a generator on the training device seeded by ``seed`` (as does the batch order),
    so a run repeats exactly on the same machine. Returns the :class:`~advlib.train.History` and leaves
    the model in eval mode, as ``fit`` does.

    ``x`` and ``y`` are checked as ``fit`` checks them (finite images in [0,1], 1-D labels of the same
    length inside the model's classes; the noisy copies leave [0,1] by design), and before them ``sigma``:
    a finite number > 0.
    """
    check_model(model)
    check_examples(x, y)
    name = "sigma (the noise's standard deviation)"
    sigma = check_real(name, sigma, low=-math.inf)
    if sigma <= 0:
        raise ValueError(f"{name} must be > 0 for noise training, got {sigma:g}"
                         + ("; sigma = 0 is standard training: use train.fit" if sigma == 0 else ""))
    device = config.device() if device is None else torch.device(device)
    generator = torch.Generator(device=device).manual_seed(seed)

    def add_noise(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return torch.randn(xb.shape, generator=generator, device=xb.device, dtype=xb.dtype).mul_(sigma).add_(xb)

    return train.fit(model, x, y, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                     schedule=schedule, seed=seed, device=device, desc=desc, perturb=add_noise)
