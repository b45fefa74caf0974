"""l1-sparse: fine-tune on the retain set with an l1 penalty on the weights that decays linearly to 0."""
from __future__ import annotations

from ..lazy import F, torch
from .base import Method, Param
from .losses import LR


def loss(state, batch):
    alpha = state.hp["alpha"] * (1 - state.epoch / state.epochs)
    l1 = torch.stack([p.abs().sum() for p in state.model.parameters()]).sum()
    return F.cross_entropy(state.model(batch.x), batch.y) + alpha * l1


METHOD = Method(
    name="l1_sparse", summary="fine-tune with a decaying l1 penalty (model sparsity aids forgetting)",
    layout="retain", loss=loss, forget_term=False,
    params={
        "lr": Param(0.01, 1e-4, 0.1, **LR),
        "epochs": Param(10, 1, 50, integer=True, searched=False),
        "alpha": Param(5e-5, 1e-6, 1e-3, log=True, help="initial l1 coefficient"),
    },
)
