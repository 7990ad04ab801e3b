"""advlib: real, batched attacks, defenses and certificates for the course on adversarial examples.

Modules (one concept each): ``config`` (device, run profile, data folder), ``utils`` (shared validators),
``data`` (datasets as [0,1] tensors), ``models`` (the networks of the talk), ``attacks`` (the attacks,
one contract), ``certify`` (certified bounds), ``smoothing`` (randomized smoothing), ``metrics``
(arithmetic on predictions: accuracy, norms, intervals), ``evaluate`` (attacks and bounds run over a
dataset), ``train`` (training loops), ``defenses``, ``zoo`` (named models trained on first use and
cached), ``viz`` (figures).
Submodules load on first use (``advlib.zoo`` imports what it needs), so ``import advlib`` is cheap and
``python -m advlib.data fetch NAME`` runs its module exactly once.
"""

import importlib

__version__ = "0.1.0"
__all__ = ["attacks", "certify", "config", "data", "defenses", "evaluate", "metrics", "models", "smoothing", "train",
           "utils", "viz", "zoo"]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'advlib' has no attribute {name!r}")
