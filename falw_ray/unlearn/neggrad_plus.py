"""NegGrad+: descent on the retain set mixed with ascent on the forget set, as in SCRUB's code.

An epoch is one pass over the retain set; forget batches are cycled alongside. As the reference
cycles its forget loader with ``itertools.cycle``, an epoch draws one forget order and replays that
pass's batches, in the same order, each time the forget set runs out (a new order comes with the next
epoch). Each set goes through its own forward pass, so BatchNorm sees them separately. The loss is alpha * CE(retain) - (1 - alpha) * CE(forget), FaLW weighting the
forget term per sample.
"""
from __future__ import annotations

import itertools

from ..lazy import F, torch
from ..data.device import index_batches
from ..train import autocast
from .base import Method, Param, step
from .losses import LR, weighted_mean


def forget_cycle(state):
    """Forget-row index batches without end: one pass drawn, then replayed in the same order."""
    return itertools.cycle(list(index_batches(len(state.t.forget_x), state.batch_size, state.gen)))


def run_epoch(state):
    t, model, alpha = state.t, state.model, state.hp["alpha"]
    dev = t.device
    total = torch.zeros((), device=dev)
    retain = list(index_batches(len(t.retain_x), state.batch_size, state.gen))
    for rr, fr in zip(retain, itertools.islice(forget_cycle(state), len(retain))):
        rr, fr = rr.to(dev), fr.to(dev)
        with autocast(dev, state.precision):
            retain_loss = F.cross_entropy(model(t.retain_x[rr]), t.retain_y[rr])
            logits = model(t.forget_x[fr])
            ce = F.cross_entropy(logits, t.forget_y[fr], reduction="none")
            forget_loss = weighted_mean(ce, state.weigh(logits, t.forget_y[fr]))
            loss = alpha * retain_loss - (1 - alpha) * forget_loss
        step(state, loss)
        total += loss.detach().float()
    return total


METHOD = Method(
    name="neggrad_plus", summary="retain descent mixed with forget ascent (alpha weighs retain)",
    layout="retain", run_epoch=run_epoch,
    params={
        "lr": Param(0.01, 1e-4, 0.1, **LR),
        "epochs": Param(5, 1, 50, integer=True, searched=False),
        "alpha": Param(0.9999, 0.9, 0.99999, searched=False,
                       help="weight of the retain loss (the forget loss gets 1 - alpha); the reference's 0.9999"),
    },
)
