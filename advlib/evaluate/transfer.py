"""The transfer matrix of Szegedy et al. (2013, Table 2): the error that adversarial examples made on
one model cause on others."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import nn

from ..utils import (
    check_examples,
    model_device,
    progress,
)
from .batches import (
    Attack,
    _attacked,
    _check_attack,
    _correct,
)


class TransferMatrix(NamedTuple):
    """The result of :func:`transfer_matrix`.

    ``errors[i, j]``: the error rate of target model ``targets[j]`` on the adversarial examples made on
    source model ``sources[i]``; ``distortion[i]``: their mean distortion, Szegedy et al.'s
    sqrt(sum_k (x'_k - x_k)^2 / n) over the n channel values of an image.
    """

    errors: torch.Tensor  # (len(sources), len(targets)), float64, on the CPU
    sources: list[str]  # row names
    targets: list[str]  # column names
    distortion: torch.Tensor  # (len(sources),)

    def to_dict(self) -> dict[str, dict[str, float]]:
        """``{source: {target: error}}``, e.g. for ``pandas.DataFrame(result.to_dict()).T``."""
        return {s: {t: float(self.errors[i, j]) for j, t in enumerate(self.targets)}
                for i, s in enumerate(self.sources)}


def _check_models(name: str, models) -> None:
    if not isinstance(models, Mapping):
        raise TypeError(f"{name} must be a mapping name -> model, got {type(models).__name__}")
    if not models:
        raise ValueError(f"{name} must hold at least one named model")
    for key, model in models.items():
        if not isinstance(model, nn.Module):
            raise TypeError(f"{name}[{key!r}] must be a torch.nn.Module returning logits, got {type(model).__name__}")


def transfer_matrix(sources: Mapping[str, nn.Module], targets: Mapping[str, nn.Module],
                    attack: Attack | Mapping[str, Attack], x: torch.Tensor, y: torch.Tensor, *,
                    batch_size: int = 256, desc: str = "transfer") -> TransferMatrix:
    """How adversarial examples transfer between models (Szegedy et al. 2013, Sec. 4.3 and Table 2).

    For each source model, ``attack(source, x, y)`` makes the adversarial examples once (in batches of
    ``batch_size``), and every target model classifies them: entry ``[i, j]`` of the returned
    ``errors`` is the error rate, Class_j(x_adv) != y, of target j on the examples made on source i.
    When a model is both source i and target j, the entry is its white-box error under the attack
    (the diagonal of Szegedy's table, 100% for an attack that always succeeds).

    ``attack`` is a callable ``attack(model, x, y) -> x_adv``, or a mapping from each source's name to
    its own callable (rows that add noise instead of attacking, like Szegedy's Gaussian-noise rows,
    take any model and ignore it). ``y`` holds the true labels. Returns a :class:`TransferMatrix`
    ``(errors, sources, targets, distortion)``.
    """
    _check_models("sources", sources)
    _check_models("targets", targets)
    check_examples(x, y, batch_size)
    if isinstance(attack, Mapping):
        missing = [name for name in sources if name not in attack]
        if missing:
            raise ValueError(f"no attack given for the sources {missing}")
        attacks = dict(attack)
        for name in sources:
            _check_attack(attacks[name], f"attack[{name!r}]")
    else:
        _check_attack(attack)
        attacks = {name: attack for name in sources}
    source_names, target_names = list(sources), list(targets)
    wrong = torch.zeros(len(source_names), len(target_names), dtype=torch.float64)
    distortion = torch.zeros(len(source_names), dtype=torch.float64)
    starts = range(0, len(x), batch_size)
    bar = progress(total=len(starts) * len(source_names), desc=desc, unit="batch")
    with bar:
        for start in starts:
            yb = y[start:start + batch_size]
            for i, name in enumerate(source_names):
                source = sources[name]
                device = model_device(source)
                xb = x[start:start + batch_size].to(device)
                x_adv = _attacked(attacks[name], source, xb, yb.to(device))
                delta = (x_adv.float() - xb.float()).flatten(1)
                distortion[i] += delta.pow(2).mean(dim=1).sqrt().sum().item()
                for j, target_name in enumerate(target_names):
                    wrong[i, j] += int((~_correct(targets[target_name], x_adv, yb)).sum())
                bar.update(1)
    return TransferMatrix(wrong / len(x), source_names, target_names, distortion / len(x))
