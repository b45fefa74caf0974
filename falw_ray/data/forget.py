"""Forget-set construction: long-tailed (docs/method.md, Long-tailed forget sets), plain random, and class-wise."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def longtail_weights(num_classes: int, gamma: float) -> np.ndarray:
    """pi_k proportional to 1 / (k^gamma + 1); class 0 is the head. gamma = 0 gives a uniform pi."""
    k = np.arange(num_classes, dtype=np.float64)
    w = 1.0 / (k**gamma + 1.0)
    return w / w.sum()


def longtail_counts(n_forget: int, class_sizes: Sequence[int], gamma: float) -> list[int]:
    """Per-class forget counts that follow pi_k, are capped, and sum to ``n_forget`` exactly.

    Each class is capped at min(its own pool size, the head class's pool size). A rounding
    shortfall fills the highest-pi classes with room first (so at high ratios the head is
    forgotten whole); an excess is taken from the lowest-pi classes. Equal-pi classes
    (gamma = 0) share an adjustment one sample at a time, keeping the counts uniform.
    """
    sizes = np.asarray(class_sizes, dtype=np.int64)
    if sizes.ndim != 1 or len(sizes) == 0 or (sizes < 0).any():
        raise ValueError("class_sizes must be a non-empty list of non-negative counts")
    if not 0 <= n_forget <= int(sizes.sum()):
        raise ValueError(f"n_forget must lie in [0, {int(sizes.sum())}] (the pool size), got {n_forget}")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    pi = longtail_weights(len(sizes), gamma)
    caps = np.minimum(sizes, sizes[0])
    counts = np.minimum(np.round(n_forget * pi).astype(np.int64), caps)
    if n_forget > caps.sum():
        raise ValueError(
            f"n_forget = {n_forget} exceeds what the per-class caps allow ({int(caps.sum())}); "
            "lower the forget ratio"
        )
    order = np.arange(len(sizes))
    while counts.sum() < n_forget:
        room = counts < caps
        top = pi[room].max()
        level = order[room & np.isclose(pi, top)]
        k = level[np.argmin(counts[level])]
        counts[k] += 1
    while counts.sum() > n_forget:
        has = counts > 0
        low = pi[has].min()
        level = order[has & np.isclose(pi, low)][::-1]
        k = level[np.argmax(counts[level])]
        counts[k] -= 1
    return [int(c) for c in counts]


def longtail_forget(labels: np.ndarray, num_classes: int, ratio: float, gamma: float, seed: int) -> np.ndarray:
    """Indices (into ``labels``) of a long-tailed forget set of round(ratio * len(labels)) samples."""
    labels = np.asarray(labels)
    sizes = np.bincount(labels, minlength=num_classes)
    counts = longtail_counts(int(round(ratio * len(labels))), sizes.tolist(), gamma)
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), n, replace=False) for c, n in enumerate(counts)]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def random_forget(labels: np.ndarray, ratio: float, seed: int) -> np.ndarray:
    """A uniform random subset: the classic (roughly balanced) forget setting."""
    n = len(labels)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, int(round(ratio * n)), replace=False)).astype(np.int64)


def classwise_forget(labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Every sample of the named classes: full-class unlearning."""
    return np.flatnonzero(np.isin(np.asarray(labels), list(classes))).astype(np.int64)
