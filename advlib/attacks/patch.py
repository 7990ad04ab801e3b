"""The adversarial patch (Brown, Mané, Roy, Abadi and Gilmer 2017, "Adversarial Patch"): one universal
sticker, trained over a set of images, that takes over the classifier wherever it is pasted.

The paper's patch operator A(p, x, l, t) pastes the patch p, transformed by t, into the image x at the
location l, and its patch (Eq. 1) is

    p_hat = argmax_p E_{x ~ X, t ~ T, l ~ L} [ log Pr(y_hat | A(p, x, l, t)) ],

an expectation over transformations estimated on mini-batches, each image at a fresh location. Here L is
uniform over the positions where the patch fits fully inside the image and T is the identity or, with
``rotate=True``, a uniform random multiple of 90 degrees (no scaling: the patch replaces the pixels
under it). The untargeted patch ascends E[CE(f(A(p, x, l, t)), y)], the cross-entropy of the true class.

Pasting is batched (:func:`apply_patch`): image i's rows row_i + [0, h) and columns col_i + [0, w) are
indexed all at once and overwritten by the patch in one indexed assignment, which is differentiable in
the patch. Random positions come from :func:`random_positions`, drawn on the CPU in example order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import utils
from ..utils import progress
from . import core

__all__ = ["apply_patch", "patch", "random_positions"]


def random_positions(n: int, image_size, size, generator: torch.Generator | None = None) -> torch.Tensor:
    """Top-left corners (row, col), an (n, 2) int64 CPU tensor, uniform over the positions where a patch
    of ``size`` (int or (h, w)) fits fully inside an image of ``image_size`` (int or (H, W)).

    One ``torch.rand`` call (CPU ``generator``, else torch's global one) draws example i's row then column
    as the i-th pair of the stream, so n positions equal n single draws from the same generator state.
    """
    (h, w), (ph, pw) = _pair(image_size, "image_size"), _pair(size, "size")
    if not (1 <= ph <= h and 1 <= pw <= w):
        raise ValueError(f"a patch of size {(ph, pw)} does not fit in an image of size {(h, w)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a whole number >= 0, got {n!r}")
    room = torch.tensor([h - ph + 1, w - pw + 1])
    u = torch.rand((n, 2), generator=generator, dtype=torch.float64)
    return (u * room).floor_().long().clamp_(max=room - 1)  # the clamp only guards against rounding up


def apply_patch(x: torch.Tensor, patch: torch.Tensor, *, at=None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """A(p, x, l) of Brown et al. 2017 (Eq. 1's patch operator, without transformations): a copy of the
    images ``x`` (N,C,H,W) with ``patch`` (C,h,w) written over the pixels [row, row + h) x [col, col + w).

    ``at`` is an (N, 2) integer tensor of top-left corners (row, col), one per image, or one (row, col)
    pair for every image; ``None`` draws them with :func:`random_positions` from ``generator``, so
    ``apply_patch(x, p, generator=g)`` equals ``apply_patch(x, p, at=random_positions(len(x), (H, W),
    (h, w), g2))`` for ``g2`` seeded like ``g``. Returns a new tensor in [0,1] on ``x``'s device; never
    modifies ``x``. Raises ``ValueError`` for images outside [0,1], a patch with the wrong number of
    channels, values outside [0,1] or larger than the image, or a corner that puts it outside the image.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4:
        raise ValueError("x must be a floating-point batch of images shaped (N, C, H, W)")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"images must lie in [0, 1], got values in [{x.min().item():.4g}, {x.max().item():.4g}]")
    if not isinstance(patch, torch.Tensor) or not patch.is_floating_point() or patch.ndim != 3:
        raise ValueError("patch must be a floating-point tensor shaped (C, h, w)")
    if patch.shape[0] != x.shape[1]:
        raise ValueError(f"the patch has {patch.shape[0]} channels but the images have {x.shape[1]}")
    if patch.numel() and (patch.min() < 0 or patch.max() > 1):
        raise ValueError(f"patch values must lie in [0, 1], got [{patch.min().item():.4g}, {patch.max().item():.4g}]")
    (h, w), (ph, pw) = x.shape[-2:], patch.shape[-2:]
    if at is None:
        at = random_positions(len(x), (h, w), (ph, pw), generator)
    at = torch.as_tensor(at)
    if at.is_floating_point() or at.is_complex() or at.dtype == torch.bool:
        raise ValueError(f"at must hold integer (row, col) corners, got dtype {at.dtype}")
    at = at.expand(len(x), 2) if at.shape == (2,) else at
    if at.shape != (len(x), 2):
        raise ValueError(f"at must be one (row, col) pair or an ({len(x)}, 2) tensor, got shape {tuple(at.shape)}")
    if len(x) and ((at < 0).any() or (at[:, 0] > h - ph).any() or (at[:, 1] > w - pw).any()):
        raise ValueError(f"a {ph}x{pw} patch in a {h}x{w} image needs corners in [0, {h - ph}] x [0, {w - pw}]")
    return _paste(x.detach(), patch.detach().expand(len(x), -1, -1, -1), at.to(x.device))


def _paste(x: torch.Tensor, patches: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """Write ``patches[i]`` (N,C,h,w) into a copy of ``x[i]`` at corner ``at[i]``: one indexed assignment
    over the (N, h, w) grid of target pixels, channels last, differentiable with respect to ``patches``."""
    ph, pw = patches.shape[-2:]
    rows = at[:, :1].long() + torch.arange(ph, device=x.device)  # (N, h)
    cols = at[:, 1:].long() + torch.arange(pw, device=x.device)  # (N, w)
    image = torch.arange(len(x), device=x.device)[:, None, None]
    out = x.permute(0, 2, 3, 1).clone()  # (N, H, W, C)
    out[image, rows[:, :, None], cols[:, None, :]] = patches.to(x.dtype).permute(0, 2, 3, 1)
    return out.permute(0, 3, 1, 2).contiguous()


def patch(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, size: int = 8,
          target: int | None = None, epochs: int = 5, batch_size: int = 128, lr: float = 0.05,
          rotate: bool = False, generator: torch.Generator | None = None, desc: str = "patch") -> torch.Tensor:
    """Train the universal adversarial patch of Brown et al. 2017 (Eq. 1) on the images ``x``.

    The one exception to the attack contract of :mod:`advlib.attacks.core`: a patch is *universal*, one
    patch for a whole dataset, so it returns the patch (C, size, size), not adversarial images (paste it
    with :func:`apply_patch`), and its target is one class ``target`` for every image, not per-example
    labels (``y`` holds the true labels, optional for a targeted patch). Its arguments are checked by the
    same validators.

    Targeted (``target=t``): minimise the mean over a mini-batch of -log Pr(t | A(p, x, l, t)), a Monte
    Carlo estimate of minus Eq. 1, each image at a fresh uniform location l (and, with ``rotate=True``,
    turned a random multiple of 90 degrees). When ``y`` is given, images already of class t are left out
    (the patch is judged on the others); without ``y`` every image is used. Untargeted (``target=None``;
    ``y``, the true labels, required): maximise the cross-entropy of the true class instead.

    ``epochs`` passes over ``x`` in shuffled mini-batches of ``batch_size``; each step is Adam (step size
    ``lr``) on the patch pixels followed by the projection onto [0,1] (clamping). Adam's momentum averages
    the noisy gradients of random placements; on Fashion-MNIST, signed gradient steps and step sizes from
    0.005 to 0.1 reached patches of the same strength (nearly binary ones). The patch starts uniform
    in [0,1]; it, the shuffles, the positions and the turns are drawn from ``generator`` (a CPU
    ``torch.Generator``, else torch's global one), so a seeded run repeats.

    Runs the model in eval mode on its own device and restores its mode; only the patch's gradient is
    computed (parameters accumulate none); never modifies ``x`` or ``y``. Returns the detached patch,
    (C, size, size) in [0,1], on ``x``'s device. Raises ``ValueError`` for images outside [0,1], no
    images, labels that do not match ``x``, an untargeted patch without ``y``, a size below 1 or larger
    than the image, a target that is not an int in [0, number of logits), or epochs, batch_size or lr
    out of range.
    """
    utils.check_model(model)
    utils.check_images(x)
    utils.check_model(model, x)
    if y is not None:
        utils.check_labels(y, len(x))
    h, w = x.shape[-2:]
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= min(h, w):
        raise ValueError(f"size must be an int in [1, {min(h, w)}] for {h}x{w} images, got {size!r}")
    if target is None and y is None:
        raise ValueError("an untargeted patch needs the true labels y (or give a target class)")
    if target is not None and (isinstance(target, bool) or not isinstance(target, int)):
        raise TypeError(f"target must be an int class index, got {target!r}")
    utils.check_count("epochs", epochs)
    utils.check_count("batch_size", batch_size, low=1)
    utils.check_real("lr", lr, strict=True)
    utils.check_generator(generator)
    if len(x) == 0:
        raise ValueError("a patch needs at least one training image")

    device = core.model_device(model)
    with core.eval_mode(model), torch.enable_grad():
        with torch.no_grad():
            num_classes = utils.check_logits(model(x[:1].detach().to(device)))
        if target is not None and not 0 <= target < num_classes:
            raise ValueError(f"target must be in [0, {num_classes}) (the model has {num_classes} logits), got {target}")
        if y is not None:
            utils.check_classes(y, num_classes)
        images, labels = x.detach(), y
        if target is not None and y is not None:
            images, labels = images[y != target], None
            if len(images) == 0:
                raise ValueError(f"every image is already of the target class {target}")

        p = torch.rand(x.shape[1:2] + (size, size), generator=generator, dtype=x.dtype).to(device).requires_grad_()
        opt = torch.optim.Adam([p], lr=lr)
        n = len(images)
        bar = progress(total=epochs * -(-n // batch_size), desc=desc, unit="batch")
        for epoch in range(epochs):
            fooled = 0
            for index in torch.randperm(n, generator=generator).split(batch_size):
                at = random_positions(len(index), (h, w), size, generator).to(device)
                patches = p.expand(len(index), -1, -1, -1)
                if rotate:  # the 4 turns of p, then each image's pick
                    turns = torch.randint(4, (len(index),), generator=generator).to(device)
                    patches = torch.stack([p.rot90(k, (1, 2)) for k in range(4)])[turns]
                logits = model(_paste(images[index].to(device), patches, at))
                goal = (labels[index].to(device) if target is None
                        else torch.full((len(index),), target, dtype=torch.long, device=device))
                ce = F.cross_entropy(logits, goal)
                (p.grad,) = torch.autograd.grad(-ce if target is None else ce, p)
                opt.step()
                with torch.no_grad():
                    p.clamp_(0.0, 1.0)
                    hit = logits.argmax(1) == goal
                    fooled += int((~hit if target is None else hit).sum())
                bar.update()
            bar.set_postfix(epoch=epoch + 1, success=f"{fooled / n:.3f}")
        bar.close()
    return p.detach().to(x.device)


def _pair(value, name: str) -> tuple[int, int]:
    """(value, value) for an int, else the two ints of a pair (torch.Size included)."""
    pair = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair
