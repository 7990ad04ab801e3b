"""advlib.certify.dual_bounds and robust_loss against the authors' package, convex_adversarial 0.4.4.

``DualNetwork(net, X, eps, bounded_input=...)`` applied to c = e_y - e_j returns Wong and Kolter's J, the
lower bound on f_y - f_j (its ``robust_loss`` takes the cross-entropy of -J); ``bounded_input=True`` is the
ball intersected with [0,1]. It knows no Normalize layer and no stride that needs an output padding, so the
nets here have neither. Skipped when convex_adversarial is not installed (requirements-peers.txt).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from advlib import certify, data, models

convex_adversarial = pytest.importorskip("convex_adversarial")

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "wong_kolter_fashion_mnist.pth"


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 40), nn.ReLU(), nn.Linear(40, 30), nn.ReLU(),
                         nn.Linear(30, 10))


def cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 20), nn.ReLU(), nn.Linear(20, 10))


def theirs(net, x, y, eps, bounded):
    eye = torch.eye(10)
    c = eye[y].unsqueeze(1) - eye.unsqueeze(0)
    with torch.no_grad():
        return convex_adversarial.DualNetwork(net, x, eps, bounded_input=bounded)(c)


@pytest.fixture(scope="module")
def images(fashion_test):
    x, y = fashion_test
    return x[:10].clone(), y[:10].clone()


@pytest.mark.parametrize("build", [mlp, cnn, models.wong_kolter_cnn])
@pytest.mark.parametrize("bounded", [False, True])
def test_dual_bounds_equal_convex_adversarial(build, bounded, images, one_thread):
    torch.manual_seed(0)
    net = build().eval()
    x, y = images
    if build is models.wong_kolter_cnn:  # the largest: fewer images
        x, y = x[:4], y[:4]
    for eps in (0.01, 0.1):
        with torch.no_grad():
            ours = certify.dual_bounds(net, x, y, eps, box=(0.0, 1.0) if bounded else None)
        reference = theirs(net, x, y, eps, bounded)
        assert torch.allclose(ours, reference, atol=1e-4, rtol=0), (ours - reference).abs().max()
        assert ours.abs().max() > 0.05  # not a trivial agreement at zero


@pytest.mark.parametrize("bounded", [False, True])
def test_robust_loss_equals_convex_adversarial(bounded, images, one_thread):
    torch.manual_seed(1)
    net = cnn().eval()
    x, y = images
    box = (0.0, 1.0) if bounded else None
    errors = []
    for eps in (0.001, 0.02):
        loss, error = certify.robust_loss(net, x, y, eps, box=box)
        errors.append(error)
        ref_loss, ref_error = convex_adversarial.robust_loss(net, eps, x, y, bounded_input=bounded)
        assert loss.item() == pytest.approx(ref_loss.item(), abs=1e-5)
        assert error == pytest.approx(ref_error)
        assert isinstance(error, float)
    assert 0 < errors[0] < 1 and errors[1] == 1  # some examples certified at the smaller eps, none at the larger


def test_the_authors_model(fashion_test, one_thread):
    """On Wong and Kolter's own robust Fashion-MNIST model (when ../shared/reference holds it): the same
    bounds as theirs, on a trained net where few units cross."""
    if not REFERENCE.is_file():
        pytest.skip(f"the authors' model is not at {REFERENCE}")
    net = models.wong_kolter_cnn()
    net.load_state_dict(torch.load(REFERENCE, weights_only=True, map_location="cpu"))
    net.eval()
    x, y = data.subset(*fashion_test, 20, seed=0)
    with torch.no_grad():
        ours = certify.dual_bounds(net, x, y, 0.1, box=None)
    reference = theirs(net, x, y, 0.1, False)
    assert torch.allclose(ours, reference, atol=1e-4, rtol=0)
    assert 0 < certify.certified(ours, y).sum() < len(y)
