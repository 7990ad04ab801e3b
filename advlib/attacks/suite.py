"""The strongest suite of attacks advlib has for an Linf budget, to estimate a robustness score.

An attack shows that a point is *not* robust; it never shows that one is. A robustness score computed
from attacks is therefore an upper bound, and only as tight as the strongest attack tried: Carlini and
Wagner (2017, Sec. VII) and Athalye, Carlini and Wagner (2018, Sec. 6) ask defenses to be evaluated
against several strong attacks, each example counting as broken when any of them breaks it
(:func:`advlib.evaluate.robustness_score`).
"""

from __future__ import annotations

from functools import partial

from .cw import cw_linf
from .pgd import pgd

__all__ = ["strongest"]


def strongest(eps: float, *, steps: int = 100, restarts: int = 10, cw_steps: int = 1000,
              cw_lr: float = 5e-3, cw_c: float = 1e-5) -> dict:
    """Named attacks ``attack(model, x, y)`` for the Linf ball of radius ``eps``:

    - ``"PGD"``: Madry et al.'s PGD on the cross-entropy, ``steps`` steps of 2.5 eps / steps, ``restarts``
      random starts (each example keeps its worst);
    - ``"PGD (margin)"``: the same on Carlini and Wagner's margin f_6 (Madry et al.'s "CW" attack), which
      keeps pushing where the cross-entropy saturates;
    - ``"CW Linf"``: Carlini and Wagner's minimal-perturbation L_inf attack (``cw_steps`` Adam steps of
      ``cw_lr`` per constant, from the constant ``cw_c``); its outputs count only inside the ball.

    The defaults are the papers' (Madry et al.'s evaluation takes 100 steps and restarts; CW's L_inf
    attack starts at c = 1e-5 with steps of 5e-3); a quick run lowers ``steps``, ``restarts`` and
    ``cw_steps`` (and may raise ``cw_lr`` and ``cw_c`` to make up for the shorter runs).
    """
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    return {
        "PGD": partial(pgd, eps=eps, steps=steps, restarts=restarts),
        "PGD (margin)": partial(pgd, eps=eps, steps=steps, restarts=restarts, loss="margin"),
        "CW Linf": partial(cw_linf, steps=cw_steps, lr=cw_lr, c=cw_c),
    }
