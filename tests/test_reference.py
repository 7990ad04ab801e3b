"""Wong and Kolter's published robust Fashion-MNIST model against advlib's model and data pipeline.

The authors' weights (``../shared/reference`` beside the checkout; skipped when absent) must load
strictly into :func:`advlib.models.wong_kolter_cnn`, and their test error on the Fashion-MNIST test
set that :func:`advlib.data.load` gives must be the paper's 21.73% (Table 1), exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from advlib import metrics, models

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
WEIGHTS = REFERENCE / "wong_kolter_fashion_mnist.pth"


@pytest.fixture(scope="module")
def reference_model():
    if not WEIGHTS.is_file():
        pytest.skip(f"the authors' model is not at {WEIGHTS}")
    state = torch.load(WEIGHTS, weights_only=True, map_location="cpu")
    model = models.wong_kolter_cnn()
    model.load_state_dict(state, strict=True)
    return model.eval()


def test_reference_weights_load_strictly(reference_model):
    state = torch.load(WEIGHTS, weights_only=True, map_location="cpu")
    assert list(state) == list(reference_model.state_dict())
    for k, v in reference_model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_reference_test_error_is_the_papers(reference_model, fashion_test):
    x, y = fashion_test
    assert len(x) == 10_000
    predicted = metrics.predict(reference_model, x)
    errors = (predicted != y).sum().item()
    assert errors == 2173  # test error 21.73%
    assert torch.equal(torch.bincount(predicted, minlength=10) > 0, torch.ones(10, dtype=torch.bool))
