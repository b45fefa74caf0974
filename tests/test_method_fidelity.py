"""Each method's own mechanism, pinned by value where its reference code fixes one (docs/method.md)."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from falw_ray.baselines import model_from, tensors_for
from falw_ray.data.registry import load_dataset
from falw_ray.experiment import Experiment
from falw_ray.metrics import evaluate
from falw_ray.unlearn import get_method, preset_options, unlearn
from falw_ray.unlearn import boundary_shrink, falw as falw_module
from falw_ray.unlearn.base import UnlearnState
from falw_ray.unlearn.falw import FalwWeigher
from falw_ray.unlearn.losses import forget_weights
from falw_ray.unlearn.salun import saliency_mask


@pytest.fixture(scope="module")
def t(digits_baselines):
    return tensors_for(digits_baselines, torch.device("cpu"))


@pytest.fixture()
def original(digits_baselines):
    return model_from(digits_baselines.scenario, load_dataset("digits"), digits_baselines.original, torch.device("cpu"))


def steps_of(fn) -> int:
    """How many optimiser steps ``fn()`` takes."""
    count = [0]
    handle = register_optimizer_step_post_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    try:
        fn()
    finally:
        handle.remove()
    return count[0]


def test_boundary_shrink_steps_in_pixel_space_and_flips_nearly_every_forget_label(original, t):
    """One FGSM step of 0.1 in [0, 1] pixels, clamped and rounded to 1/255. On digits it moves the
    trained model's prediction off the true label for 30 of the 129 forget samples (the same bound in
    normalised units, the old step, moved 24): small 8x8 images with mostly black pixels, which the
    clamp keeps black, are far more robust than CIFAR's."""
    adv = boundary_shrink.fgsm_inputs(original, t, t.forget_x, t.forget_y, 0.1)
    pixels = t.to_raw(adv)
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    assert torch.allclose(pixels * 255, torch.round(pixels * 255), atol=1e-3), "on the 1/255 grid"
    step = (pixels - t.to_raw(t.forget_x)).abs()
    assert step.max() <= 0.1 + 1 / 255 + 1e-5
    labels = boundary_shrink.neighbour_labels(original, t, t.forget_x, t.forget_y, 0.1, 64)
    assert len(labels) == 129 and int((labels != t.forget_y).sum()) == 30
    x = t.forget_x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(torch.nn.functional.cross_entropy(original(x), t.forget_y), x)
    with torch.no_grad():
        assert int((original(t.forget_x + 0.1 * grad.sign()).argmax(1) != t.forget_y).sum()) == 24
    with torch.no_grad():
        assert (original(t.forget_x).argmax(1) == t.forget_y).all(), "before the step: every forget label right"


def test_boundary_expanding_is_judged_with_its_shadow_class_by_default(digits_baselines, t):
    exp = Experiment(baselines=digits_baselines, device="cpu")
    wide = exp.run("boundary_expanding", hp={"lr": 0.01}, epochs=2)
    assert wide.options == {"evaluate_head": "widened"}
    logits = wide.model.eval()(t.forget_x)
    assert logits.shape[1] == t.num_classes + 1
    pred = logits.argmax(1)
    assert int((pred == t.num_classes).sum()) == 49, "forget samples in the shadow class count as forgotten"
    assert wide.metrics["fa"] == pytest.approx(100.0 * (pred == t.forget_y).float().mean().item())
    assert wide.metrics["fa"] == evaluate(wide.model, t)["fa"]
    pruned = exp.run("boundary_expanding", hp={"lr": 0.01}, epochs=2, options={"evaluate_head": "pruned"})
    c_way = pruned.model.eval()(t.forget_x)
    assert c_way.shape[1] == t.num_classes
    assert torch.equal(c_way, logits[:, :-1]), "the same training; only the shadow neuron is gone"
    assert pruned.metrics["fa"] == pytest.approx(100.0 * (c_way.argmax(1) == t.forget_y).float().mean().item())
    assert pruned.metrics["fa"] > wide.metrics["fa"]


def record_forget_flags(method, t, model, options, epochs=1, batch_size=64):
    """The forget flags of every batch the method trains on, in order."""
    seen = []

    def loss(state, batch):
        seen.append(batch.forget.tolist())
        return method.loss(state, batch)

    unlearn(model, dataclasses.replace(method, loss=loss), t, hp={"lr": 1e-3}, epochs=epochs, batch_size=batch_size,
            options=options)
    return seen


def test_rl_schedule_defaults_follow_the_reference_per_data_set():
    rl, salun = get_method("rl"), get_method("salun")
    for m in (rl, salun):
        assert m.resolve_options(None, "cifar10")["schedule"] == "sequential"
        assert m.resolve_options(None, "cifar100")["schedule"] == "mixed"
        assert m.resolve_options(None, "tinyimagenet")["schedule"] == "mixed"
        assert m.resolve_options(None, "mnist1d")["schedule"] == "mixed"
    assert salun.resolve_options(preset_options("falw"), "cifar10")["schedule"] == "mixed", "FaLW mixes everywhere"
    assert salun.resolve_options(None, "digits")["mask_mode"] == "grad"
    with pytest.raises(ValueError, match="option 'schedule' of method 'rl': expected one of \\['sequential', 'mixed'\\]"):
        rl.resolve_options({"schedule": "interleaved"}, "digits")
    with pytest.raises(ValueError, match="method 'rl' has no option 'mask_mode'"):
        rl.resolve_options({"mask_mode": "grad"}, "digits")


def test_sequential_rl_visits_every_forget_row_before_any_retain_row(original, t):
    flags = record_forget_flags(get_method("rl"), t, original, {"schedule": "sequential"}, epochs=2)
    nf, nr = len(t.forget_x), len(t.retain_x)
    per_epoch = math.ceil(nf / 64) + math.ceil(nr / 64)
    assert len(flags) == 2 * per_epoch
    for epoch in range(2):
        batches = flags[epoch * per_epoch:(epoch + 1) * per_epoch]
        forget, retain = batches[:math.ceil(nf / 64)], batches[math.ceil(nf / 64):]
        assert all(all(b) for b in forget) and sum(map(len, forget)) == nf
        assert not any(any(b) for b in retain) and sum(map(len, retain)) == nr


def test_mixed_rl_mixes_forget_and_retain_rows_in_batches(original, t):
    flags = record_forget_flags(get_method("rl"), t, original, {"schedule": "mixed"})
    assert len(flags) == math.ceil((len(t.forget_x) + len(t.retain_x)) / 64)
    assert sum(1 for b in flags if any(b) and not all(b)) > len(flags) // 2


def test_neggrad_plus_epoch_is_a_pass_over_retain_with_forget_batches_cycled(original, t):
    """ceil(|retain| / batch) steps an epoch, each with two forward passes: a retain batch, then a
    forget batch of its own (the forget set is cycled: it is ~10x smaller)."""
    sizes = []
    hook = original.register_forward_hook(lambda m, inp, out: sizes.append(inp[0].shape[0]))
    try:
        steps = steps_of(lambda: unlearn(original, get_method("neggrad_plus"), t, hp={"lr": 1e-3}, epochs=1,
                                         batch_size=64))
    finally:
        hook.remove()
    nr, nf = len(t.retain_x), len(t.forget_x)
    assert steps == math.ceil(nr / 64)
    retain_sizes, forget_sizes = sizes[0::2], sizes[1::2]
    assert retain_sizes == [64] * (nr // 64) + ([nr % 64] if nr % 64 else [])
    cycle = [64] * (nf // 64) + ([nf % 64] if nf % 64 else [])
    assert forget_sizes == (cycle * steps)[:steps]


def test_salun_mask_keeps_the_requested_share_of_weights(original, t):
    mask = saliency_mask(original, t.forget_x, t.forget_y, 0.3, 64)
    total = sum(m.numel() for m in mask.values())
    kept = sum(int(m.sum()) for m in mask.values())
    assert kept == round(0.3 * total), (kept, total)


@pytest.mark.parametrize("mode,frozen", [("restore", True), ("grad", False)])
def test_salun_restore_mode_keeps_masked_out_weights_bit_identical(digits_baselines, t, mode, frozen):
    """The current SalUn code restores masked-out weights after every step; the FaLW authors' copy
    (the default) only masks gradients, so weight decay and momentum still move them."""
    data = load_dataset("digits")
    model = model_from(digits_baselines.scenario, data, digits_baselines.original, torch.device("cpu"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    mask = saliency_mask(model, t.forget_x, t.forget_y, 0.5, 64)
    unlearn(model, get_method("salun"), t, hp={"lr": 0.01}, epochs=1, options={"mask_mode": mode})
    moved = [not torch.equal(p.detach()[mask[n] == 0], before[n][mask[n] == 0]) for n, p in model.named_parameters()]
    changed_kept = [not torch.equal(p.detach()[mask[n] == 1], before[n][mask[n] == 1]) for n, p in model.named_parameters()]
    assert any(changed_kept)
    assert (not any(moved)) == frozen, moved


def test_scrub_makes_msteps_max_passes_then_min_passes_only(original, t):
    nf, nr = len(t.forget_x), len(t.retain_x)
    steps = steps_of(lambda: unlearn(original, get_method("scrub"), t, hp={"lr": 1e-3, "msteps": 2}, epochs=3,
                                     batch_size=64))
    assert steps == 2 * math.ceil(nf / 64) + 3 * math.ceil(nr / 64)


@pytest.mark.parametrize("every,expected", [(1, None), (3, None), (0, "epochs")])
def test_falw_statistics_refresh_on_schedule(original, t, monkeypatch, every, expected):
    """refresh_every = k recomputes the validation statistics at steps 0, k, 2k, ... (the authors' code:
    every step); 0 once per epoch."""
    calls = [0]
    real = falw_module.class_confidence_stats

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(falw_module, "class_confidence_stats", counting)
    steps = steps_of(lambda: unlearn(original, get_method("ga"), t, hp={"lr": 1e-4}, falw=True, epochs=2,
                                     batch_size=64, falw_refresh_every=every))
    assert steps == 2 * math.ceil(len(t.forget_x) / 64)
    assert calls[0] == (2 if expected == "epochs" else math.ceil(steps / every))


def test_falw_weights_reach_only_forget_rows_and_point_the_right_way(original, t):
    """In a mixed batch retain rows weigh exactly 1; a forget sample more confident than the unseen
    data of its class weighs more than 1, a less confident one less."""
    weigher = FalwWeigher(original, t.val_x, t.val_y, t.forget_counts, t.num_classes, tau=0.2)
    state = UnlearnState(model=original, t=t, hp={}, gen=torch.Generator(), batch_size=64, epochs=1, weigh=weigher)
    x = torch.cat([t.forget_x[:32], t.retain_x[:32]])
    y = torch.cat([t.forget_y[:32], t.retain_y[:32]])
    forget = torch.arange(64) < 32
    from falw_ray.unlearn.base import Batch

    with torch.no_grad():
        logits = original.eval()(x)
    w = forget_weights(state, logits, Batch(x, y, forget, torch.arange(64)))
    assert torch.equal(w[32:], torch.ones(32))
    mu, sigma = falw_module.class_confidence_stats(original, t.val_x, t.val_y, t.num_classes)
    p = logits.softmax(1).gather(1, y[:, None]).squeeze(1)[:32]
    z = (p - mu[y[:32]]) / sigma[y[:32]]
    assert torch.equal(w[:32] > 1, z > 0) and torch.equal(w[:32] < 1, z < 0)


def test_fp32_is_bit_reproducible_and_bf16_changes_falws_arithmetic(original, t):
    """Unlearning runs in fp32 by default (as the references); bf16 autocast (emulated here on the
    CPU) computes FaLW's confidences from bf16 logits, and the weights differ."""
    fp32 = falw_module.class_confidence_stats(original, t.val_x, t.val_y, t.num_classes)
    again = falw_module.class_confidence_stats(original, t.val_x, t.val_y, t.num_classes)
    bf16 = falw_module.class_confidence_stats(original, t.val_x, t.val_y, t.num_classes, precision="bf16")
    assert all(torch.equal(a, b) for a, b in zip(fp32, again))
    assert not torch.equal(fp32[0], bf16[0])
    with pytest.raises(ValueError, match="precision: expected one of \\('fp32', 'bf16'\\), got 'fp16'"):
        unlearn(original, get_method("ga"), t, hp={"lr": 1e-4}, epochs=1, precision="fp16")
