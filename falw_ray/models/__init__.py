"""Model registry: name -> builder(num_classes, input_shape). Every model names its final linear layer.

``input_shape`` is ``DatasetArrays.input_shape``: (C, H, W) for images, (C, L) for signals."""
from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from .cnn import small_cnn
from .conv1d import conv1d
from .resnet import resnet18
from .vgg import vgg16_bn

MODELS: dict[str, Callable[[int, tuple[int, ...]], nn.Module]] = {
    "cnn": small_cnn,
    "conv1d": conv1d,
    "resnet18": resnet18,
    "vgg16_bn": vgg16_bn,
}


def build_model(name: str, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    return MODELS[name](num_classes, tuple(input_shape))


def get_head(model: nn.Module) -> nn.Linear:
    return model.get_submodule(model.head_path)


def set_head(model: nn.Module, head: nn.Linear) -> None:
    """Swap the final layer (Boundary Expanding widens it by a shadow class, then prunes it)."""
    parent, _, leaf = model.head_path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, head)


__all__ = ["MODELS", "build_model", "get_head", "set_head"]
