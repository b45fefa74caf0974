"""RL: random labels on forget samples (redrawn each epoch), true labels on retain samples.

The reference code's epoch differs by data set: on CIFAR-10 a pass over the forget set followed by
a pass over the retain set (``schedule: sequential``), on CIFAR-100 and Tiny-ImageNet shuffled
batches mixing both (``mixed``). Data sets without a reference (digits, mnist1d) mix, as FaLW does.
"""
from __future__ import annotations

from ..lazy import F, torch
from .base import Method, Option, Param, run_layout_epoch
from .losses import LR, forget_weights, weighted_mean

SCHEDULE = Option(("sequential", "mixed"), {"cifar10": "sequential", "*": "mixed"},
                  help="an epoch is the forget set then the retain set (sequential) or shuffled mixed batches")


def draw_labels(state):
    n, c = len(state.t.forget_y), state.t.num_classes
    state.extra["random_labels"] = torch.randint(0, c, (n,), generator=state.gen).to(state.t.device)


def loss(state, batch):
    logits = state.model(batch.x)
    labels = state.extra["random_labels"]
    # Retain rows index the retain split: clamp keeps the gather in range, where() discards them.
    targets = torch.where(batch.forget, labels[batch.rows.clamp(max=len(labels) - 1)], batch.y)
    ce = F.cross_entropy(logits, targets, reduction="none")
    return weighted_mean(ce, forget_weights(state, logits, batch))


def run_epoch(state):
    """One epoch in the schedule the options name (see the module docstring)."""
    layouts = ("forget", "retain") if state.options["schedule"] == "sequential" else ("mixed",)
    return run_layout_epoch(state, state.method, layouts)


PARAMS = {"lr": Param(0.01, 1e-4, 0.1, **LR), "epochs": Param(10, 1, 50, integer=True, searched=False)}

METHOD = Method(
    name="rl", summary="random labels on the forget set, true labels on the retain set", layout="mixed",
    loss=loss, epoch_start=draw_labels, run_epoch=run_epoch, params=PARAMS, options={"schedule": SCHEDULE},
)
