"""Shared fixtures of advlib's unit tests.

Fashion-MNIST is the dataset of every test: it is loaded once per session from the data folder
(fetched there first if missing, as ``make test`` does). Tests that write (zoo caches, staged
datasets, files in torchvision's layout) do so under pytest's temporary folders only.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from advlib import config, data  # noqa: E402  (after choosing the backend)

FASHION_STEMS = tuple(data.FASHION_MNIST_SHA256)


@pytest.fixture(autouse=True)
def _quiet_and_isolated(monkeypatch):
    """No progress bars; no profile override leaking in from the shell that runs the tests."""
    monkeypatch.setenv("ADVLIB_PROGRESS", "0")
    monkeypatch.delenv(config.PROFILE_ENV, raising=False)


@pytest.fixture(scope="session")
def fashion_root() -> Path:
    """The data folder that holds Fashion-MNIST (the real cache; read only by the tests)."""
    root = config.data_dir()
    raw = root / data.info("fashion-mnist").folder / "raw"
    if not all((raw / stem).is_file() for stem in FASHION_STEMS):
        try:
            data.fetch("fashion-mnist")
        except data.DatasetNotFoundError as error:
            pytest.skip(f"Fashion-MNIST is not available here: {error}")
    return root


@pytest.fixture(scope="session")
def fashion_raw(fashion_root) -> Path:
    """The folder of Fashion-MNIST's four decompressed IDX files (skip when they are absent)."""
    raw = fashion_root / data.info("fashion-mnist").folder / "raw"
    if not all((raw / stem).is_file() for stem in FASHION_STEMS):
        pytest.skip(f"Fashion-MNIST's IDX files are not under {raw}")
    return raw


@pytest.fixture(scope="session")
def fashion_test(fashion_root) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole Fashion-MNIST test split, loaded once. Tests must not modify it."""
    return data.load("fashion-mnist", "test")


@pytest.fixture(scope="session")
def fashion_train(fashion_root) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole Fashion-MNIST training split, loaded once. Tests must not modify it."""
    return data.load("fashion-mnist", "train")


@pytest.fixture(scope="session")
def small_train(fashion_train) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded subset of 1,000 training images (a copy)."""
    x, y = data.subset(*fashion_train, 1000, seed=0)
    return x.clone(), y.clone()
