"""Retrain: the gold standard. Re-initialise and train from scratch on the retain set (cosine schedule, augmentation)."""
import torch.nn as nn

from ..train import lr_at, set_lr, train_epoch
from .base import Method, Param


def prepare(state):
    for module in state.model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
            module.reset_parameters()


def run_epoch(state):
    set_lr(state.opt, lr_at(state.epoch, state.epochs, state.hp["lr"], "cosine"))
    t = state.t
    return train_epoch(state.model, state.opt, t.retain_x, t.retain_y, state.batch_size, state.gen, t.aug)


METHOD = Method(
    name="retrain", summary="train from scratch on the retain set (the reference every gap is taken to)",
    layout="retain", run_epoch=run_epoch, prepare=prepare, forget_term=False,
    params={"lr": Param(0.05, 1e-3, 0.5, log=True, searched=False), "epochs": Param(30, 1, 500, integer=True, searched=False)},
)
