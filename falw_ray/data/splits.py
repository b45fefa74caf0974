"""Validation / pool split of a training set and the forget / retain split of the pool (docs/method.md, Splits)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Splits:
    """Index arrays of one scenario. val/pool/forget/retain index the dataset's train arrays,
    test indexes its test arrays, and mia_members indexes the retain set's own rows."""

    val: np.ndarray
    pool: np.ndarray
    forget: np.ndarray
    retain: np.ndarray
    test: np.ndarray
    mia_members: np.ndarray


def validation_split(labels: np.ndarray, num_classes: int, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Carve ``per_class`` samples of each class out of the training set: the unseen data FaLW compares with."""
    rng = np.random.default_rng(seed)
    val = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) <= per_class:
            raise ValueError(f"class {c} has {len(idx)} training samples; need more than val_per_class = {per_class}")
        val.append(rng.choice(idx, per_class, replace=False))
    val = np.sort(np.concatenate(val)).astype(np.int64)
    pool = np.setdiff1d(np.arange(len(labels)), val).astype(np.int64)
    return val, pool


def test_subset(labels: np.ndarray, num_classes: int, per_class: int | None, seed: int) -> np.ndarray:
    """All test rows, or ``per_class`` of each class (Tiny-ImageNet keeps 25 of its 50 per class)."""
    if per_class is None:
        return np.arange(len(labels), dtype=np.int64)
    rng = np.random.default_rng(seed)
    rows = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(num_classes)]
    return np.sort(np.concatenate(rows)).astype(np.int64)


def mia_members(n_retain: int, n_test: int, seed: int) -> np.ndarray:
    """The MIA's member sample: a seeded retain subset as large as the test set (or all of retain)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(n_retain)[: min(n_test, n_retain)]).astype(np.int64)
