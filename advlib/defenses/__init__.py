"""Defenses against adversarial examples.

- ``advlib.defenses.ablation_training``: Levine and Feizi's training of the base classifier of de-randomized smoothing
  on ablated images (:class:`advlib.smoothing.AblationSmooth`).
- ``advlib.defenses.adversarial_training``: Madry et al.'s PGD adversarial training and Wong, Rice and Kolter's
  fast (FGSM with random start) adversarial training with its guard against catastrophic overfitting
  (its check, the accuracy under PGD, is :func:`advlib.evaluate.pgd_accuracy`).
- ``advlib.defenses.certified_training``: certified training on the dual network's (Wong and Kolter), IBP's (Gowal et
  al.) or CROWN-IBP's (Zhang et al.) bounds, with the papers' eps ramps.
- ``advlib.defenses.masking``: defenses that only mask gradients (Athalye et al. 2018): input quantization and
  Xie et al.'s random resizing and padding.
- ``advlib.defenses.trades_training``: Zhang et al.'s TRADES, the cross-entropy plus beta times the KL divergence
  between the predictions at x and at the worst point of the ball (the robustness-accuracy trade-off, explicit).
- ``advlib.defenses.noise_training``: Cohen et al.'s Gaussian noise augmentation, the base classifier of randomized
  smoothing (:mod:`advlib.smoothing`).
"""

from .ablation_training import ablation_training
from .adversarial_training import fast_adversarial_training, madry_training
from .certified_training import certified_training
from .masking import InputQuantization, RandomResizePad, quantize
from .noise_training import gaussian_noise_training
from .trades_training import trades_kl_attack, trades_loss, trades_training

__all__ = ["InputQuantization", "RandomResizePad", "ablation_training", "certified_training",
           "fast_adversarial_training", "gaussian_noise_training", "madry_training", "quantize",
           "trades_kl_attack", "trades_loss", "trades_training"]
