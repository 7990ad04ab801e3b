"""advlib.zoo: train once, cache atomically under a hash of the configuration, never trust a bad file,
never lose a trained model to a cache that cannot be written, train once when asked twice at once.

Every test runs in a temporary data folder (``ADVLIB_DATA``) with a tiny recipe and a tiny "quick"
profile, and reads Fashion-MNIST from the session's copy in memory, so a training takes well under a
second and the real cache is never touched.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import threading
from types import SimpleNamespace

import pytest
import torch

from advlib import config, data, defenses, models, train, zoo

TINY = config.Sizes("quick", train_size=256, test_size=128, epochs=1, batch_size=64, attack_size=8,
                    attack_steps=2, samples=10)


@pytest.fixture
def env(tmp_path, monkeypatch, fashion_train, fashion_test):
    root = tmp_path / "cache"
    monkeypatch.setenv(config.DATA_ENV, str(root))
    monkeypatch.setenv(config.PROFILE_ENV, "quick")
    monkeypatch.setitem(config.PROFILES, "quick", TINY)
    monkeypatch.setitem(zoo.RECIPES, "tiny", zoo.Recipe("fc10", description="a test model"))
    splits = {"train": fashion_train, "test": fashion_test}

    def load(name="fashion-mnist", split="train", **kwargs):
        assert name == "fashion-mnist"
        return splits[split]

    monkeypatch.setattr(data, "load", load)
    calls = []
    real_train = zoo._train

    def counting_train(model, conf, device):
        calls.append(conf)
        return real_train(model, conf, device)

    monkeypatch.setattr(zoo, "_train", counting_train)
    return SimpleNamespace(root=root, zoo=root / "zoo", calls=calls)


def state(model):
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def same_state(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def listing(folder):
    """The files in ``folder``, lock files aside (filelock leaves them, empty, for the next process)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_get_trains_once_then_reuses_the_cache(env):
    first = zoo.get("tiny")
    assert len(env.calls) == 1
    file = zoo.path("tiny")
    assert file.parent == env.zoo and file.is_file()
    assert listing(env.zoo) == [file.name]  # no temporary file left beside it
    assert not first.training
    second = zoo.get("tiny")
    assert len(env.calls) == 1  # loaded, not trained
    assert same_state(state(first), state(second))
    assert not second.training
    # the model learned something (ten classes: chance is 10%)
    assert train.classification_loss(second(data.load("fashion-mnist", "test")[0][:512]),
                                     data.load("fashion-mnist", "test")[1][:512]).item() < 2.0


def test_record_holds_the_configuration_and_results(env):
    rec = zoo.record("tiny")
    assert len(env.calls) == 1
    assert rec["config"] == zoo.configuration("tiny")
    assert "state_dict" not in rec
    assert len(rec["epoch_losses"]) == TINY.epochs
    assert 0.3 < rec["test_accuracy"] <= 1.0
    # the work, the same on every machine: one epoch of 256 images in batches of 64
    assert (rec["optimizer_steps"], rec["examples_seen"]) == (4, 256)
    assert isinstance(rec["train_seconds"], float)  # recorded for display, compared by nothing
    zoo.record("tiny")
    assert len(env.calls) == 1


def test_work_follows_the_recipe_batch_size(env, monkeypatch):
    monkeypatch.setitem(zoo.RECIPES, "tiny-noise", zoo.Recipe("fc10", trainer="noise",
                                                             train_kwargs={"sigma": 0.25, "batch_size": 32}))
    rec = zoo.record("tiny-noise")
    assert (rec["optimizer_steps"], rec["examples_seen"]) == (8, 256)  # 256 images in batches of 32


def test_record_of_a_file_from_before_work_counts_computes_them(env):
    zoo.get("tiny")
    file = zoo.path("tiny")
    checkpoint = torch.load(file, weights_only=True)
    del checkpoint["optimizer_steps"], checkpoint["examples_seen"]
    torch.save(checkpoint, file)
    rec = zoo.record("tiny")
    assert (rec["optimizer_steps"], rec["examples_seen"]) == (4, 256)
    assert len(env.calls) == 1  # computed from the recipe, not retrained


def test_cache_file_is_named_by_the_configuration_hash(env, monkeypatch):
    conf = zoo.configuration("tiny")
    assert conf["recipe"]["arch"] == "fc10" and conf["profile"] == "quick"
    assert (conf["train_size"], conf["epochs"], conf["batch_size"]) == (256, 1, 64)
    digest = hashlib.sha256(json.dumps(conf, sort_keys=True).encode()).hexdigest()[:16]
    assert zoo.key("tiny") == digest
    assert zoo.path("tiny") == env.zoo / f"tiny-{digest}.pt"
    quick = zoo.path("tiny")
    assert zoo.path("tiny", "quick") == quick
    assert zoo.path("tiny", "full") != quick  # another profile, another file
    monkeypatch.setitem(config.PROFILES, "quick", config.Sizes(**{**TINY.as_dict(), "epochs": 2}))
    assert zoo.path("tiny") != quick  # another size, another file
    monkeypatch.setitem(config.PROFILES, "quick", TINY)
    assert zoo.path("tiny") == quick
    monkeypatch.setitem(zoo.RECIPES, "tiny", zoo.Recipe("fc10", lr=2e-3, description="a test model"))
    assert zoo.path("tiny") != quick  # another recipe, another file
    assert zoo.key("fc10-1e-4") != zoo.key("fc10-1e-2")


def test_same_seed_trains_the_same_weights(env, monkeypatch):
    a = state(zoo.get("tiny"))
    torch.rand(1000)  # the global random state must not matter
    b = state(zoo.get("tiny", retrain=True))
    assert len(env.calls) == 2
    assert same_state(a, b)
    monkeypatch.setitem(zoo.RECIPES, "tiny-seed1", zoo.Recipe("fc10", seed=1))
    c = state(zoo.get("tiny-seed1"))
    assert not same_state(a, c)


def test_get_leaves_the_global_random_state_alone_when_loading(env):
    zoo.get("tiny")
    torch.manual_seed(42)
    expected = torch.rand(3)
    torch.manual_seed(42)
    zoo.get("tiny")
    assert torch.equal(torch.rand(3), expected)


def interrupted_save(obj, f, *args, **kwargs):
    f.write(b"PK\x03\x04 half a checkpoint")
    raise KeyboardInterrupt("interrupted by the test")


def test_interrupted_write_leaves_no_file(env, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(zoo.torch, "save", interrupted_save)
        with pytest.raises(KeyboardInterrupt, match="interrupted by the test"):
            zoo.get("tiny")
    assert listing(env.zoo) == []  # neither the final file nor the temporary one
    zoo.get("tiny")  # the next call trains and writes a good file
    assert len(env.calls) == 2
    assert listing(env.zoo) == [zoo.path("tiny").name]


def test_interrupted_rewrite_keeps_the_good_file(env, monkeypatch):
    good = state(zoo.get("tiny"))
    file = zoo.path("tiny")
    blob = file.read_bytes()
    with monkeypatch.context() as m:
        m.setattr(zoo.torch, "save", interrupted_save)
        with pytest.raises(KeyboardInterrupt, match="interrupted by the test"):
            zoo.get("tiny", retrain=True)
    assert file.read_bytes() == blob
    assert listing(env.zoo) == [file.name]
    assert same_state(state(zoo.get("tiny")), good)
    assert len(env.calls) == 2  # the first training and the interrupted one; the last call loaded


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_cache_file_is_retrained(env, damage):
    good = state(zoo.get("tiny"))
    file = zoo.path("tiny")
    blob = file.read_bytes()
    file.write_bytes({"truncate": blob[: len(blob) // 2], "garbage": os.urandom(len(blob)), "empty": b""}[damage])
    with pytest.warns(UserWarning, match="unreadable"):
        model = zoo.get("tiny")
    assert len(env.calls) == 2
    assert same_state(state(model), good)
    assert torch.load(file, weights_only=True, map_location="cpu")["config"] == zoo.configuration("tiny")
    zoo.get("tiny")
    assert len(env.calls) == 2  # the rewritten file is good


def test_cache_file_of_another_configuration_is_retrained(env):
    zoo.get("tiny")
    file = zoo.path("tiny")
    checkpoint = torch.load(file, weights_only=True)
    checkpoint["config"]["recipe"]["lr"] = 0.5
    checkpoint["state_dict"] = {k: torch.zeros_like(v) for k, v in checkpoint["state_dict"].items()}
    torch.save(checkpoint, file)
    with pytest.warns(UserWarning, match="another configuration"):
        model = zoo.get("tiny")
    assert len(env.calls) == 2
    assert any(v.abs().sum() > 0 for v in model.state_dict().values())
    assert torch.load(file, weights_only=True)["config"] == zoo.configuration("tiny")


def test_cache_file_holding_no_checkpoint_is_retrained(env):
    file = zoo.path("tiny")
    file.parent.mkdir(parents=True)
    torch.save(torch.zeros(3), file)
    with pytest.warns(UserWarning, match="another configuration"):
        zoo.get("tiny")
    assert len(env.calls) == 1


def wrong_weights(state_dict: dict, how: str):
    """A state dict (or not one) that the recipe's model cannot take."""
    first = next(iter(state_dict))
    if how == "missing":
        return {k: v for k, v in state_dict.items() if k != first}
    if how == "unexpected":
        return {**state_dict, "extra.weight": torch.zeros(3)}
    if how == "shape":
        return {**state_dict, first: torch.zeros(*state_dict[first].shape[:-1], 7)}
    return torch.zeros(3)  # "not a dict"


@pytest.mark.parametrize("how", ["missing", "unexpected", "shape", "not a dict"])
def test_cache_file_whose_weights_do_not_fit_is_retrained(env, how):
    good = state(zoo.get("tiny"))
    file = zoo.path("tiny")
    checkpoint = torch.load(file, weights_only=True)
    checkpoint["state_dict"] = wrong_weights(checkpoint["state_dict"], how)
    torch.save(checkpoint, file)
    with pytest.warns(UserWarning, match=re.escape(f"ignoring zoo file {file}: its weights do not fit")):
        model = zoo.get("tiny")
    assert len(env.calls) == 2
    assert same_state(state(model), good)  # retrained from the recipe's seed, not from the bad weights
    zoo.get("tiny")
    assert len(env.calls) == 2  # the rewritten file is good


def refuse(*args, **kwargs):
    raise PermissionError(errno.EACCES, "Permission denied (simulated read-only cache)")


def disk_full(src, dst):
    raise OSError(errno.ENOSPC, "No space left on device (simulated)")


@pytest.mark.parametrize("failure", ["read-only", "disk full"])
def test_cache_that_cannot_be_written_still_returns_the_model(env, monkeypatch, failure):
    if failure == "read-only":  # what a read-only folder does, also where the tests run as root
        monkeypatch.setattr(zoo.tempfile, "NamedTemporaryFile", refuse)
        monkeypatch.setattr(zoo.filelock, "FileLock", refuse)
    else:
        monkeypatch.setattr(zoo.os, "replace", disk_full)
    with pytest.warns(UserWarning, match=re.escape(f"could not cache zoo model 'tiny' in {env.zoo}")):
        model = zoo.get("tiny")
    assert len(env.calls) == 1 and not model.training
    assert train.classification_loss(model(data.load("fashion-mnist", "test")[0][:512]),
                                     data.load("fashion-mnist", "test")[1][:512]).item() < 2.0
    assert listing(env.zoo) == []  # nothing half-written left
    with pytest.warns(UserWarning, match=re.escape(str(env.zoo))):
        rec = zoo.record("tiny")  # a record too, without a file to read it from
    assert rec["config"] == zoo.configuration("tiny") and len(env.calls) == 2


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_cache_folder_still_returns_the_model(env):
    env.zoo.mkdir(parents=True)
    env.zoo.chmod(0o555)
    try:
        with pytest.warns(UserWarning, match=re.escape(str(env.zoo))):
            model = zoo.get("tiny")
    finally:
        env.zoo.chmod(0o755)
    assert len(env.calls) == 1 and not model.training
    assert listing(env.zoo) == []


def test_two_threads_asking_for_one_model_train_it_once(env, monkeypatch):
    """The second caller waits on the file's lock while the first trains, then loads its file. Training
    starts only once both callers have asked for the lock, so without the lock both would train."""
    asked, both_asked = [], threading.Event()
    real_lock, counting_train = zoo._lock, zoo._train

    @contextlib.contextmanager
    def lock(file):
        asked.append(file)
        if len(asked) == 2:
            both_asked.set()
        with real_lock(file):
            yield

    def train_when_both_asked(model, conf, device):
        assert both_asked.wait(timeout=120), "the second caller never asked for the model"
        return counting_train(model, conf, device)

    monkeypatch.setattr(zoo, "_lock", lock)
    monkeypatch.setattr(zoo, "_train", train_when_both_asked)
    results, errors = [], []

    def ask():
        try:
            results.append(state(zoo.get("tiny", device=torch.device("cpu"))))
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == [] and len(results) == 2
    assert len(env.calls) == 1  # trained once; the other caller loaded the file
    assert same_state(results[0], results[1])
    assert listing(env.zoo) == [zoo.path("tiny").name]


class _Payload:
    """Unpickling this makes a directory: what an arbitrary pickle could do, harmlessly."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_loading_is_weights_only(env, tmp_path):
    model = models.fc10()
    marker = tmp_path / "payload-ran"
    checkpoint = {"config": zoo.configuration("tiny"), "state_dict": model.state_dict(),
                  "note": _Payload(marker)}
    file = zoo.path("tiny")
    file.parent.mkdir(parents=True)
    torch.save(checkpoint, file)
    evil = file.read_bytes()
    with pytest.warns(UserWarning, match="unreadable"):
        zoo.get("tiny")
    assert not marker.exists()  # the pickle was refused, not run
    assert len(env.calls) == 1  # and the model retrained
    # the payload is real: a full unpickling would have run it
    (tmp_path / "evil.pt").write_bytes(evil)
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.is_dir()


def test_autoencoder_recipe_with_arch_kwargs(env, monkeypatch):
    monkeypatch.setitem(zoo.RECIPES, "tiny-ae", zoo.Recipe("ae400-10", trainer="autoencoder",
                                                          arch_kwargs={"code": 16}))
    model = zoo.get("tiny-ae")
    assert isinstance(model, models.AE400) and model.classifier.in_features == 16
    rec = zoo.record("tiny-ae")
    assert len(rec["epoch_losses"]) == 2 * TINY.epochs  # pre-training, then classifier
    assert (rec["optimizer_steps"], rec["examples_seen"]) == (8, 512)  # both phases' work
    assert len(env.calls) == 1


def test_unknown_trainer_raises(env, monkeypatch):
    monkeypatch.setitem(zoo.RECIPES, "tiny-bad", zoo.Recipe("fc10", trainer="magic"))
    with pytest.raises(ValueError, match="magic"):
        zoo.get("tiny-bad")
    assert not env.zoo.exists() or listing(env.zoo) == []


def test_unknown_name_raises(env):
    for call in (zoo.get, zoo.path, zoo.recipe, zoo.configuration):
        with pytest.raises(ValueError, match="no-such-model") as error:
            call("no-such-model")
        assert "small-cnn" in str(error.value)
    assert env.calls == []


def test_every_recipe_is_buildable():
    for name in zoo.names():
        spec = zoo.recipe(name)
        assert spec.arch in models.ARCHITECTURES, name
        assert spec.trainer in ("standard", "autoencoder", *zoo.TRAINERS), name
        assert spec.schedule in train.SCHEDULES, name
        assert bool(spec.train_kwargs) == (spec.trainer in zoo.TRAINERS), name
        assert spec.trainer not in zoo.TRAINERS or hasattr(defenses, zoo.TRAINERS[spec.trainer]), name
        assert spec.optimizer in train.OPTIMIZERS, name
        assert spec.description, name
        models.build(spec.arch, spec.dataset, **spec.arch_kwargs)
