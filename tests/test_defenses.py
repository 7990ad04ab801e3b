"""Adversarial training (Madry et al. 2018; Wong, Rice and Kolter 2020), the training hooks it rests on,
and the epsilon-robustness score."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from advlib import data, defenses, evaluate, metrics, models, train, zoo
from advlib.attacks import fgsm, pgd
from advlib.attacks.suite import strongest

CPU = torch.device("cpu")
EPS = 0.1


@pytest.fixture(scope="module")
def subsets(fashion_root):
    """3,000 training and 300 test images; torch on one thread (small models on a shared 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    (x, y), (xt, yt) = data.load_subsets("fashion-mnist", 3000, 300, seed=0)
    yield (x, y), (xt, yt)
    torch.set_num_threads(threads)


def wong_kolter(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.build("wong-kolter")


def pgd20_accuracy(model, x, y) -> float:
    return evaluate.pgd_accuracy(model, x, y, eps=EPS, steps=20, alpha=EPS / 4)


@pytest.fixture(scope="module")
def natural_and_robust(subsets):
    """The same net trained 3 epochs normally and by Madry adversarial training (PGD 5 steps)."""
    (x, y), _ = subsets
    natural, robust = wong_kolter(), wong_kolter()
    train.fit(natural, x, y, epochs=3, seed=0, device=CPU)
    history = defenses.madry_training(robust, x, y, eps=EPS, alpha=EPS / 4, steps=5, epochs=3, seed=0, device=CPU)
    return natural, robust, history


def test_madry_training_raises_pgd_accuracy_far_above_natural(subsets, natural_and_robust):
    _, (xt, yt) = subsets
    natural, robust, history = natural_and_robust
    assert len(history.epoch_losses) == 3 and history.epoch_losses[-1] < history.epoch_losses[0]
    acc_natural, acc_robust = pgd20_accuracy(natural, xt, yt), pgd20_accuracy(robust, xt, yt)
    assert acc_robust > max(0.4, acc_natural + 0.12), (acc_robust, acc_natural)
    # and the price in clean accuracy is bounded
    assert metrics.accuracy(robust, xt, yt) > metrics.accuracy(natural, xt, yt) - 0.15


def test_madry_training_repeats_under_its_seed(subsets):
    (x, y), _ = subsets
    x, y = x[:512], y[:512]
    a, b = wong_kolter(), wong_kolter()
    for model in (a, b):
        defenses.madry_training(model, x, y, eps=EPS, alpha=EPS / 4, steps=2, epochs=1, seed=3, device=CPU)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_fit_trains_on_what_perturb_returns(subsets):
    """``perturb`` gets every batch once, with the model being trained, in train mode; an attack run there
    switches the model (and each submodule) to eval mode for itself and gives train mode back, so that the
    gradient step after it runs in the mode it would have run in without the attack."""
    (x, y), _ = subsets
    x, y = x[:512], y[:512]
    plain, identity, attacked = wong_kolter(), wong_kolter(), wong_kolter()
    seen, modes = [], []

    def same(model, xb, yb):
        seen.append((len(xb), model is identity, model.training))
        return xb

    def attack_in_its_own_mode(model, xb, yb):
        before = [m.training for m in model.modules()]
        attack_modes = []
        hook = model.register_forward_pre_hook(lambda module, args: attack_modes.append(module.training))
        try:
            x_adv = fgsm(model, xb, yb, eps=EPS)
        finally:
            hook.remove()
        modes.append((before, attack_modes, [m.training for m in model.modules()]))
        return x_adv

    train.fit(plain, x, y, epochs=1, seed=0, device=CPU)
    train.fit(identity, x, y, epochs=1, seed=0, device=CPU, perturb=same)
    train.fit(attacked, x, y, epochs=1, seed=0, device=CPU, perturb=attack_in_its_own_mode)
    assert sum(n for n, _, _ in seen) == len(x)  # every batch went through perturb once
    assert all(is_model and training for _, is_model, training in seen)  # the model being trained, in train mode
    assert len(modes) == len(seen)
    for before, during, after in modes:
        assert all(before) and during and not any(during)  # train mode before; the attack's passes in eval mode
        assert after == before  # and every module's mode restored to what it was
    assert all(torch.equal(p, q) for p, q in zip(plain.parameters(), identity.parameters(), strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(plain.parameters(), attacked.parameters(), strict=True))


def test_cyclic_learning_rate_is_a_triangle():
    factor = partial(train.learning_rate_factor, "cyclic", total_steps=100)
    assert factor(step=0) == 0 and factor(step=40) == pytest.approx(1) and factor(step=100) == pytest.approx(0)
    assert factor(step=20) == pytest.approx(0.5) and factor(step=70) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'cosine'; expected one of"):
        train.learning_rate_factor("cosine", 1, 10)


def test_piecewise_learning_rate_decays_tenfold_at_half_and_three_quarters():
    """Rice et al.'s run of 200 epochs: the rate drops at epochs 100 and 150."""
    factors = [train.learning_rate_factor("piecewise", epoch, 200) for epoch in range(200)]
    assert factors[:100] == [1.0] * 100 and factors[100:150] == [0.1] * 50 and factors[150:] == [0.01] * 50


def test_fast_training_guard_stops_and_restores_the_best_epoch(subsets, monkeypatch):
    """Scripted guard checks 0.5, 0.6, 0.1: the third epoch collapses (catastrophic overfitting), so
    training stops there and the model gets back the weights it had after the second epoch."""
    (x, y), _ = subsets
    x, y = x[:256], y[:256]
    script, snapshots = iter([0.5, 0.6, 0.1, 0.7]), []

    def scripted(model, *args, **kwargs):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(script)

    monkeypatch.setattr(evaluate, "pgd_accuracy", scripted)
    model = wong_kolter()
    history = defenses.fast_adversarial_training(model, x, y, eps=EPS, epochs=4, seed=0, device=CPU)
    assert history.guard_accuracy == [0.5, 0.6, 0.1] and history.stopped_at == 2
    assert len(history.epoch_losses) == 3
    assert all(torch.equal(v, snapshots[1][k]) for k, v in model.state_dict().items())
    assert not all(torch.equal(v, snapshots[2][k]) for k, v in model.state_dict().items())


def test_fast_training_is_robust_on_a_small_subset(subsets):
    (x, y), (xt, yt) = subsets
    natural, fast = wong_kolter(), wong_kolter()
    train.fit(natural, x, y, epochs=3, seed=0, device=CPU)
    history = defenses.fast_adversarial_training(fast, x, y, eps=EPS, epochs=3, seed=0, device=CPU)
    assert len(history.guard_accuracy) == len(history.epoch_losses)
    assert pgd20_accuracy(fast, xt, yt) > pgd20_accuracy(natural, xt, yt) + 0.1


@pytest.mark.parametrize("kw, message", [
    ({"eps": -0.1}, r"eps must lie in \[0, inf\), got -0.1"),
    ({"eps": 0.0}, "eps must be > 0 for adversarial training"),
    ({"eps": float("inf")}, "eps must be a finite number, got inf"),
    ({"alpha": -1.0}, r"alpha must lie in \[0, inf\), got -1"),
    ({"steps": -1}, "steps must be a whole number >= 0, got -1"),
])
def test_bad_arguments_raise(subsets, kw, message):
    (x, y), _ = subsets
    kw = {"eps": EPS, "alpha": EPS / 4, "steps": 2, **kw}
    with pytest.raises(ValueError, match=message):
        defenses.madry_training(wong_kolter(), x[:8], y[:8], device=CPU, **kw)
    with pytest.raises(ValueError, match="the images hold 8 examples but y holds 7 labels"):
        defenses.madry_training(wong_kolter(), x[:8], y[:7], eps=EPS, alpha=0.01, steps=1, device=CPU)
    nan = x[:8].clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x holds 1 values that are NaN or infinite"):
        defenses.madry_training(wong_kolter(), nan, y[:8], eps=EPS, alpha=0.01, steps=1, device=CPU)
    with pytest.raises(ValueError, match=r"y must be a 1-D tensor of labels shaped \(N,\), got shape \(8, 1\)"):
        defenses.madry_training(wong_kolter(), x[:8], y[:8, None], eps=EPS, alpha=0.01, steps=1, device=CPU)


def test_masking_defenses_check_their_settings_and_input():
    """The gradient-masking wrappers (advlib.defenses.masking) name what is wrong with their settings, and
    RandomResizePad names an input that is not a batch (N, C, H, W) instead of failing inside affine_grid."""
    model = models.mlp((8,))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module returning logits, got str"):
        defenses.InputQuantization("a model", levels=16)
    with pytest.raises(ValueError, match=r"levels must be a whole number >= 2 \(the number of grey levels kept\), "
                                         "got '16'"):
        defenses.quantize(torch.rand(2, 1, 4, 4), "16")
    with pytest.raises(ValueError, match="levels must be a whole number >= 2 .*, got inf"):
        defenses.InputQuantization(model, levels=float("inf"))
    with pytest.raises(ValueError, match="min_scale must be a finite number, got nan"):
        defenses.RandomResizePad(model, min_scale=float("nan"))
    with pytest.raises(ValueError, match=r"min_scale must lie in \(0, 1\], got 1.5"):
        defenses.RandomResizePad(model, min_scale=1.5)
    with pytest.raises(TypeError, match="generator must be None or a CPU torch.Generator"):
        defenses.RandomResizePad(model, generator=7)
    with pytest.raises(ValueError, match=r"RandomResizePad takes a floating-point batch of images \(N, C, H, W\), got "
                                         r"shape \(1, 28, 28\)"):
        defenses.RandomResizePad(model).transform(torch.rand(1, 28, 28))


def test_zoo_keys_of_earlier_recipes_are_unchanged():
    """Adding ``train_kwargs`` to recipes must not retrain every cached model: the empty field is left out."""
    assert "train_kwargs" not in zoo.configuration("small-cnn")["recipe"]
    assert zoo.configuration("wong-kolter-madry")["recipe"]["train_kwargs"] == {"eps": 0.1, "alpha": 0.025,
                                                                                 "steps": 7}
    assert zoo.key("wong-kolter-madry") != zoo.key("wong-kolter") != zoo.key("wong-kolter-fast")


# --- the epsilon-robustness score ----------------------------------------------------------------

def test_robustness_score_is_an_upper_bound_below_each_attack(subsets, natural_and_robust):
    _, (xt, yt) = subsets
    natural, _, _ = natural_and_robust
    x, y = xt[:100], yt[:100]
    suite = strongest(EPS, steps=10, restarts=2, cw_steps=50, cw_lr=1e-2, cw_c=1e-3)
    score = evaluate.robustness_score(natural, suite, (x, y), EPS)
    assert score.accuracy == pytest.approx(metrics.accuracy(natural, x, y))
    for name, attack in suite.items():
        # each attack's breaks are among the suite's: the score is at most the accuracy minus any one of them
        assert 0 < score.broken[name] <= score.accuracy
        assert score.upper_bound <= score.accuracy - score.broken[name] + 1e-9, name
        if name.startswith("PGD"):  # eps-bounded: another run alone (other random starts) leaves about as many
            assert score.upper_bound <= evaluate.robust_accuracy(natural, attack, (x, y)) + 0.05, name
    assert score.upper_bound <= score.accuracy
    assert score.robust.dtype == torch.bool and score.robust.float().mean().item() == pytest.approx(score.upper_bound)


def test_robustness_score_counts_only_examples_broken_inside_the_ball(subsets, natural_and_robust):
    _, (xt, yt) = subsets
    natural, _, _ = natural_and_robust
    x, y = xt[:100], yt[:100]
    identity = evaluate.robustness_score(natural, {"none": lambda m, a, b: a.clone()}, (x, y), EPS)
    assert identity.upper_bound == pytest.approx(identity.accuracy)  # no attack: the score is the accuracy
    far = partial(pgd, eps=0.3, alpha=0.05, steps=10)  # breaks almost everything, but outside the 0.1-ball
    outside = evaluate.robustness_score(natural, {"far": far}, (x, y), EPS)
    assert outside.upper_bound == pytest.approx(outside.accuracy)
    inside = evaluate.robustness_score(natural, {"far": far}, (x, y), 0.3)
    assert inside.upper_bound < 0.5 * inside.accuracy


def test_robustness_score_bad_arguments(subsets, natural_and_robust):
    _, (xt, yt) = subsets
    natural, _, _ = natural_and_robust
    with pytest.raises(ValueError, match="attacks is empty: give at least one attack"):
        evaluate.robustness_score(natural, {}, (xt[:4], yt[:4]), EPS)
    with pytest.raises(ValueError, match=r"eps must lie in \[0, inf\), got -1"):
        evaluate.robustness_score(natural, {"fgsm": partial(fgsm, eps=EPS)}, (xt[:4], yt[:4]), -1.0)
    with pytest.raises(ValueError, match="unknown norm 'l1'; expected one of"):
        evaluate.robustness_score(natural, {"fgsm": partial(fgsm, eps=EPS)}, (xt[:4], yt[:4]), EPS, norm="l1")
