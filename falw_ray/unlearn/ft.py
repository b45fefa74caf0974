"""FT: fine-tune on the retain set only, relying on catastrophic forgetting."""
from __future__ import annotations

from ..lazy import F
from .base import Method, Param
from .losses import LR


def loss(state, batch):
    return F.cross_entropy(state.model(batch.x), batch.y)


METHOD = Method(
    name="ft", summary="fine-tune on the retain set", layout="retain", loss=loss, forget_term=False,
    params={"lr": Param(0.01, 1e-4, 0.1, **LR), "epochs": Param(10, 1, 50, integer=True, searched=False)},
)
