"""Shared fixtures of advlib's unit tests.

Fashion-MNIST is the dataset of every test: it is loaded once per session from the data folder
(fetched there first if missing, as ``make test`` does). Tests that write (zoo caches, staged
datasets, files in torchvision's layout) do so under pytest's temporary folders only.
"""

from __future__ import annotations

import copy
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from advlib import config, data, models, train  # noqa: E402  (after choosing the backend)

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


@pytest.fixture(scope="session")
def small_mlp(fashion_root):
    """``small_mlp(epochs) -> (model, x_test, y_test)``: an MLP with one hidden layer of 64 units trained for
    ``epochs`` epochs on 3,000 Fashion-MNIST training images (seed 0, CPU), in eval mode with no gradients
    left, and 500 test images of the same split. Each epoch count is trained once per session; every call
    returns a fresh copy of the model and of the images, so a test module may change them freely.

    Training runs on one torch thread: the model is tiny, and on a shared 2-core machine a second thread
    spinning for its turn slows each small operation down several times."""
    trained: dict[int, tuple] = {}

    def make(epochs: int):
        if epochs not in trained:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            torch.manual_seed(0)
            (x_train, y_train), (x_test, y_test) = data.load_subsets("fashion-mnist", 3000, 500, seed=0)
            model = models.mlp((64,))
            train.fit(model, x_train, y_train, epochs=epochs, seed=0, device=torch.device("cpu"))
            model.eval().zero_grad(set_to_none=True)
            trained[epochs] = (model, x_test, y_test)
            torch.set_num_threads(threads)
        model, x_test, y_test = trained[epochs]
        return copy.deepcopy(model), x_test.clone(), y_test.clone()

    return make


@pytest.fixture(scope="session")
def attacked_images(small_mlp):
    """``attacked_images(n) -> (model, x, y)``: the small MLP trained for 3 epochs (``small_mlp(3)``, a fresh
    copy) and the first ``n`` of its test images with their labels, checked to be classified more than 70%
    right, so that attacks have correct answers to change."""

    def make(n: int):
        model, x_test, y_test = small_mlp(3)
        x, y = x_test[:n], y_test[:n]
        with torch.no_grad():
            assert (model(x).argmax(1) == y).float().mean() > 0.7
        return model, x, y

    return make


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for the module (small models on a shared 2-core machine); restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
