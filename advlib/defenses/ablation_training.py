"""Training the base classifier of de-randomized smoothing on ablated images.

Levine and Feizi (2020, "(De)Randomized smoothing for certifiable defense against patch attacks", Sec. 4)
train the base classifier f on what it will see at certification: each training image with all but one
band (or block) of pixels ablated, the position drawn uniformly at random for every image of every batch,
and encoded as (v, 1 - v) kept / (0, 0) ablated (:func:`advlib.smoothing.ablate`). The smoothed classifier
(:class:`advlib.smoothing.AblationSmooth`) then votes over every position.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import config, train
from ..smoothing.ablation import ablation_masks
from ..utils import check_examples, check_model

__all__ = ["ablation_training"]


def ablation_training(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, size: int = 4, kind: str = "column",
                      epochs: int, batch_size: int = 128, lr: float = 1e-3, optimizer: str = "adam",
                      schedule: str = "constant", seed: int = 0, device: torch.device | None = None,
                      desc: str = "ablation training") -> train.History:
    """Levine and Feizi's training of the base classifier (2020, Sec. 4): :func:`advlib.train.fit` where
    each image of each batch is replaced by its ablation at a uniformly random position of a ``kind`` band
    (``"column"``, ``"row"`` or ``"block"``) of width ``size``, encoded with twice the channels; the loss
    is the cross-entropy there. ``model`` takes the encoded images (N, 2C, H, W), e.g.
    ``models.build("wong-kolter", ablated=True)``.

    The positions come from a generator on the training device seeded by ``seed`` (as does the batch
    order), so a run repeats on the same machine. Returns the :class:`~advlib.train.History` and leaves the
    model in eval mode. The authors train with SGD for hundreds of epochs (MNIST: 400, learning rate 0.01 then
    0.001, weight decay 5e-4); the arguments here are ``fit``'s.
    """
    check_model(model)
    check_examples(x, y)
    masks = ablation_masks(x.shape[-2:], size, kind)  # checks kind and size against the images
    device = config.device() if device is None else torch.device(device)
    masks = masks.to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    # Every pixel kept: (v, 1 - v) everywhere. An ablation multiplies it by its mask, and fit's first check
    # (the model's logits on one image) sees the model's real input shape.
    whole = torch.cat((x, 1 - x), dim=1)

    def ablated(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        at = torch.randint(len(masks), (len(xb),), generator=generator, device=xb.device)
        return xb * masks[at][:, None].to(xb.dtype)

    return train.fit(model, whole, y, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                     schedule=schedule, seed=seed, device=device, desc=desc, perturb=ablated)
