"""Named models, trained on first use and cached: ``model = zoo.get("small-cnn")``.

A model's cache file lives under ``<data folder>/zoo/`` and is named by a hash of everything that
decides its weights: the recipe (architecture, dataset, optimiser, learning rate, weight decay, seed)
and the run profile's sizes (training subset, epochs, batch size). Another profile or recipe is
another file; the same ones reuse the file. Files are written atomically (a temporary file in the
same folder, fsynced, then renamed over), loaded with ``torch.load(..., weights_only=True)``, and a
file that fails to load, holds another configuration or weights that do not fit the recipe's model is
retrained (with a warning naming it), never trusted. Training and saving hold a lock on the file, so two
processes asking for the same untrained model train it once: the second waits and loads the first's
file. A cache that cannot be written (a read-only folder, a full disk) costs a warning, never the model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import filelock
import torch
from torch import nn

from . import config, data, defenses, metrics, models, smoothing, train, utils

ZOO_VERSION = 2  # bump when a change to the training code changes the weights a recipe gives


@dataclass(frozen=True)
class Recipe:
    """How a zoo model is trained. Sizes (subset, epochs, batch size) come from the run profile."""

    arch: str
    dataset: str = "fashion-mnist"
    trainer: str = "standard"  # "standard": train.fit; "autoencoder": pre-train, then the classifier;
    # or one of TRAINERS (adversarial, certified, noise-augmented training), called with train_kwargs
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    schedule: str = "constant"  # learning rate: "constant", or "linear" decay to zero
    arch_kwargs: dict = field(default_factory=dict)
    train_kwargs: dict = field(default_factory=dict)  # the trainer's own settings (eps, steps, ...)
    description: str = ""


# trainers beyond train.fit: the recipe's trainer name -> the function of advlib.defenses that trains
TRAINERS = {"madry": "madry_training", "fast": "fast_adversarial_training",
            "certified": "certified_training", "noise": "gaussian_noise_training",
            "ablation": "ablation_training", "trades": "trades_training"}

RECIPES: dict[str, Recipe] = {
    "fc10-1e-4": Recipe("fc10", weight_decay=1e-4,
                        description="Szegedy et al.'s FC10(1e-4): softmax on pixels, weight decay 1e-4"),
    "fc10-1e-2": Recipe("fc10", weight_decay=1e-2,
                        description="Szegedy et al.'s FC10(1e-2): softmax on pixels, weight decay 1e-2"),
    "fc10-1": Recipe("fc10", weight_decay=1.0,
                     description="Szegedy et al.'s FC10(1): softmax on pixels, weight decay 1"),
    "fc100-100-10": Recipe("fc100-100-10", weight_decay=1e-5, arch_kwargs={"activation": "sigmoid"},
                           description="Szegedy et al.'s FC100-100-10: sigmoid network, weight decay 1e-5"),
    "fc100-100-10-relu": Recipe("fc100-100-10", weight_decay=1e-5, arch_kwargs={"activation": "relu"},
                                description="a ReLU network with two hidden layers of 100 units, trained "
                                            "normally (chapter 15's network to verify exactly)"),
    "fc200-200-10": Recipe("fc200-200-10", weight_decay=1e-5, arch_kwargs={"activation": "sigmoid"},
                           description="Szegedy et al.'s FC200-200-10: sigmoid network, weight decay 1e-5"),
    "ae400-10": Recipe("ae400-10", trainer="autoencoder", weight_decay=1e-6,
                       description="Szegedy et al.'s AE400-10: sparse sigmoid autoencoder, softmax on its code"),
    "small-cnn": Recipe("small-cnn", schedule="linear",
                        description="two conv + max-pool stages, dense 128, softmax; learning rate decayed to 0"),
    "wong-kolter": Recipe("wong-kolter",
                          description="Wong and Kolter's conv net, trained normally (not robustly)"),
    "wong-kolter-madry": Recipe("wong-kolter", trainer="madry",
                                train_kwargs={"eps": 0.1, "alpha": 0.025, "steps": 7},
                                description="Wong and Kolter's conv net, Madry adversarial training at eps 0.1 "
                                            "(PGD, 7 steps of eps/4 from a random start: the paper's CIFAR-10 "
                                            "recipe scaled to eps)"),
    "wong-kolter-fast": Recipe("wong-kolter", trainer="fast", lr=5e-3, schedule="cyclic",
                               train_kwargs={"eps": 0.1},
                               description="Wong and Kolter's conv net, fast adversarial training at eps 0.1 "
                                           "(FGSM from a random start, step 1.25 eps, cyclic learning rate, "
                                           "early stop against catastrophic overfitting)"),
    "wong-kolter-certified": Recipe("wong-kolter", trainer="certified",
                                    train_kwargs={"eps": 0.1, "method": "dual", "batch_size": 50},
                                    description="Wong and Kolter's conv net, trained on their robust loss at eps 0.1 "
                                                "(the dual network's bound, eps ramped up, batch 50)"),
    "fc100-100-10-certified": Recipe("fc100-100-10", trainer="certified", arch_kwargs={"activation": "relu"},
                                     train_kwargs={"eps": 0.1, "method": "dual", "batch_size": 50},
                                     description="a ReLU network with two hidden layers of 100 units, trained on Wong "
                                                 "and Kolter's robust loss at eps 0.1 (the quick profile's stand-in "
                                                 "for their conv net, whose exact bounds are too slow on a CPU)"),
    "wong-kolter-ibp": Recipe("wong-kolter", trainer="certified",
                              train_kwargs={"eps": 0.1, "method": "ibp", "batch_size": 50},
                              description="Wong and Kolter's conv net, interval bound propagation training at "
                                          "eps 0.1 (Gowal et al. 2018)"),
    "wong-kolter-crown-ibp": Recipe("wong-kolter", trainer="certified",
                                    train_kwargs={"eps": 0.1, "method": "crown-ibp", "batch_size": 50},
                                    description="Wong and Kolter's conv net, CROWN-IBP training at eps 0.1 "
                                                "(Zhang et al. 2020)"),
    **{f"wong-kolter-trades-{beta}": Recipe("wong-kolter", trainer="trades",
                                            train_kwargs={"eps": 0.1, "beta": beta, "alpha": 0.025, "steps": 10},
                                            description=f"Wong and Kolter's conv net, TRADES at eps 0.1 with beta "
                                                        f"{beta} (Zhang et al. 2019: KL attack of 10 steps of eps/4)")
       for beta in (1.0, 3.0, 6.0)},
    "fc100-100-10-madry": Recipe("fc100-100-10", trainer="madry", arch_kwargs={"activation": "relu"},
                                 train_kwargs={"eps": 0.1, "alpha": 0.025, "steps": 7},
                                 description="a ReLU network with two hidden layers of 100 units, Madry adversarial "
                                             "training at eps 0.1 as wong-kolter-madry (chapter 16's quick-profile "
                                             "stand-in for the conv net)"),
    **{f"fc100-100-10-trades-{beta}": Recipe("fc100-100-10", trainer="trades", arch_kwargs={"activation": "relu"},
                                             train_kwargs={"eps": 0.1, "beta": beta, "alpha": 0.025, "steps": 10},
                                             description=f"a ReLU network with two hidden layers of 100 units, "
                                                         f"TRADES at eps 0.1 with beta {beta} as "
                                                         f"wong-kolter-trades-{beta} (chapter 16's quick-profile "
                                                         f"stand-in)")
       for beta in (1.0, 3.0, 6.0)},
    "wong-kolter-ablation-column-4": Recipe("wong-kolter", trainer="ablation", arch_kwargs={"ablated": True},
                                           train_kwargs={"size": 4, "kind": "column"},
                                           description="Wong and Kolter's conv net on ablated images: one band of "
                                                       "4 columns kept (Levine and Feizi 2020's base classifier "
                                                       "of column smoothing, their MNIST band width)"),
    **{f"wong-kolter-noise-{sigma}": Recipe("wong-kolter", trainer="noise", train_kwargs={"sigma": sigma},
                                            description=f"Wong and Kolter's conv net, trained on Gaussian noise "
                                                        f"of sigma {sigma} (Cohen et al. 2019's base classifier)")
       for sigma in (0.12, 0.25, 0.5, 1.0)},
}


def names() -> list[str]:
    """The names :func:`get` knows."""
    return sorted(RECIPES)


def recipe(name: str) -> Recipe:
    """The :class:`Recipe` of zoo model ``name``; a ``ValueError`` for an unknown name."""
    if name not in RECIPES:
        raise ValueError(f"unknown zoo model {name!r}; expected one of {names()}")
    return RECIPES[name]


def configuration(name: str, profile: str | None = None) -> dict:
    """Everything that decides the weights of zoo model ``name`` in run profile ``profile``."""
    sizes = config.sizes(profile)
    spec = {k: v for k, v in asdict(recipe(name)).items() if k != "description"}  # words don't change weights
    if not spec["train_kwargs"]:  # left out when empty, so the recipes before the field keep their keys
        del spec["train_kwargs"]
    return {"name": name, "zoo_version": ZOO_VERSION, "recipe": spec,
            "profile": sizes.name, "train_size": sizes.train_size, "epochs": sizes.epochs,
            "batch_size": sizes.batch_size}


def key(name: str, profile: str | None = None) -> str:
    """A short hash of :func:`configuration`: the cache file's key."""
    blob = json.dumps(configuration(name, profile), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def path(name: str, profile: str | None = None) -> Path:
    """The cache file of zoo model ``name`` in run profile ``profile``."""
    return config.data_dir() / "zoo" / f"{name}-{key(name, profile)}.pt"


def get(name: str, profile: str | None = None, *, retrain: bool = False,
        device: torch.device | None = None) -> nn.Module:
    """Zoo model ``name``, trained in run profile ``profile`` (default: the current one), in eval mode.

    Loads the cached weights when a valid cache file exists; otherwise trains the model (with a
    progress bar), writes the file atomically and returns it. ``retrain=True`` ignores the cache.
    A bad cache file is retrained and a cache that cannot be written still returns the model, each with a
    warning naming the file or folder; two processes asking at once train the model once (see ``advlib.zoo._obtain``).
    """
    device = config.device() if device is None else device
    model, _ = _obtain(name, profile, retrain=retrain, device=device)
    return model.to(device).eval()


def record(name: str, profile: str | None = None) -> dict:
    """What was recorded when zoo model ``name`` was trained: configuration, per-epoch losses, the
    training work (``optimizer_steps``, ``examples_seen``: the same on every machine, so the numbers to
    compare), the training seconds (for display: they depend on the machine and its load), test accuracy
    on the profile's test subset. Trains the model if needed."""
    _, checkpoint = _obtain(name, profile, retrain=False, device=torch.device("cpu"))
    rec = {k: v for k, v in checkpoint.items() if k != "state_dict"}
    if "optimizer_steps" not in rec:  # a file written before the zoo counted work: the same counts, from its recipe
        conf = rec["config"]
        n = conf["train_size"] or len(data.load(conf["recipe"]["dataset"], "train")[1])
        rec.update(_work(conf, len(rec["epoch_losses"]), n))
    return rec


def _obtain(name: str, profile: str | None, *, retrain: bool, device: torch.device) -> tuple[nn.Module, dict]:
    """The model of ``name`` and its checkpoint, from the cache file if it is valid, else trained and saved.

    The check of the file and the training run under the file's lock: a second process asking for a model
    being trained waits for it, then finds the file written. Without a lock (see :func:`_lock`) it trains
    too, and the atomic writes keep the file whole.
    """
    conf = configuration(name, profile)
    file = path(name, profile)
    with _lock(file):
        loaded = None if retrain else _load(file, conf)
        if loaded is not None:
            return loaded
        model = _build(conf)
        checkpoint = _train(model, conf, device)
        _save(checkpoint, file)
    return model, checkpoint


@contextlib.contextmanager
def _lock(file: Path):
    """Hold a lock on cache file ``file`` (a ``.lock`` file beside it) while the model is loaded or trained
    and saved. Where no lock can be made (a read-only cache folder, which will not take the model either;
    a file system without locks) the block runs unlocked: at worst two processes both train the model."""
    lock = None
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(f"{file}.lock")
        lock.acquire()
    except (OSError, NotImplementedError):
        lock = None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def _build(conf: dict) -> nn.Module:
    """The recipe's model, initialised from the recipe's seed (the global RNG state is left as it was)."""
    spec = conf["recipe"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec["seed"])
        return models.build(spec["arch"], spec["dataset"], **spec["arch_kwargs"])


def _train(model: nn.Module, conf: dict, device: torch.device) -> dict:
    spec = conf["recipe"]
    (x, y), (xt, yt) = data.load_subsets(spec["dataset"], conf["train_size"],
                                         config.sizes(conf["profile"]).test_size, seed=spec["seed"])
    config.seed_everything(spec["seed"])
    model = model.to(device)
    start = time.perf_counter()
    common = dict(epochs=conf["epochs"], batch_size=conf["batch_size"], seed=spec["seed"], device=device)
    if spec["trainer"] == "standard":
        history = train.fit(model, x, y, optimizer=spec["optimizer"], lr=spec["lr"],
                            weight_decay=spec["weight_decay"], schedule=spec["schedule"],
                            desc=conf["name"], **common)
    elif spec["trainer"] == "autoencoder":
        pre = train.fit_autoencoder(model, x, lr=spec["lr"], weight_decay=spec["weight_decay"],
                                    desc=f"{conf['name']} (autoencoder)", **common)
        history = train.fit(model, x, y, optimizer=spec["optimizer"], lr=spec["lr"],
                            weight_decay=spec["weight_decay"], parameters=model.classifier.parameters(),
                            desc=f"{conf['name']} (classifier)", **common)
        history.epoch_losses = pre.epoch_losses + history.epoch_losses
    elif spec["trainer"] in TRAINERS:
        trainer = getattr(defenses, TRAINERS[spec["trainer"]])
        settings = {**common, **spec["train_kwargs"]}  # a recipe may set its own batch size (the papers')
        history = trainer(model, x, y, optimizer=spec["optimizer"], lr=spec["lr"], schedule=spec["schedule"],
                          desc=conf["name"], **settings)
    else:
        raise ValueError(f"unknown trainer {spec['trainer']!r} in the recipe of {conf['name']!r}")
    seconds = time.perf_counter() - start
    return {"config": conf, "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "epoch_losses": history.epoch_losses, **_work(conf, len(history.epoch_losses), len(x)),
            "train_seconds": seconds,  # for display only: it depends on the machine and on its load
            "test_accuracy": _test_accuracy(model, spec, xt, yt), "device": str(device),
            # fast adversarial training's guard: PGD accuracy after each epoch, and the epoch it stopped at
            "guard_accuracy": getattr(history, "guard_accuracy", None),
            "stopped_at": getattr(history, "stopped_at", None)}


def _test_accuracy(model: nn.Module, spec: dict, x: torch.Tensor, y: torch.Tensor) -> float:
    """Test accuracy of a trained model; a base classifier of de-randomized smoothing, which sees ablated images,
    is judged by its smoothed classifier (every band position votes)."""
    if spec["trainer"] != "ablation":
        return metrics.accuracy(model, x, y)
    settings = spec["train_kwargs"]
    classes = len(data.info(spec["dataset"]).classes)
    smooth = smoothing.AblationSmooth(model, classes, settings["size"], settings["kind"])
    device = utils.model_device(model)
    return (smooth.predict(x.to(device)) == y.cpu()).double().mean().item()


def _work(conf: dict, epochs_run: int, n: int) -> dict:
    """The work of a training run, which no machine's load changes: its optimizer steps and the examples
    its epochs went through, for ``epochs_run`` epochs (every phase's: an autoencoder's pre-training too) over
    ``n`` examples in the recipe's batches. Counts passes over the data, not the cost of each step (an
    adversarial or certified step costs more than a standard one)."""
    batch_size = conf["recipe"].get("train_kwargs", {}).get("batch_size", conf["batch_size"])
    return {"optimizer_steps": train.number_of_steps(n, batch_size, epochs_run), "examples_seen": epochs_run * n}


def _load(file: Path, conf: dict) -> tuple[nn.Module, dict] | None:
    """The recipe's model with the weights in ``file``, and the file's checkpoint, if the file loads, was
    trained with ``conf`` and its weights fit the model; else None, with a warning naming the file (which
    is then retrained)."""
    if not file.exists():
        return None
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: retrain rather than trust it
        warnings.warn(f"ignoring unreadable zoo file {file} ({type(error).__name__}: {error}); retraining",
                      stacklevel=4)
        return None
    if not isinstance(checkpoint, dict) or checkpoint.get("config") != conf:
        warnings.warn(f"ignoring zoo file {file}: it holds another configuration; retraining", stacklevel=4)
        return None
    model = _build(conf)
    try:
        model.load_state_dict(checkpoint.get("state_dict"))
    except (RuntimeError, TypeError, AttributeError) as error:  # missing or unexpected keys, wrong shapes
        reason = " ".join(str(error).split())  # torch's list of missing, unexpected and mismatched keys
        reason = reason if len(reason) <= 300 else reason[:297] + "..."
        warnings.warn(f"ignoring zoo file {file}: its weights do not fit the recipe's model ({reason}); retraining",
                      stacklevel=4)
        return None
    return model, checkpoint


def _save(checkpoint: dict, file: Path) -> None:
    """Write ``checkpoint`` to ``file`` (atomically); a cache that cannot be written costs a warning
    naming its folder, never the trained model."""
    try:
        _save_atomic(checkpoint, file)
    except OSError as error:
        warnings.warn(f"could not cache zoo model {checkpoint['config']['name']!r} in {file.parent} "
                      f"({type(error).__name__}: {error}); it is used now but will be trained again next time",
                      stacklevel=4)


def _save_atomic(checkpoint: dict, file: Path) -> None:
    """Write ``checkpoint`` to ``file`` so that a reader sees the old file or the whole new one."""
    file.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, 0o644)  # temporary files are private; a cache may be shared
        os.replace(handle.name, file)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
