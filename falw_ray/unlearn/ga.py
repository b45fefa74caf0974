"""GA: gradient ascent on the forget set."""
from __future__ import annotations

from ..lazy import F
from .base import Method, Param
from .losses import LR, forget_weights, weighted_mean


def loss(state, batch):
    logits = state.model(batch.x)
    ce = F.cross_entropy(logits, batch.y, reduction="none")
    return -weighted_mean(ce, forget_weights(state, logits, batch))


METHOD = Method(
    name="ga", summary="gradient ascent on the forget set", layout="forget", loss=loss,
    params={"lr": Param(1e-4, 1e-6, 1e-1, **LR), "epochs": Param(5, 1, 50, integer=True, searched=False)},
)
