"""Exact margins by mixed-integer programming (``advlib.certify.exact_margins``) against what they claim: the
true minimum of the margin over the ball, found independently by a grid search on a two-input network and by
enumerating the activation patterns of a tiny one; never below any bound, never above any point of the ball;
equal to the bounds where no ReLU is unstable; and a sound interval when the time limit stops a program."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from torch import nn

from advlib import certify
from advlib.attacks import pgd
from advlib.models import Normalize

TOL = 1e-5
_ORIGINAL_SOLVE = certify.exact._Program.solve


def seeded_net(*widths: int, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).eval()


def points(n: int, d: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 1, d, generator=torch.Generator().manual_seed(seed))


def margins_at(model, x, y):
    with torch.no_grad():
        z = model(x)
    return z.gather(1, y[:, None]) - z


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_a_grid_search_on_a_two_input_network(seed):
    model = seeded_net(2, 12, 12, 3, seed=seed)
    x, y, eps = points(4, 2, seed), torch.tensor([0, 1, 2, 0]), 0.15
    result = certify.exact_margins(model, x, y, eps)
    assert result.status == ["optimal"] * 4
    for n in range(4):
        lo, hi = (x[n, 0, 0] - eps).clamp(0, 1), (x[n, 0, 0] + eps).clamp(0, 1)
        grid = torch.cartesian_prod(torch.linspace(lo[0], hi[0], 301), torch.linspace(lo[1], hi[1], 301))
        found = margins_at(model, grid.view(-1, 1, 1, 2), y[n].repeat(len(grid))).amin(dim=0)
        # the grid's points lie in the region: the minimum is at most theirs, and close to it (spacing <= 1e-3)
        assert (result.margins[n] <= found + TOL).all(), (n, result.margins[n], found)
        assert (result.margins[n] >= found - 0.02).all(), (n, result.margins[n], found)


def test_equals_the_minimum_over_activation_patterns():
    """On each activation pattern the network is affine, and the pattern's inputs form a polytope: the true
    minimum is the smallest of one linear program per feasible pattern."""
    model = seeded_net(3, 4, 3, 3, seed=5)
    first, second, last = model[1], model[3], model[5]
    w1, b1 = first.weight.detach().double().numpy(), first.bias.detach().double().numpy()
    w2, b2 = second.weight.detach().double().numpy(), second.bias.detach().double().numpy()
    w3, b3 = last.weight.detach().double().numpy(), last.bias.detach().double().numpy()
    x, y, eps = points(3, 3, 7), torch.tensor([0, 1, 2]), 0.2
    result = certify.exact_margins(model, x, y, eps)
    assert result.binaries.sum() > 0  # the case is not trivial: some units are unstable
    for n in range(3):
        lo = np.clip(x[n].flatten().double().numpy() - eps, 0, 1)
        hi = np.clip(x[n].flatten().double().numpy() + eps, 0, 1)
        best = np.full(3, np.inf)
        for p1 in itertools.product([0.0, 1.0], repeat=4):
            d1 = np.diag(p1)
            g1, c1 = d1 @ w1, d1 @ b1  # the first ReLU layer's output, affine in x'
            z2_w, z2_b = w2 @ g1, w2 @ c1 + b2
            for p2 in itertools.product([0.0, 1.0], repeat=3):
                d2 = np.diag(p2)
                out_w, out_b = w3 @ d2 @ z2_w, w3 @ (d2 @ z2_b) + b3
                # the pattern holds: z >= 0 where on, z <= 0 where off (sign s: s z >= 0, i.e. -s z <= 0)
                s1, s2 = 2 * np.array(p1) - 1, 2 * np.array(p2) - 1
                a_ub = np.vstack([-s1[:, None] * w1, -s2[:, None] * z2_w])
                b_ub = np.concatenate([s1 * b1, s2 * z2_b])
                for j in range(3):
                    c = out_w[int(y[n])] - out_w[j]
                    lp = linprog(c, A_ub=a_ub, b_ub=b_ub, bounds=list(zip(lo, hi, strict=True)), method="highs")
                    if lp.status == 0:
                        best[j] = min(best[j], lp.fun + out_b[int(y[n])] - out_b[j])
        assert np.allclose(result.margins[n].double().numpy(), best, atol=TOL), (n, result.margins[n], best)


def test_between_every_bound_and_every_point_of_the_ball():
    model = seeded_net(36, 16, 16, 5, seed=3)
    x = torch.rand(6, 1, 6, 6, generator=torch.Generator().manual_seed(4))
    y = torch.arange(6) % 5
    eps = 0.05
    result = certify.exact_margins(model, x, y, eps)
    assert result.status == ["optimal"] * 6
    for bound in (certify.dual_bounds, certify.crown_ibp_bounds, certify.ibp_margin_bounds):
        assert (bound(model, x, y, eps).detach() <= result.margins + TOL).all(), bound.__name__
    # points of the region: the image, random points, PGD's adversarial examples
    generator = torch.Generator().manual_seed(5)
    candidates = [x, pgd(model, x, y, eps=eps, steps=50, loss="margin", generator=generator)]
    candidates += [(x + eps * (2 * torch.rand(x.shape, generator=generator) - 1)).clamp(0, 1) for _ in range(20)]
    for point in candidates:
        assert (result.margins <= margins_at(model, point, y) + TOL).all()
    assert (result.margins <= result.upper + TOL).all()
    # the witness: in the region, and it attains the smallest upper margin
    assert ((result.witness - x).abs().amax(dim=(1, 2, 3)) <= eps + 1e-6).all()
    assert result.witness.min() >= 0 and result.witness.max() <= 1
    others = torch.nn.functional.one_hot(y, 5).bool()
    at_witness = margins_at(model, result.witness, y).masked_fill(others, float("inf")).amin(dim=1)
    assert torch.allclose(at_witness, result.upper.masked_fill(others, float("inf")).amin(dim=1), atol=TOL)
    # robust: proven; broken: the witness fools the network; never both
    assert not (result.robust & result.broken).any()
    assert torch.equal(result.broken, at_witness <= 0)
    assert torch.equal(result.robust, result.margins.masked_fill(others, float("inf")).amin(dim=1) > 0)


def test_equals_the_dual_bound_where_no_relu_is_unstable():
    model = seeded_net(36, 16, 16, 5, seed=3)
    x = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(4))
    y = torch.arange(4)
    result = certify.exact_margins(model, x, y, 1e-4)
    assert (result.binaries == 0).all()  # a tiny ball: every unit stable, the network affine on it
    assert torch.allclose(result.margins, certify.dual_bounds(model, x, y, 1e-4).detach(), atol=TOL)


def test_the_ablations_give_the_same_margins_with_more_binaries():
    model = seeded_net(36, 16, 16, 5, seed=3)
    x = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(4))
    y = torch.arange(3)
    ours = certify.exact_margins(model, x, y, 0.05)
    ibp = certify.exact_margins(model, x, y, 0.05, big_m="ibp")
    every = certify.exact_margins(model, x, y, 0.05, big_m="ibp", fix_stable=False)
    assert torch.allclose(ours.margins, ibp.margins, atol=TOL) and torch.allclose(ours.margins, every.margins, atol=TOL)
    assert (ours.binaries <= ibp.binaries).all() and (every.binaries == 32).all()
    assert torch.equal(certify.unstable_relus(model, x, 0.05), ours.binaries)
    assert torch.equal(certify.unstable_relus(model, x, 0.05, big_m="ibp"), ibp.binaries)


def test_the_smallest_margin_alone_is_the_same_for_fewer_programs(monkeypatch):
    model = seeded_net(36, 16, 16, 5, seed=3)
    x = torch.rand(6, 1, 6, 6, generator=torch.Generator().manual_seed(4))
    y = torch.arange(6) % 5
    every = certify.exact_margins(model, x, y, 0.05)
    solved = []

    def counting(self, *args, **kwargs):
        solved.append(args)
        return _ORIGINAL_SOLVE(self, *args, **kwargs)

    monkeypatch.setattr(certify.exact._Program, "solve", counting)
    others = torch.nn.functional.one_hot(y, 5).bool()
    for big_m in certify.exact.BIG_M:  # interval bounds order the classes differently from the dual's
        solved.clear()
        smallest = certify.exact_margins(model, x, y, 0.05, smallest_only=True, big_m=big_m)
        low = smallest.margins.masked_fill(others, float("inf")).amin(dim=1)
        assert torch.allclose(low, every.margins.masked_fill(others, float("inf")).amin(dim=1), atol=TOL)
        assert (smallest.margins <= every.margins + TOL).all()  # the other classes: sound bounds
        assert (smallest.upper + TOL >= every.margins).all()
        assert torch.equal(smallest.robust, every.robust) and torch.equal(smallest.broken, every.broken)
        assert 6 <= len(solved) < 6 * 4  # at least one program per example, fewer than every class's


def test_the_layers_between_relus_are_composed():
    """A Normalize and a Flatten before the first Linear cost no rows: the same margins as without them."""
    torch.manual_seed(0)
    inner = seeded_net(36, 16, 16, 5, seed=3)
    mean, std = 0.3, 0.5
    wrapped = nn.Sequential(Normalize([mean], [std]), *inner).eval()
    plain = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                          nn.Linear(16, 5)).eval()
    with torch.no_grad():  # fold the normalisation into the first layer
        plain[1].weight.copy_(inner[1].weight / std)
        plain[1].bias.copy_(inner[1].bias - inner[1].weight.sum(dim=1) * mean / std)
        plain[3].load_state_dict(inner[3].state_dict()), plain[5].load_state_dict(inner[5].state_dict())
    x = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(4))
    y = torch.arange(3)
    assert torch.allclose(certify.exact_margins(wrapped, x, y, 0.05).margins,
                          certify.exact_margins(plain, x, y, 0.05).margins, atol=1e-4)
    with torch.no_grad():
        blocks = certify.exact._blocks(certify.network.layers(wrapped.double(), x[:1].double()))
    assert len(blocks) == 5  # affine, ReLU, affine, ReLU, affine


def test_a_time_limit_keeps_a_sound_interval():
    model = seeded_net(36, 64, 64, 5, seed=6)
    x = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(8))
    y = torch.tensor([0, 1])
    result = certify.exact_margins(model, x, y, 0.3, time_limit=1e-3)
    assert "time limit" in result.status
    assert (certify.ibp_margin_bounds(model, x, y, 0.3).detach() <= result.margins + TOL).all()
    assert (result.margins <= result.upper + TOL).all()
    assert (result.margins <= margins_at(model, x, y) + TOL).all()


def test_bad_input_is_refused():
    model = seeded_net(36, 8, 5)
    x, y = torch.rand(2, 1, 6, 6), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="big_m must be one of"):
        certify.exact_margins(model, x, y, 0.1, big_m="crown")
    with pytest.raises(ValueError, match="time_limit"):
        certify.exact_margins(model, x, y, 0.1, time_limit=0)
    with pytest.raises(TypeError, match="unsupported layer"):
        certify.exact_margins(nn.Sequential(nn.Flatten(), nn.Linear(36, 5), nn.Tanh()), x, y, 0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        certify.exact_margins(model, x + 2, y, 0.1)
