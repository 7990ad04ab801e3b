"""Defenses against adversarial examples.

- :mod:`.adversarial_training`: Madry et al.'s PGD adversarial training and Wong, Rice and Kolter's
  fast (FGSM with random start) adversarial training with its guard against catastrophic overfitting.
"""

from .adversarial_training import fast_adversarial_training, madry_training, pgd_accuracy

__all__ = ["fast_adversarial_training", "madry_training", "pgd_accuracy"]
