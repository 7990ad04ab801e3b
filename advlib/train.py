"""Training loops: mini-batch gradient descent on the cross-entropy (or the talk's sign update).

Back-propagation (Rumelhart, Hinton and Williams 1986) gives grad_W L for every weight; an optimiser
turns it into an update. :func:`fit` trains a classifier, seeded so the same seed gives the same
weights on the same machine, on the GPU when there is one, with a tqdm progress bar.
:func:`fit_autoencoder` pre-trains Szegedy et al.'s sparse autoencoder.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import config
from .utils import (
    check_choice,
    check_classes,
    check_count,
    check_examples,
    check_images,
    check_logits,
    check_model,
    check_real,
    eval_mode,
    progress,
)

LOSSES = ("ce", "prob")
OPTIMIZERS = ("sgd", "adam", "sign")
SCHEDULES = ("constant", "linear", "cyclic", "piecewise")


class SignDescent(torch.optim.Optimizer):
    """The talk's sign update W <- W - eps * sign(grad_W L), the step of FGSM applied to weights.

    With L = -p_c (the probability of the correct class, ``loss="prob"`` in :func:`fit`) this is
    W <- W + eps * sign(grad_W p_c). Weight decay, if any, is added to the gradient first.
    """

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.0):
        lr = check_real("lr", lr, strict=True)
        weight_decay = check_real("weight_decay", weight_decay)
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad if group["weight_decay"] == 0 else p.grad + group["weight_decay"] * p
                p.add_(grad.sign(), alpha=-group["lr"])
        return loss


@dataclass
class History:
    """What a training run recorded: the loss of every step and the mean loss of every epoch."""

    step_losses: list[float] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)


def classification_loss(logits: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """Mean loss of a batch. ``"ce"``: cross-entropy -log p_y (the logistic loss for a one-logit
    perceptron, whose label 1 is its positive class); ``"prob"``: -p_y, the talk's objective."""
    check_choice("loss", loss, LOSSES)
    if logits.shape[1] == 1:
        z = logits[:, 0]
        if loss == "ce":
            return F.binary_cross_entropy_with_logits(z, y.float())
        p_positive = torch.sigmoid(z)
        return -torch.where(y == 1, p_positive, 1 - p_positive).mean()
    if loss == "ce":
        return F.cross_entropy(logits, y)
    return -logits.softmax(dim=1).gather(1, y[:, None]).mean()


def make_optimizer(name: str, parameters, lr: float, weight_decay: float = 0.0,
                   momentum: float = 0.0) -> torch.optim.Optimizer:
    """``"sgd"`` (Robbins-Monro, with optional momentum), ``"adam"`` (Kingma and Ba 2015) or
    ``"sign"`` (:class:`SignDescent`). ``lr`` must be finite and > 0, ``weight_decay`` and ``momentum``
    finite and >= 0."""
    check_choice("optimizer", name, OPTIMIZERS)
    lr = check_real("lr", lr, strict=True)
    weight_decay = check_real("weight_decay", weight_decay)
    momentum = check_real("momentum", momentum)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    if name == "sign":
        return SignDescent(parameters, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")


def _check_run(epochs: int, batch_size: int, lr: float, schedule: str) -> None:
    """The settings every trainer shares: ``epochs`` a whole number >= 0, ``batch_size`` one >= 1, ``lr``
    finite and > 0, ``schedule`` a known learning-rate schedule."""
    check_count("epochs", epochs)
    check_count("batch_size", batch_size, low=1)
    check_real("lr", lr, strict=True)
    check_choice("learning-rate schedule", schedule, SCHEDULES)


def check_labels_fit_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """``ValueError`` unless every label of ``y`` names one of the model's classes, read from its logits on
    the first image (one forward pass, in eval mode, without gradients): [0, K) for K >= 2 logits, {0, 1}
    for a single logit (a perceptron, whose label 1 is its positive class). Without this check a label
    >= K fails deep inside the cross-entropy (or, on a GPU, as an asynchronous device assert)."""
    with torch.no_grad(), eval_mode(model):
        logits = model(x[:1])
    if isinstance(logits, torch.Tensor) and logits.ndim == 2 and logits.shape[1] == 1:
        if len(y) and bool(((y != 0) & (y != 1)).any()):
            raise ValueError(f"y must hold labels 0 and 1 for a model with one logit (a perceptron: label 1 is the "
                             f"positive class), got labels in [{y.min().item()}, {y.max().item()}]")
        return
    check_classes(y, check_logits(logits, 1))


def learning_rate_factor(schedule: str, step: int, total_steps: int) -> float:
    """The factor on the learning rate at ``step`` of ``total_steps``: 1 (``"constant"``); decaying
    linearly to 0 (``"linear"``); or Smith's one-cycle triangle that Wong, Rice and Kolter (2020, Sec. 5.1)
    use for fast adversarial training, rising linearly from 0 to 1 over the first 2/5 of the run and
    falling back to 0 at its end (``"cyclic"``); or 1, then 0.1 from half the run and 0.01 from three
    quarters of it (``"piecewise"``: Madry et al.'s CIFAR-10 schedule as Rice, Wong and Kolter 2020 run it,
    decays at epochs 100 and 150 of 200)."""
    check_choice("learning-rate schedule", schedule, SCHEDULES)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1 - step / total_steps
    if schedule == "piecewise":
        return 1.0 if step < total_steps / 2 else 0.1 if step < 0.75 * total_steps else 0.01
    peak = 0.4 * total_steps  # "cyclic"
    return step / peak if step < peak else (total_steps - step) / (total_steps - peak)


def number_of_steps(n: int, batch_size: int, epochs: int) -> int:
    """The optimiser steps of a run: ``epochs`` times the batches of ``batch_size`` in ``n`` examples (the
    last batch of an epoch may be smaller)."""
    return epochs * -(-n // batch_size)


def _descend(model: nn.Module, n: int, batch_loss, opt: torch.optim.Optimizer, *, epochs: int,
             batch_size: int, seed: int, device: torch.device, desc: str, schedule: str = "constant",
             epoch_end=None) -> History:
    """The loop both trainers share: seeded batches of indices, loss, back-propagation, step.

    ``schedule`` scales every learning rate by :func:`learning_rate_factor` (one step at a time).
    ``epoch_end(epoch, model)``, if given, runs after each epoch (with the model in train mode); when it
    returns ``False`` training stops there. The callers have checked every setting (:func:`_check_run`).
    """
    total_steps = number_of_steps(n, batch_size, epochs)
    scheduler = (torch.optim.lr_scheduler.LambdaLR(opt, lambda step: learning_rate_factor(schedule, step, total_steps))
                 if schedule != "constant" else None)
    generator = torch.Generator().manual_seed(seed)
    history = History()
    model.train()
    bar = progress(total=total_steps, desc=desc, unit="batch")
    for epoch in range(epochs):
        total = 0.0
        order = torch.randperm(n, generator=generator).to(device)
        for index in order.split(batch_size):
            loss = batch_loss(index)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if scheduler is not None:
                scheduler.step()
            history.step_losses.append(loss.item())
            total += history.step_losses[-1] * len(index)
            bar.update()
        history.epoch_losses.append(total / n)
        bar.set_postfix(epoch=epoch + 1, loss=f"{history.epoch_losses[-1]:.4f}")
        if epoch_end is not None and epoch_end(epoch, model) is False:
            break
    bar.close()
    model.eval()
    return history


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 1, batch_size: int = 128,
        lr: float = 1e-3, optimizer: str = "adam", weight_decay: float = 0.0, momentum: float = 0.0,
        loss: str = "ce", parameters=None, seed: int = 0, device: torch.device | None = None,
        desc: str = "training", schedule: str = "constant", perturb=None, epoch_end=None,
        criterion=None) -> History:
    """Train ``model`` on images ``x`` in [0,1] and labels ``y`` by mini-batch descent.

    Each step takes a batch B, computes L = mean_{(x,y) in B} loss(model(x), y) and back-propagates
    it; ``optimizer`` applies the update (``"sign"`` is the talk's W <- W - eps * sign(grad_W L)).
    ``weight_decay`` is the L2 penalty lambda/2 ||W||^2 (Szegedy et al.'s FC10(lambda)).
    ``parameters`` restricts training to some parameters (the others stay fixed). ``schedule``:
    ``"constant"`` learning rate, ``"linear"`` decay to zero over the run, or ``"cyclic"`` (see
    :func:`learning_rate_factor`). ``perturb(model, x, y) -> x'``, if given, replaces each batch by
    the images to train on (an attack, for adversarial training; noise, for noise augmentation):
    the loss is taken at x'. ``criterion(model, x, y, progress) -> loss``, if given, replaces the loss
    (``loss`` is then unused): it gets the batch (after ``perturb``) and the fraction of the run's steps
    done before this one (0 at the first step, 1 - 1/steps at the last), for losses whose settings follow
    a schedule, such as certified training's ramp of eps. ``epoch_end(epoch, model)`` runs after each
    epoch and stops training when it returns ``False``. The order of the batches comes from ``seed``
    alone, so a run repeats exactly.
    Leaves the model in eval mode on ``device`` (default: :func:`advlib.config.device`).

    Checked once, before any step (:mod:`advlib.utils`): ``x`` finite float images (N,C,H,W) in [0,1] and
    ``y`` 1-D integer labels of the same length (at least one example), every label one of the model's
    classes (read from its logits on the first image), the model's dtype that of ``x``, ``epochs`` >= 0
    and ``batch_size`` >= 1 whole numbers, ``lr`` finite and > 0, ``optimizer``, ``loss`` and ``schedule``
    known. Each failure is a ``ValueError`` or ``TypeError`` that says what was expected.
    """
    check_model(model)
    check_examples(x, y)
    check_model(model, x)
    _check_run(epochs, batch_size, lr, schedule)
    check_choice("loss", loss, LOSSES)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    device = config.device() if device is None else device
    model.to(device)
    torch.manual_seed(seed)
    params = list(model.parameters() if parameters is None else parameters)
    opt = make_optimizer(optimizer, params, lr, weight_decay, momentum)
    x, y = x.to(device), y.to(device)
    check_labels_fit_model(model, x, y)

    total_steps = number_of_steps(len(x), batch_size, epochs)
    steps_done = itertools.count()

    def batch_loss(index: torch.Tensor) -> torch.Tensor:
        inputs = x[index] if perturb is None else perturb(model, x[index], y[index]).detach()
        if criterion is not None:
            return criterion(model, inputs, y[index], next(steps_done) / total_steps)
        return classification_loss(model(inputs), y[index], loss)

    return _descend(model, len(x), batch_loss, opt, epochs=epochs, batch_size=batch_size, seed=seed,
                    device=device, desc=desc, schedule=schedule, epoch_end=epoch_end)


class KeepBest:
    """Early stopping on a held-out set (Rice, Wong and Kolter 2020, "Overfitting in adversarially robust
    deep learning", Sec. 4): an ``epoch_end`` for :func:`fit` that, every ``every`` epochs, computes
    ``scores(model) -> {name: value}`` (in eval mode), appends ``(epoch, scores)`` to ``history`` and keeps
    a copy of the weights of the epoch with the highest ``scores[key]`` (the earliest among equals), whose
    score is ``best_score``. ``restore(model)`` loads that copy. It never stops training, so that what the
    last epochs do can be seen; ``best_epoch`` says which epoch to keep. Epochs count from 1. (The guard of
    :func:`advlib.defenses.fast_adversarial_training` stops on top of it.)
    """

    def __init__(self, scores: Callable[[nn.Module], dict], key: str, every: int = 1):
        self.scores, self.key, self.every = scores, key, check_count("every", every, low=1)
        self.history: list[tuple[int, dict]] = []
        self.best_epoch: int | None = None
        self.best_score = float("-inf")
        self.best_state: dict | None = None

    def __call__(self, epoch: int, model: nn.Module) -> None:
        epoch += 1  # fit counts from 0
        if epoch % self.every:
            return
        with eval_mode(model):
            scores = self.scores(model)
        if self.key not in scores:
            raise KeyError(f"scores returned {sorted(scores)}, without the key {self.key!r} to keep the best by")
        self.history.append((epoch, scores))
        if self.best_epoch is None or scores[self.key] > self.best_score:
            self.best_epoch, self.best_score = epoch, scores[self.key]
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def restore(self, model: nn.Module) -> nn.Module:
        """``model`` with the weights of ``best_epoch`` loaded (a ``RuntimeError`` before any score)."""
        if self.best_state is None:
            raise RuntimeError("no epoch has been scored yet: pass this object as fit's epoch_end and train first")
        model.load_state_dict(self.best_state)
        return model


def sparse_autoencoder_loss(model: nn.Module, x: torch.Tensor, sparsity: float, beta: float) -> torch.Tensor:
    """||x_hat - x||^2 / 2 averaged over the batch, plus beta * sum_j KL(rho || rho_hat_j).

    rho_hat_j is the mean activation of code unit j over the batch and rho is ``sparsity``: the
    sparse autoencoder of Ng's lecture notes, which Szegedy et al. 2013 use for AE400-10.
    """
    code = model.encoder(x)
    recon = model.decoder(code)
    rho_hat = code.mean(dim=0).clamp(1e-6, 1 - 1e-6)
    kl = sparsity * torch.log(sparsity / rho_hat) + (1 - sparsity) * torch.log((1 - sparsity) / (1 - rho_hat))
    return 0.5 * (recon - x.flatten(1)).pow(2).sum(dim=1).mean() + beta * kl.sum()


def fit_autoencoder(model: nn.Module, x: torch.Tensor, *, epochs: int = 1, batch_size: int = 128,
                    lr: float = 1e-3, sparsity: float = 0.05, beta: float = 0.1, weight_decay: float = 0.0,
                    seed: int = 0, device: torch.device | None = None,
                    desc: str = "autoencoder") -> History:
    """Pre-train a sparse autoencoder (``model.encoder`` and ``model.decoder``, as in
    :class:`advlib.models.AE400`) on images ``x`` by Adam on :func:`sparse_autoencoder_loss`.

    Checked before any step: ``x`` at least one finite float image (N,C,H,W) in [0,1] of the model's dtype,
    ``epochs`` >= 0 and ``batch_size`` >= 1 whole numbers, ``lr`` finite and > 0, ``sparsity`` in (0, 1),
    ``beta`` finite and >= 0."""
    check_model(model)
    check_images(x)
    if len(x) == 0:
        raise ValueError("no examples: x is empty")
    check_model(model, x)
    _check_run(epochs, batch_size, lr, "constant")
    sparsity = check_real("sparsity", sparsity, strict=True)
    if sparsity >= 1:
        raise ValueError(f"sparsity (the target mean activation of a code unit) must lie in (0, 1), got {sparsity:g}")
    check_real("beta", beta)
    device = config.device() if device is None else device
    model.to(device)
    torch.manual_seed(seed)
    opt = torch.optim.Adam([*model.encoder.parameters(), *model.decoder.parameters()], lr=lr,
                           weight_decay=weight_decay)
    x = x.to(device)
    return _descend(model, len(x), lambda index: sparse_autoencoder_loss(model, x[index], sparsity, beta), opt,
                    epochs=epochs, batch_size=batch_size, seed=seed, device=device, desc=desc)


__all__ = ["History", "KeepBest", "SignDescent", "check_labels_fit_model", "classification_loss", "fit",
           "fit_autoencoder", "learning_rate_factor", "make_optimizer", "number_of_steps", "sparse_autoencoder_loss"]
