"""Defenses that mask gradients: the examples of Athalye, Carlini and Wagner (2018, "Obfuscated gradients
give a false sense of security: circumventing defenses to adversarial examples", ICML).

Each wraps any classifier (images in [0,1] in, logits out) behind an input transform, and each defeats
plain gradient attacks without making the classifier robust:

- :class:`InputQuantization` rounds every pixel to one of ``levels`` values (the quantization behind
  Buckman et al.'s thermometer encoding and Guo et al.'s bit-depth reduction). The rounding is *shattered
  gradients* (Athalye et al., Sec. 3.1): its derivative is zero almost everywhere, so the gradient of the
  defended model with respect to its input is exactly zero and PGD never moves. Backward Pass
  Differentiable Approximation (:func:`advlib.attacks.bpda`, the identity as the stand-in) breaks it.
- :class:`RandomResizePad` is Xie, Wang, Zhang, Ren and Yuille's randomization (2018, "Mitigating
  adversarial effects through randomization", ICLR): shrink the image by a random factor and pad it back
  to its size at a random position, a fresh draw per image and per forward call. Its gradients are
  *stochastic* (Athalye et al., Sec. 3.2): one draw's gradient points a different way from the next's.
  Expectation over Transformation (:func:`advlib.attacks.eot`) follows their mean and breaks it.

Both transforms are torch operations on the model's device, batched over the images. Each defense keeps
the classifier it wraps as ``.model`` and its input transform as ``.transform(x)``, so that an attack can
put BPDA or EOT around exactly the transform: ``nn.Sequential(bpda(defense.transform), defense.model)``.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import nn

from ..utils import check_generator, check_model, check_real

__all__ = ["InputQuantization", "RandomResizePad", "quantize"]


def quantize(x: torch.Tensor, levels: int) -> torch.Tensor:
    """round(x (k - 1)) / (k - 1) with k = ``levels``: every value in [0,1] to the nearest of k evenly
    spaced levels 0, 1/(k-1), ..., 1. ``torch.round`` has derivative zero, so the result carries an exactly
    zero gradient with respect to ``x`` (Athalye et al. 2018, Sec. 3.1: shattered gradients)."""
    if isinstance(levels, bool) or not isinstance(levels, numbers.Real) or not float(levels).is_integer() \
            or levels < 2:
        raise ValueError(f"levels must be a whole number >= 2 (the number of grey levels kept), got {levels!r}")
    k = int(levels) - 1
    return torch.round(x * k) / k


class InputQuantization(nn.Module):
    """A model behind input quantization to ``levels`` levels per pixel: model(round(x (k-1)) / (k-1)).

    Quantization is the non-differentiable input transform of Buckman, Roy, Raffel and Goodfellow (2018,
    "Thermometer encoding: one hot way to resist adversarial examples", ICLR), there followed by a one-hot
    or thermometer code, and of Xu, Evans and Qi's bit-depth reduction (2018, "Feature squeezing"). Athalye,
    Carlini and Wagner (2018, Sec. 5.1 and 4.1) show that it only masks the gradient: its derivative is zero
    almost everywhere, so gradient attacks see no direction at all, while BPDA with the identity in the
    backward pass (:func:`advlib.attacks.bpda`) breaks it.

    The default, 16 levels, keeps the defense a pure *masking* one on images in [0,1]: the levels lie 1/15
    apart, closer than the usual budgets (eps = 0.1 on Fashion-MNIST), so a small perturbation still changes
    the quantized image and the classifier is as fragile as without the defense. (With 2 levels, a
    threshold at 0.5, Fashion-MNIST's pixels, which sit near 0 or 1, would mostly not move at small eps:
    real robustness, not masking.)
    """

    def __init__(self, model: nn.Module, levels: int = 16):
        super().__init__()
        check_model(model)
        quantize(torch.zeros(1), levels)  # checks levels
        self.model = model
        self.levels = int(levels)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The input transform alone: :func:`quantize` to ``self.levels`` levels."""
        return quantize(x, self.levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.transform(x))

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


class RandomResizePad(nn.Module):
    """A model behind Xie et al.'s random resizing and padding (2018, "Mitigating adversarial effects
    through randomization", ICLR, Sec. 3): each image is resized by a random factor and zero-padded at a
    random position, a fresh draw for every image at every forward call, before the classifier sees it.

    Xie et al. enlarge a 299-pixel ImageNet image to a random size in [299, 331) and pad it to 331; a
    classifier with a fixed input size (as the book's Fashion-MNIST networks have) needs the image back at
    its own size, so here the image is *shrunk*: to a random side s * H, s uniform in [``min_scale``, 1],
    placed at a uniformly random offset inside the H x W frame, zeros around it (bilinear resampling via
    ``torch.nn.functional.affine_grid``/``grid_sample``, batched, on the model's device). The transform is
    differentiable, but its gradient changes with every draw: the *stochastic gradients* of Athalye,
    Carlini and Wagner (2018, Sec. 3.2 and 5.3), which Expectation over Transformation
    (:func:`advlib.attacks.eot`) averages away.

    ``generator``: a torch.Generator on the CPU for the draws (torch's global one when None); each call
    advances it, so every forward call draws new sizes and offsets.
    """

    def __init__(self, model: nn.Module, min_scale: float = 0.8, generator: torch.Generator | None = None):
        super().__init__()
        check_model(model)
        min_scale = check_real("min_scale", min_scale, strict=True, high=1.0)
        check_generator(generator)
        self.model = model
        self.min_scale = float(min_scale)
        self.generator = generator

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The input transform alone: each image shrunk by s ~ U[min_scale, 1] and placed at a uniformly
        random position in its frame, zeros around it (three uniforms per image, drawn on the CPU)."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4:
            got = f"shape {tuple(x.shape)} of {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"RandomResizePad takes a floating-point batch of images (N, C, H, W), got {got}")
        n = len(x)
        u = torch.rand((n, 3), generator=self.generator, dtype=torch.float64).to(x.device, x.dtype)
        scale = self.min_scale + (1 - self.min_scale) * u[:, 0]
        # in normalised coordinates [-1, 1] the shrunk image spans 2 s; its centre c lies in [-(1-s), 1-s],
        # and output point p samples the input at (p - c) / s
        centre = (2 * u[:, 1:] - 1) * (1 - scale)[:, None]
        theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
        theta[:, 0, 2] = -centre[:, 0] / scale  # x (width) offset
        theta[:, 1, 2] = -centre[:, 1] / scale  # y (height) offset
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.transform(x))

    def extra_repr(self) -> str:
        return f"min_scale={self.min_scale}"
