"""Tests that bite (issue 14): each one kills a class of mutants of advlib.certify that the older suite let
through (mutation testing with mutmut over every module of advlib.certify).

The expected values are never computed by advlib.certify itself:

- soundness: every bound is at most the smallest margin found by a dense grid over the input box of a tiny
  network with 2 inputs (the grid only over-estimates the true minimum, so a sound bound must lie below it);
- exactness: on an affine network every method returns the exact minimum over the box (a corner, found by
  enumerating the 4 corners), and IBP on one linear layer gives the exact box of the logits;
- agreement with the papers' formulas written out independently here, with explicit weight matrices, for
  small MLPs: interval arithmetic (Gowal et al. 2018, Eq. 6), and the linear-relaxation backward pass with
  the dual network's lower slope u/(u - l) (Wong and Kolter 2018, Thm. 1 and Alg. 1, layer bounds included)
  or CROWN's adaptive one (Zhang et al. 2018), CROWN-IBP taking its layer bounds from IBP (Zhang et al. 2020);
- equivalences of layers: Normalize and a convolution give the same bounds as the Linear layer that computes
  the same affine map.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from advlib import certify
from advlib.certify import losses
from advlib.models import Normalize

DT = torch.float64  # the tests' own reference computations


def tiny_mlp(seed: int, hidden=(6, 5), classes: int = 3, inputs: int = 2) -> nn.Sequential:
    torch.manual_seed(seed)
    sizes = (inputs, *hidden)
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(sizes[-1], classes))
    return nn.Sequential(*layers).eval()


def weights(model: nn.Sequential) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(m.weight.detach().to(DT), m.bias.detach().to(DT)) for m in model if isinstance(m, nn.Linear)]


def points(n: int, seed: int, inputs: int = 2) -> torch.Tensor:
    return torch.rand(n, 1, 1, inputs, generator=torch.Generator().manual_seed(seed))


def region(x: torch.Tensor, eps: float, box):
    """The input interval [lo, hi] per example (flattened, float64)."""
    x = x.flatten(1).to(DT)
    if box is None:
        return x - eps, x + eps
    return (x - eps).clamp(min=box[0]), (x + eps).clamp(max=box[1])


def grid_min_margins(model, x, y, eps, box, n=161) -> torch.Tensor:
    """The smallest margin f_y - f_j over an n x n grid of the input box, per example (N, K)."""
    lo, hi = region(x, eps, box)
    out = []
    t = torch.linspace(0, 1, n, dtype=DT)
    for i in range(len(x)):
        a = lo[i, 0] + (hi[i, 0] - lo[i, 0]) * t
        b = lo[i, 1] + (hi[i, 1] - lo[i, 1]) * t
        grid = torch.stack(torch.meshgrid(a, b, indexing="ij"), -1).reshape(-1, 1, 1, 2).float()
        with torch.no_grad():
            logits = model(grid).to(DT)
        out.append((logits[:, y[i]:y[i] + 1] - logits).amin(0))
    return torch.stack(out)


METHODS = {
    "dual": lambda m, x, y, eps, box: certify.dual_bounds(m, x, y, eps, box),
    "ibp": lambda m, x, y, eps, box: certify.ibp_margin_bounds(m, x, y, eps, box),
    "crown-ibp": lambda m, x, y, eps, box: certify.crown_ibp_bounds(m, x, y, eps, box),
}


# --- independent references ------------------------------------------------------------------------------

def ref_ibp_boxes(ws, lo, hi):
    """Interval arithmetic (Gowal et al. Eq. 6) through Linear/ReLU pairs: the pre-activation box of every
    Linear layer's output, [(l, u), ...], one per Linear."""
    boxes = []
    for k, (w, b) in enumerate(ws):
        if k:
            lo, hi = lo.clamp(min=0), hi.clamp(min=0)
        c, r = (lo + hi) / 2, (hi - lo) / 2
        c, r = c @ w.T + b, r @ w.abs().T
        lo, hi = c - r, c + r
        boxes.append((lo, hi))
    return boxes


def ref_lines(lo, up, rule):
    """The ReLU's lines alpha z <= relu(z) <= s z + t on [lo, up] (Wong and Kolter; CROWN)."""
    active, dead = lo >= 0, up <= 0
    crossing = ~active & ~dead
    s = torch.where(active, torch.ones_like(lo), torch.zeros_like(lo))
    s = torch.where(crossing, up / torch.where(crossing, up - lo, torch.ones_like(lo)), s)
    t = torch.where(crossing, -s * lo, torch.zeros_like(lo))
    if rule == "dual":
        alpha = s
    else:
        alpha = torch.where(crossing, (up >= -lo).to(lo.dtype), active.to(lo.dtype))
    return alpha, s, t


def ref_backward(ws, pre, lam, lo, hi, rule, upto=None):
    """min over x' in [lo, hi] of lam^T z, z the output of Linear layer ``upto`` (default: the last), the
    ReLUs before it relaxed by their lines on the pre-activation boxes ``pre``. One example, lam (S, width)."""
    upto = len(ws) - 1 if upto is None else upto
    const = torch.zeros(lam.shape[0], dtype=DT)
    for k in range(upto, -1, -1):
        w, b = ws[k]
        const = const + lam @ b
        lam = lam @ w
        if k:
            alpha, s, t = ref_lines(*pre[k - 1], rule)
            pos, neg = lam.clamp(min=0), lam.clamp(max=0)
            const = const + neg @ t
            lam = pos * alpha + neg * s
    c, r = (lo + hi) / 2, (hi - lo) / 2
    return lam @ c - lam.abs() @ r + const


def ref_bounds(model, x, y, eps, box, method):
    """(N, K) margin lower bounds by the papers' formulas, computed example by example in float64."""
    ws = weights(model)
    lo, hi = region(x, eps, box)
    k_out = ws[-1][0].shape[0]
    out = []
    for i in range(len(x)):
        l_i, h_i = lo[i], hi[i]
        spec = torch.eye(k_out, dtype=DT)[y[i]][None, :] - torch.eye(k_out, dtype=DT)
        if method == "ibp":
            boxes = ref_ibp_boxes(ws, l_i, h_i)
            if len(ws) == 1:
                out.append(ref_backward(ws, [], spec, l_i, h_i, "dual"))
                continue
            pl, pu = boxes[-2]
            a, b = pl.clamp(min=0), pu.clamp(min=0)  # the last hidden box; the last Linear folded into the spec
            out.append(ref_backward(ws[-1:], [], spec, a, b, "dual"))
            continue
        if method == "crown-ibp":
            pre = ref_ibp_boxes(ws, l_i, h_i)[:-1]
            out.append(ref_backward(ws, pre, spec, l_i, h_i, "crown"))
            continue
        pre = []  # the dual network's layer bounds, layer by layer (Alg. 1)
        for k in range(len(ws) - 1):
            width = ws[k][0].shape[0]
            eye = torch.eye(width, dtype=DT)
            lower = ref_backward(ws, pre, eye, l_i, h_i, "dual", upto=k)
            upper = -ref_backward(ws, pre, -eye, l_i, h_i, "dual", upto=k)
            pre.append((lower, upper))
        out.append(ref_backward(ws, pre, spec, l_i, h_i, "dual"))
    return torch.stack(out)


# --- soundness and agreement -------------------------------------------------------------------------------

@pytest.mark.parametrize("box", [None, (0.0, 1.0)])
@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("hidden", [(6,), (6, 5), (5, 4, 4)])
def test_bounds_equal_the_papers_formulas_and_are_sound(method, hidden, box):
    """Each method equals its paper's formula (written out above) on MLPs with 1 to 3 hidden layers, at radii
    where units are dead, active and crossing, and lies below the true minimum margin found by a dense grid.
    Kills: any changed slope, intercept, sign, clamp or radius in the relaxations, the backward pass, the
    interval boxes, the layer bounds, the margin specification and the input region."""
    model = tiny_mlp(sum(hidden) + len(hidden), hidden)
    x = points(4, 1)
    x[0] = 0.02  # near a corner of [0,1]: the box clips the ball
    y = torch.tensor([0, 1, 2, 1])
    for eps in (0.05, 0.3):
        with torch.no_grad():
            got = METHODS[method](model, x, y, eps, box).to(DT)
        expected = ref_bounds(model, x, y, eps, box, method)
        assert torch.allclose(got, expected, atol=1e-5), (eps, got, expected)
        assert (got <= grid_min_margins(model, x, y, eps, box) + 1e-5).all()
        assert (got.gather(1, y[:, None]) == 0).all()  # the zero row at j = y


def test_every_method_is_exact_on_an_affine_network():
    """Without ReLUs every bound is the exact minimum over the box, attained at one of its 4 corners; the
    IBP box of the logits is exactly their range. Kills: a wrong radius (|W| r), centre or bias term."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 3)).eval()
    x = torch.tensor([[0.3, 0.7], [0.95, 0.1]]).view(2, 1, 1, 2)
    y = torch.tensor([2, 0])
    for eps, box in ((0.1, (0.0, 1.0)), (0.2, None)):
        lo, hi = region(x, eps, box)
        corners = torch.stack([torch.stack([lo[:, 0] if a == 0 else hi[:, 0], lo[:, 1] if b == 0 else hi[:, 1]], 1)
                               for a in (0, 1) for b in (0, 1)], 1)  # (N, 4, 2)
        with torch.no_grad():
            logits = model(corners.float().view(-1, 1, 1, 2)).view(2, 4, 3).to(DT)
            lower, upper = certify.ibp_bounds(model, x, eps, box)
        assert torch.allclose(lower.to(DT), logits.amin(1), atol=1e-6)
        assert torch.allclose(upper.to(DT), logits.amax(1), atol=1e-6)
        margins = (logits.gather(2, y.view(2, 1, 1).expand(2, 4, 1)) - logits).amin(1)
        for name, method in METHODS.items():
            with torch.no_grad():
                assert torch.allclose(method(model, x, y, eps, box).to(DT), margins, atol=1e-6), name


def test_ibp_bounds_are_the_interval_boxes_of_the_logits():
    """ibp_bounds returns Gowal et al.'s interval box of the logits (the formula above), through ReLUs too."""
    model = tiny_mlp(3, (6, 5))
    x = points(3, 2)
    for box in (None, (0.0, 1.0)):
        lo, hi = region(x, 0.2, box)
        with torch.no_grad():
            lower, upper = certify.ibp_bounds(model, x, 0.2, box)
        for i in range(len(x)):
            l_ref, u_ref = ref_ibp_boxes(weights(model), lo[i], hi[i])[-1]
            assert torch.allclose(lower[i].to(DT), l_ref, atol=1e-5) and torch.allclose(upper[i].to(DT), u_ref,
                                                                                         atol=1e-5)


def test_crown_ibp_beta_mixes_with_ibp():
    """Zhang et al.'s Eq. (8): beta * CROWN-IBP + (1 - beta) * IBP; beta = 0 is IBP alone, beta outside [0, 1]
    is refused. Kills: the mix's weights exchanged, the beta = 0 shortcut returning the wrong bound."""
    model = tiny_mlp(4, (6, 5))
    x, y = points(3, 3), torch.tensor([0, 1, 2])
    with torch.no_grad():
        crown = certify.crown_ibp_bounds(model, x, y, 0.3)
        ibp = certify.ibp_margin_bounds(model, x, y, 0.3)
        assert not torch.allclose(crown, ibp, atol=1e-3)  # the mix has two different ends
        assert torch.allclose(certify.crown_ibp_bounds(model, x, y, 0.3, beta=0.0), ibp, atol=1e-6)
        assert torch.allclose(certify.crown_ibp_bounds(model, x, y, 0.3, beta=0.25), 0.25 * crown + 0.75 * ibp,
                              atol=1e-6)
        assert torch.allclose(certify.crown_ibp_bounds(model, x, y, 0.3, beta=1.0), crown)
    for beta in (-0.1, 1.5):
        with pytest.raises(ValueError, match="beta must lie in"):
            certify.crown_ibp_bounds(model, x, y, 0.3, beta=beta)


# --- layers: Normalize and convolutions equal the Linear layer of the same map ------------------------------

def linear_of(affine: nn.Module, in_shape) -> nn.Linear:
    """The nn.Linear computing the same affine map as ``affine`` on flattened inputs (built from its values on
    the zero input and the coordinate vectors)."""
    n = int(torch.tensor(in_shape).prod())
    with torch.no_grad():
        zero = affine(torch.zeros(1, *in_shape)).flatten(1)
        basis = affine(torch.eye(n).view(n, *in_shape)).flatten(1) - zero
    out = nn.Linear(n, basis.shape[1])
    with torch.no_grad():
        out.weight.copy_(basis.T)
        out.bias.copy_(zero[0])
    return out


@pytest.mark.parametrize("conv", [
    dict(in_channels=2, out_channels=3, kernel_size=3, stride=2),  # odd size, stride 2: needs output padding
    dict(in_channels=2, out_channels=2, kernel_size=2, stride=1, padding=1),
    dict(in_channels=2, out_channels=2, kernel_size=3, stride=2, padding=1, bias=False),
])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_normalize_and_conv_give_the_bounds_of_their_linear_maps(method, conv):
    """A model Normalize -> Conv2d -> ReLU -> Flatten -> Linear and the MLP whose first layer is the same
    affine map as Normalize -> Conv2d have the same bounds (every method treats an affine layer exactly).
    Kills: mutants of Normalize's scale and bias, of the convolution's transposed map (stride, padding,
    output padding), of its bias term and of |A| r."""
    torch.manual_seed(7)
    norm = Normalize([0.3, 0.6], [0.5, 2.0])
    layer = nn.Conv2d(**conv)
    with torch.no_grad():
        features = nn.Sequential(norm, layer, nn.Flatten())(torch.zeros(1, 2, 5, 5)).shape[1]
    head = nn.Linear(features, 3)
    model = nn.Sequential(norm, layer, nn.ReLU(), nn.Flatten(), head).eval()
    first = linear_of(nn.Sequential(norm, layer), (2, 5, 5))
    flat = nn.Sequential(nn.Flatten(), first, nn.ReLU(), head).eval()
    # the flattened ReLU sees the conv's channels-first order, as nn.Flatten does
    x = torch.rand(3, 2, 5, 5, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2])
    with torch.no_grad():
        assert torch.allclose(model(x), flat(x), atol=1e-5)
        for box in (None, (0.0, 1.0)):
            a = METHODS[method](model, x, y, 0.05, box)
            b = METHODS[method](flat, x, y, 0.05, box)
            assert torch.allclose(a, b, atol=1e-4), (a, b)
        lower_a, upper_a = certify.ibp_bounds(model, x, 0.05)
        lower_b, upper_b = certify.ibp_bounds(flat, x, 0.05)
        assert torch.allclose(lower_a, lower_b, atol=1e-4) and torch.allclose(upper_a, upper_b, atol=1e-4)


def test_two_conv_layers_and_a_dual_layer_bound_through_them():
    """Two convolutions with a ReLU between: the dual's layer bounds of the second ReLU go back through a
    convolution (and Alg. 1's gap terms), and the result equals that of the equivalent MLP."""
    torch.manual_seed(9)
    c1, c2 = nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.Conv2d(2, 2, 2)
    with torch.no_grad():
        features = nn.Sequential(c1, nn.ReLU(), c2, nn.Flatten())(torch.zeros(1, 1, 5, 5)).shape[1]
    head = nn.Linear(features, 3)
    model = nn.Sequential(c1, nn.ReLU(), c2, nn.ReLU(), nn.Flatten(), head).eval()
    first = linear_of(c1, (1, 5, 5))
    with torch.no_grad():
        mid_shape = c1(torch.zeros(1, 1, 5, 5)).shape[1:]
    second = linear_of(c2, mid_shape)
    flat = nn.Sequential(nn.Flatten(), first, nn.ReLU(), second, nn.ReLU(), head).eval()
    x = torch.rand(3, 1, 5, 5, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2])
    with torch.no_grad():
        for method in METHODS.values():
            for eps in (0.05, 0.2):
                assert torch.allclose(method(model, x, y, eps, (0.0, 1.0)), method(flat, x, y, eps, (0.0, 1.0)),
                                      atol=1e-4)
        expected = ref_bounds(flat, x, y, 0.2, (0.0, 1.0), "dual")
        assert torch.allclose(certify.dual_bounds(model, x, y, 0.2).to(DT), expected, atol=1e-4)


# --- losses: margin_bounds, certified, robust_loss, certified_accuracy -------------------------------------

def test_margin_bounds_dispatches_and_refuses_projections_elsewhere():
    model = tiny_mlp(5, (6, 5))
    x, y = points(3, 4), torch.tensor([0, 1, 2])
    with torch.no_grad():
        for name, method in (("dual", "dual"), ("ibp", "ibp"), ("crown-ibp", "crown-ibp")):
            assert torch.allclose(losses.margin_bounds(model, x, y, 0.2, name).to(DT),
                                  ref_bounds(model, x, y, 0.2, (0.0, 1.0), method), atol=1e-5)
        assert torch.allclose(losses.margin_bounds(model, x, y, 0.2, "dual", None).to(DT),
                              ref_bounds(model, x, y, 0.2, None, "dual"), atol=1e-5)
        assert torch.allclose(losses.margin_bounds(model, x, y, 0.2, "ibp", None).to(DT),
                              ref_bounds(model, x, y, 0.2, None, "ibp"), atol=1e-5)
        # the default method is the dual bound; projections and their generator reach the dual's estimate
        assert torch.allclose(losses.margin_bounds(model, x, y, 0.2).to(DT), ref_bounds(model, x, y, 0.2, (0.0, 1.0),
                                                                                         "dual"), atol=1e-5)
        deep = tiny_mlp(14, (8, 8, 6), inputs=16)
        xd = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(8))
        est = losses.margin_bounds(deep, xd, y, 0.1, "dual", projections=3, generator=torch.Generator().manual_seed(4))
        same = certify.dual_bounds(deep, xd, y, 0.1, projections=3, generator=torch.Generator().manual_seed(4))
        other = certify.dual_bounds(deep, xd, y, 0.1, projections=3, generator=torch.Generator().manual_seed(5))
        assert torch.equal(est, same) and not torch.allclose(est, other)
        assert not torch.allclose(est, certify.dual_bounds(deep, xd, y, 0.1))
    for name in ("ibp", "crown-ibp"):
        with pytest.raises(ValueError, match="projections estimate the dual bound only"):
            losses.margin_bounds(model, x, y, 0.2, name, projections=4)
    with pytest.raises(ValueError, match="unknown bound method 'lp'"):
        losses.margin_bounds(model, x, y, 0.2, "lp")


def test_certified_is_every_other_bound_positive():
    """Certified iff every J_j, j != y, is > 0 (J_y = 0 is ignored; a bound of exactly 0 does not certify)."""
    bounds = torch.tensor([[0.0, 0.5, 0.1], [0.2, 0.0, -0.1], [0.3, 0.0, 0.0], [0.0, 1.0, 2.0]])
    y = torch.tensor([0, 1, 1, 0])
    assert losses.certified(bounds, y).tolist() == [True, False, False, True]


def test_robust_loss_is_the_cross_entropy_of_minus_the_bounds():
    """Wong and Kolter's Thm. 2: the mean CE of the logits -J, and the fraction not certified."""
    model = tiny_mlp(6, (6, 5))
    x, y = points(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    for method in ("dual", "ibp", "crown-ibp"):
        for eps in (0.0, 0.02, 0.3):
            loss, error = losses.robust_loss(model, x, y, eps, method)
            j = ref_bounds(model, x, y, eps, (0.0, 1.0), method)
            expected = -(-j).log_softmax(1).gather(1, y[:, None]).mean()
            assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
            others = j.masked_fill(torch.eye(3, dtype=torch.bool)[y], float("inf"))
            assert error == pytest.approx(1.0 - (others > 0).all(1).double().mean().item())
    loss.backward()  # differentiable in the parameters
    assert all(p.grad is not None for p in model.parameters())
    # with projections: the CE of minus the dual's estimate, drawn from the given generator
    deep = tiny_mlp(15, (8, 8, 6), inputs=16)
    xd = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(8))
    yd = y[:3]
    loss, _ = losses.robust_loss(deep, xd, yd, 0.1, projections=3, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        est = certify.dual_bounds(deep, xd, yd, 0.1, projections=3, generator=torch.Generator().manual_seed(4))
        exact = certify.dual_bounds(deep, xd, yd, 0.1)
    assert loss.item() == pytest.approx(-(-est).log_softmax(1).gather(1, yd[:, None]).mean().item(), abs=1e-6)
    assert loss.item() != pytest.approx(-(-exact).log_softmax(1).gather(1, yd[:, None]).mean().item(), abs=1e-6)


def test_certified_accuracy_counts_the_certified_examples_in_every_batch():
    """The fraction certified over all batches (an odd batch size leaves a short last batch). Kills: a batch
    skipped or counted twice, the count divided by the wrong total, the wrong method or box used."""
    model = tiny_mlp(8, (6, 5))
    x = points(7, 6)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[4:] = (y[4:] + 1) % 3  # wrong labels: never certified
    for method in ("dual", "ibp", "crown-ibp"):
        for eps in (0.01, 0.5):
            j = ref_bounds(model, x, y, eps, (0.0, 1.0), method)
            others = j.masked_fill(torch.eye(3, dtype=torch.bool)[y], float("inf"))
            expected = (others > 0).all(1).double().mean().item()
            assert 0 < expected < 1  # the counts are not trivially all or none
            assert losses.certified_accuracy(model, x, y, eps, method, batch_size=3) == pytest.approx(expected)
    j = ref_bounds(model, x, y, 0.05, None, "dual")
    others = j.masked_fill(torch.eye(3, dtype=torch.bool)[y], float("inf"))
    assert losses.certified_accuracy(model, x, y, 0.05, "dual", box=None, batch_size=2) == pytest.approx(
        (others > 0).all(1).double().mean().item())


# --- the random-projection estimate of the dual's layer bounds ----------------------------------------------

def test_projection_estimate_is_the_median_of_cauchy_projections():
    """Wong et al. 2018's estimate: with k projections the layer-bound spread of each unit is the median of
    |nu^T R_i| (R_i standard Cauchy, scaled by the source's weights), which converges to the l1 norm (the
    exact spread) as k grows, and one hidden layer uses exact bounds (nothing to estimate). Kills: mean
    instead of median, unscaled projections, a wrong Cauchy draw."""
    one = tiny_mlp(10, (6,))
    x, y = points(3, 7), torch.tensor([0, 1, 2])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        assert torch.allclose(certify.dual_bounds(one, x, y, 0.2, projections=3, generator=g),
                              certify.dual_bounds(one, x, y, 0.2), atol=1e-6)
    deep = tiny_mlp(11, (8, 8, 6), inputs=16)
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        exact = certify.dual_bounds(deep, x, y, 0.1)
        errors = []
        for k in (5, 400, 20000):
            est = certify.dual_bounds(deep, x, y, 0.1, projections=k, generator=torch.Generator().manual_seed(1))
            errors.append(((est - exact).abs().max() / exact.abs().max()).item())
    assert errors[-1] < 0.03 and errors[-1] < errors[0]
    for bad in (0, True, 2.5):
        with pytest.raises(ValueError, match="projections must be None or a positive number"):
            certify.dual_bounds(deep, x, y, 0.1, projections=bad)
    with torch.no_grad():  # one projection is a (crude) estimate, but allowed
        assert certify.dual_bounds(deep, x, y, 0.1, projections=1, generator=g).shape == (3, 3)


def test_float64_models_get_float64_bounds():
    """A float64 model and float64 images: every bound is computed in float64 and equals the formulas.
    Kills: the specification built in the default dtype (float32), which a float64 pass cannot multiply."""
    model = tiny_mlp(12, (6, 5)).double()
    x, y = points(3, 9).double(), torch.tensor([0, 1, 2])
    for method in METHODS:
        with torch.no_grad():
            got = METHODS[method](model, x, y, 0.2, (0.0, 1.0))
        assert got.dtype == torch.float64
        assert torch.allclose(got, ref_bounds(model, x, y, 0.2, (0.0, 1.0), method), atol=1e-10)


def test_a_network_ending_in_a_relu_is_bounded_soundly():
    """Logits that pass through a final ReLU: that ReLU is relaxed too, and every bound stays below the
    grid's minimum margin. Kills: the relaxation of the last layer's box left out."""
    torch.manual_seed(13)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 3), nn.ReLU()).eval()
    x, y = points(4, 10), torch.tensor([0, 1, 2, 0])
    for method in METHODS:
        for box in (None, (0.0, 1.0)):
            with torch.no_grad():
                got = METHODS[method](model, x, y, 0.2, box).to(DT)
            assert (got <= grid_min_margins(model, x, y, 0.2, box) + 1e-5).all(), method


def test_ibp_bounds_refuses_a_bad_box():
    model = tiny_mlp(1, (4,))
    x = points(2, 1)
    for box in ((1.0, 0.0), (0.0,), (0.5, 0.5)):
        with pytest.raises(ValueError, match="box must be None or a pair"):
            certify.ibp_bounds(model, x, 0.1, box)


def test_dual_layer_bounds_keep_a_single_crossing_units_gap():
    """Alg. 1's second-layer bounds include the gap term of every crossing unit of the first ReLU layer, also
    when there is exactly one (the others active or dead). Checked against the formula and the grid.
    Kills: the gap source dropped when the batch's largest count of crossing units is 1."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 3)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 1.0], [1.0, 0.0], [-1.0, 0.0]]))
        model[1].bias.copy_(torch.tensor([-1.0, 2.0, -3.0]))  # crossing, active, dead on the box below
        model[3].weight.copy_(torch.tensor([[2.0, -0.5, 1.0], [-1.5, 0.4, 0.3]]))
        model[3].bias.copy_(torch.tensor([0.3, -0.2]))
        model[5].weight.copy_(torch.tensor([[1.0, -1.0], [-0.5, 1.0], [0.2, 0.1]]))
        model[5].bias.zero_()
    x = torch.tensor([[0.5, 0.5], [0.45, 0.6]]).view(2, 1, 1, 2)
    y = torch.tensor([0, 1])
    for box in (None, (0.0, 1.0)):
        with torch.no_grad():
            got = certify.dual_bounds(model, x, y, 0.3, box).to(DT)
        assert torch.allclose(got, ref_bounds(model, x, y, 0.3, box, "dual"), atol=1e-5)
        assert (got <= grid_min_margins(model, x, y, 0.3, box) + 1e-5).all()


def test_a_model_without_a_vector_of_logits_is_refused():
    """Margins need logits (N, K): a model ending in a convolution, or one with no affine layer at all, is
    refused with a TypeError that says so (not a StopIteration or a shape error deep inside)."""
    x, y = points(2, 1), torch.tensor([0, 1])
    for model in (nn.Sequential(nn.Conv2d(1, 2, 1)), nn.Sequential(nn.ReLU())):
        for method in METHODS.values():
            with pytest.raises(TypeError, match="vector of logits"):
                method(model, x, y, 0.1, (0.0, 1.0))


def test_margin_bounds_passes_the_box_on_to_crown_ibp():
    """margin_bounds(method="crown-ibp", box=None) bounds over the plain ball, which is larger than the ball
    cut by [0,1] near the edges of the box: the bounds are lower (never higher) and equal to crown_ibp_bounds
    with the same box. Kills: the box dropped or replaced on the way to CROWN-IBP."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    x = torch.tensor([[0.0, 0.02, 0.99, 1.0], [0.5, 0.01, 0.3, 0.97]]).view(2, 1, 2, 2)
    y = torch.tensor([0, 2])
    with torch.no_grad():
        plain = certify.margin_bounds(model, x, y, 0.1, method="crown-ibp", box=None)
        boxed = certify.margin_bounds(model, x, y, 0.1, method="crown-ibp", box=(0.0, 1.0))
        assert torch.allclose(plain, certify.crown_ibp_bounds(model, x, y, 0.1, box=None), atol=1e-6)
        assert torch.allclose(boxed, certify.crown_ibp_bounds(model, x, y, 0.1, box=(0.0, 1.0)), atol=1e-6)
    others = torch.ones_like(plain, dtype=torch.bool).scatter(1, y[:, None], False)
    assert (plain[others] <= boxed[others] + 1e-6).all() and (plain[others] < boxed[others] - 1e-4).any()
