"""RL: random labels on forget samples (redrawn each epoch), true labels on retain, mixed batches."""
import torch
import torch.nn.functional as F

from .base import Method, Param
from .losses import LR, forget_weights, weighted_mean


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


PARAMS = {"lr": Param(0.01, 1e-4, 0.1, **LR), "epochs": Param(10, 1, 50, integer=True, searched=False)}

METHOD = Method(
    name="rl", summary="random labels on the forget set, true labels on the retain set", layout="mixed",
    loss=loss, epoch_start=draw_labels, params=PARAMS,
)
