"""Exact verification: the smallest margin over the ball, by mixed-integer linear programming (Tjeng, Xiao
and Tedrake 2019, "Evaluating robustness of neural networks with mixed integer programming", ICLR, Sec. 3-4).

Over the Linf ball of radius eps around x intersected with the box, the smallest margin f_y(x') - f_j(x') of a
ReLU network (the models of :mod:`advlib.certify.network`) is the optimum of

    minimise    z_L[y] - z_L[j]
    subject to  max(x - eps, lo) <= x' <= min(x + eps, hi),   z_1 = x',
                z_{k+1} = A_k z_k + b_k                       at each affine layer,
                a = max(z, 0)                                  at each ReLU unit, l <= z <= u:
                  u <= 0 (dead):    a = 0
                  l >= 0 (active):  a = z
                  l < 0 < u:        a >= 0,  a >= z,  a <= u d,  a <= z - l (1 - d),  d in {0, 1}

(Tjeng et al.'s Eq. (5), the big-M formulation: d = 1 forces a = z >= 0, d = 0 forces a = 0 >= z). It is exact:
every feasible point is the network at some x' of the ball, and every x' gives one. The pre-activation bounds
l, u decide how hard it is: a unit whose bounds do not cross zero is stable and needs no binary (their Sec. 4.1),
and tighter bounds tighten the linear relaxation the branch and bound starts from. Ours are, unit by unit, the
tighter of interval arithmetic (Gowal et al. 2018) and Wong and Kolter's dual network (2018, Alg. 1; the
layer bounds of :mod:`advlib.certify.layer_bounds`), where Tjeng et al. tighten progressively with LPs.

The programs are solved by HiGHS through ``scipy.optimize.milp``, one per example and class j != y (all of an
example's programs share its constraints). A program's result is a proven lower bound (HiGHS's dual bound) and
a point of the ball attaining it to the solver's gap; the margin the network itself computes at that point is
the upper value reported. At the optimum the two agree (gap at most 1e-6 absolute, or relative); a program
stopped by ``time_limit`` keeps both, the true minimum lying between them.
"""

from __future__ import annotations

import copy
import time
from typing import NamedTuple

import numpy as np
import torch
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn

from ..utils import check_real, eval_mode, model_device
from .dual import dual_bounds
from .ibp import folded_margins, interval_boxes
from .layer_bounds import dual_layer_bounds
from .losses import certified
from .network import RELU, check_certify_inputs, input_region, layers

__all__ = ["ExactMargins", "exact_margins", "unstable_relus"]

BIG_M = ("dual", "ibp")  # where the pre-activation bounds (the big-M constants) come from
GAP = 1e-6  # HiGHS's relative gap; its absolute gap is 1e-6 by default


class ExactMargins(NamedTuple):
    """What :func:`exact_margins` returns, per example (N) and class (K).

    ``margins``: proven lower bounds on min f_y(x') - f_j(x') over the region (0 at j = y), the exact minimum
    where ``status`` is ``"optimal"`` (with ``smallest_only``, for the smallest margin only); ``upper``: per
    class, the smallest margin the network computes at the points the programs found (so the minimum lies in
    [margins, upper]); ``witness``: per example, the point with the smallest margin over j != y (an
    adversarial example when that margin is <= 0); ``status``:
    ``"optimal"`` or ``"time limit"``; ``binaries``: the unstable ReLUs (binary variables) of its programs;
    ``seconds``: the solver's time for all its programs; ``labels``: the labels y."""

    margins: torch.Tensor
    upper: torch.Tensor
    witness: torch.Tensor
    status: list
    binaries: torch.Tensor
    seconds: torch.Tensor
    labels: torch.Tensor

    @property
    def robust(self) -> torch.Tensor:
        """Per example: proven robust (every margin j != y above 0)."""
        return certified(self.margins, self.labels)

    @property
    def broken(self) -> torch.Tensor:
        """Per example: an adversarial example was found (``witness``): some margin at a real point <= 0."""
        return ~certified(self.upper, self.labels)


def exact_margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *,
                  box: tuple[float, float] | None = (0.0, 1.0), time_limit: float = 60.0, big_m: str = "dual",
                  fix_stable: bool = True, smallest_only: bool = False) -> ExactMargins:
    """The exact smallest margins f_y(x') - f_j(x') over the Linf ball of radius ``eps`` around each image of
    ``x`` intersected with ``box`` (None: the plain ball), by the mixed-integer program of Tjeng, Xiao and
    Tedrake (2019, Eq. (5)), solved by HiGHS (``scipy.optimize.milp``): one program per example and class
    j != y, each stopped after ``time_limit`` seconds. Returns an :class:`ExactMargins`, whose ``margins``
    (N, K) are shaped like :func:`dual_bounds`' and never below them.

    ``smallest_only=True`` wants only each example's smallest margin over j != y (what decides robustness).
    The programs run in the order of the classes' bounds (the tighter of the interval and dual-network
    bounds), and stop when the next class's bound is no smaller than a margin found at a point of the ball:
    its minimum, and every later class's, cannot be the smallest. The smallest margin is then exact (where no
    program ran out of time); the classes not solved keep their bounds, proven but not exact. On networks
    whose bounds are nearly tight (certifiably trained ones) this solves one program instead of K - 1.

    ``big_m="dual"`` takes the pre-activation bounds, unit by unit, as the tighter of interval arithmetic and
    the dual network's; ``"ibp"`` interval arithmetic alone. ``fix_stable=False`` gives every ReLU unit a
    binary, stable or not (the benchmark's ablations). Meant for small networks: the programs grow with the
    number of unstable units, exponentially in the worst case.
    """
    check_certify_inputs(model, x, y, eps, box)
    time_limit = check_real("time_limit", time_limit, strict=True)
    device = model_device(model)
    exact = copy.deepcopy(model).double().to("cpu")  # the programs in float64, from the same weights
    x64, y = x.detach().to("cpu", torch.float64), y.to("cpu")
    steps, centre, radius, boxes, blocks, dual = _setup(exact, x64, eps, box, big_m)
    with torch.no_grad():  # the bounds a program stopped early is no worse than, and smallest_only's order
        fallback = folded_margins(steps, boxes, y)
        if big_m == "dual":
            fallback = torch.maximum(fallback, dual_bounds(exact, x64, y, eps, box=box))
    num_classes = boxes[-1][0].shape[1]
    margins = torch.zeros(len(x), num_classes, dtype=torch.float64)
    upper = torch.zeros_like(margins)
    witness = x.detach().clone()
    status, binaries, seconds = [], torch.zeros(len(x), dtype=torch.long), torch.zeros(len(x), dtype=torch.float64)

    def run(n, program, j):
        """Solve one program; record its bounds; return the point it found and whether it ran out of time."""
        started = time.perf_counter()
        result = program.solve(int(y[n]), j, time_limit)
        seconds[n] += time.perf_counter() - started
        if result.status not in (0, 1):
            raise RuntimeError(f"HiGHS could not solve example {n}, class {j}: {result.message}")
        # stopped before any point was found: the image itself is one (every point of the region is)
        point = x64[n] if result.x is None else torch.from_numpy(result.x[:program.inputs]).view_as(x64[n])
        lower = result.fun if result.status == 0 else _dual_value(result, fallback[n, j])
        margins[n, j] = max(lower, fallback[n, j].item())
        return point, result.status == 1

    for n in range(len(x)):
        bounds = ((centre[n] - radius[n]).flatten().numpy(), (centre[n] + radius[n]).flatten().numpy())
        program = _Program(blocks, _unit_bounds(blocks, boxes, dual, n, bounds), bounds, fix_stable)
        binaries[n] = program.binaries
        label = int(y[n])
        others = sorted((j for j in range(num_classes) if j != label), key=lambda j: fallback[n, j].item())
        margins[n] = fallback[n]
        points, worsts, timed_out = [], [], False  # each point found, and its smallest margin over j != y
        found = torch.full((num_classes,), float("inf"), dtype=torch.float64)
        for j in others:
            if smallest_only and fallback[n, j] >= found.min():
                break  # this class's margin, and every later one's, is no smaller than one found at a point
            point, stopped = run(n, program, j)
            timed_out |= stopped
            points.append(point)
            with torch.no_grad():
                logits = exact(point[None])[0]
            at_point = (logits[label] - logits).masked_fill(torch.arange(num_classes) == label, float("inf"))
            worsts.append(at_point.min().item())  # (the label's own margin, 0, is no class to beat)
            found = torch.minimum(found, at_point)  # every point bounds every class's minimum
        # the margins at the points found bound every class from above (HiGHS's gap may cross them slightly)
        upper[n] = found.masked_fill(torch.arange(num_classes) == label, 0.0)
        margins[n] = torch.minimum(margins[n], upper[n])
        status.append("time limit" if timed_out else "optimal")
        witness[n] = points[worsts.index(min(worsts))].to(witness.dtype)
    return ExactMargins(margins.to(device, x.dtype), upper.to(device, x.dtype), witness.to(device), status,
                        binaries, seconds, y.to(device))


def unstable_relus(model: nn.Module, x: torch.Tensor, eps: float, *, box: tuple[float, float] | None = (0.0, 1.0),
                   big_m: str = "dual") -> torch.Tensor:
    """Per example (N,), the ReLU units whose pre-activation bounds over the ball cross zero (l < 0 < u): the
    binaries of its :func:`exact_margins` programs (Tjeng et al. 2019, Sec. 4.1), with the same bounds
    (``big_m``: the tighter of interval arithmetic and the dual network's, or ``"ibp"`` interval arithmetic
    alone)."""
    check_certify_inputs(model, x, None, eps, box)
    exact = copy.deepcopy(model).double().to("cpu")
    x64 = x.detach().to("cpu", torch.float64)
    _, centre, radius, boxes, blocks, dual = _setup(exact, x64, eps, box, big_m)
    counts = torch.zeros(len(x), dtype=torch.long)
    for n in range(len(x)):
        bounds = ((centre[n] - radius[n]).flatten().numpy(), (centre[n] + radius[n]).flatten().numpy())
        units = _unit_bounds(blocks, boxes, dual, n, bounds)
        for i, block in enumerate(blocks):
            if block is RELU:
                lower, upper = units[i - 1] if i else bounds
                counts[n] += int(((lower < 0) & (upper > 0)).sum())
    return counts


def _setup(exact: nn.Module, x64: torch.Tensor, eps: float, box, big_m: str):
    """The float64 network's steps, the input region, its interval boxes, the composed blocks and the dual
    network's layer bounds (empty for ``big_m="ibp"``)."""
    if big_m not in BIG_M:
        raise ValueError(f"big_m must be one of {BIG_M}, got {big_m!r}")
    with eval_mode(exact), torch.no_grad():
        steps = layers(exact, x64[:1])
        centre, radius = input_region(x64, eps, box)
        boxes = interval_boxes(steps, centre, radius)
        dual = dual_layer_bounds(steps, centre, radius) if big_m == "dual" else {}
        return steps, centre, radius, boxes, _blocks(steps), dual


def _dual_value(result, fallback: torch.Tensor) -> float:
    """The proven lower bound of a program stopped by its time limit: HiGHS's dual bound, or where it has none
    better, the interval bound."""
    bound = getattr(result, "mip_dual_bound", None)
    if bound is None or not np.isfinite(bound):
        return fallback.item()
    return max(float(bound), fallback.item())


def _affine_map(step) -> tuple[sparse.csr_array, np.ndarray]:
    """(A, b) of an affine step as a sparse matrix (out, in) and a vector: A from the step's linear map on the
    identity (rows are input coordinates), b its value at zero."""
    d_in = int(np.prod(step.in_shape))
    identity = torch.eye(d_in, dtype=torch.float64).view(1, d_in, *step.in_shape)
    columns = step.linear(identity).reshape(d_in, -1)  # column i of A is A e_i
    bias = step(torch.zeros(1, *step.in_shape, dtype=torch.float64)).flatten()
    return sparse.csr_array(columns.T.numpy()), bias.numpy()


def _blocks(steps) -> list:
    """The steps with each run of affine steps between ReLUs composed into one map: RELU markers and
    ``(A, b, last)``, ``last`` the index of the run's last step (its output's bounds are the block's). A
    Flatten or Normalize layer then costs no variables or rows of its own."""
    blocks = []
    for i, step in enumerate(steps):
        if step is RELU:
            blocks.append(RELU)
            continue
        matrix, bias = _affine_map(step)
        if blocks and blocks[-1] is not RELU:  # compose with the run so far: A (A' z + b') + b
            before, offset, _ = blocks.pop()
            matrix, bias = sparse.csr_array(matrix @ before), matrix @ offset + bias
        matrix.eliminate_zeros()
        blocks.append((matrix, bias, i))
    return blocks


def _unit_bounds(blocks, boxes, dual, n, input_bounds) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per block, the bounds (lower, upper) of its output for example n: interval arithmetic's, tightened by
    the dual network's where a ReLU follows (a ReLU's output: its input's bounds, ``input_bounds`` for a
    first step, clamped at 0)."""
    out = []
    for block in blocks:
        if block is RELU:
            lower, upper = out[-1] if out else input_bounds
            out.append((np.maximum(lower, 0.0), np.maximum(upper, 0.0)))
            continue
        last = block[2]
        centre, radius = boxes[last + 1]
        lower, upper = (centre[n] - radius[n]).flatten(), (centre[n] + radius[n]).flatten()
        if last + 1 in dual:
            lo, hi = (bound[n].flatten() for bound in dual[last + 1])
            lower, upper = torch.maximum(lower, lo), torch.minimum(upper, hi)
        out.append((lower.numpy(), upper.numpy()))
    return out


class _Program:
    """The constraints of one example's programs: variables [x', then each affine step's output, then per
    ReLU unit that is not active its output (fixed at 0 where dead) and, where unstable, its binary], equality
    rows for the affine layers and three rows per unstable unit (Tjeng et al.'s Eq. (5))."""

    def __init__(self, blocks, unit_bounds, input_bounds, fix_stable):
        self.inputs = len(input_bounds[0])
        lower, upper = [input_bounds[0]], [input_bounds[1]]
        columns, values, row_lo, row_hi, binary = [], [], [], [], []  # one entry per constraint row
        count = self.inputs
        current = np.arange(self.inputs)  # the variable of each coordinate of the current layer
        current_lo, current_hi = input_bounds
        for i, block in enumerate(blocks):
            if block is not RELU:  # z - A current = b
                matrix, bias, _ = block
                new = np.arange(count, count + len(bias))
                count += len(bias)
                lower.append(unit_bounds[i][0]), upper.append(unit_bounds[i][1])
                for r in range(len(bias)):
                    start, stop = matrix.indptr[r], matrix.indptr[r + 1]
                    columns.append(np.concatenate([[new[r]], current[matrix.indices[start:stop]]]))
                    values.append(np.concatenate([[1.0], -matrix.data[start:stop]]))
                    row_lo.append(bias[r]), row_hi.append(bias[r])
                current, (current_lo, current_hi) = new, unit_bounds[i]
                continue
            out = current.copy()
            for k in range(len(current)):
                low, high = float(current_lo[k]), float(current_hi[k])
                if fix_stable and low >= 0:  # active: the output is the input
                    continue
                out[k] = a = count
                count += 1
                if fix_stable and high <= 0:  # dead: a variable fixed at 0
                    lower.append([0.0]), upper.append([0.0])
                    continue
                low, high = min(low, 0.0), max(high, 0.0)
                d = count
                count += 1
                binary.append(d)
                lower.append([0.0, 0.0]), upper.append([high, 1.0])
                z = current[k]
                columns += [np.array([a, z]), np.array([a, d]), np.array([a, z, d])]
                values += [np.array([1.0, -1.0]), np.array([1.0, -high]), np.array([1.0, -1.0, -low])]
                row_lo += [0.0, -np.inf, -np.inf]  # a - z >= 0,  a - u d <= 0,  a - z - l d <= -l
                row_hi += [np.inf, 0.0, -low]
            current, (current_lo, current_hi) = out, unit_bounds[i]
        self.count, self.output, self.binaries = count, current, len(binary)
        self.lower, self.upper = np.concatenate(lower), np.concatenate(upper)
        indptr = np.cumsum([0] + [len(c) for c in columns])
        self.matrix = sparse.csr_array((np.concatenate(values), np.concatenate(columns), indptr),
                                       shape=(len(columns), count))
        self.row_lo, self.row_hi = np.array(row_lo), np.array(row_hi)
        self.integrality = np.zeros(count)
        self.integrality[binary] = 1

    def solve(self, label: int, other: int, time_limit: float):
        """min z_L[label] - z_L[other] over the program."""
        cost = np.zeros(self.count)
        cost[self.output[label]] += 1.0
        cost[self.output[other]] -= 1.0
        return milp(cost, integrality=self.integrality, bounds=Bounds(self.lower, self.upper),
                    constraints=LinearConstraint(self.matrix, self.row_lo, self.row_hi),
                    options={"time_limit": time_limit, "mip_rel_gap": GAP, "presolve": True})
