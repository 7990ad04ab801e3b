"""advlib.config: run profile, sizes, data folder, seeds."""

from __future__ import annotations

import random
import sys
import types
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from advlib import config


def test_profile_defaults_to_the_hardware(monkeypatch):
    expected = "full" if torch.cuda.is_available() else "quick"
    assert config.profile() == expected


@pytest.mark.parametrize("gpu, expected", [(False, "quick"), (True, "full")])
def test_profile_follows_gpu_presence(monkeypatch, gpu, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    assert config.profile() == expected


@pytest.mark.parametrize("gpu", [False, True])
def test_profile_on_colab_is_quick_even_on_its_gpu(monkeypatch, gpu):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert config.on_colab()
    assert config.profile() == "quick"
    monkeypatch.setenv(config.PROFILE_ENV, "full")  # the chapter's PROFILE variable opts in
    assert config.profile() == "full"


@pytest.mark.parametrize("value, expected", [("full", "full"), ("quick", "quick"), (" FULL ", "full"),
                                             ("Quick", "quick")])
@pytest.mark.parametrize("gpu", [False, True])
def test_profile_env_overrides(monkeypatch, value, expected, gpu):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setenv(config.PROFILE_ENV, value)
    assert config.profile() == expected
    assert config.sizes().name == expected


def test_profile_empty_env_means_default(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(config.PROFILE_ENV, "")
    assert config.profile() == "quick"


def test_unknown_profile_raises_naming_the_allowed_ones(monkeypatch):
    monkeypatch.setenv(config.PROFILE_ENV, "turbo")
    with pytest.raises(ValueError, match=rf"{config.PROFILE_ENV}='turbo' is not a run profile; expected one of") \
            as error:
        config.profile()
    assert "full" in str(error.value) and "quick" in str(error.value)
    with pytest.raises(ValueError, match=r"'turbo' is not a run profile; expected one of \['full', 'quick'\]"):
        config.sizes()
    with pytest.raises(ValueError, match=r"unknown run profile 'turbo'; expected one of \['full', 'quick'\]"):
        config.sizes("turbo")


def test_sizes_fields():
    names = {f.name for f in fields(config.Sizes)}
    assert names == {"name", "train_size", "test_size", "epochs", "batch_size", "attack_size", "attack_steps",
                     "samples"}
    quick, full = config.sizes("quick"), config.sizes("full")
    assert quick.name == "quick" and full.name == "full"
    assert set(quick.as_dict()) == names
    assert quick.as_dict()["epochs"] == quick.epochs
    # full follows the papers: the whole training and test sets
    assert full.train_size is None and full.test_size is None
    # quick is a strict reduction of full, with positive sizes that fit inside Fashion-MNIST
    assert 0 < quick.train_size < 60_000 and 0 < quick.test_size <= 10_000
    for name in ("epochs", "attack_size", "attack_steps", "samples"):
        assert 0 < getattr(quick, name) <= getattr(full, name), name
    assert quick.batch_size > 0 and full.batch_size > 0


def test_sizes_default_is_current_profile(monkeypatch):
    monkeypatch.setenv(config.PROFILE_ENV, "full")
    assert config.sizes() is config.PROFILES["full"]
    monkeypatch.setenv(config.PROFILE_ENV, "quick")
    assert config.sizes() is config.PROFILES["quick"]


def test_sizes_are_frozen():
    with pytest.raises(AttributeError, match="cannot assign to field 'epochs'"):
        config.sizes("quick").epochs = 100


def test_data_dir_honours_env(monkeypatch, tmp_path):
    target = tmp_path / "nested" / "cache"
    monkeypatch.setenv(config.DATA_ENV, str(target))
    assert config.data_dir() == target
    assert target.is_dir()  # created on demand


def test_data_dir_default_is_checkout_data(monkeypatch):
    monkeypatch.delenv(config.DATA_ENV, raising=False)
    path = config.data_dir()
    assert path.is_dir()
    checkout = Path(config.__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file():
        assert path == checkout / "data"


def test_seed_everything_repeats_random_streams():
    gen = config.seed_everything(123)
    a = (torch.rand(5), np.random.rand(3), random.random(), torch.rand(3, generator=gen))
    gen = config.seed_everything(123)
    b = (torch.rand(5), np.random.rand(3), random.random(), torch.rand(3, generator=gen))
    assert torch.equal(a[0], b[0])
    assert np.array_equal(a[1], b[1])
    assert a[2] == b[2]
    assert torch.equal(a[3], b[3])
    config.seed_everything(124)
    assert not torch.equal(torch.rand(5), a[0])


def test_seed_everything_generator_matches_manual_seed():
    gen = config.seed_everything(7)
    assert torch.equal(torch.rand(4, generator=gen), torch.rand(4, generator=torch.Generator().manual_seed(7)))


def test_device_is_cpu_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert config.device() == torch.device("cpu")
