"""Boundary Expanding: add a shadow class, train forget samples into it, then judge the model.

The reference code judges the widened model (C + 1 outputs): a forget sample predicted as the shadow
class counts as forgotten. ``evaluate_head: pruned`` removes the shadow neuron first, as the
Boundary Unlearning paper describes, and judges the C-way model.
"""
from __future__ import annotations

from ..lazy import F, nn, torch
from ..models import get_head, set_head
from .base import Method, Option, Param
from .losses import LR, forget_weights, weighted_mean


def prepare(state):
    head = get_head(state.model)
    wide = nn.Linear(head.in_features, head.out_features + 1).to(head.weight.device)
    with torch.no_grad():
        wide.weight[: head.out_features] = head.weight
        wide.bias[: head.out_features] = head.bias
    set_head(state.model, wide)


def finish(state):
    if state.options["evaluate_head"] != "pruned":
        return
    head = get_head(state.model)
    pruned = nn.Linear(head.in_features, head.out_features - 1).to(head.weight.device)
    with torch.no_grad():
        pruned.weight.copy_(head.weight[:-1])
        pruned.bias.copy_(head.bias[:-1])
    set_head(state.model, pruned)


def loss(state, batch):
    logits = state.model(batch.x)
    shadow = torch.full_like(batch.y, state.t.num_classes)
    ce = F.cross_entropy(logits, shadow, reduction="none")
    return weighted_mean(ce, forget_weights(state, logits, batch))


METHOD = Method(
    name="boundary_expanding", summary="train forget samples into an extra shadow class, then judge (or prune) it",
    layout="forget", loss=loss, prepare=prepare, finish=finish,
    params={"lr": Param(1e-5, 1e-6, 0.1, **LR), "epochs": Param(10, 1, 50, integer=True, searched=False)},
    options={"evaluate_head": Option(("widened", "pruned"), "widened",
                                     help="judge the C+1-way model (the reference code) or prune the shadow class first")},
)
