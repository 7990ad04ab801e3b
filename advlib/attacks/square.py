"""The Square Attack (Andriushchenko, Croce, Flammarion and Hein 2020, "Square Attack: a query-efficient
black-box adversarial attack via random search", ECCV, Alg. 1-3, Sec. 3 and 4): a score-based black box
that needs only the model's logits, never a gradient.

Random search (Alg. 1). From an initial point x^0 in the eps-ball, each iteration proposes one random
change confined to a small square window, x_new = Pi(x_best + delta), queries the model once, and keeps
x_new if it lowers the loss L (the margin z_y - max_{j != y} z_j, or the cross-entropy, below). The
window's side h shrinks with a fixed schedule of p, the fraction of the pixels changed per iteration:
h = round(sqrt(p * H * W)) (p * n_features / C, n_features = C H W), with p = p_init halved after
iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of a run of 10,000 queries (Sec. 4 and the
authors' code); a run of another budget N rescales its iteration index i to floor(10,000 i / N) first.

- Linf (Sec. 3.1, Alg. 2). Start: vertical stripes, every column of every channel at x +- eps (one random
  sign per column and channel), clipped to [0,1]. Update: a window of side h at a uniformly random
  position, each channel's pixels in it set to x + rho_c eps, one random sign rho_c per channel (the paper
  adds 2 rho eps and projects, which lands on the same values). A proposal that would leave the image
  unchanged (the window already holds those signs, or the box clips them away) is redrawn before it costs
  a query, as in the authors' code. Every pixel of the result is therefore clip(x +- eps).
- L2 (Sec. 3.2, Alg. 3). Start: a grid of square tiles of side floor(min(H, W) / 5), centred, each tile
  holding the pattern below with a random sign per channel (and a random transposition), the whole
  rescaled to norm eps and clipped to [0,1]. The pattern is the paper's eta (its Eq. for the update's
  shape): on an h1 x h2 rectangle, the value at Chebyshev distance d from the centre is
  sum_{k=d}^{n} 1/(k+1)^2, n = floor(max(h1, h2) / 2); a window of side h holds two such rectangles
  (its top floor(h/2) rows and the rest), each of unit norm, with opposite signs, the square then
  normalised and transposed with probability 1/2. Update (Alg. 3): two windows W1, W2 of side h (odd,
  at least 3); per channel i, the mass of the perturbation nu = x_best - x inside W1 and W2 plus an equal
  share of the unused budget, eps_avail^2 = ||nu_{W1 u W2, i}||^2 + (eps^2 - ||nu||^2)_+ / C, is moved
  into W1 as rho eta* + nu_{W1, i} / ||nu_{W1, i}||, rescaled to norm eps_avail, and W2 is emptied. The
  perturbation keeps norm eps (renormalised as in the authors' code), then the box clips it, which only
  shortens it; what clipping removed is the "unused" budget of the next step.

Losses (minimised). ``loss="margin"``: untargeted, the margin z_y - max_{j != y} z_j on the logits (the
paper's loss, :func:`core.margin`); targeted (``y`` the targets), max_{j != t} z_j - z_t, as AutoAttack's
Square does. ``loss="ce"``: untargeted, minus the cross-entropy of the true class; targeted, the
cross-entropy of the target, the paper's loss for targeted attacks (Sec. 4).

Queries are counted per example: the evaluation of the initial point is one, each iteration one more for
every example still running, and an example stops, at no further cost, as soon as it is misclassified
(targeted: classified as its target). Everything runs under ``torch.no_grad``: the model is only ever
evaluated, so the attack works on a model whose output has no gradient at all (as :func:`nattack`).

How a query is evaluated (Linf): a proposal differs from the current points in one window, the same for
every example, so on a convolutional ``nn.Sequential`` only the windows of the feature maps that the change
reaches are recomputed, and the first dense layer's output is updated by the window's columns
(:mod:`advlib.attacks.window_forward`; the logits are the full pass's up to rounding, and where they say the
model is fooled, the model's own full pass decides). Every query is still a call of the model, so its hooks
see each one. Other models, L2 (whose rescaling changes the whole image) and models on a GPU get full
passes.

Where this differs from the authors' and AutoAttack's code: in Linf the window's position is drawn once per
iteration for the whole batch, as AutoAttack's and torchattacks' Square draw it (the authors' Linf code draws
one per image), while each example draws its own signs (AutoAttack's and torchattacks' share one sign per
channel across the batch as well, and do not redraw a proposal that changes nothing); in L2 every example
draws its own windows and transpositions (the authors' code, and AutoAttack's, draw one pair of windows per
iteration for the batch). Each example's proposals are distributed as Alg. 2-3 say either way; sharing the
Linf window makes every query's window one slice of the batch, which the window path needs
(:mod:`advlib.attacks.window_forward`). Window corners are uniform on {0, ..., W - h} as in Alg. 2-3 (the code
stops at W - h - 1); a proposal that fools the model is always kept, even when the cross-entropy does not
improve; and the budget counts the initial point, so a run makes exactly ``queries`` evaluations at most (the
authors' L2 code makes one more).

Randomness
----------
Every random number (stripes, tiles, window positions, signs, transpositions) is drawn on the CPU from
``generator`` (or torch's global CPU generator) and copied to the model's device, so a seed repeats a run
on either device. The numbers of one iteration are drawn for the examples still running at that
iteration, so a batch does *not* give the same result as its examples attacked one by one, or in other
pieces (unlike :func:`pgd` and :func:`nattack`); each result is still a correct attack of its example.
"""

from __future__ import annotations

import contextvars
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import utils
from ..utils import eval_mode, model_device, progress
from . import core
from .window_forward import WindowForward, window_forward

__all__ = ["SquareResult", "p_schedule", "square", "square_with_queries"]

SCHEDULE_QUERIES = 10_000  # the budget the paper's schedule of p is written for
HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # p halves after each of these iterations
L2_MIN_SIDE = 3  # the L2 window is odd and at least 3 x 3 (the authors' code)
INIT_TILES = 5  # the L2 start: tiles of side min(H, W) // 5


class SquareResult(NamedTuple):
    """What :func:`square_with_queries` returns: the adversarial images (the same as :func:`square`'s),
    the queries each example cost (int64, (N,)), and whether each example was fooled (bool, (N,);
    misclassified, or for a targeted attack classified as its target)."""

    x_adv: torch.Tensor
    queries: torch.Tensor
    success: torch.Tensor


# Where square_with_queries collects the per-example counts of the square call it makes.
_RECORD: contextvars.ContextVar[list | None] = contextvars.ContextVar("square_record", default=None)


@core.attack("norm", positive=("p_init",), counts={"queries": 1})
def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
           queries: int = 5000, p_init: float = 0.8, restarts: int = 1, targeted: bool = False,
           loss: str = "margin", generator: torch.Generator | None = None) -> torch.Tensor:
    """The Square Attack of Andriushchenko et al. (2020, Alg. 1; Linf: Alg. 2, L2: Alg. 3), score-based:
    random search over square-shaped updates, using the model's logits only (module docstring).

    ``queries`` is each example's budget for one run, the evaluation of its initial point included; an
    example stops as soon as it is fooled. ``p_init`` is the fraction of the pixels the first windows
    change (0 < p_init <= 1), halved on the paper's schedule (``advlib.attacks.square.p_schedule``). Defaults are
    AutoAttack's "standard" Square: 5,000 queries, p_init = 0.8, one run, the margin loss (the paper's
    own experiments use p_init = 0.05 for Linf and 0.1 for L2 with 10,000 queries on ImageNet).
    ``restarts`` runs the attack again, from a fresh random start and with a fresh budget, on the
    examples no earlier run fooled: an example costs at most ``restarts * queries`` queries in all.

    ``loss`` is ``"margin"`` (the paper's untargeted loss z_y - max_{j != y} z_j; targeted, with ``y`` the
    targets, max_{j != t} z_j - z_t) or ``"ce"`` (minus the cross-entropy of y; targeted, the
    cross-entropy of the target, the paper's targeted loss). A proposal is kept when it lowers the loss or
    fools the model (with the margin loss the second implies the first).

    Returned: per example, the first point that fooled the model, or else the point of lowest loss over
    all runs. Randomness from ``generator`` only; a batch does not equal its examples attacked one by one
    (module docstring). :func:`square_with_queries` returns the queries used and the successes as well.
    Runs under ``torch.no_grad`` (the model may itself compute without autograd) and keeps the contract of
    :mod:`advlib.attacks.core` (the Linf or L2 ball of ``norm``).
    """
    result = _run(model, x, y, eps=eps, norm=norm, queries=int(queries), p_init=p_init, restarts=int(restarts),
                  targeted=targeted, loss=loss, generator=generator)
    record = _RECORD.get()
    if record is not None:
        record.append(result)
    return result.x_adv


def square_with_queries(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *args, **options) -> SquareResult:
    """:func:`square` (same arguments, same checks, same images for the same generator state), returning a
    :class:`SquareResult`: the images, the queries each example cost and whether each was fooled, for the
    evaluations that report queries (Andriushchenko et al. 2020 report the mean and median per example).

    Where :func:`square` answers without attacking (an empty batch, ``eps = 0``), the queries are what it
    takes to say whether the returned clean images are fooled: none for an empty batch, and one forward
    pass (one query per example) for ``eps = 0``.
    """
    record: list[SquareResult] = []
    token = _RECORD.set(record)
    try:
        x_adv = square(model, x, y, *args, **options)
    finally:
        _RECORD.reset(token)
    if record:
        result = record[-1]
        return SquareResult(x_adv, result.queries.to(x.device), result.success.to(x.device))
    queries = torch.zeros(len(x), dtype=torch.long, device=x.device)
    success = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    if len(x):
        with torch.no_grad(), eval_mode(model):
            logits = model(x_adv.to(model_device(model)))
        labels = y.to(logits.device)
        utils.check_classes(labels, utils.check_logits(logits, len(x)))
        queries += 1
        success = _fooled(logits, labels, options.get("targeted", False)).to(x.device)
    return SquareResult(x_adv, queries, success)


def p_schedule(iteration: int, queries: int, p_init: float) -> float:
    """p at ``iteration`` (0-based, after the initial query) of a run of ``queries`` queries: p_init halved
    after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of a 10,000-query run (the paper's
    schedule, Sec. 4), the iteration first rescaled to floor(10,000 * iteration / queries) (the authors'
    code; AutoAttack's default)."""
    rescaled = iteration * SCHEDULE_QUERIES // queries
    return p_init / 2 ** sum(rescaled > step for step in HALVINGS)


# --- the search ---------------------------------------------------------------------------------------------

def _run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str, queries: int,
         p_init: float, restarts: int, targeted: bool, loss: str, generator) -> SquareResult:
    """``restarts`` runs of :func:`_one_run`, each on the examples no earlier run fooled; per example the
    fooling point, or else the lowest loss over the runs."""
    if not 0 < p_init <= 1:
        raise ValueError(f"p_init must be a fraction of the pixels, in (0, 1], got {p_init}")
    if loss not in ("ce", "margin"):
        raise ValueError(f"the Square attack's loss must be 'ce' or 'margin', got {loss!r}")
    n = len(x)
    x_adv = x.clone()
    used = torch.zeros(n, dtype=torch.long, device=x.device)
    fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
    lowest = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
    with torch.no_grad():
        for _ in range(restarts):
            todo = (~fooled).nonzero().squeeze(1)
            if len(todo) == 0:
                break
            run, run_loss = _one_run(model, x[todo], y[todo], eps=eps, norm=norm, queries=queries, p_init=p_init,
                                     targeted=targeted, loss=loss, generator=generator)
            used[todo] += run.queries
            better = run.success | (run_loss < lowest[todo])
            x_adv[todo[better]] = run.x_adv[better]
            lowest[todo[better]] = run_loss[better]
            fooled[todo] = run.success
    return SquareResult(x_adv, used, fooled)


def _one_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str, queries: int,
             p_init: float, targeted: bool, loss: str, generator) -> tuple[SquareResult, torch.Tensor]:
    """Alg. 1 on a batch: the initial point, then ``queries - 1`` iterations of propose, query, keep if
    better, each example leaving the batch once fooled. Returns the result and each example's loss."""
    with window_forward(model, enabled=norm == "linf") as local:
        return _search(model, local, x, y, eps=eps, norm=norm, queries=queries, p_init=p_init, targeted=targeted,
                       loss=loss, generator=generator)


def _search(model: nn.Module, local: WindowForward | None, x: torch.Tensor, y: torch.Tensor, *, eps: float,
            norm: str, queries: int, p_init: float, targeted: bool, loss: str,
            generator) -> tuple[SquareResult, torch.Tensor]:
    """The loop of :func:`_one_run`. With ``local`` (Linf, on a model :mod:`.window_forward` handles), a
    query recomputes only what the proposal's window reaches; where it says the model is fooled, a full pass
    confirms, so the success reported is the model's own."""
    height, width = x.shape[2:]
    if norm == "linf":
        start, propose, side_for = _linf_start, _linf_proposal_at, _linf_side
    else:
        start, propose, side_for = _l2_start, _l2_proposal_at, _l2_side
    best = start(x, eps, generator)
    logits = model(best)
    best_loss = _objective(logits, y, loss, targeted)
    fooled = _fooled(logits, y, targeted)
    used = torch.ones(len(x), dtype=torch.long, device=x.device)
    # the examples still running, compacted: their rows, clean images, labels, current points and losses
    running = (~fooled).nonzero().squeeze(1)
    clean, labels, current, current_loss = x[running], y[running], best[running], best_loss[running]
    if local is not None:
        local.start(current)
    for iteration in progress(range(queries - 1), desc="Square (queries)", leave=False):
        if len(running) == 0:
            break
        side = side_for(p_schedule(iteration, queries, p_init), height, width)
        trial, corner = propose(clean, current, eps, side, generator)
        logits = model(trial) if local is None else local(trial, corner, side)
        trial_fooled = _fooled(logits, labels, targeted)
        if local is not None and trial_fooled.any():
            # the model's own pass decides a success (the window path rounds differently)
            logits = logits.clone()
            logits[trial_fooled] = model(trial[trial_fooled])
            trial_fooled = _fooled(logits, labels, targeted)
        trial_loss = _objective(logits, labels, loss, targeted)
        keep = trial_fooled | (trial_loss < current_loss)
        if corner is None:
            current = core.keep_rows(keep, trial, current)
        else:  # Linf: only the window changed
            window = (keep.nonzero().squeeze(1), slice(None), slice(corner[0], corner[0] + side),
                      slice(corner[1], corner[1] + side))
            current[window] = trial[window]
        current_loss = torch.where(keep, trial_loss, current_loss)
        if local is not None:
            local.keep(keep)
        if trial_fooled.any():  # these stop here, after 1 + (iteration + 1) queries
            done = running[trial_fooled]
            best[done], best_loss[done] = current[trial_fooled], current_loss[trial_fooled]
            fooled[done], used[done] = True, iteration + 2
            stay = ~trial_fooled
            running, clean, labels, current, current_loss = (
                t[stay] for t in (running, clean, labels, current, current_loss))
            if local is not None:
                local.select(stay)
    best[running], best_loss[running] = current, current_loss
    used[running] = queries  # whoever is left ran the whole budget
    return SquareResult(best, used, fooled), best_loss


def _objective(logits: torch.Tensor, y: torch.Tensor, loss: str, targeted: bool) -> torch.Tensor:
    """The per-example loss the search lowers (module docstring)."""
    if loss == "margin":
        return core.margin(logits, y, targeted=targeted, kappa=math.inf)
    ce = F.cross_entropy(logits, y, reduction="none")
    return ce if targeted else -ce


def _fooled(logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    prediction = logits.argmax(dim=1)
    return prediction == y if targeted else prediction != y


# --- Linf (Sec. 3.1, Alg. 2) ----------------------------------------------------------------------------------

def _linf_side(p: float, height: int, width: int) -> int:
    """The window's side, round(sqrt(p H W)), at least 1 and at most the image."""
    return max(1, min(round(math.sqrt(p * height * width)), height, width))


def _linf_start(x: torch.Tensor, eps: float, generator) -> torch.Tensor:
    """Vertical stripes: each column of each channel at x + eps or x - eps (random sign), in the box."""
    n, channels, _, width = x.shape
    stripes = _signs((n, channels, 1, width), generator, x)
    return (x + eps * stripes).clamp(0.0, 1.0)


def _linf_proposal_at(x: torch.Tensor, current: torch.Tensor, eps: float, side: int,
                      generator) -> tuple[torch.Tensor, tuple[int, int]]:
    """Alg. 2: a window of side ``side`` at a random position, the same for the whole batch (as in AutoAttack's code;
    the authors' draw one per image), each channel's pixels in it set to clip(x + rho_c eps) with one random sign
    per example and channel, the signs uniform over those that change the current image (the authors' code redraws
    until they do). Returns the proposals and the window's corner (top, left).

    A channel's window is left unchanged by at most one sign (clip(x + eps) and clip(x - eps) differ at
    every pixel when eps > 0), so at most one sign vector u changes nothing. The redraw is done without a
    loop: where the draw hits u, it is replaced by u with the signs flipped on a uniformly drawn nonempty
    set of channels, which is uniform over the other 2^C - 1 vectors."""
    n, channels, height, width = x.shape
    top, left = _corner(side, height, width, generator)
    window = (slice(None), slice(None), slice(top, top + side), slice(left, left + side))
    signs = _signs((n, channels), generator, x)
    flips = torch.randint(1, 2 ** min(channels, 62), (n, 1), generator=generator)
    flips = ((flips >> torch.arange(channels)) & 1).to(x.device, x.dtype)  # bits beyond the 62nd stay 0
    clean, now = x[window].flatten(2), current[window].flatten(2)  # (n, C, side^2)
    up, down = (clean + eps).clamp(0.0, 1.0), (clean - eps).clamp(0.0, 1.0)
    stays_up = (now == up).all(dim=2)  # (n, C): sign +1 changes nothing in that channel's window
    stays_down = (now == down).all(dim=2)
    idle = torch.where(stays_up, 1.0, -1.0).to(x.dtype)  # u, where it exists
    hits_idle = (stays_up | stays_down).all(dim=1) & (signs == idle).all(dim=1)
    signs = torch.where(hits_idle[:, None], idle * (1 - 2 * flips), signs)
    trial = current.clone()
    trial[window] = torch.where(signs[:, :, None] > 0, up, down).view(n, channels, side, side)
    return trial, (top, left)


# --- L2 (Sec. 3.2, Alg. 3) ------------------------------------------------------------------------------------

def _l2_side(p: float, height: int, width: int) -> int:
    """The window's side: round(sqrt(p H W)), at least 3, made odd, at most the image."""
    side = max(round(math.sqrt(p * height * width)), L2_MIN_SIDE)
    side += 1 - side % 2
    return min(side, height, width)


def _bump(rows: int, cols: int) -> torch.Tensor:
    """The paper's eta on a rows x cols rectangle (float64, unit norm): at Chebyshev distance d from the
    centre (rows // 2, cols // 2), sum_{k=d}^{n} 1/(k+1)^2 with n = max(rows, cols) // 2."""
    if rows == 0 or cols == 0:
        return torch.zeros(rows, cols, dtype=torch.float64)
    n = max(rows, cols) // 2
    distance = torch.maximum((torch.arange(rows) - rows // 2).abs()[:, None],
                             (torch.arange(cols) - cols // 2).abs()[None, :])
    terms = 1.0 / torch.arange(1, n + 2, dtype=torch.float64) ** 2  # 1/(k+1)^2, k = 0..n
    tails = terms.flip(0).cumsum(0).flip(0)  # tails[d] = sum_{k >= d} 1/(k+1)^2
    eta = tails[distance]
    return eta / eta.norm()


def _pattern(side: int) -> torch.Tensor:
    """The L2 window's pattern, side x side, unit norm: eta on the top side // 2 rows, minus eta on the
    rest (Sec. 3.2; each half of unit norm before the whole is normalised)."""
    pattern = torch.cat([_bump(side // 2, side), -_bump(side - side // 2, side)])
    return pattern / pattern.norm()


def _l2_start(x: torch.Tensor, eps: float, generator) -> torch.Tensor:
    """Sec. 3.2's start: a centred grid of tiles of side min(H, W) // 5 (at least 1), each the pattern,
    transposed at random, times a random sign per channel; rescaled to norm eps, then clipped to the box."""
    n, channels, height, width = x.shape
    side = max(1, min(height, width) // INIT_TILES)
    rows, cols = height // side, width // side
    flips = torch.randint(2, (n, rows, cols), generator=generator).bool().to(x.device)
    signs = _signs((n, channels, rows, cols), generator, x)
    pattern = _pattern(side).to(x.device, x.dtype)
    tiles = torch.where(flips[..., None, None], pattern.T, pattern)  # (n, rows, cols, side, side)
    grid = tiles.permute(0, 1, 3, 2, 4).reshape(n, 1, rows * side, cols * side)
    grid = grid * signs.repeat_interleave(side, dim=2).repeat_interleave(side, dim=3)
    delta = torch.zeros_like(x)
    top, left = (height - rows * side) // 2, (width - cols * side) // 2
    delta[:, :, top:top + rows * side, left:left + cols * side] = grid
    return (x + eps * delta / _norms(delta)).clamp(0.0, 1.0)


def _l2_proposal_at(x: torch.Tensor, current: torch.Tensor, eps: float, side: int, generator):
    """:func:`_l2_proposal`, and None for the corners: the rescaling to norm eps changes the whole image."""
    return _l2_proposal(x, current, eps, side, generator), None


def _l2_proposal(x: torch.Tensor, current: torch.Tensor, eps: float, side: int, generator) -> torch.Tensor:
    """Alg. 3: move each channel's mass in the windows W1 and W2, plus its share of the unused budget,
    into W1 as rho eta* + nu_W1 / ||nu_W1||; empty W2; keep the norm eps; clip to the box."""
    n, channels, height, width = x.shape
    first = _corners(n, side, height, width, generator, x.device)
    second = _corners(n, side, height, width, generator, x.device)
    signs = _signs((n, channels, 1, 1), generator, x)
    flips = torch.randint(2, (n,), generator=generator).to(x.device)
    pattern = _pattern(side).to(x.device, x.dtype)
    rows, cols, in_first = _window(first, side, height, width)
    eta = torch.stack([pattern, pattern.T])[flips[:, None, None], rows.clamp(0, side - 1)[:, :, None],
                                            cols.clamp(0, side - 1)[:, None, :]]
    eta = eta[:, None] * in_first  # (n, 1, H, W): each example's pattern in its W1, 0 elsewhere
    in_either = in_first | _window(second, side, height, width)[2]
    nu = current - x
    unused = (eps**2 - nu.pow(2).sum(dim=(1, 2, 3), keepdim=True)).clamp_min(0.0)
    nu_first = nu * in_first
    available = ((nu * in_either).pow(2).sum(dim=(2, 3), keepdim=True) + unused / channels).sqrt()
    step = signs * eta + nu_first / _norms(nu_first, dims=(2, 3))
    step = step * available / _norms(step, dims=(2, 3))
    nu = torch.where(in_either, torch.zeros_like(nu), nu) + step
    return (x + eps * nu / _norms(nu)).clamp(0.0, 1.0)


# --- shared pieces ------------------------------------------------------------------------------------------

def _norms(t: torch.Tensor, dims: tuple[int, ...] = (1, 2, 3)) -> torch.Tensor:
    """L2 norms over ``dims`` (kept for broadcasting), at least 1e-12 (the authors' guard against 0/0)."""
    return t.pow(2).sum(dim=dims, keepdim=True).sqrt().clamp_min(1e-12)


def _signs(shape: tuple[int, ...], generator, like: torch.Tensor) -> torch.Tensor:
    """Uniform random signs +-1, drawn on the CPU, as ``like``'s dtype on its device."""
    return (torch.randint(2, shape, generator=generator) * 2 - 1).to(like.device, like.dtype)


def _corners(n: int, side: int, height: int, width: int, generator, device: torch.device) -> torch.Tensor:
    """Top-left corners (n, 2) of side x side windows, uniform on {0..H-side} x {0..W-side} (Alg. 2-3)."""
    top = torch.randint(height - side + 1, (n,), generator=generator)
    left = torch.randint(width - side + 1, (n,), generator=generator)
    return torch.stack([top, left], dim=1).to(device)


def _corner(side: int, height: int, width: int, generator) -> tuple[int, int]:
    """One top-left corner (top, left) of a side x side window, uniform on {0..H-side} x {0..W-side}."""
    lefts = width - side + 1
    drawn = int(torch.randint((height - side + 1) * lefts, (1,), generator=generator))
    return drawn // lefts, drawn % lefts


def _window(corners: torch.Tensor, side: int, height: int, width: int):
    """Each example's window: its row and column coordinates relative to the corner, (n, H) and (n, W),
    and its mask (n, 1, H, W)."""
    rows = torch.arange(height, device=corners.device)[None, :] - corners[:, :1]
    cols = torch.arange(width, device=corners.device)[None, :] - corners[:, 1:]
    inside = ((rows >= 0) & (rows < side))[:, :, None] & ((cols >= 0) & (cols < side))[:, None, :]
    return rows, cols, inside[:, None]
