"""The one pixel attack (Su, Vargas and Sakurai 2019): differential evolution over a few pixels.

Contract tests (at most `pixels` pixels changed, box, inputs unchanged, mode restored, batch = one by one,
seeds, bad input), the algorithm's properties (fitness never worse than the initial population's, early
stop, more pixels succeed at least as often), its random indices, and agreement with torchattacks'
OnePixel (SciPy's differential evolution, one image at a time), on a small MLP trained here in seconds.
Small populations and few generations keep the file fast.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from advlib.attacks import one_pixel
from advlib.attacks.one_pixel import _distinct_indices, _uniforms

N_IMAGES = 60


@pytest.fixture(scope="module")
def trained(attacked_images, one_thread):
    """The shared small MLP trained for 3 epochs and its first 60 test images with their labels (conftest)."""
    return attacked_images(N_IMAGES)


def predict(model, x) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def prob_of(model, x, y) -> torch.Tensor:
    with torch.no_grad():
        return model(x).softmax(1).gather(1, y[:, None])[:, 0]


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def changed_pixels(x_adv, x) -> torch.Tensor:
    """Pixel positions (h, w) that differ in any channel, per image."""
    return (x_adv != x).any(dim=1).flatten(1).sum(dim=1)


def other_labels(y: torch.Tensor, seed: int = 0) -> torch.Tensor:
    shift = torch.randint(1, 10, y.shape, generator=seeded(seed))
    return (y + shift) % 10


class Counting(nn.Module):
    """Wraps a model; records the batch size of every forward pass and the mode it ran in."""

    def __init__(self, model):
        super().__init__()
        self.model, self.sizes, self.modes = model, [], []

    def forward(self, x):
        self.sizes.append(len(x))
        self.modes.append(self.training)
        return self.model(x)


# --- the contract ---------------------------------------------------------------------------------

@pytest.mark.parametrize("pixels", [1, 3, 5])
@pytest.mark.parametrize("targeted", [False, True])
def test_at_most_pixels_changed_in_box_and_inputs_unchanged(trained, pixels, targeted):
    model, x, y = trained
    x, y = x[:24].clone(), y[:24].clone()
    labels = other_labels(y) if targeted else y
    x_before, labels_before = x.clone(), labels.clone()
    params = [p.detach().clone() for p in model.parameters()]
    x_adv = one_pixel(model, x, labels, pixels=pixels, popsize=20, steps=5, targeted=targeted, generator=seeded())
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert not x_adv.requires_grad and x_adv.min() >= 0 and x_adv.max() <= 1
    counts = changed_pixels(x_adv, x)
    assert (counts <= pixels).all()
    assert (counts > 0).float().mean() > 0.8  # it does write pixels (a written value may equal the old one)
    assert torch.equal(x, x_before) and torch.equal(labels, labels_before)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params, strict=True))
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("start_training", [True, False])
def test_model_runs_in_eval_mode_and_its_mode_is_restored(trained, start_training):
    model = Counting(copy.deepcopy(trained[0]))
    model.train(start_training)
    one_pixel(model, trained[1][:8], trained[2][:8], popsize=10, steps=3, generator=seeded())
    assert model.modes and not any(model.modes)
    assert all(m.training == start_training for m in model.modules())


def test_batch_equals_examples_one_by_one(trained):
    # float64, so batched and single-example forward passes agree to ~1e-16 and no selection flips
    model = copy.deepcopy(trained[0]).double()
    x, y = trained[1][:8].double(), trained[2][:8]
    kw = {"pixels": 2, "popsize": 16, "steps": 8}
    whole = one_pixel(model, x, y, generator=seeded(7), **kw)
    g = seeded(7)
    pieces = torch.cat([one_pixel(model, x[i:i + 1], y[i:i + 1], generator=g, **kw) for i in range(len(x))])
    torch.testing.assert_close(whole, pieces, rtol=0, atol=1e-12)
    g = seeded(7)  # any split into consecutive pieces, and any chunking of the forward passes
    split = torch.cat([one_pixel(model, x[:5], y[:5], generator=g, chunk=7, **kw),
                       one_pixel(model, x[5:], y[5:], generator=g, **kw)])
    torch.testing.assert_close(whole, split, rtol=0, atol=1e-12)
    torch.manual_seed(3)  # the global generator works the same way
    whole = one_pixel(model, x, y, **kw)
    torch.manual_seed(3)
    pieces = torch.cat([one_pixel(model, x[i:i + 1], y[i:i + 1], **kw) for i in range(len(x))])
    torch.testing.assert_close(whole, pieces, rtol=0, atol=1e-12)


def test_same_seed_same_result_different_seed_different_result(trained):
    model, x, y = trained
    x, y = x[:16], y[:16]
    kw = {"pixels": 2, "popsize": 20, "steps": 5}
    first = one_pixel(model, x, y, generator=seeded(1), **kw)
    assert torch.equal(first, one_pixel(model, x, y, generator=seeded(1), **kw))
    other = one_pixel(model, x, y, generator=seeded(2), **kw)
    assert (first != other).flatten(1).any(1).float().mean() > 0.5


def test_empty_batch(trained):
    model, x, _ = trained
    out = one_pixel(model, x[:0], torch.zeros(0, dtype=torch.long), popsize=8, steps=2)
    assert out.shape == x[:0].shape


F_RANGE = r"F \(the differential weight\) must lie in \(0, 2\], got "
BAD = {
    "no pixels": ({"pixels": 0}, "pixels must be a whole number >= 1, got 0"),
    "fractional pixels": ({"pixels": 1.5}, "pixels must be a whole number >= 1, got 1.5"),
    "popsize 3": ({"popsize": 3}, "popsize must be a whole number >= 4, got 3"),
    "negative steps": ({"steps": -1}, "steps must be a whole number >= 0, got -1"),
    "F zero": ({"F": 0.0}, F_RANGE + "0"),
    "F too large": ({"F": 2.5}, F_RANGE + "2.5"),
    "chunk zero": ({"chunk": 0}, "chunk must be a whole number >= 1, got 0"),
    "cuda generator": ({"generator": "cuda"}, "generator must be None or a CPU torch.Generator"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_arguments_raise(trained, case):
    model, x, y = trained
    kw, word = BAD[case]
    kw = {"popsize": 8, "steps": 2, **kw}
    if kw.get("generator") == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA generator")
        kw["generator"] = torch.Generator(device="cuda")
    with pytest.raises(TypeError if case == "cuda generator" else ValueError, match=word):
        one_pixel(model, x[:4], y[:4], **kw)


def test_bad_images_and_labels_raise(trained):
    model, x, y = trained
    with pytest.raises(ValueError, match=r"x must hold images in \[0, 1\], got values in \[-0.5, 1.5\]"):
        one_pixel(model, x[:4] * 2 - 0.5, y[:4], popsize=8, steps=1)
    with pytest.raises(ValueError, match="the images hold 4 examples but y holds 3 labels"):
        one_pixel(model, x[:4], y[:3], popsize=8, steps=1)


# --- the algorithm ----------------------------------------------------------------------------------

def test_random_indices_are_distinct_and_uniform():
    seeds = torch.randint(0, 2**32, (50,), generator=seeded())
    u = _uniforms(seeds, 3, torch.arange(20), torch.arange(3))
    assert u.shape == (50, 20, 3) and u.min() > 0 and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.02
    r = torch.stack(_distinct_indices(u), dim=-1)  # (50, 20, 3)
    slot = torch.arange(20).expand(50, 20)[..., None]
    every = torch.cat([slot, r], dim=-1)
    assert ((every >= 0) & (every < 20)).all()
    assert (every.sort(dim=-1).values.diff(dim=-1) > 0).all()  # i, r1, r2, r3 distinct
    counts = torch.bincount(r.flatten(), minlength=20).float()
    assert counts.min() > 0.7 * counts.mean()  # every index drawn about equally often
    # another generation, slot or component gives other numbers
    assert not torch.equal(u, _uniforms(seeds, 4, torch.arange(20), torch.arange(3)))


@pytest.mark.parametrize("targeted", [False, True])
def test_result_never_worse_than_the_best_initial_candidate(trained, targeted):
    model, x, y = trained
    x, y = x[:40], y[:40]
    labels = other_labels(y) if targeted else y
    kw = {"pixels": 3, "popsize": 20, "targeted": targeted}
    start = one_pixel(model, x, labels, steps=0, generator=seeded(5), **kw)
    end = one_pixel(model, x, labels, steps=20, generator=seeded(5), **kw)
    sign = -1 if targeted else 1  # the fitness: p(y), or -p(target)
    fit_start, fit_end = sign * prob_of(model, start, labels), sign * prob_of(model, end, labels)
    win_start, win_end = [(predict(model, v) == labels) == targeted for v in (start, end)]
    # an image whose initial best succeeds stops there; the others only improve, or come to succeed
    assert torch.equal(end[win_start], start[win_start])
    assert (win_end | (fit_end <= fit_start + 1e-6)).all()
    improved = (fit_end < fit_start - 1e-6) | (win_end & ~win_start)
    assert improved.sum() >= 15 and win_end.sum() >= win_start.sum()  # measured: 33 and 36 of 40


def test_fools_a_fraction_and_more_pixels_fool_more(trained):
    model, x, y = trained
    right = predict(model, x) == y
    fooled = {}
    for pixels in (1, 5):
        x_adv = one_pixel(model, x, y, pixels=pixels, popsize=100, steps=50, generator=seeded())
        fooled[pixels] = int((right & (predict(model, x_adv) != y)).sum())
    # measured (seeds 0-3): 4 or 5 of the 46 correctly classified images fooled with one pixel, 9 to 11 with five
    assert fooled[5] >= 0.15 * right.sum()
    assert fooled[1] >= 2
    assert fooled[5] >= fooled[1]


def test_targeted_successes_are_the_targets(trained):
    model, x, y = trained
    x = x[:40]
    with torch.no_grad():
        targets = model(x).topk(2, dim=1).indices[:, 1]  # the runner-up class, the easiest target
    targets[:10] = predict(model, x[:10])  # already classified as the target: succeed at once, stay so
    x_adv = one_pixel(model, x, targets, pixels=5, popsize=40, steps=30, targeted=True, generator=seeded())
    hit = predict(model, x_adv) == targets
    assert hit[:10].all()
    assert hit[10:].sum() >= 2  # measured: 5 to 7 of 30 (seeds 0-3)
    # an untargeted success (misclassified, but not as the target) does not stop a targeted attack
    assert (predict(model, x_adv[10:][~hit[10:]]) != targets[10:][~hit[10:]]).all()


def test_early_stop_spends_nothing_on_images_already_fooled(trained):
    model, x, y = trained
    x = x[:20]
    pred = predict(model, x)
    wrong = (pred + 1) % 10  # every image is "misclassified" against these labels from the start
    counting = Counting(model)
    one_pixel(counting, x, wrong, popsize=30, steps=10, chunk=1000, generator=seeded())
    assert counting.sizes == [20 * 30]  # the initial generation only
    # half the images wrong from the start: they never reach the second forward pass
    labels = torch.where(torch.arange(20) < 10, wrong, pred)
    counting = Counting(model)
    one_pixel(counting, x, labels, popsize=30, steps=10, chunk=1000, generator=seeded())
    assert counting.sizes[0] == 20 * 30 and len(counting.sizes) > 1
    assert all(size <= 10 * 30 for size in counting.sizes[1:])
    counting = Counting(model)  # the default chunk on the CPU
    one_pixel(counting, x, labels, popsize=30, steps=1, generator=seeded())
    assert counting.sizes[:3] == [256, 256, 600 - 2 * 256]
    counting = Counting(model)  # chunks bound every forward pass
    one_pixel(counting, x, labels, popsize=30, steps=3, chunk=64, generator=seeded())
    assert max(counting.sizes) <= 64 and counting.sizes[:10] == [64] * 9 + [600 - 9 * 64]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_same_result_on_the_gpu(trained):
    model = copy.deepcopy(trained[0]).double()
    x, y = trained[1][:8].double(), trained[2][:8]
    kw = {"pixels": 2, "popsize": 16, "steps": 8}
    cpu = one_pixel(model, x, y, generator=seeded(), **kw)
    gpu = one_pixel(model.cuda(), x, y, generator=seeded(), **kw)
    assert gpu.device == x.device
    torch.testing.assert_close(cpu, gpu, rtol=0, atol=1e-9)


# --- agreement with a peer --------------------------------------------------------------------------

def test_success_rate_at_least_torchattacks(trained, fashion_test):
    torchattacks = pytest.importorskip("torchattacks")
    model = trained[0]
    # the 20 correctly classified images (of the first 500 test images) of lowest true-class probability:
    # one pixel fools about a tenth of the first images, too few to compare on 20 of them
    x_pool, y_pool = fashion_test[0][:500], fashion_test[1][:500]
    p = prob_of(model, x_pool, y_pool).masked_fill(predict(model, x_pool) != y_pool, 2.0)
    pick = p.argsort()[:20]
    x, y = x_pool[pick].clone(), y_pool[pick].clone()
    # Equal populations: torchattacks hands SciPy popsize // (number of parameters), and SciPy's
    # population is that times the number of parameters: one pixel of a 1-channel image has 3 (row,
    # column, value), so popsize 60 gives 20 * 3 = 60 members there as here. Its DE is best1bin with a
    # dithered F in [0.5, 1) and crossover 1 (no crossover), and it stops once its best member succeeds;
    # ``steps`` generations follow the initial population, as ``iters`` do here.
    popsize, steps = 60, 20
    np.random.seed(0)  # SciPy's differential evolution draws from NumPy's global generator
    theirs = torchattacks.OnePixel(model, pixels=1, steps=steps, popsize=popsize, inf_batch=4096)(x, y)
    ours = one_pixel(model, x, y, pixels=1, popsize=popsize, steps=steps, generator=seeded())
    fooled = {"ours": int((predict(model, ours) != y).sum()), "theirs": int((predict(model, theirs) != y).sum())}
    # measured (NumPy seeds and our seeds 0-2): ours 11 of 20 each time, torchattacks 10 or 11
    assert fooled["ours"] >= fooled["theirs"] - 1 and fooled["ours"] >= 8, fooled


def _mix_by_hand(v: int) -> int:
    "The 32-bit mixing hash on a Python integer, step by step from its definition."
    for _ in range(2):
        v = (((v >> 16) ^ v) * 0x45D9F3B) % 2**32
    return (v >> 16) ^ v


def test_mix_is_the_32_bit_hash_and_leaves_its_argument_alone():
    from advlib.attacks.one_pixel import _mix

    v = torch.cat([torch.randint(0, 2**32, (200,), generator=seeded()), torch.tensor([0, 1, 2**32 - 1])])
    kept = v.clone()
    mixed = _mix(v)
    assert torch.equal(v, kept)  # the in-place steps work on a copy
    assert mixed.tolist() == [_mix_by_hand(value) for value in v.tolist()]
    assert mixed.unique().numel() == v.unique().numel()  # a bijection: no two values collide
