"""Loss pieces the methods share. Forget terms are per-sample so FaLW can weight them."""
from __future__ import annotations

from ..lazy import F, torch
from .base import Batch, UnlearnState


def forget_weights(state: UnlearnState, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """FaLW weights (true-class confidence vs unseen data) on forget rows, 1 on retain rows."""
    w = state.weigh(logits, batch.y)
    return torch.where(batch.forget, w, torch.ones_like(w))


def weighted_mean(per_sample: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_i w_i * l_i / batch size: the paper's reduction of a mixed batch."""
    return (weights * per_sample).sum() / len(per_sample)


def falw_weighted_mean(state: UnlearnState, logits: torch.Tensor, batch: Batch, per_sample: torch.Tensor) -> torch.Tensor:
    """A per-sample loss over ``batch`` (one value per row) reduced as the paper does: each forget
    row's term times its FaLW weight (computed from ``logits``, the model's output on ``batch.x``;
    1 when FaLW is off), retain rows times 1, summed and divided by the batch size. A method whose
    forget term goes through this (or through ``state.weigh``) runs with and without FaLW."""
    return weighted_mean(per_sample, forget_weights(state, logits, batch))


def kl_per_sample(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) at ``temperature`` per row, scaled by T^2 (SCRUB's distillation loss)."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits / t, 1), F.softmax(teacher_logits / t, 1), reduction="none")
    return kl.sum(1) * t * t


LR = dict(log=True, help="unlearning learning rate (SGD, momentum 0.9, weight decay 5e-4)")
