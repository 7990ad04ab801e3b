"""De-randomized (ablation) smoothing against patches (Levine and Feizi 2020): the ablated images, the exact
votes, and a certificate that no sticker breaks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlib import defenses, models
from advlib.attacks import apply_patch
from advlib.smoothing import AblationSmooth, SoftAblationSmooth, ablate, ablation_masks


def _base(channels: int = 2, size: int = 8, classes: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, 16), nn.ReLU(), nn.Linear(16, classes))


@pytest.mark.parametrize("kind, positions, per_pixel", [("column", 8, 3), ("row", 6, 3), ("block", 48, 9)])
def test_every_pixel_is_kept_by_the_same_number_of_positions(kind, positions, per_pixel):
    masks = ablation_masks((6, 8), 3, kind)
    assert masks.shape == (positions, 6, 8) and masks.dtype == torch.bool
    assert (masks.sum(dim=0) == per_pixel).all()  # bands wrap round the edge
    assert (masks.sum(dim=(1, 2)) == {"column": 3 * 6, "row": 3 * 8, "block": 9}[kind]).all()


def test_a_column_band_wraps_round_the_right_edge():
    masks = ablation_masks((5, 6), 3, "column")
    assert masks[4, 0].tolist() == [True, False, False, False, True, True]  # columns 4, 5 and 0


def test_ablate_encodes_kept_pixels_as_v_and_1_minus_v_and_ablated_ones_as_zeros():
    x = torch.rand(3, 1, 5, 6)
    out = ablate(x, torch.tensor([0, 2, 5]), 2)
    assert out.shape == (3, 2, 5, 6)
    for i, p in enumerate([0, 2, 5]):
        kept = [(p + k) % 6 for k in range(2)]
        other = [c for c in range(6) if c not in kept]
        assert torch.equal(out[i, 0][:, kept], x[i, 0][:, kept])
        assert torch.allclose(out[i, 1][:, kept], 1 - x[i, 0][:, kept])
        assert (out[i, :, :, other] == 0).all()
    assert torch.equal(ablate(x, 1, 2), ablate(x, torch.tensor([1, 1, 1]), 2))


def test_votes_are_counted_over_every_position_in_any_batch_size():
    torch.manual_seed(1)
    x, base = torch.rand(5, 1, 8, 8), _base()
    smooth = AblationSmooth(base, 4, size=3, threshold=None)
    counts = smooth.counts(x, batch_size=7)
    assert counts.dtype == torch.int64 and (counts.sum(dim=1) == 8).all()  # top-class votes: one per column
    expected = torch.stack([nn.functional.one_hot(base(ablate(x, p, 3)).argmax(1), 4) for p in range(8)]).sum(0)
    assert torch.equal(counts, expected)
    assert torch.equal(smooth.counts(x, batch_size=1000), counts)
    thresholded = AblationSmooth(base, 4, size=3, threshold=0.3).counts(x)
    probabilities = torch.stack([base(ablate(x, p, 3)).softmax(1) for p in range(8)])
    assert torch.equal(thresholded, (probabilities >= 0.3).sum(0))


def test_prediction_ties_go_to_the_smaller_class():
    smooth = AblationSmooth(_base(), 4, size=3)
    counts = torch.tensor([[2, 5, 5, 0], [9, 0, 1, 9]])
    assert smooth.certified_sizes(counts, (8, 8)).tolist() == [0, 0]
    from advlib.smoothing.ablation import _top_two
    assert _top_two(counts)[0].tolist() == [1, 0] and _top_two(counts)[1].tolist() == [2, 3]


def test_certified_sizes_follow_the_theorem_with_its_tie_break():
    smooth = AblationSmooth(_base(), 10, size=4)  # columns of 28x28 images: Delta(m) = m + 3
    # gap 20, runner-up of a larger index: 2 (m + 3) <= 20, m <= 7
    assert smooth.certified_sizes(torch.tensor([[24, 4] + [0] * 8]), (28, 28)).tolist() == [7]
    # the same gap, runner-up of a smaller index: 2 (m + 3) <= 19, m <= 6
    assert smooth.certified_sizes(torch.tensor([[4, 24] + [0] * 8]), (28, 28)).tolist() == [6]
    assert smooth.certified_sizes(torch.tensor([[7, 0] + [0] * 8]), (28, 28)).tolist() == [0]  # 7 < 2 * 4
    assert smooth.affected(5, (28, 28)) == 8 and smooth.affected(28, (28, 28)) == 28
    block = AblationSmooth(_base(), 10, size=2, kind="block")
    assert block.affected(3, (28, 28)) == 16


@pytest.mark.parametrize("kind", ["column", "block"])
def test_no_sticker_anywhere_changes_a_certified_prediction(kind):
    """The theorem, checked by search: for every certified image and sticker size, stickers of several kinds
    (random, all black, all white, and one that pushes toward the runner-up) at every position leave g's
    prediction as it was."""
    torch.manual_seed(0)
    x, base = torch.rand(40, 1, 8, 8), _base(seed=3)
    smooth = AblationSmooth(base, 4, size=2, kind=kind, threshold=None)
    predicted, sizes = smooth.certify(x)
    checked = 0
    for m in (1, 2):
        certified = sizes >= m
        if not certified.any():
            continue
        xs, labels = x[certified], predicted[certified]
        stickers = [torch.rand(1, m, m), torch.zeros(1, m, m), torch.ones(1, m, m), torch.rand(1, m, m).round()]
        for row in range(8 - m + 1):
            for col in range(8 - m + 1):
                for sticker in stickers:
                    patched = apply_patch(xs, sticker, at=(row, col))
                    assert torch.equal(smooth.predict(patched), labels), (kind, m, row, col)
                    checked += len(xs)
    assert checked > 0  # the search ran on certified images


def test_soft_smoothing_averages_the_softmax_over_every_position_and_has_a_gradient():
    torch.manual_seed(2)
    x, base = torch.rand(3, 1, 8, 8, requires_grad=True), _base()
    soft = SoftAblationSmooth(base, size=3)
    logits = soft(x)
    expected = torch.stack([base(ablate(x.detach(), p, 3)).softmax(1) for p in range(8)]).mean(0).log()
    assert torch.allclose(logits, expected, atol=1e-6)
    logits[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_ablation_training_learns_from_one_band():
    torch.manual_seed(0)
    y = torch.randint(2, (512,))
    x = torch.rand(512, 1, 8, 8) * 0.5 + 0.5 * y[:, None, None, None]  # dark or bright: seen in any band
    base = _base(classes=2)
    smooth = AblationSmooth(base, 2, size=2, threshold=None)
    before = (smooth.predict(x) == y).float().mean()
    defenses.ablation_training(base, x, y, size=2, epochs=3, batch_size=64, lr=1e-2, device="cpu")
    after = (smooth.predict(x) == y).float().mean()
    assert after > max(before, 0.95)


def test_the_ablated_wong_kolter_network_takes_twice_the_channels():
    net = models.build("wong-kolter", ablated=True)
    assert net(ablate(torch.rand(2, 1, 28, 28), 3, 4)).shape == (2, 10)
    with pytest.raises(ValueError, match=r"\(N, 2, 28, 28\)"):
        net(torch.rand(2, 1, 28, 28))


def test_bad_arguments_get_clear_errors():
    base = _base()
    with pytest.raises(ValueError, match="kind"):
        ablation_masks((8, 8), 2, "diagonal")
    with pytest.raises(ValueError, match="size"):
        ablation_masks((8, 8), 9, "column")
    with pytest.raises(ValueError, match="threshold"):
        AblationSmooth(base, 4, threshold=1.5)
    with pytest.raises(ValueError, match="positions must lie"):
        ablate(torch.rand(2, 1, 8, 8), 8, 2)
    with pytest.raises(TypeError, match="positions"):
        ablate(torch.rand(2, 1, 8, 8), 1.5, 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        AblationSmooth(base, 4, size=2).counts(torch.full((1, 1, 8, 8), 2.0))
    with pytest.raises(ValueError, match="logits of shape"):
        AblationSmooth(base, 5, size=2).counts(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="size"):
        AblationSmooth(base, 4, size=9).counts(torch.rand(1, 1, 8, 8))
