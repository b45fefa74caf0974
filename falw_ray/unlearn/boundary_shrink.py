"""Boundary Shrink: relabel each forget sample with the class one FGSM step on the original model
lands it in (its nearest wrong class), then fine-tune to those labels.

The step is taken as the reference code takes it: in pixel space ([0, 1]), from the exact pixel values
(rebuilt pixels are rounded back to the data's own grid first), the perturbed image clamped to
[0, 1] and rounded to 1/255, with the model normalising its input. Data without a pixel
range (signals) is perturbed in its own units, without clamp or rounding.
"""
from __future__ import annotations

from ..lazy import F, torch
from ..data.device import index_batches
from .base import Method, Param
from .losses import LR, forget_weights, weighted_mean

PIXEL_LEVELS = 255.0


def fgsm_inputs(model, t, x: torch.Tensor, y: torch.Tensor, bound: float) -> torch.Tensor:
    """``x`` (normalised) after one FGSM step of ``bound`` away from its label ``y``, normalised again."""
    raw = t.to_raw(x).detach()
    if t.pixels:
        raw = torch.round(raw * t.levels) / t.levels
    raw.requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(model(t.from_raw(raw)), y), raw)
    with torch.no_grad():
        adv = raw + bound * grad.sign()
        if t.pixels:
            adv = torch.round(adv.clamp(0.0, 1.0) * PIXEL_LEVELS) / PIXEL_LEVELS
        return t.from_raw(adv)


def neighbour_labels(model, t, x: torch.Tensor, y: torch.Tensor, bound: float, batch_size: int) -> torch.Tensor:
    """The label the original model gives each forget sample after the FGSM step."""
    out = []
    for rows in index_batches(len(x), batch_size, None, shuffle=False):
        rows = rows.to(x.device)
        adv = fgsm_inputs(model, t, x[rows], y[rows], bound)
        with torch.no_grad():
            out.append(model(adv).argmax(1))
    return torch.cat(out)


def prepare(state):
    t = state.t
    state.extra["neighbour"] = neighbour_labels(state.frozen_copy(), t, t.forget_x, t.forget_y, state.hp["bound"],
                                                state.batch_size)


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
        "bound": Param(0.1, 0.01, 1.0, log=True, help="FGSM step in pixel units ([0, 1]); data units for non-image data"),
    },
)
