"""What runs attacks or bounds over a dataset, in batches on the model's device, with a progress bar.

- :func:`attack_batches`: an attack's adversarial images for a whole dataset, one batch at a time.
- :func:`robust_accuracy`: accuracy on an attack's outputs (the complement of the adversarial error);
  :func:`robust_examples`: the same per example, for intervals and per-example comparisons.
- :func:`pgd_accuracy`: accuracy under Madry et al.'s PGD, the check adversarial training runs.
- :func:`accuracy_under_distance`: the accuracy at each budget eps implied by a minimal-perturbation
  attack (Carlini and Wagner's), from the distances of its outputs.
- :func:`robustness_score`: the epsilon-robustness score as far as a suite of attacks can tell (an
  upper bound: a point counts as robust until some attack breaks it).
- :func:`worst_margins`, :func:`certified_examples`: certified lower bounds over a dataset (the dual
  network, IBP, CROWN-IBP of :mod:`advlib.certify`), per example; the certified accuracy itself is
  :func:`advlib.certify.certified_accuracy`.
- :func:`transfer_matrix`: the error adversarial examples made on one model cause on others
  (Szegedy et al. 2013, Table 2, "cross-model generalization").
- :func:`gradient_masking_checks`: the warning signs of obfuscated gradients (Athalye, Carlini and
  Wagner 2018, Sec. 3.1): unbounded PGD failing, black-box beating white-box, accuracy flat in eps,
  zero input gradients; with AutoAttack's flags (``advlib.evaluate.sanity``: a randomized model, softmax outputs,
  optimization at inference).
- :func:`autoattack`: AutoAttack (Croce and Hein 2020), the standard evaluation of robust accuracy: APGD-CE,
  APGD-T, FAB-T and Square on the examples still standing, with a per-example and per-attack report.

An attack, for these functions, is any callable ``attack(model, x, y) -> x_adv``; bind its other
arguments by keyword with ``functools.partial``, e.g. ``partial(pgd, eps=0.1, alpha=0.01, steps=40)``.
Plain arithmetic on predictions (accuracy, norms, intervals) is in :mod:`advlib.metrics`.

Every function checks its inputs with :mod:`advlib.utils`' validators before any work: the model an
``nn.Module``, images a float batch (N, C, H, W) of finite values in [0, 1], labels 1-D integers of the same
length and inside the model's classes (checked on the first logits), eps finite and >= 0, counts whole
numbers, names known; each failure is a ``TypeError``/``ValueError`` that says what was expected.
"""

from .autoattack import VERSIONS, AutoAttackResult, autoattack, autoattack_suite
from .batches import (
    RobustnessScore,
    accuracy_under_distance,
    attack_batches,
    pgd_accuracy,
    robust_accuracy,
    robust_examples,
    robustness_score,
)
from .bounds import certified_examples, worst_margins
from .masking import MaskingChecks, gradient_masking_checks
from .sanity import is_randomized, optimizes_at_inference, outputs_probabilities, sanity_flags, zero_gradient_share
from .transfer import TransferMatrix, transfer_matrix

__all__ = ["VERSIONS", "AutoAttackResult", "MaskingChecks", "RobustnessScore", "TransferMatrix",
           "accuracy_under_distance", "attack_batches", "autoattack", "autoattack_suite", "certified_examples",
           "gradient_masking_checks", "is_randomized", "optimizes_at_inference", "outputs_probabilities",
           "pgd_accuracy", "robust_accuracy", "robust_examples", "robustness_score", "sanity_flags",
           "transfer_matrix", "worst_margins", "zero_gradient_share"]
