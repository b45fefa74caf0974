"""The in-memory form every dataset loader returns: uint8 images or float32 signals plus labels, split train/test."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DatasetArrays:
    """A labelled dataset held as arrays: uint8 images (N, C, H, W) or float32 1-D signals (N, C, L).

    Images stay uint8 so a 50k-image set costs ~150 MB in host memory; they are scaled and
    normalised once, on the trial's device (see ``device.py``). ``scale`` is the largest raw
    pixel value (255 for photos, 16 for digits; 1 for signals, stored already standardised).
    Random crop and flip are image augmentations: signals must have neither.
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
    val_rows: np.ndarray | None = None
    """Rows of train_x that are the data set's own validation split (FaLW's unseen data), kept out
    of the training pool; None: one is carved out of the training rows per class."""

    def __post_init__(self) -> None:
        for field in ("train_x", "test_x"):
            object.__setattr__(self, field, canonical(getattr(self, field)))
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if not _is_image(x) and not _is_signal(x):
                raise ValueError(f"{self.name}: {split}_x must be uint8 (N, C, H, W) or float32 (N, C, L), "
                                 f"got {x.dtype} {x.shape}")
            if len(x) != len(y):
                raise ValueError(f"{self.name}: {split}_x has {len(x)} rows but {split}_y has {len(y)}")
            if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
                raise ValueError(f"{self.name}: {split}_y labels must lie in [0, {self.num_classes})")
        if self.train_x.shape[1:] != self.test_x.shape[1:] or self.train_x.dtype != self.test_x.dtype:
            raise ValueError(f"{self.name}: test_x must match train_x's {self.train_x.dtype} {self.train_x.shape[1:]}, "
                             f"got {self.test_x.dtype} {self.test_x.shape[1:]}")
        if self.val_rows is not None and (len(self.val_rows) == 0 or self.val_rows.min() < 0
                                          or self.val_rows.max() >= len(self.train_y)):
            raise ValueError(f"{self.name}: val_rows must be a non-empty set of rows of train_x")
        if self.is_signal and (self.crop_pad or self.flip):
            raise ValueError(f"{self.name}: crop_pad and flip apply to images only; a signal needs crop_pad=0, flip=False")

    @property
    def is_signal(self) -> bool:
        return self.train_x.ndim == 3

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) for images, (C, L) for signals: what a model builder receives."""
        return tuple(self.train_x.shape[1:])


def canonical(x: np.ndarray) -> np.ndarray:
    """``x`` in C order with the strides a fresh array of its shape has. A view such as
    ``x[:, None]`` gives its size-1 axis another stride, and the CPU's convolution kernels take
    another path on it (the outputs differ in their last bits, and trained models more): without
    this, a model trained on a loader's arrays in one process would differ from one trained on the
    same arrays after Ray serialised them, which always come back with these strides."""
    want = np.empty((0,) + x.shape[1:], x.dtype).strides[1:] if x.ndim else ()
    if x.flags["C_CONTIGUOUS"] and x.strides[1:] == want:
        return x
    return np.array(x, order="C", copy=True)


def _is_image(x: np.ndarray) -> bool:
    return x.ndim == 4 and x.dtype == np.uint8


def _is_signal(x: np.ndarray) -> bool:
    return x.ndim == 3 and x.dtype == np.float32
