"""One readable training loop: data resident on the device, batches by index, on-device augmentation.

The original and retrained baselines and the fine-tuning style methods all go through it.
"""
from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable

import numpy as np
from .lazy import F, nn, torch
from .data.device import Augment, augment, index_batches


def seed_everything(seed: int) -> torch.Generator:
    """Seed every RNG a run touches and return the generator that draws batches and augmentations."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


PRECISIONS = ("fp32", "bf16")
"""Arithmetic of a run: fp32 (what the reference codebases use, and the default) or bf16 autocast."""


def autocast(device: torch.device, precision: str = "fp32"):
    """bf16 autocast when asked for (on CUDA for speed; on the CPU it emulates the GPU's rounding),
    else full precision, which keeps runs comparable with the references and bit-reproducible."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(model: nn.Module, device: torch.device, compile: bool = False) -> nn.Module:
    """Move ``model`` to ``device``, in channels_last memory format on CUDA; optionally compile it.

    ``compile`` (off by default) compiles the forward pass in place with ``torch.compile``; the
    module keeps its type, attributes and state dict, and deep copies of it run uncompiled. Worth it
    for long GPU runs only: compiling takes tens of seconds (and a C++ toolchain on the CPU).
    """
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model.compile()
    return model


def sgd(params, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def lr_at(epoch: int, epochs: int, base: float, schedule: str, milestones=(), decay: float = 0.1) -> float:
    if schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    if schedule == "multistep":
        return base * decay ** sum(epoch >= m for m in milestones)
    return base


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def train_epoch(
    model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
    batch_size: int, gen: torch.Generator, aug: Augment | None = None,
) -> torch.Tensor:
    """One epoch of cross-entropy over resident (x, y); returns the summed loss on the device."""
    device = x.device
    total = torch.zeros((), device=device)
    for idx in index_batches(len(x), batch_size, gen):
        idx = idx.to(device)
        xb = x[idx]
        if aug is not None and aug.active:
            xb = augment(xb, aug, gen)
        with autocast(device):
            loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach().float() * len(idx)
    return total


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe,
    gen: torch.Generator,
    aug: Augment | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
    compile: bool = False,
) -> nn.Module:
    """Train ``model`` on resident tensors (x, y) with ``recipe`` (a falw_ray.recipe.Recipe).
    ``compile`` compiles the model's forward in place first (off by default; see prepare_model)."""
    if compile:
        model.compile()
    opt = sgd(model.parameters(), recipe.lr, recipe.momentum, recipe.weight_decay)
    aug = aug if recipe.augment else None
    model.train()
    for epoch in range(recipe.epochs):
        set_lr(opt, lr_at(epoch, recipe.epochs, recipe.lr, recipe.schedule, recipe.milestones, recipe.lr_decay))
        total = train_epoch(model, opt, x, y, recipe.batch_size, gen, aug)
        if on_epoch is not None:
            on_epoch(epoch, float(total) / len(x))
    return model
