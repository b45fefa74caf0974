"""FaLW: forgetting-aware loss reweighting (docs/method.md, FaLW).

Each forget sample's loss is scaled by how its true-class confidence compares with unseen
(validation) data of its class, sharpened for tail classes by a balancing factor.
"""
from __future__ import annotations

from ..lazy import nn, torch
from ..train import autocast

SIGMA_FLOOR = 1e-6


def balancing_factor(forget_counts: torch.Tensor, tau: float) -> torch.Tensor:
    """B_c = (N_f / (C * max(N_fc, 1)))^tau: above 1 for classes rarer than average in the forget set."""
    counts = forget_counts.double()
    n_f, c = counts.sum(), len(counts)
    return (n_f / (c * counts.clamp(min=1))).pow(tau).float()


def falw_weights(
    p_true: torch.Tensor,
    labels: torch.Tensor,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    forget_counts: torch.Tensor,
    tau: float,
) -> torch.Tensor:
    """w_i = 1 + sign(z_i) * tanh(|z_i|)^(1 / B_{y_i}), z_i = (p_i - mu_c) / sigma_c; in (0, 2), detached."""
    with torch.no_grad():
        p = p_true.detach().float()
        z = (p - mu[labels]) / sigma[labels].clamp(min=SIGMA_FLOOR)
        b = balancing_factor(forget_counts.to(p.device), tau)[labels]
        return 1.0 + torch.sign(z) * torch.tanh(z.abs()).pow(1.0 / b)


def class_confidence_stats(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, batch_size: int = 2048,
                           precision: str = "fp32"):
    """Per-class mean and population std of the true-class probability on unseen data, in eval mode."""
    was_training = model.training
    model.eval()
    conf = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            with autocast(x.device, precision):
                logits = model(x[start:start + batch_size])
            conf.append(logits.float().softmax(1).gather(1, y[start:start + batch_size, None]).squeeze(1))
        model.train(was_training)
        return stats_of(torch.cat(conf), y, num_classes)


def stats_of(p: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class mean and population std (floored) of true-class probabilities ``p`` with labels ``y``."""
    counts = torch.bincount(y, minlength=num_classes).clamp(min=1).float()
    mu = torch.zeros(num_classes, device=p.device).index_add_(0, y, p) / counts
    m2 = torch.zeros(num_classes, device=p.device).index_add_(0, y, p * p) / counts
    return mu, (m2 - mu * mu).clamp(min=0).sqrt().clamp(min=SIGMA_FLOOR)


class FalwWeigher:
    """Weights for forget samples under the current model.

    The validation statistics are recomputed every ``refresh_every`` optimisation steps (1 is the
    authors' schedule: after each batch's training-mode forward pass); 0 refreshes once per epoch.
    """

    def __init__(self, model: nn.Module, val_x, val_y, forget_counts, num_classes: int, tau: float, refresh_every: int = 1,
                 precision: str = "fp32"):
        self.model, self.val_x, self.val_y, self.precision = model, val_x, val_y, precision
        self.forget_counts, self.num_classes, self.tau = forget_counts, num_classes, tau
        self.refresh_every = refresh_every
        self.calls = 0
        self.stats: tuple[torch.Tensor, torch.Tensor] | None = None
        self.refreshes = 0

    def new_epoch(self) -> None:
        if self.refresh_every == 0:
            self.stats = None

    def _refresh_due(self) -> bool:
        if self.stats is None:
            return True
        return self.refresh_every > 0 and self.calls % self.refresh_every == 0

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self._refresh_due():
            self.stats = class_confidence_stats(self.model, self.val_x, self.val_y, self.num_classes,
                                                precision=self.precision)
            self.refreshes += 1
        self.calls += 1
        mu, sigma = self.stats
        p = logits.detach().float().softmax(1).gather(1, labels[:, None]).squeeze(1)
        return falw_weights(p, labels, mu, sigma, self.forget_counts, self.tau)


def unit_weights(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """FaLW switched off: every forget sample weighs 1."""
    return torch.ones(len(labels), device=logits.device)
