"""advlib.models: shapes of every architecture, the normalisation layer, Wong and Kolter's layout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlib import data, models


def batch(dataset="fashion-mnist", n=5, seed=0):
    return torch.rand(n, *data.info(dataset).shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", sorted(models.ARCHITECTURES))
def test_every_architecture_gives_logits(arch):
    torch.manual_seed(0)
    model = models.build(arch).eval()
    x = batch()
    logits = model(x)
    classes = 1 if arch == "perceptron" else 10
    assert logits.shape == (5, classes)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    # the images decide the logits (one image's logits do not depend on the rest of the batch)
    assert not torch.allclose(logits[0], logits[1])
    assert torch.allclose(model(x[2:3]), logits[2:3], atol=1e-5)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("arch", ["mlp", "small-cnn", "wong-kolter", "fc10", "perceptron", "ae400-10"])
def test_cifar10_variants(arch):
    torch.manual_seed(0)
    model = models.build(arch, "cifar10").eval()
    x = batch("cifar10", n=3)
    assert model(x).shape == (3, 1 if arch == "perceptron" else 10)
    # built for 3x32x32, not for Fashion-MNIST's 1x28x28: an error that names both shapes, not torch's
    with pytest.raises(ValueError, match=r"built for cifar10 takes a batch of images shaped \(N, 3, 32, 32\), "
                                         r"got shape \(3, 1, 28, 28\)"):
        model(batch("fashion-mnist", n=3))


@pytest.mark.parametrize("arch", sorted(models.ARCHITECTURES))
def test_a_single_image_without_its_batch_dimension_is_refused(arch):
    """A (C, H, W) image once went through the flattening models as a batch of one (nn.Flatten keeps the
    first dimension): a silent answer for the wrong reason. Now every model asks for the batch dimension."""
    model = models.build(arch)
    with pytest.raises(ValueError, match=r"shaped \(N, 1, 28, 28\), got shape \(1, 28, 28\); add the batch "
                                         r"dimension, e.g. x\[None\]"):
        model(batch()[0])
    assert model(batch()[0][None]).shape[0] == 1


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="hidden units must be a whole number >= 1, got 0"):
        models.mlp((16, 0))
    with pytest.raises(ValueError, match="num_classes must be a whole number >= 1, got 0"):
        models.mlp((16,), num_classes=0)
    with pytest.raises(ValueError, match="channels must be a whole number >= 1, got 0"):
        models.small_cnn(channels=(0, 8))
    with pytest.raises(ValueError, match="code must be a whole number >= 1, got 0"):
        models.AE400(code=0)


@pytest.mark.parametrize("arch", ["perceptron", "mlp", "fc10", "fc100-100-10", "fc200-200-10", "small-cnn"])
def test_normalisation_is_the_first_layer(arch):
    model = models.build(arch)
    first = next(iter(model.children()))
    assert isinstance(first, models.Normalize)
    assert torch.allclose(first.mean.flatten(), torch.tensor(data.info("fashion-mnist").mean))
    assert torch.allclose(first.std.flatten(), torch.tensor(data.info("fashion-mnist").std))


def test_szegedy_layer_sizes():
    def linear_shapes(model):
        return [tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Linear)]

    assert linear_shapes(models.fc10()) == [(10, 784)]
    assert linear_shapes(models.fc100_100_10()) == [(100, 784), (100, 100), (10, 100)]
    assert linear_shapes(models.fc200_200_10()) == [(200, 784), (200, 200), (10, 200)]
    assert linear_shapes(models.perceptron()) == [(1, 784)]
    ae = models.AE400()
    assert linear_shapes(ae.encoder) == [(400, 784)] and linear_shapes(ae.decoder) == [(784, 400)]
    assert linear_shapes(ae.classifier) == [(10, 400)]
    x = batch()
    assert ae.reconstruct(x).shape == x.shape
    assert ((ae.reconstruct(x) > 0) & (ae.reconstruct(x) < 1)).all()  # sigmoid outputs


def test_mlp_activations_and_classes():
    model = models.mlp((7, 5), activation="tanh", num_classes=3)
    assert model(batch()).shape == (5, 3)
    assert isinstance(model.act1, nn.Tanh) and isinstance(model.act2, nn.Tanh)
    assert model.linear1.out_features == 7 and model.linear2.out_features == 5


def test_small_cnn_named_layers():
    model = models.small_cnn()
    assert tuple(model.conv1.weight.shape) == (32, 1, 3, 3)
    assert tuple(model.conv2.weight.shape) == (64, 32, 3, 3)
    assert model.dense.in_features == 64 * 7 * 7
    assert models.small_cnn("cifar10").dense.in_features == 64 * 8 * 8


def test_normalize_is_per_channel_affine():
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.25, 0.5)
    layer = models.Normalize(mean, std)
    x = torch.rand(4, 3, 5, 6)
    expected = torch.stack([(x[:, c] - mean[c]) / std[c] for c in range(3)], dim=1)
    assert torch.allclose(layer(x), expected, atol=1e-6)
    fashion = models.normalize("fashion-mnist")
    g = torch.rand(2, 1, 28, 28)
    assert torch.allclose(fashion(g), (g - 0.2860) / 0.3530, atol=1e-6)
    # constants are buffers: they move with the model and are saved, but are not trained
    assert set(dict(layer.named_buffers())) == {"mean", "std"} and not list(layer.parameters())
    assert "mean" in layer.state_dict()


@pytest.mark.parametrize("std", [(0.0,), (-1.0,), (0.2, 0.0, 0.3), (float("nan"),), (float("inf"),)])
def test_normalize_rejects_non_positive_or_non_finite_std(std):
    with pytest.raises(ValueError, match="standard deviations must be finite and positive"):
        models.Normalize((0.5,) * len(std), std)
    with pytest.raises(ValueError, match=r"mean and std must be 1-D, one value per channel, got shapes \(2,\) and"):
        models.Normalize((0.5, 0.5), (0.2,) * 3)


def test_unknown_architecture_and_activation():
    with pytest.raises(ValueError, match="unknown architecture 'resnet1000'; expected one of") as error:
        models.build("resnet1000")
    assert "small-cnn" in str(error.value)
    with pytest.raises(ValueError, match="unknown activation 'swish'; expected one of") as error:
        models.mlp((10,), activation="swish")
    assert "relu" in str(error.value)
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        models.build("mlp", "imagenet")


def test_wong_kolter_state_dict_is_the_authors_layout():
    model = models.wong_kolter_cnn()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {
        "0.weight": (16, 1, 4, 4), "0.bias": (16,),
        "2.weight": (32, 16, 4, 4), "2.bias": (32,),
        "5.weight": (100, 1568), "5.bias": (100,),
        "7.weight": (10, 100), "7.bias": (10,),
    }
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias",
                                        "5.weight", "5.bias", "7.weight", "7.bias"]
    conv = model[0]
    assert conv.stride == (2, 2) and conv.padding == (1, 1)
    assert not any(isinstance(m, models.Normalize) for m in model.modules())  # raw [0,1] pixels
    cifar = {k: tuple(v.shape) for k, v in models.wong_kolter_cnn("cifar10").state_dict().items()}
    assert cifar["0.weight"] == (16, 3, 4, 4) and cifar["5.weight"] == (100, 32 * 8 * 8)
