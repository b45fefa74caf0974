"""SalUn: RL restricted to the salient weights, the top share of |gradient of the forget loss|.

With FaLW switched on this is the paper's main configuration (registered as ``falw``). The mask
zeroes the gradients of the other weights (``mask_mode: grad``, the FaLW authors' copy of SalUn);
weight decay and momentum still move them a little. ``mask_mode: restore`` is the current SalUn
code: masked-out weights are put back after every step and their momentum zeroed. The baseline and
``falw`` share the ``grad`` default, so FaLW on minus off changes FaLW alone (docs/method.md).
"""
from __future__ import annotations

from ..lazy import F, torch
from ..data.device import index_batches
from .base import Method, Option, Param
from .rl import PARAMS, SCHEDULE, draw_labels, loss, run_epoch


def saliency_mask(model, x, y, ratio: float, batch_size: int) -> dict[str, torch.Tensor]:
    """1 on the ``ratio`` share of weights with the largest |d(-CE on forget)/dw|, 0 elsewhere."""
    rows = (r.to(x.device) for r in index_batches(len(x), batch_size, None, shuffle=False))
    return saliency_from_batches(model, ((x[r], y[r]) for r in rows), ratio)


def saliency_from_batches(model, batches, ratio: float) -> dict[str, torch.Tensor]:
    """:func:`saliency_mask` over any iterable of forget batches ``(x, y)``."""
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    for xb, yb in batches:
        (-F.cross_entropy(model(xb), yb)).backward()
    grads = {n: p.grad.detach().abs() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    flat = torch.cat([g.flatten() for g in grads.values()])
    keep = max(1, int(round(ratio * flat.numel())))
    threshold = torch.topk(flat, keep, sorted=True).values[-1]
    return {n: (g >= threshold).to(g.dtype) for n, g in grads.items()}


def prepare(state):
    t = state.t
    state.grad_mask = saliency_mask(state.model, t.forget_x, t.forget_y, state.hp["mask_ratio"], state.batch_size)
    state.extra["mask_restore"] = state.options["mask_mode"] == "restore"


METHOD = Method(
    name="salun", summary="random labels on salient weights only (SalUn mask)", layout="mixed",
    loss=loss, prepare=prepare, epoch_start=draw_labels, run_epoch=run_epoch,
    params={**PARAMS, "lr": Param(0.013, 1e-4, 0.1, log=True, help=PARAMS["lr"].help),
            "mask_ratio": Param(0.5, 0.1, 0.9, help="share of weights the saliency mask keeps")},
    options={"schedule": SCHEDULE,
             "mask_mode": Option(("grad", "restore"), "grad",
                                 help="mask gradients only (FaLW authors' code) or also restore masked-out weights")},
)
