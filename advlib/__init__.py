"""advlib: real, batched attacks, defenses and certificates for the course on adversarial examples.

Modules (one concept each): ``config`` (device, run profile, data folder), ``data`` (datasets as
[0,1] tensors), ``models`` (the networks of the talk), ``metrics`` (accuracy), ``train`` (training
loops), ``zoo`` (named models trained on first use and cached), ``viz`` (figures), ``certify``
(certified bounds), ``smoothing`` (randomized smoothing).
Submodules load on first use (``advlib.zoo`` imports what it needs), so ``import advlib`` is cheap and
``python -m advlib.data fetch NAME`` runs its module exactly once.
"""

import importlib

__version__ = "0.1.0"
__all__ = ["certify", "config", "data", "metrics", "models", "smoothing", "train", "viz", "zoo"]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'advlib' has no attribute {name!r}")
