"""Device, run profile and data folder.

The run profile sets every size a notebook uses (subset sizes, epochs, steps, samples):
``"full"`` follows the papers' settings and is the default on a GPU; ``"quick"`` keeps each chapter
to a few minutes on two CPU cores and is the default on a CPU and on Colab. ``ADVLIB_PROFILE`` overrides
both.
"""

from __future__ import annotations

import os
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

PROFILE_ENV = "ADVLIB_PROFILE"
DATA_ENV = "ADVLIB_DATA"


@dataclass(frozen=True)
class Sizes:
    """The sizes a run profile fixes. Notebooks read them instead of hard-coding numbers."""

    name: str
    train_size: int | None  # training examples used (None: the whole training set)
    test_size: int | None  # test examples used for accuracies (None: the whole test set)
    epochs: int  # epochs of the standard training runs
    batch_size: int  # training mini-batch size
    attack_size: int  # examples attacked in the attack chapters
    attack_steps: int  # iterations of iterative attacks
    samples: int  # Monte Carlo samples (noise, smoothing)

    def as_dict(self) -> dict:
        """The sizes as a plain dict, field name -> value."""
        return asdict(self)


PROFILES = {
    "quick": Sizes("quick", train_size=12_000, test_size=2_000, epochs=5, batch_size=128,
                   attack_size=200, attack_steps=20, samples=1_000),
    "full": Sizes("full", train_size=None, test_size=None, epochs=20, batch_size=128,
                  attack_size=10_000, attack_steps=100, samples=100_000),
}


def device() -> torch.device:
    """The device advlib computes on: the first CUDA GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def on_colab() -> bool:
    """Whether advlib runs in a Google Colab notebook (its ``google.colab`` module is loaded)."""
    return "google.colab" in sys.modules


def profile() -> str:
    """The run profile: ``ADVLIB_PROFILE`` if set, else ``"quick"`` on a CPU and on Colab and ``"full"`` on
    any other GPU. Colab's GPUs get the quick profile (minutes); a reader opts in to the papers' settings
    with the ``PROFILE`` variable of a chapter's first cell, which sets ``ADVLIB_PROFILE``."""
    name = os.environ.get(PROFILE_ENV, "").strip().lower()
    if not name:
        return "full" if torch.cuda.is_available() and not on_colab() else "quick"
    if name not in PROFILES:
        raise ValueError(f"{PROFILE_ENV}={name!r} is not a run profile; expected one of {sorted(PROFILES)}")
    return name


def sizes(name: str | None = None) -> Sizes:
    """The sizes of run profile ``name`` (default: the current :func:`profile`)."""
    name = profile() if name is None else name
    if name not in PROFILES:
        raise ValueError(f"unknown run profile {name!r}; expected one of {sorted(PROFILES)}")
    return PROFILES[name]


def data_dir() -> Path:
    """Where datasets and trained models are cached.

    ``ADVLIB_DATA`` if set; else the ``data/`` folder of the source checkout advlib runs from;
    else (an installed advlib, as on Colab) ``~/.cache/advlib``.
    """
    env = os.environ.get(DATA_ENV)
    if env:
        path = Path(env).expanduser()
    else:
        checkout = Path(__file__).resolve().parent.parent
        if (checkout / "pyproject.toml").is_file() and (checkout / "data").is_dir():
            path = checkout / "data"
        else:
            path = Path.home() / ".cache" / "advlib"
    path.mkdir(parents=True, exist_ok=True)
    return path


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
