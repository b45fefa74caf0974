"""Boundary Shrink: relabel each forget sample with the class an FGSM step on the original model
lands it in (its nearest wrong class), then fine-tune to those labels."""
import torch
import torch.nn.functional as F

from ..data.device import index_batches
from .base import Method, Param
from .losses import LR, forget_weights, weighted_mean


def neighbour_labels(model, x, y, bound: float, batch_size: int) -> torch.Tensor:
    out = []
    for rows in index_batches(len(x), batch_size, None, shuffle=False):
        rows = rows.to(x.device)
        xb = x[rows].clone().requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(xb), y[rows]), xb)
        with torch.no_grad():
            out.append(model(xb + bound * grad.sign()).argmax(1))
    return torch.cat(out)


def prepare(state):
    t = state.t
    state.extra["neighbour"] = neighbour_labels(state.frozen_copy(), t.forget_x, t.forget_y, state.hp["bound"], state.batch_size)


def loss(state, batch):
    logits = state.model(batch.x)
    ce = F.cross_entropy(logits, state.extra["neighbour"][batch.rows], reduction="none")
    return weighted_mean(ce, forget_weights(state, logits, batch))


METHOD = Method(
    name="boundary_shrink", summary="fine-tune forget samples to their nearest wrong class (FGSM neighbour)",
    layout="forget", loss=loss, prepare=prepare,
    params={
        "lr": Param(1e-5, 1e-6, 0.1, **LR),
        "epochs": Param(10, 1, 50, integer=True, searched=False),
        "bound": Param(0.1, 0.01, 1.0, log=True, help="FGSM step size in normalised pixel units"),
    },
)
