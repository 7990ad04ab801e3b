"""AutoAttack (advlib.evaluate.autoattack) and its sanity flags (advlib.evaluate.sanity).

What is checked: AutoAttack breaks every example PGD-20 breaks (so its accuracy is never above PGD's), each
attack runs only on the examples still standing, the report agrees with itself (accuracies fall, broken_by
matches robust, every broken example's image is misclassified and in the ball); the flags fire on a
randomized model, a softmax model, a model with zero gradients, a model that optimizes at inference and a
masked model that Square breaks, and stay quiet on a plain trained network.
"""

from __future__ import annotations

import sys
from functools import partial

import pytest
import torch
from torch import nn

from advlib import evaluate
from advlib.attacks import pgd
from advlib.defenses import InputQuantization
from advlib.evaluate.autoattack import CPU_TARGETED_ROWS

EPS = 0.1
QUICK = dict(steps=20, targets=3, queries=300)  # the paper's 100, 9 and 5,000, lowered for a unit test


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def trained(attacked_images, one_thread):
    return attacked_images(120)


@pytest.fixture(scope="module")
def standard(trained):
    model, x, y = trained
    return evaluate.autoattack(model, x, y, eps=EPS, **QUICK)


class Noisy(nn.Module):
    """A randomized model: fresh Gaussian noise on the logits at every call."""

    def __init__(self, model, scale=0.5):
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x):
        z = self.model(x)
        return z + self.scale * torch.randn_like(z)


class Softmax(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).softmax(dim=1)


class Dynamic(nn.Module):
    """A model that takes one gradient step on its input at inference (a test-time optimization defense)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        with torch.enable_grad():
            x_var = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.model(x_var).logsumexp(dim=1).sum(), x_var)
        return self.model((x - 0.01 * grad.sign()).clamp(0, 1))


def test_autoattack_breaks_what_pgd_breaks(trained, standard):
    model, x, y = trained
    x_pgd = pgd(model, x, y, eps=EPS, alpha=EPS / 4, steps=20, generator=seeded())
    with torch.no_grad():
        pgd_robust = (model(x).argmax(1) == y) & (model(x_pgd).argmax(1) == y)
    assert not (standard.robust & ~pgd_robust).any()  # per example: what PGD breaks, AutoAttack breaks
    assert standard.robust_accuracy <= pgd_robust.double().mean().item()
    assert 0.1 < standard.robust_accuracy < standard.accuracy["clean"] - 0.2, standard.accuracy


def test_the_report_agrees_with_itself(trained, standard):
    model, x, y = trained
    r = standard
    assert list(r.accuracy) == ["clean", "APGD-CE", "APGD-T", "FAB-T", "Square"]
    values = list(r.accuracy.values())
    assert all(b <= a for a, b in zip(values, values[1:], strict=False))  # each attack can only lower it
    assert r.accuracy["Square"] == r.robust_accuracy
    assert r.accuracy["clean"] == r.clean.double().mean().item()
    assert not (r.robust & ~r.clean).any()
    assert all((name is None) == bool(robust) for name, robust in zip(r.broken_by, r.robust, strict=True))
    assert all((name == "clean") == (not bool(c)) for name, c in zip(r.broken_by, r.clean, strict=True))
    names = list(r.accuracy)
    for k, name in enumerate(names[1:], start=1):  # robust accuracy after an attack = what it left
        left = sum(1 for b in r.broken_by if b is None or names.index(b) > k)
        assert r.accuracy[name] == pytest.approx(left / len(x))
    broken = ~r.robust & r.clean
    assert (r.x_adv - x).flatten(1).abs().amax(dim=1).max() <= EPS + 1e-6
    assert torch.equal(r.x_adv[~broken], x[~broken])  # the clean image where nothing broke it
    with torch.no_grad():
        assert (model(r.x_adv[broken]).argmax(1) != y[broken]).all()  # each broken one truly broken
    assert set(r.seconds) == set(r.evaluations) == set(names[1:])
    # APGD-CE: at most 20 steps of one pass each, its final pass and the check of its output; fewer on
    # average, since an example stops costing passes once broken
    assert 1 <= r.evaluations["APGD-CE"] < 20 + 2, r.evaluations
    assert r.evaluations["Square"] <= QUICK["queries"] + 1, r.evaluations
    assert not any(r.flags.values()), r.flags  # a plain trained network raises no flag


def test_each_attack_runs_only_on_the_examples_still_standing(trained):
    model, x, y = trained
    rows = []
    hook = model.register_forward_hook(lambda m, inputs, out: rows.append(len(inputs[0])))
    try:
        # at eps = 0.5 APGD-CE breaks everything: the later attacks get no example to attack
        r = evaluate.autoattack(model, x, y, eps=0.5, **QUICK)
    finally:
        hook.remove()
    assert r.robust_accuracy == 0 and r.accuracy["APGD-CE"] == 0
    assert r.evaluations["APGD-T"] == r.evaluations["FAB-T"] == r.evaluations["Square"] == 0
    assert max(rows) <= len(x)


def test_targeted_passes_on_the_cpu_fit_the_cache(trained, monkeypatch):
    """On the CPU, APGD-T's and FAB-T's passes hold at most CPU_TARGETED_ROWS rows (images times targets),
    whatever batch_size; APGD-CE and Square keep batch_size images a pass."""
    model, x, y = trained
    module = sys.modules["advlib.evaluate.autoattack"]
    rows = {}

    def counted(name, attack):
        def run(model, x, y, **options):
            rows.setdefault(name, []).append(len(x) * options.get("targets", 1))
            return attack(model, x, y, **options)
        return run

    for name in ("apgd", "apgd_t", "fab", "square"):
        monkeypatch.setattr(module, name, counted(name, getattr(module, name)))
    r = evaluate.autoattack(model, x, y, eps=EPS, batch_size=1000, steps=2, targets=9, queries=2)
    cap = CPU_TARGETED_ROWS
    standing = round(r.accuracy["APGD-CE"] * len(x))
    assert cap < 9 * standing  # without the cap a pass would exceed it
    for name, before in (("apgd_t", "APGD-CE"), ("fab", "APGD-T")):  # every image standing, 8 a call
        assert max(rows[name]) == cap // 9 * 9 and sum(rows[name]) == 9 * round(r.accuracy[before] * len(x))
    assert rows["apgd"] == [round(r.accuracy["clean"] * len(x))]  # one call for every image standing
    assert rows["square"] == [round(r.accuracy["FAB-T"] * len(x))]


def test_the_same_seed_gives_the_same_result_whatever_the_batch_size(trained, standard):
    """APGD and FAB give a batch the result of its pieces (one generator per attack, across batches), so
    batch_size does not change what they break; Square's draws are per batch (its docstring)."""
    model, x, y = trained
    again = evaluate.autoattack(model, x, y, eps=EPS, **QUICK)
    assert torch.equal(again.robust, standard.robust) and again.broken_by == standard.broken_by
    pieces = evaluate.autoattack(model, x, y, eps=EPS, batch_size=7, **QUICK)  # 2 images per targeted call
    white_box = [name for name in standard.accuracy if name != "Square"]
    assert [pieces.accuracy[k] for k in white_box] == [standard.accuracy[k] for k in white_box]
    assert all(a == b for a, b in zip(pieces.broken_by, standard.broken_by, strict=True)
               if "Square" not in (a, b))


def test_flags_fire_on_a_randomized_a_softmax_a_zero_gradient_and_a_dynamic_model(trained):
    model, x, y = trained
    plain = evaluate.sanity_flags(model, x, y, EPS)
    assert plain == {"randomized": False, "softmax": False, "zero_gradient": False, "dynamic": False}
    assert evaluate.is_randomized(Noisy(model), x)
    assert not evaluate.is_randomized(nn.Sequential(model, nn.Dropout(0.5)), x)  # eval mode: no dropout
    assert evaluate.outputs_probabilities(Softmax(model), x)
    assert not evaluate.outputs_probabilities(nn.Sequential(model, nn.LogSoftmax(dim=1)), x)
    assert evaluate.zero_gradient_share(InputQuantization(model), x, y, EPS) == 1.0
    assert evaluate.zero_gradient_share(model, x, y, EPS) == 0.0
    grad, backward = torch.autograd.grad, torch.Tensor.backward
    assert evaluate.optimizes_at_inference(Dynamic(model), x[:4])
    assert not evaluate.optimizes_at_inference(model, x[:4])
    assert torch.autograd.grad is grad and torch.Tensor.backward is backward  # restored after the check
    checks = evaluate.gradient_masking_checks(Noisy(model), x[:40], y[:40], EPS, steps=5,
                                              black_box=lambda m, xb, yb: xb)
    assert checks.flags["randomized"] and not checks.flags["softmax"], checks.flags


def test_square_beating_the_white_box_attacks_raises_the_square_flag(trained):
    model, x, y = trained
    masked = InputQuantization(model)  # zero gradients: the white-box attacks go nowhere, Square does not care
    r = evaluate.autoattack(masked, x[:60], y[:60], eps=EPS, steps=10, targets=2, queries=300)
    assert r.flags["zero_gradient"] and r.flags["square"], (r.flags, r.accuracy)
    assert r.accuracy["Square"] < r.accuracy["FAB-T"] - 0.2, r.accuracy


def test_the_rand_version_averages_over_the_randomness(trained):
    model, x, y = trained
    noisy = Noisy(model, scale=0.3)
    r = evaluate.autoattack(noisy, x[:60], y[:60], eps=EPS, version="rand", steps=10, eot_iter=4)
    assert list(r.accuracy) == ["clean", "APGD-CE (EOT)", "APGD-DLR (EOT)"]
    assert r.flags["randomized"]
    # at most 10 steps of 4 passes each (EOT), plus the final passes and the output check
    assert 4 <= r.evaluations["APGD-CE (EOT)"] <= 4 * (10 + 1) + 2, r.evaluations
    assert r.robust_accuracy < r.accuracy["clean"] - 0.2, r.accuracy


def test_bad_arguments_are_refused(trained):
    model, x, y = trained
    autoattack = partial(evaluate.autoattack, model, x[:4], y[:4])
    with pytest.raises(ValueError, match="version"):
        autoattack(eps=EPS, version="plus")
    with pytest.raises(ValueError, match="norm"):
        autoattack(eps=EPS, norm="l1")
    with pytest.raises(ValueError, match="eps"):
        autoattack(eps=-0.1)
    with pytest.raises(ValueError, match="targets"):
        autoattack(eps=EPS, targets=0)
    with pytest.raises(ValueError, match="labels|y"):
        evaluate.autoattack(model, x[:4], y[:3], eps=EPS)
