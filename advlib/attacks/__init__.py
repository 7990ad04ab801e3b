"""Adversarial attacks, functional and batched: ``x_adv = pgd(model, x, y, eps=0.1, steps=40)``.

Every attack keeps one contract, stated and enforced once in :mod:`advlib.attacks.core`: ``model, x, y``
by position and everything else by keyword, an iteration count called ``steps``, ``targeted=True`` for
target labels in ``y``, randomness from ``generator``, checked arguments, and a detached result in [0,1]
(and in the eps-ball) on ``x``'s device. :func:`patch` (a universal patch, not per-image) is the one
exception, documented there; :func:`bpda` and :func:`eot` wrap models, not images. AutoAttack's attacks
(:func:`apgd`, :func:`apgd_t`, :func:`fab`, :func:`square`) are composed by :func:`advlib.evaluate.autoattack`.
"""

from .apgd import APGDResult, apgd, apgd_details, apgd_t, apgd_t_details
from .bpda import bpda, eot
from .cw import cw_l0, cw_l2, cw_linf
from .fab import fab
from .fgsm import fgsm
from .lbfgs import lbfgs
from .nattack import nattack
from .one_pixel import one_pixel
from .patch import apply_patch, patch, random_positions
from .pgd import pgd
from .square import SquareResult, square, square_with_queries

__all__ = ["APGDResult", "SquareResult", "apgd", "apgd_details", "apgd_t", "apgd_t_details", "apply_patch", "bpda",
           "cw_l0", "cw_l2", "cw_linf", "eot", "fab", "fgsm", "lbfgs", "nattack", "one_pixel", "patch", "pgd",
           "random_positions", "square", "square_with_queries"]
