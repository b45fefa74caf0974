"""Each method's own mechanism, pinned by value where its reference code fixes one (docs/method.md)."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from falw_ray.baselines import model_from
from falw_ray.data.registry import load_dataset
from falw_ray.experiment import Experiment, run_method
from falw_ray.metrics import evaluate
from falw_ray.unlearn import get_method, preset_options, unlearn
from falw_ray.unlearn import boundary_shrink, falw as falw_module
from falw_ray.unlearn.base import UnlearnState
from falw_ray.unlearn.falw import FalwWeigher
from falw_ray.unlearn.losses import forget_weights
from falw_ray.unlearn.salun import saliency_mask


def steps_of(fn) -> int:
    """How many optimiser steps ``fn()`` takes."""
    count = [0]
    handle = register_optimizer_step_post_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    try:
        fn()
    finally:
        handle.remove()
    return count[0]


def test_boundary_shrink_steps_from_the_exact_pixels_and_relabels_as_the_reference(digits_baselines, original, t):
    """One FGSM step of 0.1 in [0, 1] pixels on the frozen original (eval mode), clamped and rounded
    to 1/255, taken from the exact pixels of the uint8 file (digits: k/16), as the reference takes it
    from its loader's: the expected image is computed here from the file, not from falw_ray's tensors.
    The same bound in normalised units (the old step, 0.378x as large in pixels) moves far fewer
    samples: 8x8 images with 17 grey levels and about half their pixels black, which the clamp keeps
    black, resist a 0.1 step far more than CIFAR's images."""
    state = UnlearnState(model=original, t=t, hp={"bound": 0.1}, gen=torch.Generator(), batch_size=64, epochs=1)
    boundary_shrink.prepare(state)
    frozen, labels = state.frozen_copy(), state.extra["neighbour"]
    assert not frozen.training
    with torch.no_grad():
        assert (frozen(t.forget_x).argmax(1) == t.forget_y).all(), "before the step: every forget label right"
    data = load_dataset("digits")
    before = torch.from_numpy(data.train_x[digits_baselines.splits.forget]).float() / 16
    assert t.levels == 16 and torch.allclose(t.to_raw(t.forget_x), before, atol=1e-6)

    def normalise(pixels):
        return (pixels - 0.305) / 0.378

    def step_from_file(rows):
        raw = before[rows].clone().requires_grad_(True)
        grad, = torch.autograd.grad(torch.nn.functional.cross_entropy(frozen(normalise(raw)), t.forget_y[rows]), raw)
        return torch.round((before[rows] + 0.1 * grad.sign()).clamp(0, 1) * 255) / 255, grad

    everything = torch.arange(len(before))
    expected, grad = step_from_file(everything)
    adv = boundary_shrink.fgsm_inputs(frozen, t, t.forget_x, t.forget_y, 0.1)
    assert torch.equal(t.to_raw(adv), t.to_raw(t.from_raw(expected))), "the reference's image, bit for bit"
    pushed_up_from_black = (before == 0) & (grad > 0)
    assert pushed_up_from_black.any() and (torch.round(expected[pushed_up_from_black] * 255) == 26).all(), \
        "0 + 0.1 is 25.5 grey levels, rounded half to even: 26 from an exact 0"
    pushed_down = (before == 0) & (grad < 0)
    assert pushed_down.any() and (expected[pushed_down] == 0).all(), "clamped: black stays black"

    by_hand = torch.cat([frozen(normalise(step_from_file(rows)[0])).argmax(1)
                         for rows in everything.split(64)]).detach()
    assert len(labels) == len(t.forget_y) and torch.equal(labels, by_hand)
    moved = int((labels != t.forget_y).sum())
    with torch.no_grad():
        moved_normalised = int((frozen(t.forget_x + 0.1 * grad.sign()).argmax(1) != t.forget_y).sum())
    assert 0 < moved_normalised < moved < len(labels), (moved_normalised, moved)


def test_boundary_shrink_steps_non_image_data_in_its_own_units(t):
    """Signals (N, C, L) have no pixel range: the step is bound x sign(gradient) in data units, per
    channel through mean and std, with no clamp and no rounding."""
    torch.manual_seed(0)
    signals = dataclasses.replace(t, mean=torch.tensor([0.5, -1.0]), std=torch.tensor([2.0, 0.5]), pixels=False)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(80, 10)).eval()
    x, y = torch.randn(20, 2, 40), torch.randint(0, 10, (20,))
    adv = boundary_shrink.fgsm_inputs(model, signals, x, y, 0.3)
    raw = signals.to_raw(x).requires_grad_(True)
    grad, = torch.autograd.grad(torch.nn.functional.cross_entropy(model(signals.from_raw(raw)), y), raw)
    assert torch.allclose(signals.to_raw(adv) - raw.detach(), 0.3 * grad.sign(), atol=1e-5)
    assert torch.allclose((adv - x).abs()[:, 0], torch.full((20, 40), 0.15), atol=1e-5)
    assert torch.allclose((adv - x).abs()[:, 1], torch.full((20, 40), 0.6), atol=1e-5)
    assert signals.to_raw(adv).min() < -1 and signals.to_raw(adv).max() > 2, "not clamped to [0, 1]"


def test_boundary_expanding_is_judged_with_its_shadow_class_by_default(digits_baselines, t):
    exp = Experiment(baselines=digits_baselines, device="cpu")
    wide = exp.run("boundary_expanding", hp={"lr": 0.01}, epochs=2)
    assert wide.options == {"evaluate_head": "widened"}
    logits = wide.model.eval()(t.forget_x)
    assert logits.shape[1] == t.num_classes + 1
    pred = logits.argmax(1)
    assert (pred == t.num_classes).any(), "some forget samples land in the shadow class"
    assert wide.metrics["fa"] == pytest.approx(100.0 * (pred == t.forget_y).float().mean().item()), \
        "a sample in the shadow class counts as forgotten"
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
    nf, nr = len(t.forget_x), len(t.retain_x)
    assert len(flags) == math.ceil((nf + nr) / 64)
    assert sum(map(sum, flags)) == nf and sum(len(b) - sum(b) for b in flags) == nr
    both = [any(b) and not all(b) for b in flags]
    assert both == [True] * 20 + [False] and len(flags[-1]) == (nf + nr) % 64, "all but the last (7 rows) hold both"


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


def test_neggrad_plus_loss_is_alpha_retain_minus_one_minus_alpha_forget_with_separate_forwards(original, t):
    """With lr 0 the model stays put, so the epoch's summed loss can be recomputed by hand: the same
    batches (one generator: the retain order, then one forget order whose batches are replayed),
    each set through its own training-mode forward (BatchNorm normalises it alone), alpha = 0.9999
    by default."""
    from falw_ray.data.device import index_batches
    from falw_ray.train import sgd
    from falw_ray.unlearn import neggrad_plus

    method = get_method("neggrad_plus")
    state = UnlearnState(model=original.train(), t=t, hp=method.resolve(None, False),
                         gen=torch.Generator().manual_seed(3), batch_size=64, epochs=1)
    state.opt = sgd(original.parameters(), 0.0)
    total = neggrad_plus.run_epoch(state)
    gen = torch.Generator().manual_seed(3)
    retain = list(index_batches(len(t.retain_x), 64, gen))
    one_pass = list(index_batches(len(t.forget_x), 64, gen))
    forget = (one_pass * len(retain))[:len(retain)]
    ce = torch.nn.functional.cross_entropy

    def loss(retain_logits, forget_logits, r, f):
        return 0.9999 * ce(retain_logits, t.retain_y[r]) - 0.0001 * ce(forget_logits, t.forget_y[f])

    with torch.no_grad():
        expected = sum(loss(original(t.retain_x[r]), original(t.forget_x[f]), r, f) for r, f in zip(retain, forget))
        joint = sum(loss(out[:len(r)], out[len(r):], r, f) for r, f in zip(retain, forget)
                    for out in [original(torch.cat([t.retain_x[r], t.forget_x[f]]))])
    assert float(total) == pytest.approx(float(expected), rel=1e-5)
    assert abs(float(joint) - float(expected)) > 1e-4, "one joint forward would give another value"


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
    at_epoch_end = []
    count = [0]
    handle = register_optimizer_step_post_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    try:
        unlearn(original, get_method("scrub"), t, hp={"lr": 1e-3, "msteps": 2}, epochs=4, batch_size=64,
                on_epoch=lambda epoch, model: at_epoch_end.append(count[0]))
    finally:
        handle.remove()
    per_epoch = [b - a for a, b in zip([0] + at_epoch_end, at_epoch_end)]
    max_pass, min_pass = math.ceil(nf / 64), math.ceil(nr / 64)
    assert per_epoch == [max_pass + min_pass] * 2 + [min_pass] * 2, per_epoch


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
    assert (z > 0).any() and (z < 0).any(), "both directions occur in this batch"
    assert torch.equal(w[:32] > 1, z > 0) and torch.equal(w[:32] < 1, z < 0)
    b = (len(t.forget_y) / (t.num_classes * t.forget_counts.double().clamp(min=1))) ** 0.2
    assert torch.allclose(w[:32], 1 + torch.sign(z) * torch.tanh(z.abs()) ** (1 / b[y[:32]].float()), atol=1e-6)


def test_fp32_is_bit_reproducible_and_bf16_changes_falws_arithmetic(digits_baselines, t):
    """Unlearning and FaLW's statistics run in fp32 by default (as the references): two runs agree bit
    for bit. bf16 autocast (emulated here on the CPU) computes FaLW's statistics from bf16 logits:
    the weights of the same forget batch differ, and so does the unlearned model."""
    data = load_dataset("digits")

    def fresh():
        return model_from(digits_baselines.scenario, data, digits_baselines.original, torch.device("cpu"))

    with torch.no_grad():
        logits = fresh().eval()(t.forget_x[:64])
    weights = {p: FalwWeigher(fresh(), t.val_x, t.val_y, t.forget_counts, t.num_classes, 0.2, precision=p)(
        logits, t.forget_y[:64]) for p in ("fp32", "bf16")}
    assert not torch.equal(weights["fp32"], weights["bf16"])

    def run(precision):
        model = fresh()
        unlearn(model, get_method("ga"), t, hp={"lr": 1e-3}, falw=True, epochs=1, precision=precision)
        return model.state_dict()

    a, b, bf16 = run("fp32"), run("fp32"), run("bf16")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], bf16[k]) for k in a if a[k].is_floating_point())
    with pytest.raises(ValueError, match="precision: expected one of \\('fp32', 'bf16'\\), got 'fp16'"):
        unlearn(fresh(), get_method("ga"), t, hp={"lr": 1e-4}, epochs=1, precision="fp16")


def test_falw_preset_mixes_on_cifar10_where_salun_runs_sequentially(digits_baselines, t):
    """The options a run resolved are on its result: the ``falw`` preset keeps mixed batches on a data
    set whose SalUn default is sequential (digits tensors named cifar10 here), and steps accordingly."""
    cifar10 = dataclasses.replace(t, dataset="cifar10")
    nf, nr = len(t.forget_x), len(t.retain_x)
    runs = {}

    def go(name):
        runs[name] = run_method(digits_baselines, name, hp={"lr": 1e-3}, epochs=1, device="cpu", tensors=cifar10)

    assert steps_of(lambda: go("falw")) == math.ceil((nf + nr) / 64)
    assert steps_of(lambda: go("salun")) == math.ceil(nf / 64) + math.ceil(nr / 64)
    assert runs["falw"].options == {"schedule": "mixed", "mask_mode": "grad"} and runs["falw"].falw
    assert runs["salun"].options == {"schedule": "sequential", "mask_mode": "grad"} and not runs["salun"].falw


def test_momentum_and_weight_decay_reach_the_optimiser(original, t):
    seen = []
    handle = register_optimizer_step_post_hook(
        lambda opt, *_: seen.append((opt.param_groups[0]["momentum"], opt.param_groups[0]["weight_decay"])))
    try:
        unlearn(original, get_method("ga"), t, hp={"lr": 1e-4}, epochs=1)
        unlearn(original, get_method("ga"), t, hp={"lr": 1e-4, "momentum": 0.0, "weight_decay": 0.0}, epochs=1)
    finally:
        handle.remove()
    steps = math.ceil(len(t.forget_x) / 64)
    assert seen == [(0.9, 5e-4)] * steps + [(0.0, 0.0)] * steps
