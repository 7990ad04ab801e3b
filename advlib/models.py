"""The networks of the talk, each an ``nn.Module`` that takes images in [0,1] and returns logits.

Normalisation by the dataset's mean and standard deviation is the first layer of a model (so attacks,
bounds and certificates all live in pixel space), except where a paper's own model has none
(Wong and Kolter's conv net, whose published weights expect raw [0,1] pixels).

- :func:`perceptron`: Rosenblatt's y = sigma(<x, w> + b); returns the single logit <x, w> + b.
- :func:`mlp`: fully connected layers with a softmax classifier; Szegedy et al. 2013's FC10 (no
  hidden layer), FC100-100-10 and FC200-200-10 (sigmoid networks) are :func:`fc10`,
  :func:`fc100_100_10`, :func:`fc200_200_10`.
- :class:`AE400`: Szegedy et al. 2013's AE400-10, a single-layer sigmoid autoencoder of 400 units with
  a softmax classifier on its code.
- :func:`small_cnn`: two convolution + max-pooling stages and two dense layers (LeCun et al. 1998 style).
- :func:`wong_kolter_cnn`: Wong and Kolter 2018's conv net (conv 16 4x4 stride 2, conv 32 4x4 stride 2,
  fc 100, fc 10), layer for layer the authors' ``nn.Sequential`` so their weights load.

Every model built here checks its input before its first layer (a forward pre-hook, so that the layers and
the state dict stay the papers'): images of another shape than its dataset's, say Fashion-MNIST's 1x28x28
given to a model built for CIFAR-10's 3x32x32, get a ``ValueError`` naming both shapes, not a matrix-size
error from deep inside torch (or, for a single image without its batch dimension, a silent wrong answer).
"""

from __future__ import annotations

from collections import OrderedDict
from math import prod

import torch
from torch import nn

from . import data
from .utils import check_count

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "identity": nn.Identity}


class ExpectedInput:
    """A forward pre-hook: ``ValueError`` unless the model's input is a batch (N, C, H, W) of images of
    ``shape`` (C, H, W), the images of ``dataset``."""

    def __init__(self, shape: tuple[int, int, int], dataset: str):
        self.shape, self.dataset = tuple(shape), dataset

    def __call__(self, module: nn.Module, args: tuple) -> None:
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and (x.ndim != 4 or tuple(x.shape[1:]) != self.shape):
            c, h, w = self.shape
            raise ValueError(f"{type(module).__name__} built for {self.dataset} takes a batch of images shaped "
                             f"(N, {c}, {h}, {w}), got shape {tuple(x.shape)}"
                             + ("; add the batch dimension, e.g. x[None]" if tuple(x.shape) == self.shape else ""))


def _expecting(model: nn.Module, dataset: str, channels: int | None = None) -> nn.Module:
    """``model`` with an :class:`ExpectedInput` check of ``dataset``'s image shape before its first layer
    (with ``channels`` channels instead of the dataset's, for encoded inputs)."""
    c, h, w = data.info(dataset).shape
    model.register_forward_pre_hook(ExpectedInput((channels or c, h, w), dataset))
    return model


class Normalize(nn.Module):
    """(x - mean) / std per channel: the first layer of a model, so its inputs stay in [0,1]."""

    def __init__(self, mean, std):
        super().__init__()
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != std.shape or mean.ndim != 1:
            raise ValueError(f"mean and std must be 1-D, one value per channel, got shapes {tuple(mean.shape)} "
                             f"and {tuple(std.shape)}")
        if not bool(torch.isfinite(mean).all() & torch.isfinite(std).all()) or (std <= 0).any():
            raise ValueError(f"standard deviations must be finite and positive (and means finite), got "
                             f"mean {mean.tolist()} and std {std.tolist()}")
        self.register_buffer("mean", mean.view(1, -1, 1, 1))
        self.register_buffer("std", std.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def normalize(dataset: str = "fashion-mnist") -> Normalize:
    """The :class:`Normalize` layer holding ``dataset``'s training mean and standard deviation."""
    meta = data.info(dataset)
    return Normalize(meta.mean, meta.std)


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def perceptron(dataset: str = "fashion-mnist") -> nn.Sequential:
    """Rosenblatt's perceptron y = sigma(<x, w> + b) for two classes; returns the logit <x, w> + b.

    The output has shape (N, 1); sigma(logit) is the probability of the second class, and
    :func:`advlib.train.fit` trains it with the logistic loss.
    """
    features = prod(data.info(dataset).shape)
    return _expecting(nn.Sequential(OrderedDict(normalize=normalize(dataset), flatten=nn.Flatten(),
                                                linear=nn.Linear(features, 1))), dataset)


def mlp(hidden: tuple[int, ...] = (100, 100), dataset: str = "fashion-mnist", activation: str = "relu",
        num_classes: int | None = None) -> nn.Sequential:
    """A multilayer perceptron: z = W_L a_{L-1} + b_L with a_l = act(W_l a_{l-1} + b_l), a_0 = x.

    The logits z feed the softmax classifier p_i = exp(z_i) / sum_j exp(z_j), Class(x) = argmax_i p_i.
    """
    meta = data.info(dataset)
    num_classes = len(meta.classes) if num_classes is None else check_count("num_classes", num_classes, low=1)
    hidden = tuple(check_count("hidden units", units, low=1) for units in hidden)
    layers: OrderedDict[str, nn.Module] = OrderedDict(normalize=normalize(dataset), flatten=nn.Flatten())
    width = prod(meta.shape)
    for i, units in enumerate(hidden, start=1):
        layers[f"linear{i}"] = nn.Linear(width, units)
        layers[f"act{i}"] = _activation(activation)
        width = units
    layers["logits"] = nn.Linear(width, num_classes)
    return _expecting(nn.Sequential(layers), dataset)


def fc10(dataset: str = "fashion-mnist") -> nn.Sequential:
    """Szegedy et al. 2013's FC10: a softmax classifier on the pixels (no hidden layer)."""
    return mlp((), dataset)


def fc100_100_10(dataset: str = "fashion-mnist", activation: str = "sigmoid") -> nn.Sequential:
    """Szegedy et al. 2013's FC100-100-10 (their Table 1: a sigmoid network): two hidden layers of
    100 units and a softmax classifier."""
    return mlp((100, 100), dataset, activation)


def fc200_200_10(dataset: str = "fashion-mnist", activation: str = "sigmoid") -> nn.Sequential:
    """Szegedy et al. 2013's FC200-200-10 (their Table 1: a sigmoid network): two hidden layers of
    200 units and a softmax classifier."""
    return mlp((200, 200), dataset, activation)


class AE400(nn.Module):
    """Szegedy et al. 2013's AE400-10: a sigmoid autoencoder of 400 units with a softmax on its code.

    ``encoder`` maps pixels to the code h = sigmoid(W x + b); ``decoder`` reconstructs
    x_hat = sigmoid(W' h + b'); ``classifier`` gives logits from h. ``forward`` returns the logits.
    Trained in two stages (:func:`advlib.train.fit_autoencoder`, then the classifier).
    """

    def __init__(self, dataset: str = "fashion-mnist", code: int = 400):
        super().__init__()
        meta = data.info(dataset)
        code = check_count("code", code, low=1)
        features = prod(meta.shape)
        self.shape = meta.shape
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(features, code), nn.Sigmoid())
        self.decoder = nn.Sequential(nn.Linear(code, features), nn.Sigmoid())
        self.classifier = nn.Linear(code, len(meta.classes))
        _expecting(self, dataset)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The autoencoder's reconstruction of ``x``, shaped like ``x``."""
        return self.decoder(self.encoder(x)).view(-1, *self.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x))


def small_cnn(dataset: str = "fashion-mnist", channels: tuple[int, int] = (32, 64), dense: int = 128) -> nn.Sequential:
    """Two stages of 3x3 convolution, ReLU and 2x2 max pooling, then a dense layer and the logits.

    Layers are named (``conv1``, ``pool1``, ``conv2``, ``pool2``, ...) so chapters can show the
    learned kernels (``model.conv1.weight``) and feature maps.
    """
    meta = data.info(dataset)
    c, h, w = meta.shape
    c1, c2 = (check_count("channels", c, low=1) for c in channels)
    dense = check_count("dense", dense, low=1)
    return _expecting(nn.Sequential(OrderedDict(
        normalize=normalize(dataset),
        conv1=nn.Conv2d(c, c1, 3, padding=1), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(c1, c2, 3, padding=1), relu2=nn.ReLU(), pool2=nn.MaxPool2d(2),
        flatten=nn.Flatten(), dense=nn.Linear(c2 * (h // 4) * (w // 4), dense), relu3=nn.ReLU(),
        logits=nn.Linear(dense, len(meta.classes)),
    )), dataset)


def wong_kolter_cnn(dataset: str = "fashion-mnist", ablated: bool = False) -> nn.Sequential:
    """Wong and Kolter 2018's conv net: conv 16 4x4 stride 2, conv 32 4x4 stride 2, fc 100, fc 10.

    Exactly the authors' ``nn.Sequential`` (indices 0, 2, 5, 7 hold the weights), with no
    normalisation layer, as their published Fashion-MNIST and MNIST models expect raw [0,1] pixels.
    ``ablated=True`` takes twice the channels: the ablated images of de-randomized smoothing, each channel
    v encoded as (v, 1 - v) where kept and (0, 0) where ablated (:func:`advlib.smoothing.ablate`).
    """
    meta = data.info(dataset)
    c, h, w = meta.shape
    if not isinstance(ablated, bool):
        raise TypeError(f"ablated must be True or False, got {ablated!r}")
    c = 2 * c if ablated else c
    return _expecting(nn.Sequential(
        nn.Conv2d(c, 16, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * (h // 4) * (w // 4), 100), nn.ReLU(),
        nn.Linear(100, len(meta.classes)),
    ), dataset, channels=c)


ARCHITECTURES = {
    "perceptron": perceptron,
    "mlp": mlp,
    "fc10": fc10,
    "fc100-100-10": fc100_100_10,
    "fc200-200-10": fc200_200_10,
    "ae400-10": AE400,
    "small-cnn": small_cnn,
    "wong-kolter": wong_kolter_cnn,
}


def build(arch: str, dataset: str = "fashion-mnist", **kwargs) -> nn.Module:
    """A freshly initialised model of architecture ``arch`` (a key of :data:`ARCHITECTURES`)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](dataset=dataset, **kwargs)
