"""The dual network's layer-by-layer bounds (Wong and Kolter 2018, Alg. 1), exact or estimated by random
projections (Wong, Schmidt, Metzen and Kolter 2018, "Scaling provable adversarial defenses", Sec. 3.2).

With its ReLUs relaxed, the network is affine in the input x' and in the gaps t of the relaxed units
(a = s z + t with 0 <= t <= -s l at a crossing unit, t = 0 elsewhere; :mod:`advlib.certify.backward`).
So a unit z_k of a later layer ranges over m_k +- (sum over sources of a weighted l1 norm), where m is the
relaxed network evaluated at the centre of the input box and at the middle of every gap, and the sources
are the input box (weights: its radius, eps for the plain ball) and the gaps of each earlier ReLU layer
(weights: half the gap, -s l / 2, at its crossing units). Each l1 norm is of a row of the linear map from
the source to the unit; running the source's coordinate directions forward through the linear part of
the relaxed network (affine layers without bias, ReLUs multiplied by their slope D) gives those maps, for
all units of all later layers at once. Alg. 1 does exactly this: its nu_hat_1 rows, propagated through
the dual network, give the bounds of every layer as the sum of -nu^T x, eps ||nu_1||_1 and the crossing
units' l_ij [nu_ij]_+ terms.

``projections=k`` replaces the coordinate directions of every source by k standard Cauchy vectors R
(scaled by the source's weights): nu^T R is Cauchy with scale ||nu||_1, and the median of |Cauchy(0,
gamma)| is gamma, so the median of |nu^T R_i| over the k projections estimates each l1 norm (their median
estimator, Thm. 2), at a cost of k rows per source instead of one per pixel or unit. The estimate is NOT
a sound bound; it is meant for training. The k vectors of a source are drawn once per batch and shared by
its examples (as the authors' code does for the input); each example's estimate is still the median
estimator.

The bounds of a ReLU layer that follows a single affine layer (the first, usually) are exact by interval
arithmetic, which is cheaper: they are computed that way in both modes.
"""

from __future__ import annotations

import torch

from .backward import Relaxation, relaxation
from .network import RELU

__all__ = ["cauchy", "dual_layer_bounds", "dual_relaxations"]


def cauchy(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Standard Cauchy numbers, drawn on the CPU from ``generator`` (or torch's global generator) and moved
    to ``like``'s device and dtype, so a seed gives the same numbers on every device."""
    return torch.empty(shape, dtype=like.dtype).cauchy_(generator=generator).to(like.device)


class _Source:
    """A source's directions, rows (B, R, *shape) with B = N or 1, and its weights (N, R) (None: the rows
    are Cauchy projections already scaled by the weights). With an ``index`` (N, R), the rows are shared,
    (1, units, *shape), and example n's own are rows[0, index[n]], picked by :meth:`gather` (so the affine
    layers up to the next ReLU run once on every unit's row, not once per example and crossing unit)."""

    def __init__(self, rows: torch.Tensor, weights: torch.Tensor | None, index: torch.Tensor | None = None):
        self.rows, self.weights, self.index = rows, weights, index

    def gather(self) -> None:
        if self.index is not None:
            self.rows, self.index = self.rows[0][self.index], None

    def spread(self) -> torch.Tensor:
        """(N, *shape): the weighted l1 norm of every unit's row, or its median estimate."""
        if self.weights is None:
            return self.rows.abs().median(dim=1).values
        size = self.rows.abs().flatten(2).transpose(1, 2) @ self.weights.unsqueeze(-1)
        return size.view(len(size), *self.rows.shape[2:])


def dual_relaxations(steps: list, centre: torch.Tensor, radius: torch.Tensor, projections: int | None = None,
                     generator: torch.Generator | None = None) -> dict[int, Relaxation]:
    """The dual network's ReLU relaxation at every ReLU of ``steps``, from its layer-by-layer bounds over
    the input box centre +- radius: exact (``projections=None``) or estimated with ``projections`` Cauchy
    projections per source drawn from ``generator`` (see the module docstring)."""
    return _dual_pass(steps, centre, radius, projections, generator)[0]


def dual_layer_bounds(steps: list, centre: torch.Tensor,
                      radius: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """The dual network's bounds (lower, upper) on the input of every ReLU of ``steps`` (keyed by its position),
    each (N, *shape), over the input box centre +- radius (Wong and Kolter 2018, Alg. 1): sound and at least
    as tight as interval arithmetic on the first ReLU layer; the big-M constants of exact verification."""
    return _dual_pass(steps, centre, radius, None, None)[1]


def _dual_pass(steps, centre, radius, projections, generator):
    """(relaxations, bounds) of :func:`dual_relaxations` and :func:`dual_layer_bounds`, in one pass."""
    relus = [i for i, step in enumerate(steps) if step is RELU]
    relaxations: dict[int, Relaxation] = {}
    bounds: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    if not relus:
        return relaxations, bounds
    if projections is None:
        identity = torch.eye(centre[0].numel(), dtype=centre.dtype, device=centre.device)
        sources = [_Source(identity.view(1, -1, *centre.shape[1:]), radius.flatten(1))]
    else:
        sources = [_Source(cauchy((1, projections, *centre.shape[1:]), generator, centre) * radius.unsqueeze(1),
                           None)]
    middle = centre  # the relaxed network at the box centre and the middle of every gap
    exact_radius, mixing = radius, 0  # |A| r while interval arithmetic is exact (one affine layer), else None
    for i, step in enumerate(steps[:relus[-1] + 1]):
        if step is not RELU:
            middle = step(middle)
            for source in sources:
                source.rows = step.linear(source.rows)
            if exact_radius is not None:
                mixing += step.mixes
                exact_radius = step.abs_linear(exact_radius) if mixing <= 1 else None
            continue
        for source in sources:
            source.gather()
        spread = exact_radius if exact_radius is not None else sum(source.spread() for source in sources)
        bounds[i] = (middle - spread, middle + spread)
        relaxations[i] = relax = relaxation(*bounds[i], "dual")
        if i == relus[-1]:
            break
        half_gap = relax.intercept / 2
        middle = relax.slope * middle + half_gap
        for source in sources:
            source.rows = source.rows * relax.slope.unsqueeze(1)
        gaps = (_crossing_rows(half_gap) if projections is None else
                _Source(cauchy((1, projections, *middle.shape[1:]), generator, middle) * half_gap.unsqueeze(1), None))
        if gaps is not None:
            sources.append(gaps)
        exact_radius = None
    return relaxations, bounds


def _crossing_rows(half_gap: torch.Tensor) -> _Source | None:
    """The gap source of one ReLU layer: per example, the coordinate row of each crossing unit (half_gap > 0),
    padded to the batch's largest count with rows of weight 0, weighted by half the gap (None: no crossing
    unit). The rows are shared (all units', picked later) unless the batch holds fewer rows than units."""
    flat = half_gap.flatten(1)
    crossing = flat > 0
    counts = crossing.sum(dim=1)
    most = int(counts.max())
    if most == 0:
        return None
    n, units = flat.shape
    order = torch.argsort((~crossing).to(torch.uint8), dim=1, stable=True)[:, :most]  # crossing units first
    weights = flat.gather(1, order) * (torch.arange(most, device=flat.device) < counts.unsqueeze(1))
    if n * most >= units:
        identity = torch.eye(units, dtype=flat.dtype, device=flat.device)
        return _Source(identity.view(1, units, *half_gap.shape[1:]), weights, index=order)
    rows = flat.new_zeros(n, most, units).scatter_(2, order.unsqueeze(-1), 1.0)
    return _Source(rows.view(n, most, *half_gap.shape[1:]), weights)
