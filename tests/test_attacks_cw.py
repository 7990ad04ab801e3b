"""The Carlini-Wagner attacks (Carlini and Wagner 2017): cw_l2, cw_linf, cw_l0.

Contract tests (box, inputs unchanged, mode restored, no parameter gradients, bad input), soundness
(every success really is adversarial, to its confidence), the properties the paper's construction gives
(batch = one by one, unchanged by a constant added to the logits, right when every logit is negative),
and the orderings the chapter claims: CW-L2 perturbations smaller than PGD-L2's on the examples both
break, cw_linf's L_inf smaller than cw_l2's, cw_l0 changing fewer pixels than cw_l2 and none outside its
allowed set. Small step counts keep the whole file fast on two CPU cores.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from advlib.attacks import core, cw, cw_l0, cw_l2, cw_linf

N = 16  # examples attacked in the quality tests (correctly classified test images)

# small budgets, enough for the tiny MLP below (a larger Adam step than the paper's 1e-2 lets pixels at
# 0, where tanh saturates, move within 100 iterations)
L2_FAST = dict(c=0.1, binary_steps=5, steps=100, lr=0.05)
LINF_FAST = dict(steps=20)
L0_FAST = dict(c=0.1, c_max=1e2, steps=20, shrink=0.3)
TINY = {"cw_l2": dict(binary_steps=3, steps=20), "cw_linf": dict(steps=10, tau_decay=0.7),
        "cw_l0": dict(steps=10, c_max=1e2, shrink=0.3)}  # for tests of mechanics, not of quality
ATTACKS = {
    "cw_l2": lambda model, x, y, **kw: cw_l2(model, x, y, **{**L2_FAST, **kw}),
    "cw_linf": lambda model, x, y, **kw: cw_linf(model, x, y, **{**LINF_FAST, **kw}),
    "cw_l0": lambda model, x, y, **kw: cw_l0(model, x, y, **{**L0_FAST, **kw}),
}


@pytest.fixture(scope="module")
def trained(small_mlp, one_thread):
    """The shared small MLP trained for 1 epoch (conftest), and N test images it classifies correctly."""
    model, x_test, y_test = small_mlp(1)
    with torch.no_grad():
        right = model(x_test).argmax(1) == y_test
    assert right.float().mean() > 0.65  # the model learned something
    return model, x_test[right][:N], y_test[right][:N]


@pytest.fixture(scope="module")
def results(trained):
    """Each attack's result on the N examples at the fast settings (computed once), and, for cw_l0, the
    allowed set each example's last success was found on (read from the search's state)."""
    model, x, y = trained
    final_sets = {}
    end_runs = cw._L0Search.end_runs

    def spy(self, S, end, success, x_adv):
        done = end_runs(self, S, end, success, x_adv)
        found = S["found"]
        for i, allowed in zip(S["index"][found].tolist(), S["allowed_ok"][found], strict=True):
            final_sets[i] = allowed.clone()
        return done

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cw._L0Search, "end_runs", spy)
        out = {name: attack(model, x, y) for name, attack in ATTACKS.items()}
    out["l0_sets"] = final_sets
    return out


def logits_of(model, x):
    with torch.no_grad():
        return model(x)


def raw_margin(model, x, y, targeted=False):
    """Z_y - max_{j != y} Z_j (targeted: max_{j != t} Z_j - Z_t), without the clamp at -kappa."""
    return core.margin(logits_of(model, x), y, targeted=targeted, kappa=float("inf"))


def changed(x_adv, x):
    """Examples the attack moved (it returns x exactly where it found nothing)."""
    return (x_adv != x).flatten(1).any(1)


def norms(x_adv, x):
    d = (x_adv - x).flatten(1)
    return d.norm(dim=1), d.abs().amax(1)


def pixels_changed(x_adv, x, tol=0.0):
    """L0: how many pixel positions (all channels together) differ by more than ``tol``."""
    return ((x_adv - x).abs().amax(1) > tol).flatten(1).sum(1)


class Shift(nn.Module):
    """The model's logits plus a constant: the same classifier, and the same CW margin."""

    def __init__(self, model, constant):
        super().__init__()
        self.model, self.constant = model, constant

    def forward(self, x):
        return self.model(x) + self.constant


# --- the contract ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_contract_box_inputs_mode_and_gradients(trained, name):
    model, x, y = trained
    x, y = x[:4], y[:4]
    model = copy.deepcopy(model).train()  # the attack must run in eval mode and give train mode back
    modes = []
    hook = model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    x_before, y_before = x.clone(), y.clone()
    x_adv = ATTACKS[name](model, x, y, **TINY[name])
    hook.remove()
    assert modes and not any(modes)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert not x_adv.requires_grad and x_adv.grad_fn is None
    assert 0 <= x_adv.min() and x_adv.max() <= 1
    assert changed(x_adv, x).any()  # it did something


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_no_steps_returns_x_and_no_grad_context_is_fine(trained, name):
    model, x, y = trained
    assert torch.equal(ATTACKS[name](model, x, y, steps=0), x)
    with torch.no_grad():  # a caller's no_grad block must not break the attack
        x_adv = ATTACKS[name](model, x[:2], y[:2], **TINY[name])
    assert x_adv.shape == x[:2].shape and changed(x_adv, x[:2]).any()


def test_bad_settings_of_each_attack_raise_value_error(trained):
    model, x, y = trained
    with pytest.raises(ValueError, match="binary_steps must be a whole number >= 0, got -1"):
        cw_l2(model, x, y, binary_steps=-1)
    with pytest.raises(ValueError, match=r"tau_decay must lie in \(0, 1\), got 1.0"):
        cw_linf(model, x, y, tau_decay=1.0)
    with pytest.raises(ValueError, match=r"tau_init must lie in \(0, inf\), got 0"):
        cw_linf(model, x, y, tau_init=0.0)
    with pytest.raises(ValueError, match=r"c \(the first constant\) must be below c_max, got c=30.0 and c_max=20.0"):
        cw_linf(model, x, y, c=30.0, c_max=20.0)
    with pytest.raises(ValueError, match=r"shrink is the fraction of the allowed pixels removed per round, in "
                                         r"\(0, 1\]; got 1.5"):
        cw_l0(model, x, y, shrink=1.5)
    with pytest.raises(ValueError, match=r"removed per round, in \(0, 1\]; got 0.0"):
        cw_l0(model, x, y, shrink=0.0)


# --- soundness: successes are adversarial, to the confidence asked -----------------------------------

@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_successes_are_adversarial(trained, results, name):
    model, x, y = trained
    x_adv = results[name]
    moved = changed(x_adv, x)
    assert moved.float().mean() >= 0.9  # a small undefended MLP: CW breaks (nearly) every example
    assert (logits_of(model, x_adv[moved]).argmax(1) != y[moved]).all()
    assert (logits_of(model, x_adv[~moved]).argmax(1) == y[~moved]).all()  # failures come back as x


def test_targeted_l2_reaches_its_targets(trained):
    model, x, y = trained
    target = (y + 1 + torch.arange(len(y)) % 9) % 10  # a target other than the true class
    x_adv = cw_l2(model, x, target, targeted=True, **L2_FAST)
    moved = changed(x_adv, x)
    assert moved.float().mean() >= 0.9
    assert torch.equal(logits_of(model, x_adv[moved]).argmax(1), target[moved])
    assert (raw_margin(model, x_adv[moved], target[moved], targeted=True) <= 1e-5).all()


@pytest.mark.parametrize("name", ["cw_l2", "cw_linf"])
def test_confidence_kappa_is_reached(trained, results, name):
    model, x, y = trained
    kappa, n = 2.0, N if name == "cw_l2" else N // 2
    x_adv = ATTACKS[name](model, x[:n], y[:n], kappa=kappa)
    moved = changed(x_adv, x[:n])
    assert moved.float().mean() >= 0.8
    assert (raw_margin(model, x_adv[moved], y[:n][moved]) <= -kappa + 1e-4).all()
    # a margin of kappa costs a larger perturbation than the bare decision boundary
    plain = results[name][:n]
    both = changed(plain, x[:n]) & moved
    which = 0 if name == "cw_l2" else 1
    assert norms(x_adv, x[:n])[which][both].median() > norms(plain, x[:n])[which][both].median()


# --- the margin's properties ------------------------------------------------------------------------

def test_all_negative_logits_and_constant_shifts_change_nothing(trained, results):
    """Every logit negative: a margin that took the others' maximum by multiplying with a one-hot mask
    would read 0 for the true class and call every image adversarial at once; ours must attack as before.
    Adding any constant to every logit leaves the margin, hence the attack, unchanged."""
    model, x, y = trained
    x, y, plain = x[:8], y[:8], results["cw_l2"][:8]
    for constant in (-64.0, 64.0):
        shifted = Shift(model, constant)
        if constant < 0:
            assert logits_of(shifted, x).max() < 0
        x_adv = cw_l2(shifted, x, y, **L2_FAST)
        moved = changed(x_adv, x)
        assert moved.float().mean() >= 0.9
        assert (logits_of(shifted, x_adv[moved]).argmax(1) != y[moved]).all()
        assert (x_adv - x).flatten(1).norm(dim=1)[moved].min() > 1e-3  # not the do-nothing "success"
        assert torch.equal(moved, changed(plain, x))  # the same successes
        assert (x_adv - plain).abs().max() <= 1e-4  # and the same perturbations


@pytest.mark.parametrize("name", ["cw_linf", "cw_l0"])
def test_constant_added_to_logits_linf_l0(trained, name):
    """The L_inf and L0 searches take many more decisions on rounded margins, so only their outcome is
    compared: the same successes, and norms within a few percent."""
    model, x, y = trained
    x, y = x[:4], y[:4]
    plain = ATTACKS[name](model, x, y, **TINY[name])
    shifted = ATTACKS[name](Shift(model, -64.0), x, y, **TINY[name])
    assert torch.equal(changed(plain, x), changed(shifted, x))
    size = (lambda a: norms(a, x)[1]) if name == "cw_linf" else (lambda a: pixels_changed(a, x).float())
    assert torch.allclose(size(plain), size(shifted), rtol=0.1, atol=1e-3)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_batch_equals_one_by_one(trained, name):
    """Per-example binary search / tau / allowed set and per-example early abort: an example's result
    does not depend on the others in its batch."""
    model, x, y = trained
    x, y = x[:3], y[:3]
    whole = ATTACKS[name](model, x, y, **TINY[name])
    alone = torch.cat([ATTACKS[name](model, x[i:i + 1], y[i:i + 1], **TINY[name]) for i in range(len(x))])
    assert torch.equal(changed(whole, x), changed(alone, x))
    assert (whole - alone).abs().max() <= 1e-5


def test_early_abort_is_per_example(trained):
    """An example whose objective stalls stops on its own while the others go on: the batches the model
    sees shrink one example at a time, fewer images go through the model than without early abort, and
    the same examples are broken."""
    model, x, y = trained
    x, y = x[:8], y[:8]
    sizes = []
    hook = model.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    with_abort = cw_l2(model, x, y, c=0.1, binary_steps=1, steps=300, lr=0.05)
    sizes_with = sizes[:]
    sizes.clear()
    without = cw_l2(model, x, y, c=0.1, binary_steps=1, steps=300, lr=0.05, abort_early=False)
    hook.remove()
    assert sizes == [len(x)] * 300  # every example, every iteration
    assert sizes_with[0] == len(x) and any(0 < size < len(x) for size in sizes_with)  # some stopped, some not
    assert sorted(sizes_with, reverse=True) == sizes_with
    assert sum(sizes_with) < 0.8 * sum(sizes)
    assert torch.equal(changed(with_abort, x), changed(without, x))


# --- the orderings the chapter claims -----------------------------------------------------------------

def test_l2_smaller_than_pgd_l2_at_equal_success(trained, results):
    """CW minimises the L2 norm; PGD-L2 only stays inside its ball (and ends near its surface). PGD-L2
    needs eps = 3 to break as many examples as CW does, and CW's perturbations are much smaller."""
    pgd = pytest.importorskip("advlib.attacks.pgd").pgd
    model, x, y = trained
    x_cw = results["cw_l2"]
    x_pgd = pgd(model, x, y, eps=3.0, alpha=0.3, steps=40, norm="l2", generator=torch.Generator().manual_seed(0))
    fooled = logits_of(model, x_pgd).argmax(1) != y
    assert fooled.sum() >= changed(x_cw, x).sum() - 1  # (nearly) equal success
    both = fooled & changed(x_cw, x)
    l2_cw, l2_pgd = norms(x_cw, x)[0][both], norms(x_pgd, x)[0][both]
    assert l2_cw.median() < 0.8 * l2_pgd.median()
    assert (l2_cw <= l2_pgd).float().mean() >= 0.9


def test_l2_against_a_line_search_along_the_gradient(trained, results):
    """An independent reference that needs no other attack: the shortest step along the normalised
    gradient of the margin that changes the decision (a line search on one direction, first-order optimal
    for a linear model). CW, which optimises over every direction, is rarely longer, and not in median."""
    model, x, y = trained
    x_cw = results["cw_l2"]
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(core.margin(model(xg), y, kappa=float("inf")).sum(), xg)
    direction = -g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    line = torch.full((len(x),), float("inf"))
    for r in torch.linspace(0.02, 8.0, 400).flip(0):  # the smallest radius whose (clipped) point fools
        point = (x + r * direction).clamp(0, 1)
        line = torch.where(logits_of(model, point).argmax(1) != y, norms(point, x)[0], line)
    both = changed(x_cw, x) & line.isfinite()
    assert both.sum() >= N - 2
    ratio = norms(x_cw, x)[0][both] / line[both]
    assert ratio.median() < 1.0
    assert (ratio <= 1.05).float().mean() >= 0.85


def test_linf_attack_has_smaller_linf_than_l2_attack(trained, results):
    model, x, _ = trained
    x_inf, x_l2 = results["cw_linf"], results["cw_l2"]
    both = changed(x_inf, x) & changed(x_l2, x)
    assert both.sum() >= N - 2
    assert norms(x_inf, x)[1][both].median() < 0.75 * norms(x_l2, x)[1][both].median()


def test_l0_attack_changes_fewer_pixels_and_none_outside_its_allowed_set(trained, results):
    model, x, y = trained
    x_l0, x_l2, final_sets = results["cw_l0"], results["cw_l2"], results["l0_sets"]
    moved = changed(x_l0, x)
    for i in moved.nonzero()[:, 0].tolist():  # pixels outside the final allowed set are exactly x's
        outside = ~final_sets[i].view(x.shape[2:])
        assert outside.any()
        assert torch.equal(x_l0[i][:, outside], x[i][:, outside])
    both = moved & changed(x_l2, x)
    assert both.sum() >= N - 2
    l0_l0 = pixels_changed(x_l0, x)[both]  # any change at all counts
    l0_l2 = pixels_changed(x_l2, x, tol=1e-3)[both]  # only visible changes count
    assert l0_l0.float().median() < 0.25 * l0_l2.float().median()
    assert (l0_l0 < l0_l2).all()
