"""Smoothing: a certified classifier built from any base classifier by a vote over changed copies of the input.

- ``advlib.smoothing.gaussian``: Cohen, Rosenfeld and Kolter's randomized smoothing (2019), Gaussian noise,
  certified in L2 by Monte Carlo (:class:`Smooth`, :func:`certify_dataset`, :class:`SoftSmooth`).
- ``advlib.smoothing.ablation``: Levine and Feizi's de-randomized smoothing against patches (2020): the
  base classifier sees one band (or block) of the image, every position votes, and the certificate against
  any sticker up to a size is deterministic (:class:`AblationSmooth`, :func:`ablate`, :class:`SoftAblationSmooth`).
"""

from .ablation import AblationSmooth, SoftAblationSmooth, ablate, ablation_masks
from .gaussian import (
    ABSTAIN,
    Certificates,
    Smooth,
    SoftSmooth,
    certified_accuracy_curve,
    certify_dataset,
    clopper_pearson_lower,
)

__all__ = ["ABSTAIN", "AblationSmooth", "Certificates", "SoftAblationSmooth", "SoftSmooth", "Smooth", "ablate",
           "ablation_masks", "certified_accuracy_curve", "certify_dataset", "clopper_pearson_lower"]
