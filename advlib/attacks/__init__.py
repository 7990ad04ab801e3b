"""Adversarial attacks, functional and batched: ``x_adv = pgd(model, x, y, eps=0.1, alpha=0.01, steps=40)``.

The contract every attack keeps (DESIGN.md): images in [0,1] shaped (N,C,H,W); returns a detached
tensor in [0,1] (inside the eps-ball around ``x`` for a bounded attack) on ``x``'s device; never
modifies its inputs; runs the model in eval mode and restores the mode it found; ``targeted=True``
means ``y`` holds target labels; bad arguments raise ``ValueError`` saying what was wrong.
The shared pieces (checks, losses, projections) are in :mod:`advlib.attacks.core`.
"""

from .bpda import bpda, eot
from .cw import cw_l0, cw_l2, cw_linf
from .fgsm import fgsm
from .lbfgs import lbfgs
from .nattack import nattack
from .one_pixel import one_pixel
from .patch import apply_patch, patch, random_positions
from .pgd import pgd

__all__ = ["apply_patch", "bpda", "cw_l0", "cw_l2", "cw_linf", "eot", "fgsm", "lbfgs", "nattack", "one_pixel", "patch",
           "pgd", "random_positions"]
