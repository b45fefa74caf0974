"""NegGrad+: descent on a retain batch mixed with ascent on a forget batch, every step."""
import torch.nn.functional as F

from .base import Method, Param
from .losses import LR, forget_weights


def loss(state, batch):
    logits = state.model(batch.x)
    ce = F.cross_entropy(logits, batch.y, reduction="none")
    w = forget_weights(state, logits, batch)
    f = batch.forget.float()
    forget_term = (w * ce * f).sum() / f.sum().clamp(min=1)
    retain_term = (ce * (1 - f)).sum() / (1 - f).sum().clamp(min=1)
    alpha = state.hp["alpha"]
    return alpha * retain_term - (1 - alpha) * forget_term


METHOD = Method(
    name="neggrad_plus", summary="retain descent mixed with forget ascent (alpha weighs retain)",
    layout="paired", loss=loss,
    params={
        "lr": Param(0.01, 1e-4, 0.1, **LR),
        "epochs": Param(5, 1, 50, integer=True, searched=False),
        "alpha": Param(0.95, 0.5, 0.999, help="mixing coefficient: weight of the retain loss"),
    },
)
