"""The robustness specification: the margins f_y - f_j of the true class over every other class.

Wong and Kolter (2018, Sec. 3) and Gowal et al. (2018, Sec. 3) certify an example by bounding c^T f(x')
from below for each c = e_y - e_j, j != y: all K of them at once as the rows of one matrix per example.
"""

from __future__ import annotations

import torch

from ..utils import check_classes

__all__ = ["margin_specification", "num_outputs"]


def margin_specification(y: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, K, K): row j of example n is e_{y_n} - e_j (the zero row at j = y_n); ``ValueError`` for a label
    outside [0, K)."""
    check_classes(y, num_classes)
    eye = torch.eye(num_classes, dtype=dtype, device=y.device)
    return eye[y].unsqueeze(1) - eye.unsqueeze(0)


def num_outputs(steps: list) -> int:
    """The number of logits K of a network given as steps of :func:`advlib.certify.network.layers`."""
    shape = next((step.out_shape for step in reversed(steps) if not isinstance(step, str)), None)
    if shape is None or len(shape) != 1:
        raise TypeError("bounds on margins need a model whose output is a vector of logits (N, K)")
    return shape[0]
