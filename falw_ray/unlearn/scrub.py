"""SCRUB: a student moves away from the original (teacher) on forget data and stays close on retain data.

The first ``msteps`` epochs start with a max pass over the forget set; every epoch ends with a min pass
over the retain set. FaLW weights the per-sample KL of the max pass.
"""
from __future__ import annotations

from ..lazy import F, torch
from ..train import autocast
from .base import Method, Param, layout_batches, step
from .losses import LR, forget_weights, kl_per_sample

TEMPERATURE = 4.0


def prepare(state):
    state.frozen_copy()


def run_epoch(state):
    teacher, model, hp = state.frozen_copy(), state.model, state.hp
    total = torch.zeros((), device=state.t.device)
    if state.epoch < hp["msteps"]:
        for batch in layout_batches(state, "forget"):
            with autocast(state.t.device, state.precision):
                logits = model(batch.x)
                with torch.no_grad():
                    target = teacher(batch.x)
                kl = kl_per_sample(logits.float(), target.float(), TEMPERATURE)
                loss = -(forget_weights(state, logits, batch) * kl).sum() / len(kl)
            step(state, loss)
            total += loss.detach().float()
    for batch in layout_batches(state, "retain"):
        with autocast(state.t.device, state.precision):
            logits = model(batch.x)
            with torch.no_grad():
                target = teacher(batch.x)
            kl = kl_per_sample(logits.float(), target.float(), TEMPERATURE).mean()
            loss = hp["ce_weight"] * F.cross_entropy(logits, batch.y) + hp["kl_weight"] * kl
        step(state, loss)
        total += loss.detach().float()
    return total


METHOD = Method(
    name="scrub", summary="teacher-student: max KL on forget, min KL + CE on retain",
    layout="paired", run_epoch=run_epoch, prepare=prepare,
    params={
        "lr": Param(5e-4, 1e-5, 0.1, **LR),
        "epochs": Param(5, 1, 50, integer=True, searched=False),
        "msteps": Param(2, 1, 5, integer=True, help="epochs that include a max (forget) pass"),
        "kl_weight": Param(0.001, 0.0, 1.0, searched=False, help="weight of the KL term in the min pass"),
        "ce_weight": Param(0.99, 0.0, 1.0, searched=False, help="weight of the CE term in the min pass"),
    },
)
