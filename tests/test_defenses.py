"""Adversarial training (Madry et al. 2018; Wong, Rice and Kolter 2020), the training hooks it rests on,
and the epsilon-robustness score."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from advlib import data, defenses, metrics, models, train, zoo
from advlib.attacks import fgsm, pgd
from advlib.attacks.suite import strongest
from advlib.defenses import adversarial_training

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
    return defenses.pgd_accuracy(model, x, y, eps=EPS, steps=20, alpha=EPS / 4)


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
    (x, y), _ = subsets
    x, y = x[:512], y[:512]
    plain, identity, attacked = wong_kolter(), wong_kolter(), wong_kolter()
    seen = []

    def same(model, xb, yb):
        seen.append(len(xb))
        assert model.training is False or model.training is True  # called with the model being trained
        return xb

    train.fit(plain, x, y, epochs=1, seed=0, device=CPU)
    train.fit(identity, x, y, epochs=1, seed=0, device=CPU, perturb=same)
    train.fit(attacked, x, y, epochs=1, seed=0, device=CPU, perturb=partial(fgsm, eps=EPS))
    assert sum(seen) == len(x)  # every batch went through perturb once
    assert all(torch.equal(p, q) for p, q in zip(plain.parameters(), identity.parameters(), strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(plain.parameters(), attacked.parameters(), strict=True))


def test_cyclic_learning_rate_is_a_triangle():
    factor = partial(train.learning_rate_factor, "cyclic", total_steps=100)
    assert factor(step=0) == 0 and factor(step=40) == pytest.approx(1) and factor(step=100) == pytest.approx(0)
    assert factor(step=20) == pytest.approx(0.5) and factor(step=70) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="schedule"):
        train.learning_rate_factor("cosine", 1, 10)


def test_fast_training_guard_stops_and_restores_the_best_epoch(subsets, monkeypatch):
    """Scripted guard checks 0.5, 0.6, 0.1: the third epoch collapses (catastrophic overfitting), so
    training stops there and the model gets back the weights it had after the second epoch."""
    (x, y), _ = subsets
    x, y = x[:256], y[:256]
    script, snapshots = iter([0.5, 0.6, 0.1, 0.7]), []

    def scripted(model, *args, **kwargs):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(script)

    monkeypatch.setattr(adversarial_training, "pgd_accuracy", scripted)
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


@pytest.mark.parametrize("kw, word", [({"eps": -0.1}, "eps"), ({"eps": 0.0}, "eps"), ({"alpha": -1.0}, "alpha"),
                                      ({"steps": -1}, "steps")])
def test_bad_arguments_raise(subsets, kw, word):
    (x, y), _ = subsets
    kw = {"eps": EPS, "alpha": EPS / 4, "steps": 2, **kw}
    with pytest.raises(ValueError, match=word):
        defenses.madry_training(wong_kolter(), x[:8], y[:8], device=CPU, **kw)
    with pytest.raises(ValueError, match="examples"):
        defenses.madry_training(wong_kolter(), x[:8], y[:7], eps=EPS, alpha=0.01, steps=1, device=CPU)


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
    score = metrics.robustness_score(natural, suite, (x, y), EPS)
    assert score.accuracy == pytest.approx(metrics.accuracy(natural, x, y))
    for name, attack in suite.items():
        # each attack's breaks are among the suite's: the score is at most the accuracy minus any one of them
        assert 0 < score.broken[name] <= score.accuracy
        assert score.upper_bound <= score.accuracy - score.broken[name] + 1e-9, name
        if name.startswith("PGD"):  # eps-bounded: another run alone (other random starts) leaves about as many
            assert score.upper_bound <= metrics.robust_accuracy(natural, attack, (x, y)) + 0.05, name
    assert score.upper_bound <= score.accuracy
    assert score.robust.dtype == torch.bool and score.robust.float().mean().item() == pytest.approx(score.upper_bound)


def test_robustness_score_counts_only_examples_broken_inside_the_ball(subsets, natural_and_robust):
    _, (xt, yt) = subsets
    natural, _, _ = natural_and_robust
    x, y = xt[:100], yt[:100]
    identity = metrics.robustness_score(natural, {"none": lambda m, a, b: a.clone()}, (x, y), EPS)
    assert identity.upper_bound == pytest.approx(identity.accuracy)  # no attack: the score is the accuracy
    far = partial(pgd, eps=0.3, alpha=0.05, steps=10)  # breaks almost everything, but outside the 0.1-ball
    outside = metrics.robustness_score(natural, {"far": far}, (x, y), EPS)
    assert outside.upper_bound == pytest.approx(outside.accuracy)
    inside = metrics.robustness_score(natural, {"far": far}, (x, y), 0.3)
    assert inside.upper_bound < 0.5 * inside.accuracy


def test_robustness_score_bad_arguments(subsets, natural_and_robust):
    _, (xt, yt) = subsets
    natural, _, _ = natural_and_robust
    with pytest.raises(ValueError, match="attacks"):
        metrics.robustness_score(natural, {}, (xt[:4], yt[:4]), EPS)
    with pytest.raises(ValueError, match="eps"):
        metrics.robustness_score(natural, {"fgsm": partial(fgsm, eps=EPS)}, (xt[:4], yt[:4]), -1.0)
    with pytest.raises(ValueError, match="norm"):
        metrics.robustness_score(natural, {"fgsm": partial(fgsm, eps=EPS)}, (xt[:4], yt[:4]), EPS, norm="l1")
