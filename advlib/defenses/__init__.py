"""Defenses against adversarial examples.

- :mod:`.adversarial_training`: Madry et al.'s PGD adversarial training and Wong, Rice and Kolter's
  fast (FGSM with random start) adversarial training with its guard against catastrophic overfitting.
- :mod:`.masking`: defenses that only mask gradients (Athalye et al. 2018): input quantization and
  Xie et al.'s random resizing and padding.
- :mod:`.noise_training`: Cohen et al.'s Gaussian noise augmentation, the base classifier of randomized
  smoothing (:mod:`advlib.smoothing`).
"""

from .adversarial_training import fast_adversarial_training, madry_training, pgd_accuracy
from .masking import InputQuantization, RandomResizePad, quantize
from .noise_training import gaussian_noise_training

__all__ = ["InputQuantization", "RandomResizePad", "fast_adversarial_training", "gaussian_noise_training",
           "madry_training", "pgd_accuracy", "quantize"]
