"""Small pieces every module shares: the model's device, running a model in eval mode, progress bars, and
the validators of DESIGN.md's contract.

The validators raise ``TypeError`` (a wrong kind of object) or ``ValueError`` (a wrong value) with a
message that says what was wrong and what was expected. Attacks, metrics, certificates, smoothing,
training and data all call these, so each check is written once.
"""

from __future__ import annotations

import math
import numbers
from contextlib import contextmanager

import torch
from torch import nn

HALF_DTYPES = (torch.float16, torch.bfloat16)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (the CPU for a model without any)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating-point parameter or buffer (None for a model without any)."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return None


@contextmanager
def eval_mode(model: nn.Module):
    """Put ``model`` (and every submodule) in eval mode for the block; restore each one's mode after."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.training = training


# --- validators ------------------------------------------------------------------------------------------

def check_model(model: nn.Module, x: torch.Tensor | None = None) -> None:
    """``TypeError`` unless ``model`` is an ``nn.Module`` and, when images ``x`` are given, its floating-point
    parameters have x's dtype (torch would otherwise fail deep inside a layer, or compute silently in
    another precision)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module returning logits, got {type(model).__name__}")
    dtype = model_dtype(model)
    if x is not None and dtype is not None and dtype != x.dtype:
        raise TypeError(f"the model's parameters are {dtype} but the images are {x.dtype}; convert one to the "
                        f"other, e.g. x.to({dtype}) or model.to({x.dtype})")


def check_images(x: torch.Tensor, name: str = "x", *, allow_half: bool = False, box: bool = True) -> None:
    """``TypeError``/``ValueError`` unless ``x`` is a floating-point batch of images (N, C, H, W), every value
    finite and (unless ``box=False``) in [0, 1]. ``box=False`` is for inputs that are not images but are fed to
    a model all the same: the noisy copies x + N(0, sigma^2 I) of randomized smoothing (Cohen et al. 2019),
    which leave [0, 1]. Half precision (float16, bfloat16) is refused unless ``allow_half``: attacks and
    certificates sum, count and take small steps that float16 rounds away or overflows."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = f"a tensor of dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"{name} must be a floating-point tensor of images in [0, 1], got {got}")
    if x.dtype in HALF_DTYPES and not allow_half:
        raise TypeError(f"{name} is {x.dtype}: half precision is not supported here (steps and sums lose their "
                        "digits or overflow); use float32 or float64, e.g. x.float() and model.float()")
    if x.ndim != 4:
        raise ValueError(f"{name} must be a batch of images shaped (N, C, H, W), got shape {tuple(x.shape)}")
    if x.numel():
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise ValueError(f"{name} holds {bad} values that are NaN or infinite; images must be finite, in [0, 1]")
        low, high = torch.aminmax(x)
        if box and (low < 0 or high > 1):
            raise ValueError(f"{name} must hold images in [0, 1], got values in [{low.item():.4g}, {high.item():.4g}]")


def check_labels(y: torch.Tensor, n: int | None = None, name: str = "y", *,
                 num_classes: int | None = None) -> None:
    """``TypeError``/``ValueError`` unless ``y`` is a 1-D integer tensor (of ``n`` labels, when given, and
    each in [0, num_classes), when given). A column (N, 1) is refused, not broadcast: compared with (N,)
    predictions it would silently give an (N, N) table."""
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        got = f"a tensor of dtype {y.dtype}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise TypeError(f"{name} must be a 1-D tensor of integer class labels (torch.long), got {got}")
    if y.ndim != 1:
        hint = f"; use {name}.view(-1)" if y.numel() == (n if n is not None else y.numel()) and y.ndim > 1 else ""
        raise ValueError(f"{name} must be a 1-D tensor of labels shaped (N,), got shape {tuple(y.shape)}{hint}")
    if n is not None and len(y) != n:
        raise ValueError(f"the images hold {n} examples but {name} holds {len(y)} labels; they must match")
    if len(y) and bool((y < 0).any()):
        raise ValueError(f"{name} must hold class labels >= 0, got a minimum of {y.min().item()}")
    if num_classes is not None:
        check_classes(y, num_classes, name)


def check_classes(y: torch.Tensor, num_classes: int, name: str = "y") -> None:
    """``ValueError`` unless every label of ``y`` lies in [0, num_classes) (the model's number of logits)."""
    if len(y) and (bool((y < 0).any()) or bool((y >= num_classes).any())):
        raise ValueError(f"{name} must hold labels in [0, {num_classes}) (the model has {num_classes} classes), "
                         f"got labels in [{y.min().item()}, {y.max().item()}]")


def label_hook(y: torch.Tensor):
    """A forward hook (``model.register_forward_hook(label_hook(y))``) that checks, on the first output the
    model computes, that it returns logits (N, K) and that every label of ``y`` names one of the K classes:
    the labels are checked against the model without a forward pass of their own (later calls cost one list
    test)."""
    checked = []

    def hook(module, inputs, output):
        if not checked:
            checked.append(True)
            check_classes(y, check_logits(output))
    return hook


def check_logits(logits: torch.Tensor, n: int | None = None) -> int:
    """The number of classes of a model's output, after a ``TypeError`` unless it is logits shaped (N, K),
    K >= 2."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] < 2 \
            or (n is not None and len(logits) != n):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise TypeError(f"the model must return logits shaped (N, K) with K >= 2 classes, got {shape}")
    return logits.shape[1]


def check_real(name: str, value, *, low: float = 0.0, strict: bool = False, high: float | None = None) -> float:
    """``value`` as a float, after a ``TypeError``/``ValueError`` unless it is a finite real number >= ``low``
    (> ``low`` with ``strict``) and, when given, <= ``high``. NaN and infinity are refused: an infinite budget
    or step makes attacks return NaN."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
            value = value.item()
        else:
            raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if value < low or (strict and value == low) or (high is not None and value > high):
        interval = f"{'(' if strict else '['}{low:g}, {'inf)' if high is None else f'{high:g}]'}"
        raise ValueError(f"{name} must lie in {interval}, got {value:g}")
    return value


def check_count(name: str, value, *, low: int = 0) -> int:
    """``value`` as an int, after a ``TypeError``/``ValueError`` unless it is a whole number >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a whole number >= {low}, got {type(value).__name__}")
    if not (math.isfinite(value) and int(value) == value and value >= low):
        raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
    return int(value)


def check_choice(name: str, value, choices) -> None:
    """``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {tuple(choices)}")


def check_generator(generator) -> None:
    """``TypeError`` unless ``generator`` is None or a CPU ``torch.Generator``: advlib draws its random numbers
    on the CPU, so that they do not depend on the device or on how a dataset is split into batches."""
    if generator is not None and (not isinstance(generator, torch.Generator) or generator.device.type != "cpu"):
        raise TypeError("generator must be None or a CPU torch.Generator (random numbers are drawn on the CPU so "
                        f"that results do not depend on the device or the batch), got {generator!r}")


def check_examples(x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None, *,
                   allow_empty: bool = False, allow_half: bool = False) -> None:
    """Images ``x`` (:func:`check_images`) and labels ``y`` of the same length (:func:`check_labels`), at
    least one example unless ``allow_empty``, and ``batch_size`` (when given) a whole number >= 1."""
    check_images(x, allow_half=allow_half)
    check_labels(y, len(x))
    if not allow_empty and len(x) == 0:
        raise ValueError("no examples: x and y are empty")
    if batch_size is not None:
        check_count("batch_size", batch_size, low=1)


def progress(iterable=None, **kwargs):
    """A tqdm progress bar on standard error (text, so it renders in executed notebooks and logs).

    ``ADVLIB_PROGRESS=0`` turns the bars off.
    """
    import os
    import sys

    from tqdm import tqdm

    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 1.0)
    kwargs.setdefault("disable", os.environ.get("ADVLIB_PROGRESS", "1") == "0")
    return tqdm(iterable, **kwargs)
