"""Szegedy et al. 2013's box-constrained L-BFGS attack ("Intriguing properties of neural networks",
Sec. 4.1), on a batched projected L-BFGS written in torch.

- :func:`lbfgs` is the attack: for each example, the smallest r found with Class(x + r) = target, by
  minimising c ||r||_2^2 + loss_f(x + r, target) over the box x + r in [0,1]^m and searching c per example.
- :func:`minimize_box_lbfgs` is the optimiser underneath, usable alone: it minimises a batch of
  independent box-constrained problems at once, each example with its own L-BFGS memory, active set and
  line search, on whatever device its tensors live on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from ..utils import progress
from . import core

__all__ = ["BoxLBFGSResult", "lbfgs", "minimize_box_lbfgs"]

CURVATURE_EPS = 1e-10  # a pair (s, y) with s'y <= this is skipped: it would break positive definiteness


class BoxLBFGSResult(NamedTuple):
    """What :func:`minimize_box_lbfgs` returns, one entry per example of the batch."""

    x: torch.Tensor  # the minimisers, shaped like x0, inside the box
    fun: torch.Tensor  # (B,) objective values at x
    iterations: torch.Tensor  # (B,) accepted steps taken
    converged: torch.Tensor  # (B,) True where a stopping test (gradient or decrease) held before max_iter


def _bounds(bound, like: torch.Tensor):
    """``bound`` as a float when it is one number (the cheap, common case), else a (B, n) tensor like ``like``."""
    if isinstance(bound, (int, float)) or (isinstance(bound, torch.Tensor) and bound.numel() == 1):
        return float(bound)
    bound = torch.as_tensor(bound, dtype=like.dtype, device=like.device)
    return bound.expand(like.shape).reshape(len(like), -1)


def _rows(bound, index: torch.Tensor):
    """The rows ``index`` of a bound from :func:`_bounds` (a float bound holds for every row)."""
    return bound if isinstance(bound, float) else bound[index]


def _clip(z: torch.Tensor, lo, hi) -> torch.Tensor:
    """The projection of ``z`` onto the box [lo, hi] (bounds from :func:`_bounds`)."""
    if isinstance(lo, float) and isinstance(hi, float):
        return z.clamp(lo, hi)
    lo = torch.as_tensor(lo, dtype=z.dtype, device=z.device)
    hi = torch.as_tensor(hi, dtype=z.dtype, device=z.device)
    return torch.max(torch.min(z, hi), lo)


def _two_loop(q: torch.Tensor, S: torch.Tensor, Y: torch.Tensor, count: torch.Tensor,
              free: torch.Tensor) -> torch.Tensor:
    """H_F q for every example by the two-loop recursion (Nocedal and Wright 2006, Alg. 7.4), with the
    pairs restricted to the free variables.

    ``q`` is (B, n), zero outside the free set ``free`` (B, n); example b's pairs are S[b, j], Y[b, j]
    in the last ``count[b]`` slots j of m, oldest first; the slots it lacks are masked out. Each pair
    enters as (P_F s, P_F y), the curvature it measured along the free variables, and only where
    (P_F s)'(P_F y) > 1e-10, so H_F is positive definite on the free set; H^0 = gamma I with
    gamma = s'y / y'y of the newest restricted pair (of the newest whole pair when that one is
    skipped; 1 without pairs).
    """
    m = S.shape[1]
    depth = int(count.max()) if len(count) else 0
    mask = free.to(q.dtype)
    pairs = {}
    for j in range(m - 1, m - 1 - depth, -1):  # newest first
        s_j, y_j = S[:, j] * mask, Y[:, j] * mask
        sy = torch.linalg.vecdot(s_j, y_j)
        valid = (j >= m - count) & (sy > CURVATURE_EPS)
        rho = torch.where(valid, 1.0 / torch.where(valid, sy, 1.0), 0.0)
        alpha = rho * torch.linalg.vecdot(s_j, q)
        q = torch.addcmul(q, alpha[:, None], y_j, value=-1.0)
        pairs[j] = (s_j, y_j, rho, alpha, valid, sy)
    gamma = torch.ones_like(q[:, 0])
    if depth:
        s_whole, y_whole = S[:, m - 1], Y[:, m - 1]
        yy = torch.linalg.vecdot(y_whole, y_whole)
        gamma = torch.where(count > 0, torch.linalg.vecdot(s_whole, y_whole) / torch.where(yy > 0, yy, 1.0), 1.0)
        s_j, y_j, _, _, valid, sy = pairs[m - 1]
        yy = torch.linalg.vecdot(y_j, y_j)
        gamma = torch.where(valid, sy / torch.where(yy > 0, yy, 1.0), gamma)
    r = gamma[:, None] * q
    for j in range(m - depth, m):  # oldest first
        s_j, y_j, rho, alpha, _, _ = pairs[j]
        beta = rho * torch.linalg.vecdot(y_j, r)
        r = torch.addcmul(r, (alpha - beta)[:, None], s_j)
    return r


def minimize_box_lbfgs(fun: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor,
                       lower=0.0, upper=1.0, *, max_iter: int = 100, history: int = 10, pgtol: float = 1e-5,
                       ftol: float | None = None, armijo: float = 1e-4,
                       max_backtracks: int = 20) -> BoxLBFGSResult:
    """Minimise B independent problems min_{l <= x_b <= u} f_b(x_b) at once by projected L-BFGS.

    ``fun(z, index)`` gets some of the examples, ``z`` shaped (k, ...) like rows ``index`` (a (k,) long
    tensor) of ``x0``, and returns their (k,) values f_b(z_b), b in ``index``. Example b's value must
    depend on z_b alone (a model in eval mode, a per-example loss), so that the gradient of the sum,
    taken by autograd, holds every example's own gradient. Only the examples still searching are
    passed, so a batch costs what its slowest example needs, not the sum of every example's
    backtracking. ``lower`` and ``upper`` are numbers or tensors broadcastable to ``x0``. Runs on
    ``x0``'s device and dtype.

    The algorithm is limited-memory BFGS (Nocedal 1980; Liu and Nocedal 1989) made box-constrained the
    way projected quasi-Newton methods do it (Bertsekas 1982; the active set of L-BFGS-B, Byrd, Lu,
    Nocedal and Zhu 1995; Kim, Sra and Dhillon 2010), vectorised over the batch. At iterate x_k with
    gradient g_k, for every example separately:

    1. Active set: A_k = {i : x_i = l_i and g_i > 0} u {i : x_i = u_i and g_i < 0}, the variables at a
       bound whose gradient pushes outward; F_k, the rest, are free. P_F zeroes the active coordinates.
    2. Direction: d_k = -P_F H_k P_F g_k, where H_k is the L-BFGS inverse-Hessian approximation built
       from the example's last ``history`` pairs s_j = x_{j+1} - x_j, y_j = g_{j+1} - g_j (pairs with
       s'y <= 1e-10 are never stored), applied by the two-loop recursion (Nocedal and Wright 2006,
       Alg. 7.4) with H_k^0 = gamma_k I, gamma_k = s'y / y'y of the newest pair. The pairs enter
       restricted to the free variables, (P_F s_j, P_F y_j), and only where their restricted s'y
       exceeds 1e-10: H_k then models the curvature of the problem in the free variables alone (the
       reduced problem L-BFGS-B and Kim, Sra and Dhillon solve; curvature measured along coordinates
       that have since become fixed would only mislead it), stays positive definite on them, and
       g_k'd_k = -(P_F g_k)' H_k (P_F g_k) < 0: a descent direction. Each example keeps its own
       memory, stored in time order; the recursion runs over the memory slots for the whole batch at
       once, with the slots an example has not filled (a short history, a skip, a restart) masked out.
    3. Projected backtracking Armijo line search (Bertsekas 1976): x(alpha) = P_[l,u](x_k + alpha d_k),
       accepted when f(x(alpha)) <= f(x_k) + armijo * min(g_k'(x(alpha) - x_k), 0); alpha starts at 1
       (at 1/||d_k||_2 while the memory is empty, as L-BFGS-B's first step) and, per example, moves to
       the minimiser of the parabola interpolating f(x_k), the slope g_k'(x(alpha) - x_k) / alpha and
       f(x(alpha)), safeguarded to [alpha / 10, alpha / 2] (Nocedal and Wright 2006, Sec. 3.5), up to
       ``max_backtracks`` trials. An example whose search fails drops its memory and retries along
       the projected steepest descent; if that fails too, it stops.
    4. Stopping, per example: ||x_k - P_[l,u](x_k - g_k)||_inf <= pgtol (the projected gradient, as
       L-BFGS-B), or a relative decrease (f_k - f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) <= ftol (default:
       10 machine epsilons of the dtype, at least scipy's 2.2e-9), or ``max_iter`` steps. Examples that
       stopped are frozen while the others go on, and are dropped from the working tensors (with their
       memories) once a quarter of them have stopped; the loop ends when all have stopped.

    Every trial point costs one evaluation of ``fun`` and its gradient (a forward and a backward pass)
    on the examples that are still searching: one to three per step and example on the course's
    networks (scipy's L-BFGS-B, one image at a time, needs as many). Returns a :class:`BoxLBFGSResult`
    (detached tensors).
    """
    if max_iter < 0 or history < 1 or max_backtracks < 1:
        raise ValueError(f"max_iter must be >= 0, history and max_backtracks >= 1; got {max_iter}, "
                         f"{history}, {max_backtracks}")
    if not (pgtol >= 0 and (ftol is None or ftol >= 0) and 0 < armijo < 1):
        raise ValueError(f"pgtol and ftol must be >= 0 and armijo in (0, 1); got {pgtol}, {ftol}, {armijo}")
    shape = x0.shape
    batch = shape[0]
    flat = x0.detach().reshape(batch, -1)
    lo, hi = _bounds(lower, flat), _bounds(upper, flat)
    if bool(torch.as_tensor(lo > hi).any()):
        raise ValueError("every lower bound must be <= its upper bound")
    if ftol is None:
        ftol = max(2.2e-9, 10 * torch.finfo(flat.dtype).eps)

    def evaluate(z: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            values = fun(z.view(len(index), *shape[1:]), index)
            if values.shape != (len(index),):
                raise ValueError(f"fun must return one value per example it is given, shape ({len(index)},); "
                                 f"got {tuple(values.shape)}")
            (grad,) = torch.autograd.grad(values.sum(), z)
        return values.detach().to(flat.dtype), grad.detach()

    x = _clip(flat, lo, hi)
    ids = torch.arange(batch, device=x.device)  # the examples still running (compacted as they stop)
    f, g = evaluate(x, ids)
    x_out, f_out = x.clone(), f.clone()
    iterations = torch.zeros(batch, dtype=torch.long, device=x.device)
    converged = torch.zeros(batch, dtype=torch.bool, device=x.device)
    n, m = x.shape[1], history
    # Example b's memory: its last count[b] pairs in slots m - count[b], ..., m - 1 (oldest to newest);
    # storing a pair shifts the example's slots left by one, so slot order is time order for everyone.
    S = x.new_zeros(batch, m, n)
    Y = x.new_zeros(batch, m, n)
    count = torch.zeros(batch, dtype=torch.long, device=x.device)  # pairs held, <= m
    steps = torch.zeros_like(count)
    stopped = torch.zeros(batch, dtype=torch.bool, device=x.device)  # by a stopping test, not max_iter
    done = torch.zeros_like(stopped)

    for k in range(max_iter + 1):
        projected = (x - _clip(x - g, lo, hi)).abs().amax(1) if n else x.new_zeros(len(x))
        small_gradient = projected <= pgtol
        stopped |= small_gradient
        done |= small_gradient | ~torch.isfinite(f)
        if bool(done.any()) and 4 * int(done.sum()) >= len(done):
            # retire the examples that stopped; keep the others (and their memories) contiguous
            out = ids[done]
            x_out[out], f_out[out], iterations[out], converged[out] = x[done], f[done], steps[done], stopped[done]
            keep = ~done
            ids, x, f, g, lo, hi = ids[keep], x[keep], f[keep], g[keep], _rows(lo, keep), _rows(hi, keep)
            S, Y, count, steps, stopped = S[keep], Y[keep], count[keep], steps[keep], stopped[keep]
            done = done[keep]
        if len(ids) == 0 or k == max_iter:
            break
        rows = torch.arange(len(ids), device=x.device)
        free = ~(((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0)))
        g_free = torch.where(free, g, 0.0)
        d = torch.where(free, -_two_loop(g_free, S, Y, count, free), 0.0)
        if not bool(((g * d).sum(1) < 0)[~done].all()):  # rounding only: H_k is positive definite
            bad = ~((g * d).sum(1) < 0)
            d = torch.where(bad[:, None], -g_free, d)
            count = torch.where(bad, 0, count)
        d = torch.where(done[:, None], 0.0, d)
        norm = d.norm(dim=1)
        alpha = torch.where(count > 0, 1.0, 1.0 / torch.where(norm > 0, norm, 1.0))

        accepted = done.clone()
        x_new, f_new, g_new = x.clone(), f.clone(), g.clone()
        for _ in range(max_backtracks):
            index = rows[~accepted]  # only the examples still searching are evaluated
            a, x_i = alpha[index], x[index]
            trial = _clip(x_i + a[:, None] * d[index], _rows(lo, index), _rows(hi, index))
            f_trial, g_trial = evaluate(trial, ids[index])
            predicted = (g[index] * (trial - x_i)).sum(1).clamp(max=0.0)
            finite = torch.isfinite(f_trial)
            ok = finite & (f_trial <= f[index] + armijo * predicted)
            good = index[ok]
            x_new[good], f_new[good], g_new[good] = trial[ok], f_trial[ok], g_trial[ok]
            accepted[good] = True
            if bool(accepted.all()):
                break
            # the minimiser of the parabola through f(0), its slope along the path and f(alpha),
            # kept within [alpha / 10, alpha / 2] (Nocedal and Wright 2006, Sec. 3.5)
            curvature = torch.where(finite, f_trial - f[index] - predicted, float("inf"))
            shrink = (-predicted / (2 * curvature.clamp_min(torch.finfo(a.dtype).tiny))).nan_to_num(0.1)
            alpha[index] = torch.where(ok, a, a * shrink.clamp(0.1, 0.5))

        failed = ~accepted
        done |= failed & (count == 0)  # even steepest descent found no decrease: stationary to rounding
        stopped |= failed & (count == 0)
        count = torch.where(failed, 0, count)  # otherwise forget the memory and retry steepest descent
        moved = accepted & ~done
        s, y = x_new - x, g_new - g
        sy = (s * y).sum(1)
        store = moved & (sy > CURVATURE_EPS)
        if bool(store.any()):
            idx = rows[store]
            S[idx] = torch.cat([S[idx, 1:], s[idx, None]], dim=1)
            Y[idx] = torch.cat([Y[idx, 1:], y[idx, None]], dim=1)
            count = torch.where(store, (count + 1).clamp(max=m), count)
        scale = torch.max(torch.max(f.abs(), f_new.abs()), torch.ones_like(f))
        small_decrease = moved & ((f - f_new) <= ftol * scale)
        steps += moved.long()
        x, f, g = x_new, f_new, g_new
        stopped |= small_decrease
        done |= small_decrease
    if len(ids):  # the examples still running at max_iter, and stopped ones not yet retired
        x_out[ids], f_out[ids], iterations[ids], converged[ids] = x, f, steps, stopped
    return BoxLBFGSResult(x_out.view(shape), f_out, iterations, converged)


@core.attack(positive=("c_init",), counts={"search_steps": 0, "history": 1})
def lbfgs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, targeted: bool = False, c_init: float = 1e-2,
          search_steps: int = 8, steps: int = 100, history: int = 10, loss: str = "ce") -> torch.Tensor:
    """Szegedy et al. 2013's box-constrained L-BFGS attack ("Intriguing properties of neural networks", Sec. 4.1).

    The paper's attack is targeted (``targeted=True``, ``y`` the targets l): it seeks the smallest
    perturbation that makes the classifier f output l, min ||r||_2 s.t. f(x + r) = l, x + r in [0,1]^m, and
    approximates it by a penalty (its "box-constrained L-BFGS" problem): minimise::

        c * ||r||_2^2 + loss_f(x + r, l)   subject to   x + r in [0,1]^m,

    with loss_f the cross-entropy of the logits to the target (``loss="margin"``: Carlini and Wagner's
    margin max_{j != l} Z_j - Z_l instead). Untargeted (``y`` the true labels), loss_f is minus the
    cross-entropy of the true class (or the margin Z_y - max_{j != y} Z_j), and success means f(x + r) != y.
    The paper writes c|r|; we use the *squared* L2 norm, as
    most reimplementations do: it is smooth everywhere, whereas ||r||_2 has no gradient at r = 0, the
    point every solve starts from, and its kink there breaks the quasi-Newton model. Nothing is lost:
    a stationary point r != 0 of c ||r||_2 + loss_f is one of c' ||r||_2^2 + loss_f with
    c' = c / (2 ||r||_2) (the same KKT conditions), so both penalties trace the same perturbations as c
    varies, and the search below measures and keeps the plain ||r||_2. Each problem is solved by
    ``advlib.attacks.lbfgs.minimize_box_lbfgs`` (batched projected L-BFGS, ``steps`` iterations, memory ``history``)
    over x' = x + r in the box [0,1], starting from x' = x.

    The search over c, per example and batched (the paper's "line-search" over c; the text says the
    minimum c, but a larger c weighs ||r|| more, so the smallest r comes from the largest c that still
    succeeds, and that is what is searched): start at ``c_init``; after each solve,
    success keeps r if it is the smallest successful r so far and raises c, failure
    lowers it. With both a successful c_lo and a failed c_hi known, c moves to their geometric mean
    (bisection of log c, as c is a scale); without a failure yet, c grows tenfold; without a success
    yet, it shrinks tenfold. ``search_steps`` solves in all. c_init = 1e-2 against a cross-entropy of
    order 1 starts where success is nearly certain on the course's models.

    Defaults (``search_steps=8``, ``steps=100``, ``history=10``) aim at the paper's quality: two or
    three tenfold steps find each example's bracket, the others bisect it (to a factor 10^(1/32) or
    so), and 100 iterations let most solves converge. A quick run passes fewer, e.g.
    ``search_steps=5, steps=50`` (median ||r||_2 about 7% larger in our runs, in about half the time).

    Returns each example's smallest successful x + r; an example that never succeeded is returned
    unchanged (equal to ``x``), and so is one the model already classifies as the adversary wants (r = 0 is
    the smallest perturbation there is): ``predict(model, x_adv) == y`` (targeted) tells which succeeded.
    Deterministic; keeps the contract of :mod:`advlib.attacks.core`.
    """
    batch = len(x)
    best = x.clone()
    best_norm = x.new_full((batch,), float("inf"))

    def reached(logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(1) == y if targeted else logits.argmax(1) != y

    with torch.no_grad():
        success = reached(model(x))  # r = 0, the smallest of all, where the model already decides as wanted
    best_norm = torch.where(success, 0.0, best_norm)
    c = torch.full((batch,), float(c_init), dtype=torch.float64, device=x.device)
    c_lo = torch.zeros_like(c)  # largest c that succeeded (0: none yet)
    c_hi = torch.full_like(c, float("inf"))  # smallest c that failed (inf: none yet)
    bar = progress(range(search_steps), desc="L-BFGS attack (search over c)", leave=False)
    for _ in bar:
        weight = c.to(x.dtype)

        def objective(z: torch.Tensor, index: torch.Tensor, weight=weight) -> torch.Tensor:
            distance = (z - x[index]).flatten(1).pow(2).sum(1)
            return weight[index] * distance - core.loss_on_logits(model(z), y[index], loss, targeted=targeted)

        z = minimize_box_lbfgs(objective, x, 0.0, 1.0, max_iter=steps, history=history).x
        with torch.no_grad():
            won = reached(model(z))
        norm = (z - x).flatten(1).norm(dim=1)
        better = won & (norm < best_norm)
        best = torch.where(better.view(-1, *[1] * (x.ndim - 1)), z, best)
        best_norm = torch.where(better, norm, best_norm)
        success |= won
        c_lo = torch.where(won, torch.max(c_lo, c), c_lo)
        c_hi = torch.where(won, c_hi, torch.min(c_hi, c))
        bracketed = (c_lo > 0) & torch.isfinite(c_hi)
        c = torch.where(bracketed, (c_lo * c_hi).sqrt(), torch.where(won, 10 * c, c / 10))
        bar.set_postfix(success=f"{success.float().mean().item():.0%}")
    return best
