"""FAB, the fast adaptive boundary attack (Croce and Hein 2020, "Minimally distorted adversarial examples
with a fast adaptive boundary attack", ICML, Sec. 3, Algorithm 1): a minimum-norm attack, Linf or L2.

Each step linearises the decision boundary at the current point x^(i), projects both x^(i) and the original
image x_orig onto that hyperplane intersected with the box [0,1]^d (Sec. 3.1, the box-constrained projection
solved exactly), and moves to an extrapolated convex combination of the two projections (Sec. 3.2):

    x^(i+1) = clip_[0,1]( (1 - alpha) (x^(i) + eta delta^(i)) + alpha (x_orig + eta delta_orig^(i)) ),
    alpha = min( ||delta^(i)|| / (||delta^(i)|| + ||delta_orig^(i)||), alpha_max ),

with delta^(i), delta_orig^(i) the two projections' displacements. The numerator is the current point's
distance to the linearised boundary: near the boundary alpha is small and the step mostly follows x^(i)'s
projection; far from it, the step leans (by at most alpha_max) towards x_orig's, which keeps the iterates
close to x_orig (the ratio the other way round pins alpha at alpha_max; on the test's MLP it gave
perturbations 0.1% larger on nearly every image). Where x^(i+1) is adversarial it is kept
when it is the smallest found so far, and the iterate is pulled back towards the original,
x^(i+1) <- (1 - beta) x_orig + beta x^(i+1) (the "backward step"). The paper's defaults: alpha_max = 0.1,
eta = 1.05, beta = 0.9, 100 steps; the first run starts at x_orig, each restart at a random point (Sec. 3.3).

Which boundary:

- untargeted (``y`` the true labels): the class l != y whose linearised boundary is nearest,
  argmin_l |f_l - f_y| / ||grad(f_l - f_y)||_q, q the dual norm (q = 1 for Linf, 2 for L2). This needs the
  gradient of every difference: one forward and K - 1 backward passes per step (measured on the CPU against
  ``torch.func.jacrev`` under ``vmap``, ``is_grads_batched`` and replicating the batch K times: the plain loop
  was fastest, 7.5 ms against 8.2-12.9 ms for 200 Fashion-MNIST images through a 64-unit MLP, and 153 ms
  against 240-540 ms for 50 through the small CNN);
- AutoAttack's FAB-T (``targets=k``, ``y`` the true labels): for each of the k classes with the highest clean
  logits other than y, the boundary f_t = f_y, one backward pass per step. The k targets run together in one
  batch (each example's row replicated k times), and each example keeps its smallest perturbation over them;
- the contract's targeted attack (``targeted=True``, ``y`` the targets t): the boundary between t and the
  strongest other class at the current point, f_t = max_{j != t} f_j; success means classified as t.

The box-constrained projection (Sec. 3.1). For a hyperplane <w, u> = c, the smallest perturbation d of z
with <w, z + d> = c and z + d in [0,1]^d moves coordinate i only in the direction sign(w_i) (after flipping w
so that the plane lies on its positive side), and no further than its room to the box, rho_i (1 - z_i or z_i).
For Linf, d_i = sign(w_i) min(lambda, rho_i); for L2 (Karush-Kuhn-Tucker), d_i = sign(w_i) min(mu |w_i|, rho_i).
Both are one problem, find the smallest t with sum_i a_i min(t, c_i) = r (Linf: a = |w|, c = rho; L2:
a = w^2, c = rho / |w|), a piecewise-linear non-decreasing function of t: after sorting the c_i, its values at
the breakpoints are cumulative sums, the segment holding r is found by counting, and t is solved on that
segment in closed form, for the whole batch at once. Where the box cannot reach the hyperplane, every
coordinate moves its full room towards it (the box point nearest to the plane in that direction).

What is returned: per example, the smallest adversarial point found over all steps and restarts (and
targets). An example that is never broken comes back as x itself: **the clean image means no adversarial
was found**. An example that is already misclassified (for ``targeted=True``: already classified as its
target) is not attacked and also comes back as x, which is then its own adversarial at distance 0.

With ``eps`` given, FAB answers AutoAttack's question (is there an adversarial within eps?): an example
stops, all its targets with it, as soon as it has an adversarial point within eps, and that point is returned
(the first found within eps, not necessarily the smallest); an example not broken within eps comes back as x.
Restarts run only for the examples still standing. Without ``eps`` every example runs all steps and restarts
and the smallest perturbation found is returned, however large.

Random restarts (Sec. 3.3): restart r > 0 starts at clip_[0,1](x_orig + rho u), u a random direction of norm
1 (Linf: uniform on [-1, 1]^d divided by its largest entry; L2: a Gaussian normalised), rho half of
min(eps, the norm of the best adversarial found so far for that example and target), as the authors'
implementation does. Without ``eps``, an example not yet broken takes rho = 0.3 / 2 (Linf) or 1.0 / 2 (L2),
torchattacks' default eps of FAB. The directions are drawn on the CPU from ``generator`` (or torch's global
CPU generator), all at once and example after example, so that a batch gives the same result as its examples
attacked one by one (see :mod:`advlib.attacks.pgd`); they are shared by an example's targets.

Departures from the authors' implementation: the projection is written from the problem above (theirs sorts
the coordinates too, with a bisection); where the box cannot reach the hyperplane ours moves to the box's
nearest corner; the untargeted boundary excludes y by indexing instead of a large constant; FAB-T keeps each
example's smallest perturbation over all its targets (AutoAttack's loop over targets keeps the first success
within eps, which is what ``eps`` given does here).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import core

__all__ = ["fab"]

RESTART_RADIUS = {"linf": 0.3, "l2": 1.0}  # the random restarts' radius without eps (torchattacks' default eps)
TINY = 1e-12
NEWTON_STEPS = 8  # exact Newton steps of the projection before sorting the rows left (see _level)


@core.attack("norm", reals=("alpha_max", "beta"), positive=("eta",), counts={"targets": 1})
def fab(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float | None = None, norm: str = "linf",
        steps: int = 100, restarts: int = 1, targets: int | None = None, targeted: bool = False,
        alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """FAB of Croce and Hein (2020, Algorithm 1): the smallest adversarial perturbation in ``norm`` (Linf, L2).

    ``y`` holds the true labels, and FAB crosses the nearest linearised boundary (untargeted), or, with
    ``targets=k``, AutoAttack's FAB-T: one targeted search towards each of the k classes with the highest clean
    logits other than y (at most K - 1 of them), batched, each example keeping its smallest perturbation over
    its targets (success: the prediction is no longer y). ``targeted=True`` is the contract's targeted attack:
    ``y`` holds the target labels and success means being classified as the target; it cannot be combined
    with ``targets``. Each of ``steps`` iterations per run projects the current point and x onto the
    linearised boundary intersected with [0,1] (Sec. 3.1), steps to their convex combination with weight
    alpha = min(||delta|| / (||delta|| + ||delta_orig||), ``alpha_max``) extrapolated by ``eta``, and moves an
    adversarial iterate back towards x by ``beta`` (Sec. 3.2); ``restarts`` - 1 more runs start at random
    points (Sec. 3.3). Defaults are the paper's (alpha_max = 0.1, eta = 1.05, beta = 0.9, 100 steps).

    Returns per example the smallest adversarial point found; x itself where none was found (the clean image
    means no adversarial found) or where x is already misclassified. With ``eps`` the search answers "is
    there an adversarial within eps?": an example stops at its first point within eps, which is returned, and
    comes back as x when it has none. The module's docstring gives the projection, the restarts' radius and
    the random numbers. Keeps the contract of :mod:`advlib.attacks.core` (without ``eps`` the result is only
    clamped to the box).
    """
    if alpha_max > 1 or beta > 1:
        raise ValueError(f"alpha_max and beta must lie in [0, 1], got alpha_max={alpha_max}, beta={beta}")
    if targeted and targets is not None:
        raise ValueError("targets=k (AutoAttack's FAB-T) takes the true labels in y; targeted=True means y holds "
                         "the target labels: use one or the other")
    with torch.no_grad():
        clean = model(x)
    if targeted:
        mode, attacked = "target", clean.argmax(1) != y
    else:
        mode, attacked = ("pair" if targets else "untargeted"), clean.argmax(1) == y
    examples = attacked.nonzero()[:, 0]
    # drawn for every example, attacked or not, so that the stream does not depend on the batch
    directions = _restart_directions(x, restarts - 1, norm, generator) if restarts > 1 else None
    if steps == 0 or len(examples) == 0:
        return x.clone()
    per_example = 1
    label = target = y[examples]
    if targets:  # top-2 ... top-(k+1) classes of the clean logits, y masked out
        per_example = min(targets, clean.shape[1] - 1)
        others = clean[examples].scatter(1, y[examples, None], float("-inf"))
        target = others.topk(per_example, dim=1).indices.flatten()
        label = label.repeat_interleave(per_example)
    rows = examples.repeat_interleave(per_example)
    search = _Search(model, x[rows], label, target, mode, norm, alpha_max, eta, beta, eps, per_example)
    for restart in range(restarts):
        start = None if restart == 0 else directions[:, restart - 1].to(x.device)[rows]
        search.run(steps, start)
    size, choice = search.best_norm.view(-1, per_example).min(dim=1)
    found = size <= eps if eps is not None else torch.isfinite(size)
    chosen = search.best.view(len(examples), per_example, *x.shape[1:])[torch.arange(len(examples)), choice]
    x_adv = x.clone()
    x_adv[examples[found]] = chosen[found]
    return x_adv


class _Search:
    """The FAB iterations of a batch of rows (an example, or an example and one of its targets), with each row's
    best adversarial point and its norm. ``per_example`` consecutive rows belong to one example; with ``eps``
    the rows of an example with a point within eps stop costing passes."""

    def __init__(self, model, x0, label, target, mode, norm, alpha_max, eta, beta, eps, per_example):
        self.model, self.x0, self.label, self.target, self.mode, self.norm = model, x0, label, target, mode, norm
        self.alpha_max, self.eta, self.beta, self.eps, self.per_example = alpha_max, eta, beta, eps, per_example
        self.best = x0.clone()
        self.best_norm = torch.full((len(x0),), float("inf"), device=x0.device, dtype=x0.dtype)

    def finished(self) -> torch.Tensor:
        """Per row: its example already has an adversarial within eps (never, without eps)."""
        if self.eps is None:
            return torch.zeros_like(self.best_norm, dtype=torch.bool)
        done = (self.best_norm <= self.eps).view(-1, self.per_example).any(dim=1)
        return done.repeat_interleave(self.per_example)

    def run(self, steps: int, start: torch.Tensor | None) -> None:
        """One run of ``steps`` iterations from x_orig (``start`` None) or from the random direction ``start``
        scaled to half of min(eps, the row's best norm so far)."""
        x_cur = self.x0.clone()
        if start is not None:
            cap = self.eps if self.eps is not None else RESTART_RADIUS[self.norm]
            radius = self.best_norm.clamp(max=cap) / 2
            x_cur = (x_cur + radius.view(-1, *[1] * (x_cur.ndim - 1)) * start).clamp_(0.0, 1.0)
        active = (~self.finished()).nonzero()[:, 0]
        for _ in range(steps):
            if len(active) == 0:
                break
            everyone = len(active) == len(self.x0)  # then the rows are used as they are, without copies
            x0, label, target, x_at = ((self.x0, self.label, self.target, x_cur) if everyone else
                                       (self.x0[active], self.label[active], self.target[active], x_cur[active]))
            x_new = _fab_step(self.model, x_at, x0, label, target, self.mode, self.norm, self.alpha_max, self.eta)
            with torch.no_grad():
                success = _success(self.model(x_new), label, target, self.mode)
            size = _norm(x_new - x0, self.norm)
            better = success & (size < self.best_norm[active])
            if better.any():
                self.best[active[better]] = x_new[better]
                self.best_norm[active[better]] = size[better]
            # the backward step where adversarial: (1 - beta) x0 + beta x_new, as x_new + (1 - beta) (x0 - x_new)
            back = success.to(x_new.dtype).mul_(1 - self.beta).view(-1, *[1] * (x_new.ndim - 1))
            x_next = torch.lerp(x_new, x0, back)
            if everyone:
                x_cur = x_next
            else:
                x_cur[active] = x_next
            if self.eps is not None and better.any():
                active = (~self.finished()).nonzero()[:, 0]


def _fab_step(model, x_cur, x0, label, target, mode, norm, alpha_max, eta) -> torch.Tensor:
    """x^(i+1) of Algorithm 1: both projections onto the linearised boundary cap the box, then the biased,
    extrapolated convex combination, clipped to [0,1]."""
    value, w = _linearised_boundary(model, x_cur, label, target, mode, norm)
    flat_cur, flat0 = x_cur.flatten(1), x0.flatten(1)
    value0 = value + (w * (flat0 - flat_cur)).sum(dim=1)  # the linearisation at x_orig
    delta = _box_projection(torch.cat([flat_cur, flat0]), torch.cat([w, w]), -torch.cat([value, value0]), norm)
    delta_cur, delta0 = delta.chunk(2)
    size_cur = _norm(delta_cur, norm).clamp_min(1e-8)
    size0 = _norm(delta0, norm).clamp_min(1e-8)
    alpha = (size_cur / (size_cur + size0)).clamp(max=alpha_max)[:, None]
    x_new = torch.lerp(flat_cur + eta * delta_cur, flat0 + eta * delta0, alpha)  # (1 - alpha) a + alpha b
    return x_new.clamp_(0.0, 1.0).view_as(x_cur)


def _linearised_boundary(model, x_cur, label, target, mode, norm) -> tuple[torch.Tensor, torch.Tensor]:
    """(value, gradient flattened) of the difference of logits g whose zero set is the boundary to cross,
    g > 0 beyond it: f_l - f_y for the nearest l (untargeted), f_t - f_y (FAB-T), f_t - max_{j != t} f_j
    (targeted)."""
    x_var = x_cur.detach().requires_grad_(True)
    logits = model(x_var)
    rows = torch.arange(len(x_cur), device=x_cur.device)
    if mode == "untargeted":
        return _nearest_boundary(logits, x_var, label, norm)
    if mode == "pair":
        diff = logits[rows, target] - logits[rows, label]
    else:
        others = logits.detach().clone()
        others[rows, target] = float("-inf")
        diff = logits[rows, target] - logits[rows, others.argmax(1)]
    (grad,) = torch.autograd.grad(diff.sum(), x_var)
    return diff.detach(), grad.flatten(1)


def _nearest_boundary(logits, x_var, label, norm) -> tuple[torch.Tensor, torch.Tensor]:
    """The untargeted choice: over l != y, the difference f_l - f_y with the smallest
    |f_l - f_y| / ||grad(f_l - f_y)||_q, one backward pass per class, keeping only the nearest so far."""
    num_classes = logits.shape[1]
    others = torch.arange(num_classes - 1, device=label.device).expand(len(label), -1)
    others = others + (others >= label[:, None]).long()  # the classes other than y, per row
    diffs = logits.gather(1, others) - logits.gather(1, label[:, None])
    dual = 1.0 if norm == "linf" else 2.0
    best_dist = best_value = best_grad = None
    for j in range(num_classes - 1):
        (grad,) = torch.autograd.grad(diffs[:, j].sum(), x_var, retain_graph=j < num_classes - 2)
        grad, value = grad.flatten(1), diffs[:, j].detach()
        dist = value.abs() / (grad.norm(p=dual, dim=1) + TINY)
        if best_dist is None:
            best_dist, best_value, best_grad = dist, value, grad
        else:
            nearer = dist < best_dist
            best_dist = torch.where(nearer, dist, best_dist)
            best_value = torch.where(nearer, value, best_value)
            best_grad = torch.where(nearer[:, None], grad, best_grad)
    return best_value, best_grad


def _box_projection(z: torch.Tensor, w: torch.Tensor, r: torch.Tensor, norm: str) -> torch.Tensor:
    """Per row, the smallest d (Linf or L2) with <w, d> = r and z + d in [0,1]^d (Sec. 3.1), exactly; where
    the box cannot reach <w, d> = r, the d that moves every coordinate its full room towards it."""
    w = w * torch.where(r < 0, -1.0, 1.0).to(w.dtype)[:, None]  # now <w, d> must grow by |r|
    r = r.abs()
    magnitude, direction = w.abs(), torch.sign(w)
    # how far each coordinate can move in the useful direction: 1 - z_i where w_i > 0, z_i where w_i < 0, and
    # 0 where w_i = 0 (no breakpoint of _level), in arithmetic: torch.where is several times slower on the CPU
    room = direction.clamp_min(0.0) - direction * z
    if norm == "linf":  # d_i = sign(w_i) min(t, room_i); a coordinate with w_i = 0 moves by 0 (sign 0)
        return torch.minimum(_level(magnitude, room, r)[:, None], room) * direction
    # L2: d_i = sign(w_i) min(t |w_i|, room_i), which saturates at t = room_i / |w_i|
    weight, limit = magnitude.square(), room / magnitude
    useless = (weight == 0) | ~torch.isfinite(limit)  # coordinates that cannot help
    weight, limit = weight.masked_fill(useless, 0.0), limit.masked_fill(useless, 0.0)
    move = torch.minimum(_level(weight, limit, r)[:, None], limit) * magnitude
    return (move * direction).masked_fill(useless, 0.0)


def _level(weight: torch.Tensor, limit: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Per row, the smallest t >= 0 with F(t) = sum_i weight_i min(t, limit_i) = r (weights >= 0), or the
    largest limit where F never reaches r.

    F is non-decreasing, concave and piecewise linear (breakpoints at the limits), so Newton's method from
    t = 0 never overshoots: each step follows the line of the current segment to r, and it is exact when no
    limit lies between the step's start and its end, that is when the next step finds as many coordinates
    not yet saturated (limit > t) as this one. A few Newton steps settle nearly every row (on FAB-T's rows,
    all but a few after three); the rows left are solved by sorting (:func:`_level_sorted`). A step is a
    handful of passes over the rows, written without ``torch.where`` over them, which is several times slower
    on the CPU than arithmetic (measured on FAB-T's rows, 288 x 784 on one core: 0.5 ms a call against 1.9 ms
    with ``torch.where`` and the settled rows dropped after each step)."""
    if NEWTON_STEPS == 0:
        return _level_sorted(weight, limit, r)
    at, previous = torch.zeros_like(r), None
    for newton in range(NEWTON_STEPS + 1):
        beyond = (limit - at[:, None]).gt_(0.0)  # 1.0 where not yet saturated at t (limit > t), else 0.0
        slope, count = (beyond * weight).sum(dim=1), beyond.sum(dim=1)
        if previous is not None:
            settled = count == previous  # no limit crossed by the last step: it was exact
            if settled.all() or newton == NEWTON_STEPS:
                break
        # F(0) = 0; past the first step, the saturated coordinates count their limits, the others t
        value = torch.zeros_like(r) if newton == 0 else (weight * torch.minimum(limit, at[:, None])).sum(dim=1)
        step = torch.where(slope > 0, (r - value).clamp_min(0.0) / slope.clamp_min(TINY), torch.zeros_like(r))
        at, previous = at + step, count
    t = at.clone()
    saturated = settled & (count == 0)  # F stopped growing: r beyond its reach, or every limit 0
    if saturated.any():
        t[saturated] = limit[saturated].amax(dim=1).clamp_min(0.0)
    left = ~settled
    if left.any():
        t[left] = _level_sorted(weight[left], limit[left], r[left])
    return t


def _level_sorted(weight: torch.Tensor, limit: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """:func:`_level` by sorting: with the limits sorted, c_(1) <= ... <= c_(n), F at the breakpoints is
    F(c_(k)) = sum_{j <= k} a_(j) c_(j) + c_(k) sum_{j > k} a_(j) (cumulative sums); the first breakpoint
    where F >= r ends the segment that holds t, solved there in closed form."""
    limit, order = limit.sort(dim=1)
    weight = weight.gather(1, order)
    saturated = torch.cumsum(weight * limit, dim=1)  # sum_{j <= k} a_j c_j
    free = weight.sum(dim=1, keepdim=True) - torch.cumsum(weight, dim=1)  # sum_{j > k} a_j
    reach = saturated + limit * free  # F at each breakpoint, non-decreasing
    k = (reach < r[:, None]).sum(dim=1)  # the first breakpoint where F >= r
    before = (k - 1).clamp_min(0)[:, None]
    known = torch.where(k > 0, saturated.gather(1, before)[:, 0], torch.zeros_like(r))
    slope = torch.where(k > 0, free.gather(1, before)[:, 0], weight.sum(dim=1))
    t = (r - known) / slope.clamp_min(TINY)
    return torch.where(k < limit.shape[1], t, limit[:, -1]).clamp_min(0.0)


def _success(logits: torch.Tensor, label: torch.Tensor, target: torch.Tensor, mode: str) -> torch.Tensor:
    """Adversarial: classified as the target (targeted), otherwise no longer as the true label."""
    prediction = logits.argmax(1)
    return prediction == target if mode == "target" else prediction != label


def _norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


def _restart_directions(x: torch.Tensor, count: int, norm: str, generator) -> torch.Tensor:
    """Random directions of norm 1, shaped (N, count, C, H, W), on the CPU, drawn example after example by one
    ``torch.rand`` call. Linf: uniform on [-1, 1]^d over its largest entry. L2: a Gaussian (Box-Muller on the
    uniforms, so the stream is consumed in order) over its Euclidean norm."""
    n, shape = len(x), tuple(x.shape[1:])
    d = math.prod(shape)
    if norm == "linf":
        u = torch.rand((n, count, d), generator=generator, dtype=x.dtype).mul_(2).sub_(1)
        return (u / u.abs().amax(dim=-1, keepdim=True).clamp_min(TINY)).view(n, count, *shape)
    half = (d + 1) // 2
    u = torch.rand((n, count, 2 * half), generator=generator, dtype=x.dtype)
    radius = u[..., :half].neg().log1p_().mul_(-2.0).sqrt_()  # sqrt(-2 log(1 - u)), finite: u < 1
    angle = u[..., half:] * (2 * math.pi)
    gauss = torch.cat([radius * angle.cos(), radius * angle.sin()], dim=-1)[..., :d]
    return (gauss / gauss.norm(dim=-1, keepdim=True).clamp_min(TINY)).view(n, count, *shape)
