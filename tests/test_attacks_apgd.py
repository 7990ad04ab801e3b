"""Auto-PGD and APGD-T (Croce and Hein 2020) and the DLR loss.

The DLR loss is checked against its formula on hand-made logits and for its invariance to shifting and
scaling the logits; the checkpoint schedule against the paper's recurrence; APGD's strength against
torchattacks' APGD/APGDT and our PGD on a small trained MLP; and the work it does: the points stay in the
ball without the contract's final projection, broken examples stop costing passes, and EOT averages
``eot_iter`` passes per step.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advlib.attacks import core, pgd
from advlib.attacks.apgd import (  # the schedule's pieces, tested alone
    _checkpoint,
    _evaluate,
    _Rows,
    _step,
    apgd,
    apgd_details,
    apgd_t,
    apgd_t_details,
    checkpoints,
)

N_IMAGES = 200
EPS = 0.05  # robust accuracy about 0.5 on the small MLP (clean 0.8)


@pytest.fixture(scope="module")
def trained(attacked_images, one_thread):
    """The shared small MLP trained for 3 epochs and its first 200 test images with their labels (conftest)."""
    return attacked_images(N_IMAGES)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def predict(model, x) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def accuracy(model, x, y) -> float:
    return (predict(model, x) == y).float().mean().item()


# --- the DLR loss ----------------------------------------------------------------------------------------

def test_dlr_by_hand():
    """Eq. (5) -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3) and Eq. (6) -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)."""
    logits = torch.tensor([[3.0, 1.0, 2.0, -1.0],    # y = 0 on top: sorted 3, 2, 1, -1
                           [0.0, 5.0, 1.0, 4.0]])    # y = 0 below: sorted 5, 4, 1, 0
    y, t = torch.tensor([0, 0]), torch.tensor([3, 2])
    assert core.dlr(logits, y).tolist() == pytest.approx([-(3 - 2) / (3 - 1), -(0 - 5) / (5 - 1)])
    assert core.dlr(logits, y, target=t).tolist() == pytest.approx([-(3 + 1) / (3 - (1 - 1) / 2),
                                                                     -(0 - 1) / (5 - (1 + 0) / 2)])
    assert core.loss_on_logits(logits, y, "dlr").tolist() == pytest.approx(core.dlr(logits, y).tolist())
    assert "dlr" in core.LOSSES
    ties = torch.zeros(2, 4)  # every logit equal: the 1e-12 keeps it finite (0)
    assert core.dlr(ties, y).tolist() == [0.0, 0.0] and core.dlr(ties, y, target=t).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="true class beside the target"):
        core.loss_on_logits(logits, y, "dlr", targeted=True)
    with pytest.raises(ValueError, match="at least 3 classes, got 2"):
        core.dlr(logits[:, :2], y)
    with pytest.raises(ValueError, match="targeted DLR loss needs logits of at least 4 classes, got 3"):
        core.dlr(logits[:, :3], y, target=torch.tensor([1, 2]))


def test_dlr_unchanged_by_shifting_and_scaling_the_logits_unlike_ce():
    logits = torch.randn(64, 10, generator=seeded(3), dtype=torch.float64) * 3
    y = torch.randint(0, 10, (64,), generator=seeded(4))
    t = (y + 1 + torch.randint(0, 9, (64,), generator=seeded(5))) % 10
    for target in (None, t):
        base = core.dlr(logits, y, target=target)
        for shift, scale in ((7.5, 1.0), (-100.0, 1.0), (0.0, 0.01), (0.0, 40.0), (3.0, 2.5)):
            moved = core.dlr(logits * scale + shift, y, target=target)
            torch.testing.assert_close(moved, base, rtol=1e-9, atol=1e-9)
    ce = core.loss_on_logits(logits, y, "ce")
    assert not torch.allclose(core.loss_on_logits(logits * 2, y, "ce"), ce)  # the test can tell


# --- the schedule ----------------------------------------------------------------------------------------

def paper_checkpoints(steps: int) -> list[int]:
    """w_j = ceil(p_j N) with p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), p_j <= 1."""
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1 + 1e-9:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return [math.ceil(round(q * steps, 6)) for q in p]


def test_checkpoints_follow_the_papers_recurrence():
    assert paper_checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    for steps in (100, 1000, 250, 37):
        assert checkpoints(steps) == paper_checkpoints(steps), steps
    assert checkpoints(10) == [0, 3, 5, 6, 7, 8, 9, 10]  # 0.93 and 0.99 both give 10: one checkpoint
    assert checkpoints(0) == [0]


def test_checkpoint_halves_on_condition_1_or_2_and_goes_back_to_the_best_point():
    """rho (w_j - w_{j-1}) = 0.75 * 20 = 15 increases needed. Rows: 0 stalled (10 < 15); 1 enough increases
    and a better best loss; 2 enough increases but the best loss unchanged and not halved last time
    (Condition 2); 3 the same but halved last time; 4 exactly 15 increases (not fewer) and improved."""
    n = 5
    best = torch.arange(1.0, n + 1).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone()
    rows = _Rows(cur=torch.zeros(n, 1, 2, 2), best=best,
                 grad=torch.zeros(n, 1, 2, 2), best_grad=-torch.ones(n, 1, 2, 2), eta=torch.full((n,), 0.4),
                 increases=torch.tensor([10, 16, 16, 16, 15]), reduced=torch.tensor([False, False, False, True, False]),
                 best_loss=torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]),
                 checked_loss=torch.tensor([0.5, 1.0, 3.0, 4.0, 4.0]),
                 prev_loss=torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5]))
    _checkpoint(rows, 0.75 * 20)
    halved = torch.tensor([True, False, True, False, False])
    assert torch.equal(rows.eta, torch.where(halved, 0.2, 0.4))
    assert torch.equal(rows.reduced, halved) and rows.increases.tolist() == [0] * n
    assert torch.equal(rows.checked_loss, torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    moved = rows.cur.flatten(1)[:, 0]
    assert moved.tolist() == [1.0, 0.0, 3.0, 0.0, 0.0]  # back to the best point where halved
    assert rows.grad.flatten(1)[:, 0].tolist() == [-1.0, 0.0, -1.0, 0.0, 0.0]  # with its gradient
    assert rows.prev_loss.tolist() == pytest.approx([1.0, 0.2, 3.0, 0.4, 0.5])


def test_step_is_the_projected_gradient_step_then_momentum():
    """Eq. (2): x^1 = z^1; x^{k+1} = P(x^k + 0.75 (z^{k+1} - x^k) + 0.25 (x^k - x^{k-1})), Linf and L2."""
    gen = seeded(7)
    x = torch.rand(3, 1, 4, 4, generator=gen) * 0.5 + 0.25
    cur, prev = x + 0.01, x - 0.02
    grad = torch.randn(3, 1, 4, 4, generator=gen)
    eta, eps = torch.tensor([0.05, 0.1, 0.2]), 0.1
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    z = torch.min(torch.max(cur + eta.view(-1, 1, 1, 1) * grad.sign(), lo), hi)
    rows = _Rows(cur=cur.clone(), grad=grad.clone(), eta=eta, lo=lo, hi=hi)
    _step(rows, 0, eps, "linf", (-1, 1, 1, 1))
    torch.testing.assert_close(rows.cur, z)
    rows = _Rows(cur=cur.clone(), prev=prev.clone(), grad=grad.clone(), eta=eta, lo=lo, hi=hi)
    _step(rows, 5, eps, "linf", (-1, 1, 1, 1))
    expected = torch.min(torch.max(cur + 0.75 * (z - cur) + 0.25 * (cur - prev), lo), hi)
    torch.testing.assert_close(rows.cur, expected)
    torch.testing.assert_close(rows.prev, cur)
    eps = 0.5
    unit = grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    z = core.project_l2(cur + eta.view(-1, 1, 1, 1) * unit, x, eps)
    rows = _Rows(cur=cur.clone(), prev=prev.clone(), grad=grad.clone(), eta=eta, center=x)
    _step(rows, 5, eps, "l2", (-1, 1, 1, 1))
    torch.testing.assert_close(rows.cur, core.project_l2(cur + 0.75 * (z - cur) + 0.25 * (cur - prev), x, eps))


# --- strength --------------------------------------------------------------------------------------------

def test_at_least_as_strong_as_torchattacks_apgd_and_apgdt(trained):
    """Same model, images, Linf budget, 100 steps and one restart as torchattacks' APGD (CE) and APGDT (its
    default 9 target classes): our robust accuracy is at most 0.5 points above theirs."""
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = trained
    torch.manual_seed(0)
    theirs = accuracy(model, torchattacks.APGD(model, norm="Linf", eps=EPS, steps=100, n_restarts=1, seed=0,
                                               loss="ce")(x, y), y)
    ours = accuracy(model, apgd(model, x, y, eps=EPS, steps=100, generator=seeded()), y)
    assert 0.2 < theirs < 0.7  # the budget leaves the comparison room either way
    assert ours <= theirs + 0.005, (ours, theirs)
    theirs_t = accuracy(model, torchattacks.APGDT(model, norm="Linf", eps=EPS, steps=100, n_restarts=1, seed=0,
                                                  n_classes=10)(x, y), y)
    ours_t = accuracy(model, apgd_t(model, x, y, eps=EPS, steps=100, generator=seeded()), y)
    assert ours_t <= theirs_t + 0.005, (ours_t, theirs_t)


def test_at_least_as_strong_as_pgd_at_the_same_steps(trained):
    """APGD (CE and DLR) against our PGD at 20 steps (Madry's step 2.5 eps / steps): what PGD breaks, APGD breaks."""
    model, x, y = trained
    broken_pgd = predict(model, pgd(model, x, y, eps=EPS, steps=20, generator=seeded())) != y
    for loss in ("ce", "dlr"):
        broken = predict(model, apgd(model, x, y, eps=EPS, steps=20, loss=loss, generator=seeded())) != y
        assert broken.sum() >= broken_pgd.sum(), loss
        assert (broken_pgd & ~broken).sum() <= 1, loss  # per example, up to one image of random-start luck


def test_targeted_reaches_targets_and_details_agree_with_the_model(trained):
    """targeted=True: y holds targets; success means the target is predicted (CE and the targeted DLR, whose
    true class is the clean prediction). The details' success flags are the model's verdict on the points."""
    model, x, y = trained
    x, y = x[:60], y[:60]
    target = (y + 1) % 10
    for loss in ("ce", "dlr"):
        out = apgd_details(model, x, target, eps=0.15, steps=30, loss=loss, targeted=True, generator=seeded())
        hit = predict(model, out.x_adv) == target
        assert torch.equal(out.success, hit) and hit.float().mean() > 0.3, loss
    out = apgd_t_details(model, x, y, eps=EPS, steps=30, targets=3, generator=seeded())
    assert torch.equal(out.success, predict(model, out.x_adv) != y) and out.success.any()


# --- the work --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("norm, eps", [("linf", EPS), ("l2", 1.0)])
def test_points_stay_in_the_ball_without_the_contracts_projection(trained, norm, eps):
    model, x, y = trained
    x, y = x[:50], y[:50]
    for out in (apgd_details(model, x, y, eps=eps, norm=norm, steps=15, restarts=2, generator=seeded()),
                apgd_details(model, x, y, eps=eps, norm=norm, steps=15, loss="dlr", generator=seeded()),
                apgd_t_details(model, x, y, eps=eps, norm=norm, steps=15, targets=3, generator=seeded())):
        delta = (out.x_adv - x).flatten(1)
        size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
        assert size.max() <= eps * (1 + 1e-5) and 0 <= out.x_adv.min() and out.x_adv.max() <= 1
        assert (size > 0.5 * eps).float().mean() > 0.9  # it moved: the check is not about a point left at x


class Counting(nn.Module):
    """A model that counts its forward passes and the rows they carried."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls, self.rows = model, 0, 0

    def forward(self, x):
        self.calls += 1
        self.rows += len(x)
        return self.model(x)


def test_broken_examples_stop_costing_passes(trained):
    """At eps = 0.2 most images break within a few steps: they leave the batch, so the rows forwarded are far
    fewer than N (steps + 1) and equal the per-example passes reported; an image never broken costs all."""
    model, x, y = trained
    x, y = x[:100], y[:100]
    counting, steps, restarts = Counting(model), 50, 2
    out = apgd_details(counting, x, y, eps=0.2, steps=steps, restarts=restarts, generator=seeded())
    assert out.success.float().mean() > 0.9
    assert counting.rows == out.passes.sum().item()
    assert counting.rows < 0.2 * len(x) * restarts * (steps + 1)
    assert (out.passes[~out.success] == restarts * (steps + 1)).all()
    assert (out.passes[out.success] < restarts * (steps + 1)).all()
    assert counting.calls <= steps + 1
    # APGD-T: the targets are copies too, plus the clean pass that chose them
    counting = Counting(model)
    out = apgd_t_details(counting, x, y, eps=0.2, steps=steps, targets=4, generator=seeded())
    assert counting.rows == out.passes.sum().item() < 0.2 * len(x) * 4 * (steps + 1)


class Noisy(nn.Module):
    """A randomized model: its logits carry Gaussian noise, different at each call (from torch's global
    generator)."""

    def __init__(self, model, sigma: float):
        super().__init__()
        self.model, self.sigma, self.calls = model, sigma, 0

    def forward(self, x):
        self.calls += 1
        logits = self.model(x)
        return logits + self.sigma * torch.randn_like(logits)


def test_eot_spends_eot_iter_passes_per_step(trained):
    """Nothing breaks at a tiny budget on images classified with a wide margin: every step costs eot_iter
    passes of the whole batch (the last iterate too, forward only)."""
    model, x, y = trained
    with torch.no_grad():
        logits = model(x)
    confident = (logits.argmax(1) == y) & (core.margin(logits, y) > 2.0)
    x, y = x[confident][:20], y[confident][:20]
    for eot_iter, steps in ((1, 6), (4, 6), (3, 10)):
        noisy = Noisy(model, 0.05)
        torch.manual_seed(0)
        out = apgd_details(noisy, x, y, eps=1e-3, steps=steps, eot_iter=eot_iter, generator=seeded())
        assert not out.success.any()
        assert noisy.calls == eot_iter * (steps + 1), eot_iter
        assert (out.passes == eot_iter * (steps + 1)).all()


class Cycling(nn.Module):
    """Logits c * (W x) with c cycling through 1, 3, 5 from one call to the next: EOT over three passes
    must see the average factor 3."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear, self.calls = nn.Linear(16, 4), 0

    def forward(self, x):
        factor = (1.0, 3.0, 5.0)[self.calls % 3]
        self.calls += 1
        return factor * self.linear(x.flatten(1))


def test_eot_averages_the_loss_and_the_gradient():
    """With the margin (linear in the logits) the averaged loss and gradient are 3 times those of W x."""
    model = Cycling()
    x, y = torch.rand(5, 1, 4, 4, generator=seeded(1)), torch.tensor([0, 1, 2, 3, 0])
    classes = y[:, None]

    def objective(logits, rows):
        return core.loss_on_logits(logits, rows[:, 0], "margin")

    def succeeded(logits, rows):
        return logits.argmax(1) != rows[:, 0]

    loss1, grad1, _ = _evaluate(model, x, classes, objective, succeeded, 1, True)  # factor 1
    model.calls = 0
    loss3, grad3, _ = _evaluate(model, x, classes, objective, succeeded, 3, True)
    assert model.calls == 3
    torch.testing.assert_close(loss3, 3 * loss1)
    torch.testing.assert_close(grad3, 3 * grad1)


@pytest.mark.parametrize("details, options", [(apgd_details, dict(restarts=3)),
                                              (apgd_details, dict(loss="dlr", restarts=2)),
                                              (apgd_t_details, dict(targets=3))])
def test_a_batch_equals_its_pieces_and_the_reported_loss_is_the_points(trained, details, options):
    """Copies, stopping and the random starts (drawn example after example) are per example: the batch
    attacked at once equals its pieces attacked one after another from the same generator; the loss
    reported for an unbroken example is the loss at the point returned."""
    model, x, y = trained
    x, y = x[:40], y[:40]
    gen = seeded()
    whole = details(model, x, y, eps=0.03, steps=20, generator=gen, **options)
    gen = seeded()
    parts = [details(model, x[i:i + 10], y[i:i + 10], eps=0.03, steps=20, generator=gen, **options)
             for i in range(0, len(x), 10)]
    torch.testing.assert_close(whole.x_adv, torch.cat([p.x_adv for p in parts]), atol=1e-6, rtol=0)
    assert torch.equal(whole.success, torch.cat([p.success for p in parts]))
    assert torch.equal(whole.passes, torch.cat([p.passes for p in parts]))
    assert 0 < whole.success.sum() < len(x)
    with torch.no_grad():
        logits = model(whole.x_adv)
    if details is apgd_t_details:  # its loss is toward the target that copy aimed at: check the success only
        return
    loss = core.loss_on_logits(logits, y, options.get("loss", "ce"))
    torch.testing.assert_close(loss[~whole.success], whole.loss[~whole.success])


def test_the_first_step_is_two_eps_and_reaches_the_far_corner_from_any_start():
    """On a linear model with the margin loss (linear in x), the best point of the Linf ball is the corner
    x + eps sign(grad). The first step, of size 2 eps (Sec. 3.1), reaches it from any random start; a step of
    eps would leave part of the random offset."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10)).eval()
    x = torch.rand(8, 1, 4, 4, generator=seeded(1)) * 0.6 + 0.2
    with torch.no_grad():
        y = model(x).argmax(1)
    eps = 1e-3
    point = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(core.loss_on_logits(model(point), y, "margin").sum(), point)
    out = apgd_details(model, x, y, eps=eps, steps=1, loss="margin", generator=seeded())
    assert not out.success.any()
    torch.testing.assert_close(out.x_adv, x + eps * grad.sign(), atol=1e-7, rtol=0)


def test_restarts_are_copies_and_each_example_keeps_its_best(trained):
    """restarts=3 runs three copies of each example, with the random starts a batch of each example repeated
    three times would get: an example is broken when one of its copies is, and otherwise keeps the highest
    loss of the three."""
    model, x, y = trained
    x, y = x[:30], y[:30]
    three = apgd_details(model, x, y, eps=0.03, steps=20, restarts=3, generator=seeded())
    single = apgd_details(model, x.repeat_interleave(3, 0), y.repeat_interleave(3), eps=0.03, steps=20,
                          generator=seeded())
    assert torch.equal(three.success, single.success.view(-1, 3).any(1))
    standing = ~three.success
    best = single.loss.view(-1, 3).max(1).values
    torch.testing.assert_close(three.loss[standing], best[standing])
    spread = single.loss.view(-1, 3)[standing].aminmax(dim=1)
    assert (spread.max > spread.min).sum() >= 5  # copies that differ: there the max is a choice
