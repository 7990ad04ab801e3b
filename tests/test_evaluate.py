"""advlib.evaluate: attacks and bounds run over a dataset: attack_batches, robust accuracy, PGD accuracy, the
accuracy of a minimal-perturbation attack at each budget, the robustness score, certified margins, the transfer
matrix and the checks of their inputs.

Most attacks here are test-local callables ``attack(model, x, y) -> x_adv`` (a tiny FGSM among them), so
these tests depend on no attack module of advlib; expected values are computed by hand or from closed forms.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlib import evaluate, metrics
from advlib.attacks import pgd


def fgsm(model, x, y, *, eps):
    """Goodfellow et al.'s one step x + eps * sign(grad_x loss), clipped to [0,1] (test-local)."""
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


def identity(model, x, y):
    return x.clone()


def linear(seed, pixels=16, classes=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(pixels, classes))


class FirstPixels(nn.Module):
    """Logits are the first ``k`` pixels: the predicted class is the index of the brightest one."""

    def __init__(self, k=3):
        super().__init__()
        self.k = k
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x.flatten(1)[:, : self.k] * self.scale


def brightest(labels, k=3):
    """Images of 2x2 pixels whose brightest pixel (so FirstPixels' prediction) is ``labels[i]``."""
    x = torch.full((len(labels), 1, 2, 2), 0.1)
    x.view(len(labels), -1)[torch.arange(len(labels)), torch.as_tensor(labels)] = 0.9
    return x


@pytest.fixture
def problem():
    """A linear model, 64 images and labels it gets right except for every fifth one."""
    model = linear(0)
    x = torch.rand(64, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::5] = (y[::5] + 1) % 3
    return model, x, y


def hand_count(model, x, y, x_adv):
    """Robust accuracy from the definition: right on x and on x_adv, counted with plain torch."""
    with torch.no_grad():
        return ((model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)).float().mean().item()


# --- attack_batches -----------------------------------------------------------------------------

def test_attack_batches_equals_the_attack_on_the_whole_batch(problem):
    model, x, y = problem
    whole = fgsm(model, x, y, eps=0.2)
    batched = evaluate.attack_batches(fgsm, model, x, y, batch_size=10, eps=0.2)
    assert batched.shape == x.shape and batched.device == x.device
    torch.testing.assert_close(batched, whole, rtol=0, atol=1e-7)
    targets = (y + 1) % 3
    torch.testing.assert_close(evaluate.attack_batches(pgd, model, x, targets, batch_size=7, eps=0.1, alpha=0.02,
                                                       steps=5, random_start=False, targeted=True),
                               pgd(model, x, targets, eps=0.1, alpha=0.02, steps=5, random_start=False, targeted=True),
                               rtol=0, atol=1e-6)


def test_attack_batches_passes_keywords_and_batches_in_order(problem):
    model, x, y = problem
    seen = []

    def spy(model, xb, yb, *, shift):
        seen.append((len(xb), xb.device, yb.device, shift))
        return (xb + shift).clamp(0, 1)

    out = evaluate.attack_batches(spy, model, x, y, batch_size=30, shift=0.5)
    assert [(n, s) for n, _, _, s in seen] == [(30, 0.5), (30, 0.5), (4, 0.5)]
    device = next(model.parameters()).device
    assert all(d1 == device and d2 == device for _, d1, d2, _ in seen)
    assert torch.equal(out, (x + 0.5).clamp(0, 1))  # in the order of x
    empty = evaluate.attack_batches(spy, model, x[:0], y[:0], shift=0.5)
    assert empty.shape == (0, 1, 4, 4) and len(seen) == 3  # an empty dataset: no attack runs


def test_attack_batches_rejects_bad_input(problem):
    model, x, y = problem
    with pytest.raises(ValueError, match=r"y must be a 1-D tensor of labels shaped \(N,\), got shape \(64, 1\)"):
        evaluate.attack_batches(fgsm, model, x, y[:, None], eps=0.1)
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 3\) \(the model has 3 classes\)"):
        evaluate.attack_batches(fgsm, model, x, y + 1, eps=0.1)  # caught on the attack's first logits
    nan = x.clone()
    nan[5, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x holds 1 values that are NaN or infinite"):
        evaluate.attack_batches(fgsm, model, nan, y, eps=0.1)
    with pytest.raises(ValueError, match="the images hold 64 examples but y holds 63 labels"):
        evaluate.attack_batches(fgsm, model, x, y[:-1], eps=0.1)
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1, got 0"):
        evaluate.attack_batches(fgsm, model, x, y, batch_size=0, eps=0.1)
    with pytest.raises(TypeError, match="attack must be a callable attack"):
        evaluate.attack_batches("fgsm", model, x, y, eps=0.1)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        evaluate.attack_batches(fgsm, "model", x, y, eps=0.1)
    with pytest.raises(ValueError, match="shaped like its input"):
        evaluate.attack_batches(lambda m, a, b: a[:1], model, x, y)
    with pytest.raises(ValueError, match="the attack's output holds 1024 values that are NaN"):
        evaluate.attack_batches(lambda m, a, b: a.clone().fill_(float("nan"))[:, :, :1, :1].expand_as(a), model, x, y,
                                batch_size=64)


# --- robust_accuracy ----------------------------------------------------------------------------

def test_identity_attack_gives_the_clean_accuracy(problem):
    model, x, y = problem
    clean = metrics.accuracy(model, x, y)
    assert clean == pytest.approx(1 - 13 / 64)
    assert evaluate.robust_accuracy(model, identity, (x, y), batch_size=10) == pytest.approx(clean)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=7)
    assert evaluate.robust_accuracy(model, identity, loader) == pytest.approx(clean)


def test_fgsm_lowers_it_and_it_matches_a_manual_count(problem):
    model, x, y = problem
    attack = partial(fgsm, eps=0.2)
    robust = evaluate.robust_accuracy(model, attack, (x, y), batch_size=16)
    x_adv = fgsm(model, x, y, eps=0.2)  # per-example gradients: batching does not change it
    assert robust == pytest.approx(hand_count(model, x, y, x_adv))
    assert robust < metrics.accuracy(model, x, y)


def test_examples_wrong_when_clean_are_never_robust():
    """An "attack" that makes every image classified as its label still cannot make them robust."""
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    x = brightest(labels)
    y = labels.clone()
    y[:2] = torch.tensor([2, 2])  # two examples wrong when clean

    def fix(model, x, y):
        return brightest(y)

    assert metrics.accuracy(FirstPixels(), brightest(y), y) == 1.0
    assert evaluate.robust_accuracy(FirstPixels(), fix, (x, y)) == pytest.approx(4 / 6)


def test_robust_examples_are_per_example_and_their_mean_is_robust_accuracy():
    """Per example and in order: an attack that breaks only the even examples leaves exactly the odd ones
    that were right when clean; the mean is robust_accuracy, exactly (k / n)."""
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1])
    x, y = brightest(labels), labels.clone()
    y[[3, 4]] = torch.tensor([1, 2])  # an even and an odd example wrong when clean
    even = torch.arange(len(x)) % 2 == 0

    def break_even(model, xb, yb):
        return torch.where(even.view(-1, 1, 1, 1), brightest((yb + 1) % 3), xb)

    robust = evaluate.robust_examples(FirstPixels(), break_even, (x, y), batch_size=len(x))
    assert robust.dtype == torch.bool and robust.shape == (len(x),)
    assert robust.tolist() == [False, True, False, False, False, True, False, True, False, True, False]
    accuracy = evaluate.robust_accuracy(FirstPixels(), break_even, (x, y), batch_size=len(x))
    assert accuracy == 4 / 11


def test_batches_reach_the_attack_on_the_models_device_and_attack_sees_every_example(problem):
    model, x, y = problem
    seen = []

    def spy(model, xb, yb):
        seen.append((len(xb), xb.device, yb.device))
        return xb

    evaluate.robust_accuracy(model, spy, (x, y), batch_size=30)
    assert [n for n, _, _ in seen] == [30, 30, 4]
    device = next(model.parameters()).device
    assert all(d1 == device and d2 == device for _, d1, d2 in seen)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_robust_accuracy_on_a_gpu_model_with_cpu_data(problem):
    model, x, y = problem
    expected = evaluate.robust_accuracy(model, partial(fgsm, eps=0.2), (x, y))
    gpu = model.cuda()
    assert evaluate.robust_accuracy(gpu, partial(fgsm, eps=0.2), (x, y)) == pytest.approx(expected)


def test_robust_accuracy_rejects_bad_input(problem):
    model, x, y = problem
    with pytest.raises(ValueError, match="the images hold 64 examples but y holds 63 labels"):
        evaluate.robust_accuracy(model, identity, (x, y[:-1]))
    with pytest.raises(ValueError, match="empty"):
        evaluate.robust_accuracy(model, identity, (x[:0], y[:0]))
    with pytest.raises(ValueError, match="no batch"):
        evaluate.robust_accuracy(model, identity, [])
    with pytest.raises(ValueError, match="shaped like"):
        evaluate.robust_accuracy(model, lambda m, xb, yb: xb[:1], (x, y))
    with pytest.raises(TypeError, match="expected a DataLoader of"):
        evaluate.robust_accuracy(model, identity, x)
    with pytest.raises(TypeError, match="attack must be a callable"):
        evaluate.robust_accuracy(model, None, (x, y))
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1, got -2"):
        evaluate.robust_accuracy(model, identity, (x, y), batch_size=-2)


def test_robust_accuracy_refuses_a_column_of_labels_instead_of_a_fraction_of_20(problem):
    """(N, 1) labels broadcast against (N,) predictions into an (N, N) table: its count over N was a
    "fraction" far above 1. Now they are refused, for a pair of tensors and for a loader's batches."""
    model, x, y = problem
    with torch.no_grad():
        table = (model(x).argmax(1) == y[:, None])  # what the broadcast compared
    assert table.sum().item() / len(y) > 1  # the silent wrong answer
    with pytest.raises(ValueError, match=r"y must be a 1-D tensor of labels shaped \(N,\), got shape \(64, 1\)"):
        evaluate.robust_accuracy(model, identity, (x, y[:, None]))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y[:, None]), batch_size=16)
    with pytest.raises(ValueError, match=r"a batch's labels must be a 1-D tensor of labels shaped \(N,\)"):
        evaluate.robust_accuracy(model, identity, loader)


def test_robust_accuracy_refuses_labels_out_of_range_and_nan_pixels(problem):
    model, x, y = problem
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 3\) \(the model has 3 classes\), "
                                         r"got labels in \[2, 3\]"):
        evaluate.robust_accuracy(model, identity, (x, y + 1))
    nan = x.clone()
    nan[10, 0, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="x holds 1 values that are NaN or infinite"):
        evaluate.robust_accuracy(model, identity, (nan, y))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(nan, y), batch_size=16)
    with pytest.raises(ValueError, match="a batch's images holds 1 values that are NaN"):
        evaluate.robust_accuracy(model, identity, loader)
    with pytest.raises(ValueError, match="the attack's output holds"):
        evaluate.robust_accuracy(model, lambda m, xb, yb: xb * float("nan"), (x, y))


# --- pgd_accuracy -------------------------------------------------------------------------------

def test_pgd_accuracy_is_the_accuracy_on_seeded_pgd(problem):
    model, x, y = problem
    x_adv = pgd(model, x, y, eps=0.1, alpha=0.025, steps=5, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = (model(x_adv).argmax(1) == y).float().mean().item()
    assert evaluate.pgd_accuracy(model, x, y, eps=0.1, steps=5, seed=3) == pytest.approx(expected)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    assert evaluate.pgd_accuracy(model, x, y, eps=0.0) == pytest.approx(clean)


def test_pgd_accuracy_rejects_bad_input(problem):
    model, x, y = problem
    with pytest.raises(ValueError, match="eps must be a finite number, got inf"):
        evaluate.pgd_accuracy(model, x, y, eps=float("inf"))
    with pytest.raises(ValueError, match=r"eps must lie in \[0, inf\), got -0.1"):
        evaluate.pgd_accuracy(model, x, y, eps=-0.1)
    with pytest.raises(ValueError, match=r"shaped \(N,\), got shape \(64, 1\)"):
        evaluate.pgd_accuracy(model, x, y[:, None], eps=0.1)
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        evaluate.pgd_accuracy(model, x, y, eps=0.1, alpha=float("nan"))


# --- accuracy_under_distance --------------------------------------------------------------------

def test_accuracy_under_distance_of_hand_made_answers():
    """Six images, five right when clean; the "attack" moved each by a known Linf distance, fooling some."""
    model = FirstPixels()
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    x = brightest(torch.tensor([0, 1, 2, 0, 1, 0]))  # the last one is wrong when clean
    x_adv = brightest(torch.tensor([1, 1, 0, 2, 0, 1]))  # fools examples 0, 2, 3, 4 (5 was wrong anyway)
    x_adv[:, 0, 1, 1] = torch.tensor([0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    # Linf distances: the brightest pixel moves 0.1 <-> 0.9 (0.8) when the class changes, 0 when it does not;
    # shrink the moves of examples 2 and 3 by leaving the old brightest pixel at 0.5, not 0.1
    x_adv[2, 0, 1, 0] = 0.5  # old brightest (pixel 2) 0.9 -> 0.5: distance 0.8 still from pixel 0
    x_adv[2, 0, 0, 0] = 0.6  # new brightest 0.1 -> 0.6: distance max(0.5, 0.4) = 0.5
    x_adv[3, 0, 0, 0] = 0.6  # old brightest 0.9 -> 0.6 (0.3); new brightest (pixel 2) 0.1 -> 0.9 (0.8)
    x_adv[3, 0, 1, 0] = 0.7  # ... 0.1 -> 0.7 instead: distance 0.6
    distances = (x_adv - x).flatten(1).abs().amax(1)
    torch.testing.assert_close(distances, torch.tensor([0.8, 0.0, 0.5, 0.6, 0.8, 0.8]))
    # robust at eps: right clean (0-4), and not fooled within eps (fooled: 0 at 0.8, 2 at 0.5, 3 at 0.6, 4 at 0.8)
    expected = {0.0: 5 / 6, 0.49: 5 / 6, 0.5: 4 / 6, 0.6: 3 / 6, 0.79: 3 / 6, 0.8: 1 / 6, 1.0: 1 / 6}
    got = evaluate.accuracy_under_distance(model, x, y, x_adv, list(expected))
    assert got == pytest.approx(list(expected.values()))
    assert evaluate.accuracy_under_distance(model, x, y, x_adv, 0.55) == pytest.approx(4 / 6)
    on_a_tensor = evaluate.accuracy_under_distance(model, x, y, x_adv, torch.tensor([0.5, 0.8]))
    assert on_a_tensor == pytest.approx([4 / 6, 1 / 6])
    # L0: every fooled example changed 2 pixels (the old brightest and the new one), example 1 none
    l0 = evaluate.accuracy_under_distance(model, x, y, x_adv, [1, 2], norm="l0")
    assert l0 == pytest.approx([5 / 6, 1 / 6])


def test_accuracy_under_distance_rejects_bad_input():
    model = FirstPixels()
    y = torch.tensor([0, 1, 2])
    x = brightest(y)
    with pytest.raises(ValueError, match="eps must be a finite number, got inf"):
        evaluate.accuracy_under_distance(model, x, y, x, [0.1, float("inf")])
    with pytest.raises(ValueError, match=r"eps must lie in \[0, inf\), got -1"):
        evaluate.accuracy_under_distance(model, x, y, x, -1.0)
    with pytest.raises(TypeError, match="eps must be a number or a sequence of numbers, got dict"):
        evaluate.accuracy_under_distance(model, x, y, x, {0.1: 1})
    with pytest.raises(ValueError, match="unknown norm 'l1'"):
        evaluate.accuracy_under_distance(model, x, y, x, 0.1, norm="l1")
    with pytest.raises(ValueError, match="x and x_adv must have one shape"):
        evaluate.accuracy_under_distance(model, x, y, x[:2], 0.1)
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 3\)"):
        evaluate.accuracy_under_distance(model, x, y + 1, x, 0.1)
    with pytest.raises(ValueError, match=r"shaped \(N,\), got shape \(3, 1\)"):
        evaluate.accuracy_under_distance(model, x, y[:, None], x, 0.1)


# --- robustness_score ---------------------------------------------------------------------------

def test_robustness_score_counts_by_hand(problem):
    model, x, y = problem
    attacks = {"FGSM 0.1": partial(fgsm, eps=0.1), "far": partial(fgsm, eps=0.3), "none": identity}
    score = evaluate.robustness_score(model, attacks, (x, y), 0.1, batch_size=20)
    x_near = fgsm(model, x, y, eps=0.1)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
        near = model(x_near).argmax(1) == y
    assert torch.equal(score.correct, clean) and score.accuracy == pytest.approx(clean.float().mean().item())
    # the eps = 0.3 step lies outside the 0.1-ball (every pixel not clipped moves by 0.3): it never counts
    assert score.broken["far"] == 0 and score.broken["none"] == 0
    assert score.broken["FGSM 0.1"] == pytest.approx((clean & ~near).float().mean().item())
    assert score.broken["FGSM 0.1"] > 0
    assert torch.equal(score.robust, clean & near)
    assert score.upper_bound == pytest.approx((clean & near).float().mean().item())
    assert score.eps == 0.1 and score.norm == "linf"


def test_robustness_score_rejects_bad_input(problem):
    model, x, y = problem
    suite = {"FGSM": partial(fgsm, eps=0.1)}
    with pytest.raises(ValueError, match="eps must be a finite number, got inf"):
        evaluate.robustness_score(model, suite, (x, y), float("inf"))
    with pytest.raises(ValueError, match=r"eps must lie in \[0, inf\), got -1"):
        evaluate.robustness_score(model, suite, (x, y), -1.0)
    with pytest.raises(ValueError, match="attacks is empty"):
        evaluate.robustness_score(model, {}, (x, y), 0.1)
    with pytest.raises(TypeError, match="attacks must be a mapping"):
        evaluate.robustness_score(model, [identity], (x, y), 0.1)
    with pytest.raises(TypeError, match=r"attacks\['bad'\] must be a callable"):
        evaluate.robustness_score(model, {"bad": 0.1}, (x, y), 0.1)
    with pytest.raises(ValueError, match=r"unknown norm 'l1'; expected one of \('linf', 'l2'\)"):
        evaluate.robustness_score(model, suite, (x, y), 0.1, norm="l1")
    with pytest.raises(ValueError, match=r"shaped \(N,\), got shape \(64, 1\)"):
        evaluate.robustness_score(model, suite, (x, y[:, None]), 0.1)
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 3\)"):
        evaluate.robustness_score(model, suite, (x, y + 1), 0.1)


# --- certified margins --------------------------------------------------------------------------

def exact_worst_margins(model, x, y, eps):
    """min over the box [max(x - eps, 0), min(x + eps, 1)] and over j != y of the linear margin
    (w_y - w_j) x' + b_y - b_j: for a linear model each coordinate takes whichever end of its interval is
    worse, a closed form."""
    weight, bias = model[1].weight.detach(), model[1].bias.detach()
    flat = x.flatten(1)
    low, high = (flat - eps).clamp(min=0), (flat + eps).clamp(max=1)
    c = weight[y][:, None, :] - weight[None, :, :]  # (N, K, n): w_y - w_j
    d = bias[y][:, None] - bias[None, :]
    worst = torch.minimum(c * low[:, None, :], c * high[:, None, :]).sum(dim=2) + d
    return worst.scatter(1, y[:, None], float("inf")).min(dim=1).values


@pytest.mark.parametrize("method", ["dual", "ibp", "crown-ibp"])
def test_worst_margins_of_a_linear_model_are_exact(problem, method):
    """For one linear layer every relaxation is exact: the bound is the closed-form worst margin."""
    model, x, y = problem
    worst = evaluate.worst_margins(model, x, y, 0.05, method=method, batch_size=20)
    assert worst.shape == (64,) and worst.device == x.device
    torch.testing.assert_close(worst, exact_worst_margins(model, x, y, 0.05), rtol=1e-5, atol=1e-5)
    # eps = 0: the margin at x itself, negative exactly where the model is wrong
    with torch.no_grad():
        logits = model(x)
    at_x = logits.gather(1, y[:, None]) - logits
    expected = at_x.scatter(1, y[:, None], float("inf")).min(dim=1).values
    torch.testing.assert_close(evaluate.worst_margins(model, x, y, 0.0, method=method), expected,
                               rtol=1e-5, atol=1e-5)


def test_certified_examples_are_those_whose_exact_worst_margin_is_positive(problem):
    model, x, y = problem
    exact = exact_worst_margins(model, x, y, 0.02) > 0
    assert 0 < exact.sum() < 64  # some certified, some not
    assert torch.equal(evaluate.certified_examples(model, x, y, 0.02, batch_size=10), exact)
    assert torch.equal(evaluate.certified_examples(model, x, y, 0.02, methods=["ibp"]), exact)
    candidates = torch.arange(64) % 2 == 0
    assert torch.equal(evaluate.certified_examples(model, x, y, 0.02, candidates=candidates), exact & candidates)


def test_bounds_over_a_dataset_reject_bad_input(problem):
    model, x, y = problem
    with pytest.raises(ValueError, match="eps must be a finite number, got inf"):
        evaluate.worst_margins(model, x, y, float("inf"))
    with pytest.raises(ValueError, match="unknown bound method 'milp'"):
        evaluate.worst_margins(model, x, y, 0.1, method="milp")
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 3\) \(the model has 3 classes\)"):
        evaluate.worst_margins(model, x, y + 1, 0.1)
    with pytest.raises(ValueError, match=r"shaped \(N,\), got shape \(64, 1\)"):
        evaluate.certified_examples(model, x, y[:, None], 0.1)
    with pytest.raises(ValueError, match="methods must be a non-empty sequence"):
        evaluate.certified_examples(model, x, y, 0.1, methods=())
    with pytest.raises(ValueError, match="methods must be a non-empty sequence"):
        evaluate.certified_examples(model, x, y, 0.1, methods="ibp")
    with pytest.raises(ValueError, match=r"candidates must be None or a bool tensor with one flag per example \(64,\)"):
        evaluate.certified_examples(model, x, y, 0.1, candidates=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1, got 0"):
        evaluate.certified_examples(model, x, y, 0.1, batch_size=0)


# --- transfer matrix ----------------------------------------------------------------------------

def test_transfer_matrix_of_two_tiny_models(problem):
    _, x, y = problem
    models = {"A": linear(0), "B": linear(1)}
    targets = {**models, "C": linear(2)}
    attack = partial(fgsm, eps=0.25)
    calls = []

    def counted(model, xb, yb):
        calls.append(len(xb))
        return attack(model, xb, yb)

    result = evaluate.transfer_matrix(models, targets, counted, x, y, batch_size=1000)
    errors, rows, cols, distortion = result
    assert rows == ["A", "B"] and cols == ["A", "B", "C"]
    assert errors.shape == (2, 3)
    assert calls == [64, 64]  # each source's examples are made once, and every target reuses them
    for i, source in enumerate(models.values()):
        x_adv = attack(source, x, y)
        with torch.no_grad():
            assert errors[i, i].item() == pytest.approx((source(x_adv).argmax(1) != y).float().mean().item())
            for j, target in enumerate(targets.values()):
                assert errors[i, j].item() == pytest.approx((target(x_adv).argmax(1) != y).float().mean().item())
        rms = (x_adv - x).flatten(1).pow(2).mean(1).sqrt().mean().item()
        assert distortion[i].item() == pytest.approx(rms, rel=1e-5)
    assert errors[0, 0] > 0.5 and errors[1, 1] > 0.5
    assert result.to_dict()["B"]["C"] == pytest.approx(errors[1, 2].item())
    # batching changes nothing for a per-example attack
    small = evaluate.transfer_matrix(models, targets, attack, x, y, batch_size=9)
    torch.testing.assert_close(small.errors, errors)


def test_transfer_matrix_with_an_attack_per_source(problem):
    """Szegedy's noise rows: a source whose "attack" ignores the model."""
    _, x, y = problem
    model = linear(0)

    def nothing(m, xb, yb):
        return xb

    result = evaluate.transfer_matrix({"fgsm": model, "none": model}, {"m": model},
                                      {"fgsm": partial(fgsm, eps=0.25), "none": nothing}, x, y)
    with torch.no_grad():
        assert result.errors[1, 0].item() == pytest.approx((model(x).argmax(1) != y).float().mean().item())
    assert result.errors[0, 0] > result.errors[1, 0]
    assert result.distortion[1].item() == 0


def test_transfer_matrix_rejects_bad_input(problem):
    model, x, y = problem
    with pytest.raises(ValueError, match="sources must hold at least one named model"):
        evaluate.transfer_matrix({}, {"m": model}, identity, x, y)
    with pytest.raises(ValueError, match="the images hold 64 examples but y holds 3 labels"):
        evaluate.transfer_matrix({"m": model}, {"m": model}, identity, x, y[:3])
    with pytest.raises(ValueError, match="empty"):
        evaluate.transfer_matrix({"m": model}, {"m": model}, identity, x[:0], y[:0])
    with pytest.raises(ValueError, match="no attack"):
        evaluate.transfer_matrix({"m": model, "n": model}, {"m": model}, {"m": identity}, x, y)
    with pytest.raises(TypeError, match=r"targets\['t'\] must be a torch.nn.Module"):
        evaluate.transfer_matrix({"m": model}, {"t": "model"}, identity, x, y)
    with pytest.raises(TypeError, match=r"attack\['m'\] must be a callable"):
        evaluate.transfer_matrix({"m": model}, {"m": model}, {"m": 3}, x, y)
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 3\)"):
        evaluate.transfer_matrix({"m": model}, {"m": model}, identity, x, y + 1)
    with pytest.raises(ValueError, match=r"shaped \(N,\), got shape \(64, 1\)"):
        evaluate.transfer_matrix({"m": model}, {"m": model}, identity, x, y[:, None])


# --- gradient-masking checks (their behaviour on real defenses: test_masking.py) --------------------

def test_gradient_masking_checks_reject_bad_input(problem):
    model, x, y = problem
    with pytest.raises(ValueError, match=r"eps must lie in \(0, 1\) \(the checks compare it with the unbounded"):
        evaluate.gradient_masking_checks(model, x, y, eps=1.0)
    with pytest.raises(ValueError, match="eps must be a finite number, got inf"):
        evaluate.gradient_masking_checks(model, x, y, eps=float("inf"))
    with pytest.raises(ValueError, match=r"eps must lie in \(0, 1\], got 0"):
        evaluate.gradient_masking_checks(model, x, y, eps=0.0)
    with pytest.raises(ValueError, match="steps must be a whole number >= 1, got 0"):
        evaluate.gradient_masking_checks(model, x, y, eps=0.1, steps=0)
    with pytest.raises(TypeError, match="black_box must be a callable"):
        evaluate.gradient_masking_checks(model, x, y, eps=0.1, black_box="nattack")
    with pytest.raises(ValueError, match=r"shaped \(N,\), got shape \(64, 1\)"):
        evaluate.gradient_masking_checks(model, x, y[:, None], eps=0.1)
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 3\)"):
        evaluate.gradient_masking_checks(model, x, y + 1, eps=0.1, black_box=identity)
