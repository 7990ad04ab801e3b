"""Wong and Kolter's dual network bounds (2018, "Provable defenses against adversarial examples via the
convex outer adversarial polytope", Thm. 1 and Alg. 1).

Relax every ReLU to the convex hull of its graph over the pre-activation bounds [l, u]; the smallest
margin c^T f(x') over the resulting outer polytope is a linear program, and any feasible point of its dual
bounds it from below. Wong and Kolter's choice of dual point is a "dual network": the network run
backwards with every ReLU replaced by D = diag(0 (dead), 1 (active), u/(u - l) (crossing)), which
gives (Thm. 1)

    J(x, nu) = -sum_i nu_{i+1}^T b_i - x^T nu_hat_1 - eps ||nu_hat_1||_1 + sum_i sum_{j in I_i} l_ij [nu_ij]_+
             <=  min over the ball of c^T f(x').

It is :func:`advlib.certify.backward.backward` with the ``"dual"`` relaxation (lower slope = upper slope).
The bounds l, u of each ReLU layer come first, layer by layer (Alg. 1), from the same dual network on the
network's prefix (:mod:`advlib.certify.layer_bounds`).

With a ``box`` (lo, hi) the input set is the interval [max(x - eps, lo), min(x + eps, hi)], and the input
term becomes the exact minimum of -x'^T nu_hat_1 over it, -c^T nu_hat_1 - r^T |nu_hat_1| in centre-radius
form (``bounded_input=True`` of the authors' ``convex_adversarial``).

``projections=k`` estimates the layer-by-layer bounds by random projections instead (Wong, Schmidt,
Metzen and Kolter 2018, "Scaling provable adversarial defenses", Sec. 3.2; also in
:mod:`advlib.certify.layer_bounds`): cheap, but an estimate, not a sound bound.
"""

from __future__ import annotations

import torch
from torch import nn

from ..utils import check_generator, eval_mode, model_device
from .backward import backward
from .layer_bounds import dual_relaxations
from .network import check_certify_inputs, input_region, layers
from .specification import margin_specification, num_outputs

__all__ = ["dual_bounds"]


def dual_bounds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                box: tuple[float, float] | None = (0.0, 1.0), projections: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, K) lower bounds on f_y(x') - f_j(x') for every class j (0 at j = y) over the Linf ball of
    radius ``eps`` around each image of ``x`` intersected with ``box`` (None: the plain ball): Wong and
    Kolter's J(x, g(e_y - e_j)) (2018, Thm. 1, with the layer bounds of Alg. 1). An example is certified
    when every j != y bound is > 0.

    ``projections=k`` estimates the layer bounds with k Cauchy random projections (Wong et al. 2018,
    "Scaling provable adversarial defenses", Sec. 3.2; the median estimator of their Thm. 2) for training
    at scale: the result is then an estimate, NOT a sound bound (it may lie above the true one), so
    certify with ``projections=None``. ``generator`` (a CPU ``torch.Generator``) seeds the projections.

    Runs on the model's device in eval mode, batched; differentiable in the model's parameters (the robust
    loss of Wong and Kolter's training, :func:`advlib.certify.robust_loss`).
    """
    check_certify_inputs(model, x, y, eps, box)
    if projections is not None and (isinstance(projections, bool) or not isinstance(projections, int)
                                    or projections < 1):
        raise ValueError(f"projections must be None or a positive number of projections, got {projections!r}")
    check_generator(generator)
    device = model_device(model)
    x, y = x.to(device), y.to(device)
    with eval_mode(model):
        steps = layers(model, x[:1])
        centre, radius = input_region(x, eps, box)
        relaxations = dual_relaxations(steps, centre, radius, projections, generator)
        spec = margin_specification(y, num_outputs(steps), x.dtype)
        return backward(steps, relaxations, spec, centre, radius)
