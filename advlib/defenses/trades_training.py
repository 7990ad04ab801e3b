"""TRADES: adversarial training with the trade-off between accuracy and robustness made explicit.

Zhang, Yu, Jiao, Xing, El Ghaoui and Jordan (2019, "Theoretically principled trade-off between robustness
and accuracy") split the robust error into the natural error and the error of being near the decision
boundary, and train on a surrogate of both (their Eq. (5)):

    min_f E_{(x, y)} [ CE(f(x), y) + beta * max_{x' in B(x, eps)} KL( p(x) || p(x') ) ],

with p = softmax f. The first term asks for accuracy, the second for a prediction that does not move inside
the ball; beta sets the trade-off (the paper: 6 on CIFAR-10, 1 on MNIST). The inner maximisation is PGD on
the KL term (their Alg. 1 and code): x' starts at x + 0.001 N(0, I) and takes ``steps`` signed gradient steps
of size ``alpha``, each projected onto the Linf ball and [0, 1], with the model in eval mode and p(x) held
fixed; the outer loss is then computed in train mode, with gradients through both p(x) and p(x').
:func:`trades_training` trains that way through :func:`advlib.train.fit`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import config, train
from ..attacks.core import project_linf
from ..utils import check_count, check_examples, check_model, check_real, eval_mode

__all__ = ["trades_kl_attack", "trades_loss", "trades_training"]


def trades_training(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, beta: float = 6.0,
                    alpha: float | None = None, steps: int = 10, epochs: int = 1, batch_size: int = 128,
                    lr: float = 1e-3, optimizer: str = "adam", schedule: str = "constant",
                    weight_decay: float = 0.0, seed: int = 0, device: torch.device | None = None,
                    desc: str = "TRADES training") -> train.History:
    """Zhang et al.'s TRADES (2019, Eq. (5)): each batch's loss is CE(f(x), y) + beta * KL(p(x) || p(x')),
    the KL divergence averaged over the batch, with x' from :func:`trades_kl_attack` (``steps`` steps of
    ``alpha``, default eps / 4, in the Linf ball of radius ``eps``).

    The paper's settings: CIFAR-10 eps = 0.031, 10 steps of 0.007, beta = 6; MNIST eps = 0.3, 40 steps of 0.01,
    beta = 1. beta = 0 is natural training (the attack still runs, and costs its steps). One epoch costs about
    ``steps + 2`` standard epochs. The attack's starting noise comes from a generator seeded by ``seed`` (as
    does the batch order), so a run repeats exactly. Returns :func:`advlib.train.fit`'s
    :class:`~advlib.train.History` and leaves the model in eval mode.
    """
    check_model(model)
    check_examples(x, y)
    eps = check_real("eps", eps, strict=True)
    beta = check_real("beta", beta)
    alpha = eps / 4 if alpha is None else check_real("alpha", alpha, strict=True)
    steps = check_count("steps", steps, low=1)
    device = config.device() if device is None else torch.device(device)
    generator = torch.Generator(device=device).manual_seed(seed)

    def loss(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, progress: float) -> torch.Tensor:
        return trades_loss(model, xb, yb, eps=eps, beta=beta, alpha=alpha, steps=steps, generator=generator)

    return train.fit(model, x, y, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                     schedule=schedule, weight_decay=weight_decay, seed=seed, device=device, desc=desc,
                     criterion=loss)


def trades_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, beta: float,
                alpha: float, steps: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """TRADES's loss on one batch (Zhang et al. 2019, Eq. (5)): CE(f(x), y) + beta * KL(p(x) || p(x')), both
    averaged over the batch, x' from :func:`trades_kl_attack` (its noise drawn from ``generator``), with
    gradients through f(x) and f(x'). The model's mode is left as it is (train mode, in training)."""
    x_adv = trades_kl_attack(model, x, eps=eps, alpha=alpha, steps=steps, generator=generator)
    logits, logits_adv = model(x), model(x_adv)  # two calls, as a batch-norm layer needs
    boundary = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1), reduction="batchmean")
    return F.cross_entropy(logits, y) + beta * boundary


def trades_kl_attack(model: nn.Module, x: torch.Tensor, *, eps: float, alpha: float, steps: int,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """TRADES's inner maximisation (Zhang et al. 2019, Alg. 1): PGD on KL(p(x) || p(x')) over the Linf ball of
    radius ``eps`` intersected with [0, 1], from x + 0.001 N(0, I) (noise drawn from ``generator``, on x's
    device), ``steps`` signed steps of size ``alpha``. The model runs in eval mode (its mode is restored) and
    only x' gets a gradient. Returns x', detached.
    """
    eps, alpha = check_real("eps", eps, strict=True), check_real("alpha", alpha, strict=True)
    steps = check_count("steps", steps, low=1)
    x = x.detach()
    with eval_mode(model):
        with torch.no_grad():
            target = F.softmax(model(x), dim=1)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_adv = project_linf(x + 0.001 * noise, x, eps)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            divergence = F.kl_div(F.log_softmax(model(x_adv), dim=1), target, reduction="sum")
            (grad,) = torch.autograd.grad(divergence, x_adv)
            x_adv = project_linf(x_adv.detach() + alpha * grad.sign(), x, eps)
    return x_adv.detach()
