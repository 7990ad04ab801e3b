"""advlib: real, batched attacks, defenses and certificates for the course on adversarial examples.

Modules (one concept each): ``config`` (device, run profile, data folder), ``data`` (datasets as
[0,1] tensors), ``models`` (the networks of the talk), ``metrics`` (accuracy), ``train`` (training
loops), ``zoo`` (named models trained on first use and cached), ``viz`` (figures).
"""

from . import config, data, metrics, models, train, viz, zoo

__all__ = ["config", "data", "metrics", "models", "train", "viz", "zoo"]
__version__ = "0.1.0"
