"""scikit-learn's handwritten digits: real data that ships with scikit-learn, so it needs no download."""
from __future__ import annotations

import numpy as np

from .arrays import DatasetArrays

TEST_PER_CLASS = 36
"""Digits has no official test split; a fixed stratified one (36 per class, 360 images) stands in for it."""


def load_digits_arrays(data_dir: object = None, download: bool = False) -> DatasetArrays:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.uint8)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    rng = np.random.default_rng(0)
    test = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:TEST_PER_CLASS] for c in range(10)])
    train = np.setdiff1d(np.arange(len(y)), test)
    return DatasetArrays(
        name="digits",
        train_x=x[train], train_y=y[train], test_x=x[np.sort(test)], test_y=y[np.sort(test)],
        num_classes=10, mean=(0.305,), std=(0.378,), scale=16.0, crop_pad=1, flip=False,
    )
