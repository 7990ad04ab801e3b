"""The Carlini-Wagner attacks (Carlini and Wagner 2017, "Towards evaluating the robustness of neural
networks", IEEE S&P; arXiv:1608.04644): :func:`cw_l2`, :func:`cw_linf` and :func:`cw_l0`.

All three minimise a distance plus c times the margin of Sec. V.A (their best objective, f_6),

    f(x') = max(Z(x')_y - max_{j != y} Z(x')_j, -kappa)          (untargeted, y the true label)
    f(x') = max(max_{j != t} Z(x')_j - Z(x')_t, -kappa)          (targeted, t = y the target),

computed on the logits Z by :func:`advlib.attacks.core.margin` (the other classes' maximum masks the
true class to -inf, so the margin is right when every logit is negative, and adding a constant to every
logit changes nothing). The box [0,1] is kept by the change of variables of Sec. V.B,

    x' = (tanh(w) + 1) / 2,    w initialised at arctanh((2x - 1)(1 - 1e-6)),

(the factor 1 - 1e-6 keeps pixels exactly 0 or 1 finite), and w is optimised by Adam. An iterate counts
as a success when the classifier's decision is the adversary's (arg max Z != y, or = t) *and* its
margin reaches the confidence, Z_y - max_{j != y} Z_j <= -kappa (or max_{j != t} Z_j - Z_t <= -kappa):
the condition the loss itself aims at.

How the work is batched
-----------------------
Every example carries its own state: Adam's variables and step count, its constant c, and its place in
its search (the binary search's bounds for L2; tau for L_inf; the allowed pixels for L0). One Adam
iteration advances every example still being attacked; an example whose run ends (its iterations are
used up, it stalls under the early abort, or it succeeds where the search stops at a first success)
moves on to its next run at once, without waiting for the others, and an example whose search is over
is written out and dropped from the tensors the next iterations compute on. Adam's update is per
coordinate, so every example is treated exactly as if it were attacked alone: the attacks are
deterministic, and a batch gives the results of its examples attacked one by one (up to floating-point
differences between batched and single kernels).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import core

__all__ = ["cw_l0", "cw_l2", "cw_linf"]

_TANH_SHRINK = 1 - 1e-6  # arctanh((2x - 1) * (1 - 1e-6)) is finite for x = 0 and x = 1
_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8
_NO_UPPER = 1e10  # Carlini and Wagner's "no upper bound found yet" in the binary search over c


# --- the engine the three attacks share -----------------------------------------------------------------

def _to_tanh(x: torch.Tensor) -> torch.Tensor:
    """w with (tanh(w) + 1) / 2 = x (up to the factor 1 - 1e-6 that keeps 0 and 1 finite)."""
    return torch.atanh((2 * x - 1) * _TANH_SHRINK)


def _from_tanh(w: torch.Tensor) -> torch.Tensor:
    """The change of variables x' = (tanh(w) + 1) / 2, always in [0,1], computed as sigmoid(2w) (the same
    function: one pass over memory instead of three, and no cancellation in tanh(w) + 1 near x' = 0)."""
    return torch.sigmoid(2 * w)


def _rows(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-example vector (n,) viewed as (n, 1, ..., 1) to broadcast against images ``like``."""
    return t.view(-1, *([1] * (like.ndim - 1)))


class _Search:
    """What distinguishes the three attacks: the distance D, the acceptance test, and what an example
    does when one of its Adam runs ends. The engine (:func:`_run`) owns the loop.

    The state ``S`` is a dict of tensors with one row per example still being attacked: ``index`` (its
    place in the batch), ``x``, ``y``, ``c``, Adam's ``w``, ``m``, ``v``, ``t``, the iterations ``run_it``
    of its current run, the ``lowest`` objective of the run so far and its value ``previous`` at the last
    early-abort check, ``best`` (what it returns), and whatever the search adds.
    """

    first_success = True  # does a run end at its first success?
    min_window = 1  # the fewest iterations between two early-abort checks

    def __init__(self, c: float):
        self.c = float(c)

    def init(self, S: dict) -> None:
        """Add the search's own rows to the state."""

    def distance(self, delta: torch.Tensor, grad: torch.Tensor, S: dict) -> torch.Tensor:
        """D(x' - x) per example, adding its gradient with respect to x' to ``grad``: the squared L2 norm
        and 2 delta (L2 and L0 attacks)."""
        grad.add_(delta, alpha=2)
        return torch.linalg.vector_norm(delta.flatten(1), dim=1).square()

    def accept(self, dist: torch.Tensor, S: dict) -> torch.Tensor | bool:
        """Beyond the margin, what makes an iterate a success."""
        return True

    def track(self, S: dict, success: torch.Tensor, x_adv: torch.Tensor, dist: torch.Tensor) -> None:
        """Called after every iteration (the L2 attack keeps its best iterate here)."""

    def end_runs(self, S: dict, end: torch.Tensor, success: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """Rows ``end`` finished a run (``success``: it ended on a success). Update them; return the rows
        whose search is over."""
        raise NotImplementedError

    @staticmethod
    def restart(S: dict, rows: torch.Tensor, start: torch.Tensor) -> None:
        """A fresh Adam run for ``rows`` (indices) from the images ``start[rows]``."""
        if len(rows):
            S["w"][rows] = _to_tanh(start[rows])
            for name in ("m", "v", "t", "run_it"):
                S[name][rows] = 0
            S["previous"][rows] = math.inf
            S["lowest"][rows] = math.inf

    @staticmethod
    def go_on(S: dict, rows: torch.Tensor) -> None:
        """A new run for ``rows`` (a boolean mask) that continues where the last one stopped."""
        S["run_it"][rows] = 0
        S["previous"][rows] = math.inf
        S["lowest"][rows] = math.inf


def _run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, search: _Search, *, targeted: bool, kappa: float,
         steps: int, lr: float, abort_early: bool) -> torch.Tensor:
    """Adam on sum_i D_i(x'_i) + c_i f(x'_i), x' = (tanh(w) + 1) / 2, each example in its own run of its
    own search, until every search is over; returns each example's ``best`` (``x`` unless set).

    Where ``S["mask"]`` (n,1,H,W, 0/1 floats) is 0 the pixel is held at x exactly. A success is an iterate the
    classifier decides as the adversary wants with margin <= -kappa (and ``search.accept``). A run ends
    after ``steps`` iterations; at its first success if ``search.first_success``; and, with
    ``abort_early``, when the lowest objective of the run (shifted by c kappa to be >= 0) has not fallen
    below 0.9999 times what it was a window of ``max(steps // 10, search.min_window)`` iterations before:
    the authors' early abort, per example. (Theirs tests the batch's total objective, whose sum smooths
    out the oscillation of single examples about the decision boundary; the running minimum and the
    L2 search's window of at least 30 iterations do so per example.)
    """
    n = len(x)
    out = x.clone()
    if n == 0 or steps == 0:
        return out
    w = _to_tanh(x)
    zeros = torch.zeros(n, dtype=x.dtype, device=x.device)
    S = dict(index=torch.arange(n, device=x.device), x=x, y=y, c=torch.full_like(zeros, search.c),
             w=w, m=torch.zeros_like(w), v=torch.zeros_like(w), t=zeros.clone(),
             run_it=torch.zeros(n, dtype=torch.long, device=x.device), previous=torch.full_like(zeros, math.inf),
             lowest=torch.full_like(zeros, math.inf),
             best=x.clone())
    search.init(S)
    check_every = max(steps // 10, search.min_window)
    beta1, beta2 = _ADAM_BETAS
    while len(S["index"]):
        with torch.no_grad():
            x_free = _from_tanh(S["w"])
            # pixels outside the mask (0/1 floats) are held at x exactly: x + 0 * (x' - x)
            x_adv = S["x"] + (x_free - S["x"]).mul_(S["mask"]) if "mask" in S else x_free
        # autograd runs through the model only; the distance and the change of variables are
        # differentiated by hand below, in fewer passes over memory than autograd would make
        x_adv.requires_grad_(True)
        logits = model(x_adv)
        f = core.margin(logits, S["y"], targeted=targeted, kappa=kappa)
        (grad,) = torch.autograd.grad((S["c"] * f).sum(), x_adv)
        with torch.no_grad():
            x_adv, f = x_adv.detach(), f.detach()
            dist = search.distance(x_adv - S["x"], grad, S)  # adds D's gradient to grad
            loss = dist + S["c"] * f
            # d loss / d w = (d loss / d x') dx'/dw, dx'/dw = (1 - tanh(w)^2) / 2 = 2 x' (1 - x'),
            # and 0 where the mask holds x' at x
            grad.mul_(torch.addcmul(x_free, x_free, x_free, value=-1).mul_(2))
            if "mask" in S:
                grad.mul_(S["mask"])
            decision = logits.detach().argmax(1)
            success = ((decision == S["y"]) if targeted else (decision != S["y"])) & (f <= -kappa)
            accept = search.accept(dist, S)
            if accept is not True:
                success &= accept
            search.track(S, success, x_adv, dist)
            # Adam (Kingma and Ba 2015), bias-corrected with each example's own step count
            w, m, v, t = S["w"], S["m"], S["v"], S["t"]
            t += 1
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = v.sqrt().mul_(_rows((1 - beta2 ** t).rsqrt(), v)).add_(_ADAM_EPS)
            w.addcdiv_(m * _rows(-lr / (1 - beta1 ** t), m), denom)
            S["run_it"] += 1
            end = S["run_it"] >= steps
            if search.first_success:
                end |= success
            if abort_early:
                check = (S["run_it"] - 1) % check_every == 0
                # the lowest objective so far (shifted by c kappa to be >= 0), so that an iterate oscillating
                # about the decision boundary is not taken for a stalled one
                S["lowest"] = lowest = torch.minimum(S["lowest"], loss + S["c"] * kappa)
                end |= check & (lowest > 0.9999 * S["previous"])
                S["previous"] = torch.where(check, lowest, S["previous"])
            if end.any():
                done = search.end_runs(S, end, success, x_adv)
                if done.any():
                    out[S["index"][done]] = S["best"][done]
                    keep = ~done
                    S = {name: value[keep] for name, value in S.items()}
    return out


class _L2Search(_Search):
    """Sec. V's binary search over c, per example; every run restarts Adam from x; keeps the successful
    iterate of smallest L2 over all runs."""

    first_success = False
    # A run goes on past its successes, and after each crossing of the decision boundary Adam's momentum
    # carries the iterate beyond it for some iterations, raising the objective; a window shorter than
    # that would read the overshoot as a stall (with steps=100: a 1.26x larger L2 for some examples).
    min_window = 30

    def __init__(self, c: float, binary_steps: int):
        super().__init__(c)
        self.binary_steps = binary_steps

    def init(self, S):
        zeros = torch.zeros_like(S["c"])
        S.update(lower=zeros.clone(), upper=torch.full_like(zeros, _NO_UPPER),
                 best_dist=torch.full_like(zeros, math.inf),
                 run_success=torch.zeros_like(zeros, dtype=torch.bool), round=torch.zeros_like(S["run_it"]))

    def track(self, S, success, x_adv, dist):
        better = success & (dist < S["best_dist"])
        if better.any():
            S["best_dist"][better], S["best"][better] = dist[better], x_adv[better]
        S["run_success"] |= success

    def end_runs(self, S, end, success, x_adv):
        won, c = S["run_success"], S["c"]
        # success: c was large enough, search below it; failure: above it (x10 until an upper bound exists)
        S["upper"] = upper = torch.where(end & won, torch.minimum(S["upper"], c), S["upper"])
        S["lower"] = lower = torch.where(end & ~won, torch.maximum(S["lower"], c), S["lower"])
        S["c"] = torch.where(end, torch.where(upper < 1e9, (lower + upper) / 2, c * 10), c)
        S["round"] += end.long()
        done = end & (S["round"] >= self.binary_steps)
        self.restart(S, (end & ~done).nonzero()[:, 0], S["x"])
        S["run_success"] &= ~end
        return done


class _LinfSearch(_Search):
    """Sec. VI's L_inf attack: per example, shrink tau after each success, double c after each failure."""

    def __init__(self, c: float, c_max: float, tau_init: float, tau_decay: float, tau_min: float):
        super().__init__(c)
        self.c_max, self.tau_init, self.tau_decay, self.tau_min = c_max, tau_init, tau_decay, tau_min

    def init(self, S):
        S.update(tau=torch.full_like(S["c"], self.tau_init), best_linf=torch.full_like(S["c"], math.inf))

    def distance(self, delta, grad, S):
        excess = delta.abs().sub_(_rows(S["tau"], delta))
        grad.add_(delta.sign().mul_(excess > 0))
        return excess.clamp_min_(0).flatten(1).sum(1)

    def accept(self, dist, S):
        return dist <= 1e-4 * S["c"]  # every pixel within tau, to the authors' tolerance

    def end_runs(self, S, end, success, x_adv):
        won, lost = end & success, end & ~success
        linf = (x_adv - S["x"]).abs().flatten(1).amax(1)
        better = won & (linf < S["best_linf"])
        S["best_linf"] = torch.where(better, linf, S["best_linf"])
        S["best"] = torch.where(_rows(better, x_adv), x_adv, S["best"])
        S["tau"] = torch.where(won, torch.minimum(S["tau"], linf) * self.tau_decay, S["tau"])
        self.restart(S, won.nonzero()[:, 0], x_adv)  # warm start at the success, fresh Adam, same c
        S["c"] = torch.where(lost, S["c"] * 2, S["c"])
        self.go_on(S, lost)
        return (won & (S["tau"] <= self.tau_min)) | (lost & (S["c"] >= self.c_max))


def _drop_lowest(allowed: torch.Tensor, scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``allowed`` (n, P) without, per row, its ``k`` allowed positions of lowest score (a NaN score counts
    as 0, so that the set always shrinks)."""
    scores = scores.nan_to_num(nan=0.0).masked_fill(~allowed, math.inf)
    order = scores.argsort(dim=1, stable=True)
    ranks = torch.arange(allowed.shape[1], device=allowed.device)[None]
    drop = torch.zeros_like(allowed).scatter(1, order, ranks < k[:, None])
    return allowed & ~drop


class _L0Search(_Search):
    """Sec. VI's L0 attack: the L2 attack on a shrinking set of allowed pixels, per example."""

    def __init__(self, c: float, c_max: float, shrink: float, model: nn.Module, targeted: bool):
        super().__init__(c)
        self.c_max, self.shrink, self.model, self.targeted = c_max, shrink, model, targeted

    def init(self, S):
        n, _, h, w = S["x"].shape
        self.shape = (h, w)
        S.update(mask=torch.ones(n, 1, h, w, dtype=S["x"].dtype, device=S["x"].device),
                 allowed_ok=torch.ones(n, h * w, dtype=torch.bool, device=S["x"].device),
                 scores=torch.zeros(n, h * w, dtype=S["x"].dtype, device=S["x"].device),
                 k=torch.full_like(S["run_it"], h * w), c_ok=S["c"].clone(),
                 found=torch.zeros_like(S["run_it"], dtype=torch.bool))

    def _shrink(self, S, rows):
        allowed = _drop_lowest(S["allowed_ok"][rows], S["scores"][rows], S["k"][rows])
        S["mask"][rows] = allowed.view(-1, 1, *self.shape).to(S["mask"].dtype)

    def end_runs(self, S, end, success, x_adv):
        done = torch.zeros_like(end)
        won = (end & success).nonzero()[:, 0]
        if len(won):
            # g = grad f at the adversarial example (the unclamped margin: the clamped one is flat there)
            with torch.enable_grad():
                point = x_adv[won].requires_grad_(True)
                f = core.margin(self.model(point), S["y"][won], targeted=self.targeted, kappa=math.inf)
                (g,) = torch.autograd.grad(f.sum(), point)
            S["scores"][won] = (g * (x_adv[won] - S["x"][won])).abs().sum(1).flatten(1)
            S["best"][won], S["found"][won], S["c_ok"][won] = x_adv[won], True, S["c"][won]
            S["allowed_ok"][won] = S["mask"][won].flatten(1) > 0
            count = S["allowed_ok"][won].sum(1)
            S["k"][won] = torch.minimum(S["k"][won], (count * self.shrink).ceil().long().clamp_min(1))
            self._shrink(S, won)
            self.restart(S, won, x_adv)  # warm start at the success, fresh Adam, same c
            done[won] = count == 0  # x itself is adversarial: nothing left to remove
        lost = end & ~success
        if lost.any():
            S["c"] = torch.where(lost, S["c"] * 2, S["c"])
            exhausted = lost & (S["c"] >= self.c_max)
            self.go_on(S, lost & ~exhausted)
            # the allowed set failed: after removing several pixels, go back and remove half as many
            retry = exhausted & S["found"] & (S["k"] > 1)
            done |= exhausted & ~retry
            retry = retry.nonzero()[:, 0]
            if len(retry):
                S["k"][retry] = S["k"][retry] // 2
                S["c"][retry] = S["c_ok"][retry]
                self._shrink(S, retry)
                self.restart(S, retry, S["best"])
        return done


# --- the attacks -------------------------------------------------------------------------------------------

@core.attack(positive=("c", "lr"), counts={"binary_steps": 0})
def cw_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, targeted: bool = False, kappa: float = 0.0,
          c: float = 1e-3, binary_steps: int = 9, steps: int = 1000, lr: float = 1e-2,
          abort_early: bool = True) -> torch.Tensor:
    """Carlini and Wagner's L2 attack (2017, Sec. V): the smallest L2 perturbation that changes the decision.

    For each example it minimises, over w::

        ||x' - x||_2^2 + c * f(x'),    x' = (tanh(w) + 1) / 2,

    with f the margin f_6 (Sec. V.A; :func:`advlib.attacks.core.margin` with confidence ``kappa``) and the
    tanh change of variables of Sec. V.B keeping x' in [0,1]; w starts at arctanh(2x - 1) (scaled by
    1 - 1e-6 so pixels at 0 or 1 stay finite) and Adam (step ``lr``) runs for at most ``steps`` iterations.

    The constant c is found by a binary search *per example* (``binary_steps`` runs, the first at ``c``):
    after a run that found an adversarial example, upper = min(upper, c); otherwise lower = max(lower, c);
    then c = (lower + upper) / 2 once an upper bound exists, else c = 10 c. Every run restarts Adam from x.
    Per-example early abort (``abort_early``): a run ends when the example's lowest objective so far has
    not fallen below 0.9999 times what it was max(``steps // 10``, 30) iterations earlier, and that example
    goes on to its next run at once (the others are not held up, and none waits for a batch-wide test).
    The authors test the batch's total objective every ``steps // 10`` iterations; per example, the
    running minimum and the floor of 30 iterations keep Adam's overshoot past the decision boundary
    from passing for a stall.

    Success is judged on the logits with the confidence, as the loss aims at: arg max Z != y and
    Z_y - max_{j != y} Z_j <= -kappa (targeted: arg max Z = t and max_{j != t} Z_j - Z_t <= -kappa).
    Over all iterations of all runs each example keeps its successful iterate with the smallest L2.

    Settings: c = 1e-3, 9 binary-search steps, Adam step 1e-2 and the early abort are the authors' (their
    code and Foolbox start at c = 1e-3; torchattacks at c = 1). The paper allows up to 10,000 iterations
    per run, with the early abort ending most runs long before; our default ``steps=1000`` suffices for the
    course's small networks (pass ``steps=10_000`` for the paper's budget).

    Returns a detached tensor in [0,1] on ``x``'s device: the adversarial examples, and ``x`` unchanged
    (an exact copy) for each example where no success was found. An untargeted example that the model
    already misclassifies comes back as x up to the change of variables' 1e-6.
    """
    if binary_steps == 0:
        steps = 0
    return _run(model, x, y, _L2Search(c, binary_steps), targeted=targeted, kappa=kappa, steps=steps, lr=lr,
                abort_early=abort_early)


@core.attack(positive=("c", "c_max", "lr", "tau_init", "tau_min"))
def cw_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, targeted: bool = False, kappa: float = 0.0,
            tau_init: float = 1.0, tau_decay: float = 0.9, tau_min: float = 1 / 256, c: float = 1e-5,
            c_max: float = 20.0, steps: int = 1000, lr: float = 5e-3, abort_early: bool = True) -> torch.Tensor:
    """Carlini and Wagner's L_inf attack (2017, Sec. VI, "L_inf attack"): shrink a bound tau on every pixel.

    The L_inf norm is a poor objective for gradient descent (it moves one pixel at a time and oscillates),
    so the paper penalises only the pixels beyond a bound tau, and repeats with smaller tau::

        minimise  c * f(x') + sum_i max(0, |x'_i - x_i| - tau),    x' = (tanh(w) + 1) / 2,

    with f the margin f_6 (Sec. V.A, confidence ``kappa``) and the tanh box of Sec. V.B. Per example,
    starting with tau = ``tau_init`` and x' = x:

    1. Minimise by Adam (step ``lr``), warm-started at the previous solution, up to the first success: an
       iterate that is adversarial (margin <= -kappa) and whose penalty is <= 1e-4 c (every pixel within
       tau, to the authors' tolerance). A run without success (``steps`` iterations, or stalled under
       ``abort_early``) doubles c (from ``c`` = 1e-5) and goes on from where it stopped, until c reaches
       ``c_max`` = 20.
    2. On success, the solution's actual L_inf is tau' = ``max_i |x'_i - x_i|``; set
       tau <- min(tau, tau') * ``tau_decay`` (0.9), keep c, and go to 1 warm-started at the solution.
    3. Stop when some tau fails at every c (the last success is the answer), or once tau <= ``tau_min``.

    These are the paper's settings (tau decay 0.9, c from 1e-5 doubling up to 20, Adam step 5e-3, 1000
    iterations per c, tau down to 1/256); "reduce tau when every ``|delta_i|`` < tau" is taken, as in the
    authors' code, as tau <- min(tau, actual L_inf) * 0.9 after each success. ``abort_early`` also ends a
    run whose objective has stalled for ``steps // 10`` iterations, so a hopeless c is given up sooner.
    Each example has its own tau, c and warm start, and moves on without waiting for the others.

    Returns a detached tensor in [0,1] on ``x``'s device: per example the success of smallest L_inf, and
    ``x`` unchanged (an exact copy) where none was found.
    """
    if not 0 < tau_decay < 1:
        raise ValueError(f"tau_decay must lie in (0, 1), got {tau_decay}")
    if c >= c_max:
        raise ValueError(f"c (the first constant) must be below c_max, got c={c} and c_max={c_max}")
    search = _LinfSearch(c, c_max, tau_init, tau_decay, tau_min)
    if tau_init <= tau_min:
        steps = 0
    return _run(model, x, y, search, targeted=targeted, kappa=kappa, steps=steps, lr=lr, abort_early=abort_early)


@core.attack(positive=("c", "c_max", "lr"))
def cw_l0(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, targeted: bool = False, kappa: float = 0.0,
          c: float = 1e-3, c_max: float = 2e6, steps: int = 1000, lr: float = 1e-2, shrink: float = 0.1,
          abort_early: bool = True) -> torch.Tensor:
    """Carlini and Wagner's L0 attack (2017, Sec. VI, "L0 attack"): shrink the set of pixels allowed to change.

    Pixels are spatial positions (all channels of a pixel together, as the paper does for colour images).
    Per example, starting with every pixel allowed:

    1. Run the L2 attack (Sec. V: minimise ||x' - x||_2^2 + c f(x'), f the margin f_6 with confidence
       ``kappa``, x' = (tanh(w) + 1) / 2) restricted to the allowed pixels (the others held at x exactly),
       warm-started at the previous solution. As in the authors' code, c starts at the previous success's
       c (first ``c`` = 1e-3) and doubles after a run without success (``steps`` iterations, or stalled
       under ``abort_early``), the optimisation going on where it stopped, up to ``c_max`` = 2e6; a run
       stops at its first success (Adam step ``lr`` = 1e-2).
    2. If every c fails, stop: the answer is the last success (``x`` unchanged if there was none).
    3. Otherwise, with delta = x' - x and g = grad f(x') (the unclamped margin's gradient at the
       adversarial example), score each allowed pixel by the sum over its channels of ``|g_i delta_i|`` (the
       paper's g_i . delta_i: its first-order share of the change in f), remove the lowest-scoring pixels
       from the allowed set, and go to 1.

    How many pixels step 3 removes is our choice, for speed (the paper removes one; the authors' code up to
    0.3 sqrt(#changed)): k = ceil(``shrink`` x #allowed), at least 1 and never more than the previous k.
    When the set fails after k > 1 pixels were removed, it goes back to the last successful set and k is
    halved, so the search ends, as the paper's does, when removing the single lowest pixel fails.
    Each example has its own allowed set, c, k and warm start, and moves on without waiting for the others.

    Returns a detached tensor in [0,1] on ``x``'s device: per example the last success (its pixels outside
    the allowed set it was found on are exactly x's), and ``x`` unchanged where none was found.
    """
    if not 0 < shrink <= 1:
        raise ValueError(f"shrink is the fraction of the allowed pixels removed per round, in (0, 1]; got {shrink}")
    if c >= c_max:
        raise ValueError(f"c (the first constant) must be below c_max, got c={c} and c_max={c_max}")
    return _run(model, x, y, _L0Search(c, c_max, shrink, model, targeted), targeted=targeted, kappa=kappa,
                steps=steps, lr=lr, abort_early=abort_early)
