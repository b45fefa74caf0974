"""The in-memory form every dataset loader returns: uint8 images plus labels, split train/test."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DatasetArrays:
    """A labelled image dataset held as arrays.

    Images stay uint8 (N, C, H, W) so a 50k-image set costs ~150 MB in host memory;
    they are scaled and normalised once, on the trial's device (see ``device.py``).
    ``scale`` is the largest raw pixel value (255 for photos, 16 for digits).
    """

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 255.0
    crop_pad: int = 0
    flip: bool = False

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.ndim != 4 or x.dtype != np.uint8:
                raise ValueError(f"{self.name}: {split}_x must be uint8 (N, C, H, W), got {x.dtype} {x.shape}")
            if len(x) != len(y):
                raise ValueError(f"{self.name}: {split}_x has {len(x)} rows but {split}_y has {len(y)}")
            if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
                raise ValueError(f"{self.name}: {split}_y labels must lie in [0, {self.num_classes})")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]
