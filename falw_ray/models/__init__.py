"""Model registry: name -> builder(num_classes, input_shape). Every model names its final linear layer.

``input_shape`` is ``DatasetArrays.input_shape``: (C, H, W) for images, (C, L) for signals."""
from __future__ import annotations

from collections.abc import Callable

from .. import plugins
from ..lazy import nn
from ..plugins import is_ref

MODELS: dict[str, str] = {
    "cnn": "falw_ray.models.cnn:small_cnn",
    "conv1d": "falw_ray.models.conv1d:conv1d",
    "resnet18": "falw_ray.models.resnet:resnet18",
    "vgg16_bn": "falw_ray.models.vgg:vgg16_bn",
}
"""Built-in models: name -> ``module:FUNCTION`` of the builder, imported (with torch) when one is built,
so that listing and validating names stays cheap."""


def builder(name: str) -> Callable[[int, tuple[int, ...]], nn.Module]:
    """The builder function of a registered model."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    return plugins.load(MODELS[name])


def build_model(name: str, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """A registered model, or ``module:FUNCTION`` (a builder of one's own, called the same way: with
    the number of classes and the input shape)."""
    if is_ref(name):
        model = plugins.load(name)(num_classes, tuple(input_shape))
        if not isinstance(model, nn.Module):
            raise plugins.PluginError(f"model {name} returned a {type(model).__name__}, not a torch.nn.Module")
        return model
    return builder(name)(num_classes, tuple(input_shape))


def get_head(model: nn.Module) -> nn.Linear:
    """The final linear layer, at ``model.head_path`` (a model of one's own sets it for Boundary Expanding)."""
    if not hasattr(model, "head_path"):
        raise ValueError(f"{type(model).__name__} has no head_path naming its final linear layer (e.g. head_path = "
                         "'fc'), which this method widens")
    return model.get_submodule(model.head_path)


def set_head(model: nn.Module, head: nn.Linear) -> None:
    """Swap the final layer (Boundary Expanding widens it by a shadow class, then prunes it)."""
    parent, _, leaf = model.head_path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, head)


__all__ = ["MODELS", "build_model", "builder", "get_head", "set_head"]
