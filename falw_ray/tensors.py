"""A scenario's splits as tensors resident on one device, built once per trial or baseline run."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .data.arrays import DatasetArrays
from .data.device import Augment, to_device
from .data.splits import Splits


@dataclass
class ScenarioTensors:
    forget_x: torch.Tensor
    forget_y: torch.Tensor
    retain_x: torch.Tensor
    retain_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mia_members: torch.Tensor
    forget_counts: torch.Tensor
    num_classes: int
    aug: Augment
    dataset: str = ""
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    pixels: bool = False
    """Images whose raw values are pixels in [0, 1] after scaling (uint8 files): attacks that work in
    pixel space (Boundary Shrink's FGSM) clamp and round there. Signals (mnist1d) have no such range."""
    levels: float = 255.0
    """The largest raw pixel value: pixels lie on the grid k / levels (255 for 8-bit images, 16 for digits)."""

    @property
    def device(self) -> torch.device:
        return self.retain_x.device

    def to_raw(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised inputs back to the data's own units (pixels in [0, 1] for images)."""
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * self.std.view(shape) + self.mean.view(shape)

    def from_raw(self, raw: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (raw.ndim - 2)
        return (raw - self.mean.view(shape)) / self.std.view(shape)


def scenario_tensors(data: DatasetArrays, splits: Splits, device: torch.device) -> ScenarioTensors:
    def xs(rows: np.ndarray, test: bool = False) -> torch.Tensor:
        return to_device(data, (data.test_x if test else data.train_x)[rows], device)

    def ys(rows: np.ndarray, test: bool = False) -> torch.Tensor:
        return torch.from_numpy((data.test_y if test else data.train_y)[rows]).to(device)

    forget_y = ys(splits.forget)
    return ScenarioTensors(
        forget_x=xs(splits.forget), forget_y=forget_y,
        retain_x=xs(splits.retain), retain_y=ys(splits.retain),
        val_x=xs(splits.val), val_y=ys(splits.val),
        test_x=xs(splits.test, True), test_y=ys(splits.test, True),
        mia_members=torch.as_tensor(np.array(splits.mia_members)).to(device),
        forget_counts=torch.bincount(forget_y, minlength=data.num_classes),
        num_classes=data.num_classes,
        aug=Augment(data.crop_pad, data.flip),
        dataset=data.name,
        mean=torch.tensor(data.mean, device=device), std=torch.tensor(data.std, device=device),
        pixels=data.train_x.dtype == np.uint8, levels=float(data.scale),
    )
