"""De-randomized (ablation) smoothing: a classifier certified against every sticker up to a size.

Levine and Feizi (2020, "(De)Randomized smoothing for certifiable defense against patch attacks") give
the base classifier f only a small part of the image: a band of b adjacent columns (*column smoothing*,
the band wrapping round from the right edge to the left), of b rows, or a b x b block. Every other pixel
is ablated. Each channel value v becomes two channels, (v, 1 - v) where the pixel is kept and (0, 0)
where it is ablated, so that an ablated pixel looks like no real one (a black pixel is (0, 1)).

The smoothed classifier counts votes over *every* position of the band (W of them for columns, H for rows,
H * W for blocks): with a threshold theta, position p votes for each class whose softmax probability is
at least theta (none, one or several; theta = 0.2 in the authors' MNIST certification), and without one
for its top class. With n_c(x) the votes for class c,

    g(x) = argmax_c n_c(x)    (ties to the smaller class index).

An m x m sticker meets at most Delta positions: Delta = m + b - 1 bands (at most W), or (m + b - 1)^2
blocks. Each of them can take one vote from the top class c and give one to another, so the prediction
cannot change under any such sticker anywhere when (their Theorem 1 and its block form)

    n_c(x) >= max_{c' != c} [ n_{c'}(x) + 1(c' < c) ] + 2 Delta.

Every position is evaluated, so this certificate is deterministic: no sampling and no probability of being
wrong, unlike Cohen et al.'s (``advlib.smoothing.gaussian``). It is sufficient, not necessary: it assumes
that every band a sticker reaches turns against the prediction, so an image it does not certify may resist
every sticker all the same. :class:`AblationSmooth` counts the votes in
batches of (image, position) pairs and certifies; :func:`ablate` and :func:`ablation_masks` make the ablated
images (the base classifier is trained on them by :func:`advlib.defenses.ablation_training`);
:class:`SoftAblationSmooth` is the differentiable average over positions that attacks target.
"""

from __future__ import annotations

import torch
from torch import nn

from ..utils import check_count, check_images, check_model, check_real, eval_mode, model_device

__all__ = ["KINDS", "AblationSmooth", "SoftAblationSmooth", "ablate", "ablation_masks"]

KINDS = ("column", "row", "block")


def ablation_masks(image_size, size: int, kind: str = "column", device=None) -> torch.Tensor:
    """The pixels each position of the band keeps: a (P, H, W) bool tensor for images of ``image_size``
    (H, W).

    ``"column"``: P = W, position p keeps columns p, ..., p + size - 1 (mod W); ``"row"``: P = H, rows the
    same way; ``"block"``: P = H * W, position p = r * W + c keeps rows r, ..., r + size - 1 (mod H) of
    columns c, ..., c + size - 1 (mod W). Bands wrap round the edge, as in Levine and Feizi 2020, so every
    pixel is kept by exactly ``size`` positions of each direction.
    """
    h, w = (int(v) for v in image_size)
    kind = _check_kind(kind)
    size = _check_size(size, kind, (h, w))

    def band(n: int) -> torch.Tensor:  # (n positions, n pixels): pixel i kept by position p if (i - p) mod n < size
        index = torch.arange(n)
        return (index[None, :] - index[:, None]) % n < size

    if kind == "column":
        masks = band(w)[:, None, :].expand(w, h, w)
    elif kind == "row":
        masks = band(h)[:, :, None].expand(h, h, w)
    else:
        masks = (band(h)[:, None, :, None] & band(w)[None, :, None, :]).reshape(h * w, h, w)
    return masks.contiguous().to(device)


def ablate(x: torch.Tensor, positions, size: int, kind: str = "column") -> torch.Tensor:
    """Images ``x`` (N, C, H, W) in [0, 1] ablated at ``positions`` (an int for all, or an (N,) integer
    tensor, one position in [0, P) per image; see :func:`ablation_masks`) and encoded as Levine and Feizi
    encode them: (N, 2C, H, W), channels (v, 1 - v) where kept and (0, 0) where ablated. ``x`` is not
    modified."""
    check_images(x, allow_half=True)
    masks = ablation_masks(x.shape[-2:], size, kind, device=x.device)
    positions = torch.as_tensor(positions, device=x.device)
    if positions.is_floating_point() or positions.dtype == torch.bool or positions.ndim > 1:
        raise TypeError(f"positions must be an int or a 1-D integer tensor, got dtype {positions.dtype} "
                        f"and shape {tuple(positions.shape)}")
    positions = positions.expand(len(x)) if positions.ndim == 0 else positions
    if len(positions) != len(x):
        raise ValueError(f"positions holds {len(positions)} entries for {len(x)} images")
    if len(positions) and not (0 <= int(positions.min()) and int(positions.max()) < len(masks)):
        raise ValueError(f"positions must lie in [0, {len(masks)}) for {kind} ablation of "
                         f"{tuple(x.shape[-2:])} images")
    return _encode(x, masks[positions])


def _encode(x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(v, 1 - v) where ``masks`` (N, H, W) keeps a pixel, (0, 0) elsewhere: (N, 2C, H, W)."""
    keep = masks[:, None].to(x.dtype)
    kept = x * keep
    return torch.cat((kept, keep - kept), dim=1)


def _encode_into(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """:func:`_encode` without gradients, for ``keep`` (N, H, W) already of x's dtype: both halves are written
    into one new tensor, with no mask conversion or concatenation (about 4% of the base classifier's time per
    batch of :meth:`AblationSmooth.counts` on a CPU); the same values."""
    channels, keep = x.shape[1], keep[:, None]
    encoded = x.new_empty((len(x), 2 * channels, *x.shape[2:]))
    kept = torch.mul(x, keep, out=encoded[:, :channels])
    torch.sub(keep, kept, out=encoded[:, channels:])
    return encoded


class AblationSmooth:
    """Levine and Feizi's (2020) de-randomized smoothed classifier around the base classifier ``model``,
    which takes ablated images (N, 2C, H, W) (:func:`ablate`) and returns ``num_classes`` logits.

    ``size`` is the band's width b (or the block's side), ``kind`` one of ``"column"``, ``"row"`` or
    ``"block"``, ``threshold`` theta: each position votes for every class of softmax probability at least
    theta (``None``: for its top class only). The votes are exact counts over every position, computed in
    batches of ``batch_size`` (image, position) pairs on the model's device, in eval mode under
    ``torch.inference_mode`` (the model gets its own mode back).

    Every method takes a batch of images x (N, C, H, W) in [0, 1] (checked) and returns CPU tensors.
    """

    def __init__(self, model: nn.Module, num_classes: int, size: int = 4, kind: str = "column",
                 threshold: float | None = 0.2):
        check_model(model)
        self.model = model
        self.num_classes = check_count("num_classes", num_classes, low=2)
        self.kind = _check_kind(kind)
        self.size = check_count("size", size, low=1)
        self.threshold = None if threshold is None else check_real("threshold", threshold, strict=True, high=1.0)

    def __repr__(self) -> str:
        return (f"AblationSmooth({type(self.model).__name__}, num_classes={self.num_classes}, size={self.size}, "
                f"kind={self.kind!r}, threshold={self.threshold})")

    def counts(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """n_c(x): the votes for each class over every position, an (N, num_classes) int64 tensor."""
        check_images(x, allow_half=True)
        check_count("batch_size", batch_size, low=1)
        _check_size(self.size, self.kind, x.shape[-2:])
        device = model_device(self.model)
        x = x.to(device)
        keep = ablation_masks(x.shape[-2:], self.size, self.kind, device=device).to(x.dtype)  # converted once
        positions = len(keep)
        votes = torch.zeros((len(x), self.num_classes), dtype=torch.int64, device=device)
        with eval_mode(self.model), torch.inference_mode():
            for start in range(0, len(x) * positions, batch_size):
                pair = torch.arange(start, min(start + batch_size, len(x) * positions), device=device)
                image = pair // positions
                logits = self.model(_encode_into(x[image], keep[pair % positions]))
                votes.index_add_(0, image, self._votes(logits, len(pair)))
        return votes.cpu()

    def predict(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """g(x): the class with the most votes (ties to the smaller index), an (N,) int64 tensor."""
        return _top_two(self.counts(x, batch_size))[0]

    def certify(self, x: torch.Tensor, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
        """``(predictions, sizes)``: g(x) and, per image, the largest m such that no m x m sticker anywhere in
        the image changes g's prediction (Levine and Feizi's Theorem 1), 0 when not even a 1 x 1 one is
        certified. An image is certified against m x m stickers when ``sizes >= m``; one pass of votes gives
        every m."""
        counts = self.counts(x, batch_size)
        return _top_two(counts)[0], self.certified_sizes(counts, x.shape[-2:])

    def affected(self, patch_size: int, image_size) -> int:
        """Delta: how many positions an m x m sticker (m = ``patch_size``) can meet in images of ``image_size``."""
        h, w = (int(v) for v in image_size)
        m = check_count("patch_size", patch_size, low=1)
        reach = m + self.size - 1
        return {"column": min(reach, w), "row": min(reach, h), "block": min(reach, h) * min(reach, w)}[self.kind]

    def certified_sizes(self, counts: torch.Tensor, image_size) -> torch.Tensor:
        """The largest certified sticker side per image from vote ``counts`` (N, num_classes) (see
        :meth:`certify`)."""
        top, runner_up = _top_two(counts)
        gap = counts.gather(1, top[:, None]) - counts.gather(1, runner_up[:, None])
        need = gap[:, 0] - (runner_up < top).long()  # n_c - n_c' - 1(c' < c) must be >= 2 Delta
        sides = range(1, min(int(v) for v in image_size) + 1)
        delta = torch.tensor([self.affected(m, image_size) for m in sides], dtype=torch.int64)
        return (need[:, None] >= 2 * delta[None, :]).sum(dim=1)  # Delta grows with m: a prefix holds

    def _votes(self, logits: torch.Tensor, n: int) -> torch.Tensor:
        if not isinstance(logits, torch.Tensor) or logits.shape != (n, self.num_classes):
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"the model returned logits of shape {shape} for {n} ablated images; expected "
                             f"({n}, {self.num_classes}) (num_classes = {self.num_classes})")
        if self.threshold is None:
            return nn.functional.one_hot(logits.argmax(dim=1), self.num_classes)
        return (logits.float().softmax(dim=1) >= self.threshold).long()


class SoftAblationSmooth(nn.Module):
    """The differentiable counterpart of :class:`AblationSmooth`: log of the base classifier's softmax
    averaged over every position of the band, an (N, K) tensor of logits for images (N, C, H, W).

    The vote counts have no gradient; this average does, so a patch attack (:func:`advlib.attacks.patch`)
    trained on it is an attack adapted to the smoothed classifier (the same idea as Salman et al.'s
    :class:`~advlib.smoothing.SoftSmooth` for Gaussian smoothing).
    """

    def __init__(self, model: nn.Module, size: int = 4, kind: str = "column"):
        super().__init__()
        check_model(model)
        self.model, self.size, self.kind = model, check_count("size", size, low=1), _check_kind(kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, allow_half=True)
        masks = ablation_masks(x.shape[-2:], self.size, self.kind, device=x.device)
        positions = len(masks)
        ablated = _encode(x.repeat_interleave(positions, dim=0), masks.repeat(len(x), 1, 1))
        probabilities = self.model(ablated).softmax(dim=1).unflatten(0, (len(x), positions)).mean(dim=1)
        return probabilities.clamp_min(1e-12).log()


def _top_two(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The top class and the runner-up of each row of ``counts``, ties to the smaller index (a stable
    sort): the runner-up is the smallest index among the classes with the second count."""
    order = torch.sort(counts, dim=1, descending=True, stable=True).indices
    return order[:, 0], order[:, 1]


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return kind


def _check_size(size: int, kind: str, image_size) -> int:
    h, w = (int(v) for v in image_size)
    largest = {"column": w, "row": h, "block": min(h, w)}[kind]
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= largest:
        raise ValueError(f"size (the band's width) must be an int in [1, {largest}] for {kind} ablation of "
                         f"{h}x{w} images, got {size!r}")
    return size
