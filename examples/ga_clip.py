"""GA-clip: gradient ascent on the forget set with each sample's loss clipped at ``clip``.

Plain gradient ascent keeps pushing samples that are already forgotten, whose cross-entropy grows
without bound, and wrecks the model; clipping the per-sample loss stops the push once a sample's
loss passes ``clip`` (its gradient is then zero). The per-sample loss goes through
``falw_weighted_mean``, so FaLW reweighs it when a study switches FaLW on.

A plugin method: it lives here, not in falw_ray; a study names it ``ga_clip:GA_CLIP``
(docs/plugins.md).
"""
import torch.nn.functional as F

from falw_ray import Method, Param, falw_weighted_mean


def loss(state, batch):
    logits = state.model(batch.x)
    per_sample = F.cross_entropy(logits, batch.y, reduction="none").clamp(max=state.hp["clip"])
    return -falw_weighted_mean(state, logits, batch, per_sample)


GA_CLIP = Method(
    name="ga_clip",
    summary="gradient ascent on the forget set, each sample's loss clipped",
    layout="forget",
    loss=loss,
    params={
        "lr": Param(1e-3, 1e-5, 1e-1, log=True, help="unlearning learning rate"),
        "epochs": Param(5, 1, 50, integer=True, searched=False, help="unlearning epochs"),
        "clip": Param(3.0, 0.5, 10.0, log=True, help="per-sample cross-entropy above which a sample is left alone"),
    },
)
