"""Adversarial training: train on the worst perturbation an attack finds inside the eps-ball.

Madry, Makelov, Schmidt, Tsipras and Vladu (2018, "Towards deep learning models resistant to adversarial
attacks", Eq. (2.1)) write robust training as the saddle-point problem

    min_theta rho(theta),   rho(theta) = E_{(x, y)} [ max_{||delta||_inf <= eps} L(theta, x + delta, y) ],

and solve it by stochastic gradient descent on theta where every batch is first replaced by the point
PGD reaches from a random start (the inner maximisation; Danskin's theorem makes the gradient at that
point a descent direction of rho). :func:`madry_training` does exactly that.

Wong, Rice and Kolter (2020, "Fast is better than free: revisiting adversarial training", Alg. 3) make it
cheap: the inner maximisation is one FGSM step of size alpha = 1.25 eps from a uniformly random start in
the ball (PGD with one step), with a cyclic learning rate. Its failure mode is *catastrophic
overfitting*: within a few batches the model learns to defeat that one step while PGD accuracy collapses
to zero. Their guard (Sec. 5.2, "early stopping") checks PGD accuracy on a training batch after every
epoch and stops, keeping the weights of the best epoch, when it falls. :func:`fast_adversarial_training`
does both.

Both return a :class:`~advlib.train.History` and leave the model in eval mode, as
:func:`advlib.train.fit` does; a tqdm bar shows the progress.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from .. import config, evaluate, train
from ..attacks import pgd
from ..utils import check_count, check_examples, check_model, check_real

__all__ = ["fast_adversarial_training", "madry_training"]


def madry_training(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float, steps: int,
                   epochs: int = 1, batch_size: int = 128, lr: float = 1e-3, optimizer: str = "adam",
                   schedule: str = "constant", weight_decay: float = 0.0, momentum: float = 0.0, seed: int = 0,
                   device: torch.device | None = None, desc: str = "adversarial training",
                   epoch_end=None) -> train.History:
    """Madry et al.'s adversarial training (2018, Eq. (2.1)): each batch is replaced by the last iterate of
    Linf PGD (``steps`` steps of size ``alpha`` from a uniformly random start in the eps-ball, projected onto
    the ball and [0,1]; :func:`advlib.attacks.pgd` with ``keep="last"``) before the gradient step.

    The paper's settings: MNIST eps = 0.3 with 40 steps of 0.01; CIFAR-10 eps = 8/255 with 7 steps of 2/255.
    One epoch costs about ``steps + 1`` standard epochs (each PGD step is a forward and a backward pass to
    the input). The random starts come from a generator seeded by ``seed``, so a run repeats exactly.
    ``momentum`` (SGD's) and ``epoch_end`` (per-epoch evaluation, early stopping: :class:`advlib.train.KeepBest`)
    go to :func:`advlib.train.fit`.
    """
    _check(model, x, y, eps, alpha, steps)
    generator = torch.Generator().manual_seed(seed)
    attack = partial(pgd, eps=eps, alpha=alpha, steps=steps, keep="last", generator=generator)
    return train.fit(model, x, y, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                     schedule=schedule, weight_decay=weight_decay, momentum=momentum, seed=seed, device=device,
                     desc=desc, perturb=attack, epoch_end=epoch_end)


def fast_adversarial_training(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                              alpha: float | None = None, epochs: int = 1, batch_size: int = 128,
                              lr: float = 5e-3, optimizer: str = "adam", schedule: str = "cyclic",
                              guard: bool = True, guard_size: int = 512, guard_steps: int = 10,
                              guard_drop: float = 0.2, seed: int = 0, device: torch.device | None = None,
                              desc: str = "fast adversarial training") -> train.History:
    """Fast adversarial training of Wong, Rice and Kolter (2020, Alg. 3): FGSM from a random start,
    delta = clip_eps(U(-eps, eps) + alpha sign(grad_delta L)), with alpha = 1.25 eps by default and a
    cyclic learning rate (:func:`advlib.train.learning_rate_factor`).

    The guard against catastrophic overfitting (``guard=True``; their Sec. 5.2): after every epoch, the
    accuracy under PGD (``guard_steps`` steps of eps/4, random start) on the first ``guard_size`` training
    images; when it falls more than ``guard_drop`` below the best epoch's, training stops and the model
    gets back the weights of that best epoch. ``History.epoch_losses`` then ends at the epoch that
    tripped the guard; the attribute ``guard_accuracy`` (added to the history) lists each epoch's check
    and ``stopped_at`` the epoch that tripped it (None if none did).
    """
    alpha = 1.25 * eps if alpha is None else alpha
    _check(model, x, y, eps, alpha, 1)
    device = config.device() if device is None else device
    generator = torch.Generator().manual_seed(seed)
    attack = partial(pgd, eps=eps, alpha=alpha, steps=1, keep="last", generator=generator)
    x_guard, y_guard = x[:guard_size].to(device), y[:guard_size].to(device)
    best = train.KeepBest(lambda model: {"accuracy": evaluate.pgd_accuracy(
        model, x_guard, y_guard, eps=eps, steps=guard_steps, seed=seed)}, "accuracy")
    stopped: list[int] = []

    def check_for_overfitting(epoch: int, model: nn.Module) -> bool:
        best(epoch, model)  # keeps the weights of the most robust epoch so far
        if best.history[-1][1]["accuracy"] < best.best_score - guard_drop:
            best.restore(model)
            stopped.append(epoch)
            return False
        return True

    history = train.fit(model, x, y, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                        schedule=schedule, seed=seed, device=device, desc=desc, perturb=attack,
                        epoch_end=check_for_overfitting if guard else None)
    history.guard_accuracy = [scores["accuracy"] for _, scores in best.history]
    history.stopped_at = stopped[0] if stopped else None
    return history


def _check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int) -> None:
    """The contract's checks (:mod:`advlib.utils`) of the training set and the attack's budget."""
    check_model(model)
    check_examples(x, y)
    check_model(model, x)
    check_real("eps", eps)
    check_real("alpha", alpha)
    check_count("steps", steps)
    if eps == 0:
        raise ValueError("eps must be > 0 for adversarial training (eps = 0 is standard training: use train.fit)")
