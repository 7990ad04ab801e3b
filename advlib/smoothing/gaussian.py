"""Gaussian randomized smoothing: a classifier certified in L2 from any base classifier and Gaussian noise.

Cohen, Rosenfeld and Kolter (2019, "Certified adversarial robustness via randomized smoothing") turn a
base classifier f into the smoothed classifier::

    g(x) = argmax_c P(f(x + eps) = c),   eps ~ N(0, sigma^2 I)                          (their Eq. (1)).

Their Theorem 1: if the top class c_A and a bound p_A <= P(f(x + eps) = c_A) satisfy p_A >= 1/2 (with
p_B = 1 - p_A bounding every other class), then g(x + delta) = c_A for all ||delta||_2 < R with::

    R = sigma / 2 * (Phi^-1(p_A) - Phi^-1(p_B)) = sigma * Phi^-1(p_A).

g cannot be evaluated exactly, so they estimate it by Monte Carlo (Sec. 3.2): :meth:`Smooth.predict`
is their Algorithm PREDICT (a hypothesis test that may abstain) and :meth:`Smooth.certify` their
Algorithm CERTIFY (a Clopper-Pearson lower bound on p_A, then the radius above; wrong with probability
at most alpha). :func:`certify_dataset` runs CERTIFY over a test set and
:func:`certified_accuracy_curve` gives their "approximate certified test accuracy" at each radius
(their Fig. 6-7 and Tables 1-2). The base classifier is best trained on noisy images
(:func:`advlib.defenses.gaussian_noise_training`, their Sec. 4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy.stats import beta, binomtest, norm
from torch import nn

from ..utils import (
    check_classes,
    check_count,
    check_examples,
    check_images,
    check_model,
    check_real,
    eval_mode,
    model_device,
    progress,
)

ABSTAIN = -1

__all__ = ["ABSTAIN", "Certificates", "SoftSmooth", "Smooth", "certified_accuracy_curve", "certify_dataset",
           "clopper_pearson_lower"]


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """The one-sided (1 - alpha) lower confidence bound on a binomial proportion of Clopper and Pearson
    (1934): the alpha quantile of Beta(k, n - k + 1) for k successes in n trials, and 0 when k = 0.

    CERTIFY's p_A (Cohen et al. 2019, Alg. CERTIFY, ``LowerConfBound``): P(p < bound) <= alpha.
    """
    trials = check_count("trials", trials, low=1)
    successes = check_count("successes", successes)
    if successes > trials:
        raise ValueError(f"successes must lie in [0, trials = {trials}], got {successes}")
    alpha = _check_alpha(alpha)
    return 0.0 if successes == 0 else float(beta.ppf(alpha, successes, trials - successes + 1))


class Smooth:
    """The smoothed classifier g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c) of Cohen, Rosenfeld and
    Kolter (2019, Eq. (1)) around the base classifier ``model`` (an ``nn.Module`` returning
    ``num_classes`` logits), with its Monte Carlo algorithms PREDICT and CERTIFY (their Sec. 3.2).

    Both take a single image x of shape (C,H,W) in [0,1], as the paper's code does. The noisy copies
    x + eps are drawn on the model's device in batches of ``batch_size`` (one buffer, reused) from
    ``generator`` (a ``torch.Generator`` on that device, for runs that repeat; torch's default one if
    None) and the base classifier's votes are counted there. The model runs in eval mode under
    ``torch.inference_mode`` and gets its own mode back; x is never modified. Noise is not clipped to
    [0,1]: the theorem is about x + eps itself.

    Checks (:mod:`advlib.utils`): the image x (the caller's, not its noisy copies) finite, in [0,1], of the
    model's dtype; sigma finite and > 0; n, n0 and batch_size whole numbers >= 1; alpha in (0, 1).
    Half precision (float16, bfloat16) is supported: the noisy images and the model run in it, but the
    votes are counted in int64, so no count is rounded or overflows (float16 holds integers exactly only
    up to 2048, and nothing above 65504).
    """

    ABSTAIN = ABSTAIN

    def __init__(self, model: nn.Module, num_classes: int, sigma: float,
                 generator: torch.Generator | None = None):
        check_model(model)
        num_classes = check_count("num_classes", num_classes, low=2)
        sigma = _check_sigma(sigma)
        _check_device_generator(generator)
        self.model = model
        self.num_classes = num_classes
        self.sigma = sigma
        self.generator = generator

    def __repr__(self) -> str:
        return f"Smooth({type(self.model).__name__}, num_classes={self.num_classes}, sigma={self.sigma})"

    def counts(self, x: torch.Tensor, n: int, batch_size: int = 1000) -> torch.Tensor:
        """How often the base classifier votes for each class on ``n`` noisy copies x + eps of the image
        ``x``, eps ~ N(0, sigma^2 I) (``SampleUnderNoise`` of Cohen et al.'s algorithms): int64 counts on
        the CPU, one per class, summing to ``n``."""
        self._check(x, n, batch_size)
        return self._counts(x, n, batch_size)

    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int = 1000) -> int:
        """Cohen et al.'s Algorithm PREDICT: g(x) from ``n`` noisy samples, or :data:`ABSTAIN` (-1).

        With n_A and n_B the two largest counts, it returns the top class only when the two-sided
        binomial test of n_A successes in n_A + n_B trials at p = 1/2 rejects (p-value <= ``alpha``), so
        that it returns a class other than g(x) with probability at most alpha (their Prop. 1; the
        test's validity was settled by Hung et al. 2019).
        """
        self._check(x, n, batch_size)
        alpha = _check_alpha(alpha)
        top = self._counts(x, n, batch_size).topk(2)
        n_a, n_b = top.values.tolist()
        if binomtest(n_a, n_a + n_b, 0.5).pvalue > alpha:
            return ABSTAIN
        return int(top.indices[0])

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int = 1000) -> tuple[int, float]:
        """Cohen et al.'s Algorithm CERTIFY: ``(label, radius)`` with g(x + delta) = label for every
        ||delta||_2 < radius, wrong with probability at most ``alpha``; ``(ABSTAIN, 0.0)`` when it cannot
        certify.

        It guesses the top class c_A from ``n0`` noisy samples, counts n_A votes for it among ``n`` fresh
        ones, takes p_A = the one-sided (1 - alpha) Clopper-Pearson lower bound on P(f(x + eps) = c_A)
        (:func:`clopper_pearson_lower`) and, when p_A >= 1/2, the radius R = sigma * Phi^-1(p_A) of
        their Theorem 1 with p_B = 1 - p_A. With n samples the radius is at most
        sigma * Phi^-1(alpha^(1/n)) (3.8 sigma for n = 100,000 and alpha = 0.001).
        """
        self._check(x, n, batch_size)
        check_count("n0", n0, low=1)
        alpha = _check_alpha(alpha)
        guess = int(self._counts(x, n0, batch_size).argmax())
        n_a = int(self._counts(x, n, batch_size)[guess])
        p_a = clopper_pearson_lower(n_a, n, alpha)
        if p_a < 0.5:
            return ABSTAIN, 0.0
        return guess, self.sigma * float(norm.ppf(p_a))

    # --- the sampling loop --------------------------------------------------------------------------

    def _counts(self, x: torch.Tensor, n: int, batch_size: int) -> torch.Tensor:
        device = model_device(self.model)
        generator = self.generator
        if generator is not None and generator.device.type != device.type:
            raise ValueError(f"generator is on {generator.device} but the model is on {device}: the noise is "
                             f"drawn on the model's device, so give a torch.Generator(device={str(device)!r})")
        votes = torch.zeros(self.num_classes, dtype=torch.int64, device=device)
        with eval_mode(self.model), torch.inference_mode():
            image = x.to(device)  # read only: the buffer below is what gets written
            noisy = torch.empty((min(batch_size, n), *image.shape), dtype=image.dtype, device=device)
            for start in range(0, n, batch_size):
                batch = noisy[:min(batch_size, n - start)]
                batch.normal_(0.0, self.sigma, generator=generator).add_(image)
                logits = self.model(batch)
                if not isinstance(logits, torch.Tensor) or logits.shape != (len(batch), self.num_classes):
                    shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                    raise ValueError(f"the model returned logits of shape {shape} for "
                                     f"{len(batch)} images; expected ({len(batch)}, {self.num_classes}) "
                                     f"(num_classes = {self.num_classes})")
                # int64 votes whatever the logits' dtype: a float16 counter would round above 2048 and
                # overflow above 65504 (bincount counts in int64)
                votes += torch.bincount(logits.argmax(dim=1), minlength=self.num_classes)
        return votes.cpu()

    def _check(self, x: torch.Tensor, n: int, batch_size: int) -> None:
        """The checks of one call: the single image ``x`` (the caller's; its noisy copies leave [0,1] by design),
        the number of samples and the batch size."""
        _check_image(x)
        check_model(self.model, x)
        check_count("n", n, low=1)
        check_count("batch_size", batch_size, low=1)


def _check_image(x: torch.Tensor) -> None:
    """``TypeError``/``ValueError`` unless ``x`` is one image (C, H, W), floating-point, finite, in [0, 1]."""
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.ndim != 3:
        raise ValueError(f"x must be a single image shaped (C, H, W), got shape {tuple(x.shape)}; for a batch, "
                         "call it on each image or use smoothing.certify_dataset")
    check_images(x[None] if isinstance(x, torch.Tensor) else x, "x", allow_half=True)
    if x.numel() == 0:
        raise ValueError(f"x must be a non-empty image (C, H, W), got shape {tuple(x.shape)}")


def _check_sigma(sigma: float) -> float:
    """sigma as a float, after a check that it is a finite number > 0 (the noise's standard deviation)."""
    return check_real("sigma (the noise's standard deviation)", sigma, strict=True)


def _check_alpha(alpha: float) -> float:
    """alpha as a float, after a check that it lies in (0, 1) (the probability of a wrong answer)."""
    name = "alpha (the probability of a wrong answer)"
    alpha = check_real(name, alpha, low=-math.inf)
    if not 0 < alpha < 1:
        raise ValueError(f"{name} must lie in (0, 1), got {alpha:g}")
    return alpha


def _check_device_generator(generator) -> None:
    """``TypeError`` unless ``generator`` is None or a ``torch.Generator`` (on the device the noise is drawn on:
    checked where it is used)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be None or a torch.Generator on the model's device, got "
                        f"{type(generator).__name__}")


# --- over a data set ----------------------------------------------------------------------------------

@dataclass
class Certificates:
    """CERTIFY's answers over a data set: ``predictions`` (int64, :data:`ABSTAIN` where it abstained),
    ``radii`` (float64, 0 where it abstained) and ``correct`` (bool: prediction == label)."""

    predictions: torch.Tensor
    radii: torch.Tensor
    correct: torch.Tensor

    def accuracy_curve(self, radii_grid) -> torch.Tensor:
        """:func:`certified_accuracy_curve` of these certificates."""
        return certified_accuracy_curve(self.radii, self.correct, radii_grid)


def certify_dataset(smooth: Smooth, x: torch.Tensor, y: torch.Tensor, n0: int, n: int, alpha: float,
                    batch_size: int = 1000, desc: str = "certifying") -> Certificates:
    """:meth:`Smooth.certify` on each image of ``x`` (N,C,H,W) with labels ``y``, as Cohen et al. certify
    their test sets (Sec. 4: n0 = 100, n = 100,000, alpha = 0.001), with a progress bar.

    Everything is checked before the first image is certified: ``x`` finite images in [0,1] (half precision
    allowed, as in :class:`Smooth`), ``y`` 1-D labels of the same length inside the smoothed classifier's
    ``num_classes``, n0, n and batch_size whole numbers >= 1, alpha in (0, 1)."""
    if not isinstance(smooth, Smooth):
        raise TypeError(f"smooth must be a smoothing.Smooth, got {type(smooth).__name__}")
    check_examples(x, y, batch_size, allow_half=True)
    check_classes(y, smooth.num_classes)
    check_model(smooth.model, x)
    check_count("n0", n0, low=1)
    check_count("n", n, low=1)
    _check_alpha(alpha)
    predictions = torch.empty(len(x), dtype=torch.int64)
    radii = torch.empty(len(x), dtype=torch.float64)
    for i in progress(range(len(x)), desc=desc, unit="image"):
        predictions[i], radii[i] = smooth.certify(x[i], n0, n, alpha, batch_size)
    return Certificates(predictions, radii, predictions == y.cpu())


def certified_accuracy_curve(radii, correct, radii_grid) -> torch.Tensor:
    """Cohen et al.'s approximate certified test accuracy at each radius r of ``radii_grid`` (their
    Fig. 6-7, Tables 1-2): the fraction of examples that CERTIFY labels correctly with radius >= r.
    Abstentions count as wrong. Returns float64, one value per radius."""
    radii = torch.as_tensor(radii, dtype=torch.float64).cpu()
    correct = torch.as_tensor(correct, dtype=torch.bool).cpu()
    grid = torch.as_tensor(radii_grid, dtype=torch.float64).cpu().reshape(-1)
    if radii.ndim != 1 or radii.shape != correct.shape:
        raise ValueError(f"radii and correct must be 1-d and of the same length, got shapes "
                         f"{tuple(radii.shape)} and {tuple(correct.shape)}")
    if len(radii) == 0:
        raise ValueError("no certificates: radii and correct are empty")
    return ((radii[None, :] >= grid[:, None]) & correct[None, :]).double().mean(dim=1)


# --- the soft smoothed classifier, for attacks ----------------------------------------------------------

class SoftSmooth(nn.Module):
    """The soft smoothed classifier G(x) = E_eps[softmax f(x + eps)], eps ~ N(0, sigma^2 I), estimated with
    ``samples`` fresh noise draws per call; returns log G(x) as logits, shape (N, K).

    Unlike g (a vote, with no gradient) G is differentiable, and Salman et al. (2019, "Provably robust deep
    learning via adversarially trained smoothed classifiers", Eq. (5), SmoothAdv) attack the smoothed
    classifier by PGD on the cross-entropy of G, with new noise at every step. Any attack of
    :mod:`advlib.attacks` runs on this module as on a network, e.g. ``pgd(SoftSmooth(f, 0.25, 32), x, y,
    eps, alpha, steps, norm="l2")``. ``generator`` (on the model's device) makes the draws repeat.
    """

    def __init__(self, model: nn.Module, sigma: float, samples: int = 32,
                 generator: torch.Generator | None = None):
        super().__init__()
        check_model(model)
        sigma = _check_sigma(sigma)
        samples = check_count("samples", samples, low=1)
        _check_device_generator(generator)
        self.model, self.sigma, self.samples, self.generator = model, sigma, samples, generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """log G(x) for images ``x`` (N,C,H,W), finite and in [0,1] (checked; the noisy copies are not
        clipped), of the model's dtype, drawn on ``x``'s device (where ``generator`` must be)."""
        check_images(x, allow_half=True)
        check_model(self.model, x)
        if self.generator is not None and self.generator.device.type != x.device.type:
            raise ValueError(f"generator is on {self.generator.device} but the images are on {x.device}: the noise "
                             f"is drawn on the images' device, so give a torch.Generator(device={str(x.device)!r})")
        noise = torch.randn((self.samples, *x.shape), generator=self.generator, device=x.device, dtype=x.dtype)
        noisy = (x.unsqueeze(0) + self.sigma * noise).flatten(0, 1)  # (samples * N, C, H, W), sample-major
        probabilities = self.model(noisy).softmax(dim=1).unflatten(0, (self.samples, len(x))).mean(dim=0)
        return probabilities.clamp_min(1e-12).log()
