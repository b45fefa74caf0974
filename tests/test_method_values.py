"""Each method's arithmetic, pinned against a plain re-implementation of its reference step.

Every test runs one of falw_ray's methods and, in the same process on the same model and batches,
a straightforward loop written from the method's definition (docs/method.md): torch's own SGD, its
own cross-entropy, the formulas written out. The two must end at the same weights (to float
rounding), and the run must have moved the weights far more than that rounding, so a changed loss,
sign, reduction, schedule or label draw fails here on any CPU.
"""
from __future__ import annotations

import copy
import itertools

import torch

from falw_ray.unlearn import get_method, unlearn

BS = 64
SEED = 5
RTOL, ATOL = 1e-4, 1e-5


def order(n: int, gen: torch.Generator) -> list[torch.Tensor]:
    """One shuffled pass of row indices in batches, as a DataLoader with shuffle=True draws it."""
    return list(torch.randperm(n, generator=gen).split(BS))


def sgd(model, lr, momentum=0.9, weight_decay=5e-4):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def descend(opt, loss):
    opt.zero_grad()
    loss.backward()
    opt.step()


def ce(logits, y):
    """Mean cross-entropy written out: -log softmax at the label."""
    return -logits.log_softmax(1).gather(1, y[:, None]).mean()


def assert_same_weights(ours, ref, start):
    a, b, s = ours.state_dict(), ref.state_dict(), start
    for k in a:
        if a[k].is_floating_point():
            assert torch.allclose(a[k], b[k], rtol=RTOL, atol=ATOL), (k, float((a[k] - b[k]).abs().max()))
    moved = max(float((a[k] - s[k]).abs().max()) for k in a
                if a[k].is_floating_point() and a[k].shape == s[k].shape)
    assert moved > 100 * ATOL, f"the run barely moved the weights ({moved}): nothing was compared"


def run_ours(original, t, name, hp, epochs, **kw):
    model = copy.deepcopy(original)
    unlearn(model, get_method(name), t, hp=hp, epochs=epochs, batch_size=BS, seed=SEED, **kw)
    return model


def by_hand(original):
    model = copy.deepcopy(original)
    model.train()
    return model, torch.Generator().manual_seed(SEED)


def test_ga_ascends_the_mean_forget_cross_entropy(original, t):
    start = copy.deepcopy(original.state_dict())
    ours = run_ours(original, t, "ga", {"lr": 3e-3}, epochs=2)
    ref, gen = by_hand(original)
    opt = sgd(ref, 3e-3)
    for _ in range(2):
        for rows in order(len(t.forget_x), gen):
            descend(opt, -ce(ref(t.forget_x[rows]), t.forget_y[rows]))
    assert_same_weights(ours, ref, start)


def test_ft_descends_the_mean_retain_cross_entropy(original, t):
    start = copy.deepcopy(original.state_dict())
    ours = run_ours(original, t, "ft", {"lr": 0.05}, epochs=1)
    ref, gen = by_hand(original)
    opt = sgd(ref, 0.05)
    for rows in order(len(t.retain_x), gen):
        descend(opt, ce(ref(t.retain_x[rows]), t.retain_y[rows]))
    assert_same_weights(ours, ref, start)


def test_rl_draws_new_random_labels_each_epoch_and_mixes_them_with_retain_rows(original, t):
    """Digits' default schedule: labels for every forget row drawn at the start of each epoch
    (uniform over the classes, the true one included), then shuffled batches over both sets."""
    start = copy.deepcopy(original.state_dict())
    ours = run_ours(original, t, "rl", {"lr": 0.01}, epochs=2)
    ref, gen = by_hand(original)
    opt = sgd(ref, 0.01)
    nf, nr = len(t.forget_x), len(t.retain_x)
    for _ in range(2):
        labels = torch.randint(0, t.num_classes, (nf,), generator=gen)
        for idx in order(nf + nr, gen):
            f, r = idx[idx < nf], idx[idx >= nf] - nf
            x = torch.cat([t.forget_x[f], t.retain_x[r]])
            y = torch.cat([labels[f], t.retain_y[r]])
            descend(opt, ce(ref(x), y))
    assert_same_weights(ours, ref, start)


def test_rl_sequential_passes_the_forget_set_then_the_retain_set(original, t):
    start = copy.deepcopy(original.state_dict())
    ours = run_ours(original, t, "rl", {"lr": 0.01}, epochs=1, options={"schedule": "sequential"})
    ref, gen = by_hand(original)
    opt = sgd(ref, 0.01)
    labels = torch.randint(0, t.num_classes, (len(t.forget_x),), generator=gen)
    for rows in order(len(t.forget_x), gen):
        descend(opt, ce(ref(t.forget_x[rows]), labels[rows]))
    for rows in order(len(t.retain_x), gen):
        descend(opt, ce(ref(t.retain_x[rows]), t.retain_y[rows]))
    assert_same_weights(ours, ref, start)


def test_l1_sparse_adds_an_l1_penalty_decaying_linearly_to_zero(original, t):
    """alpha x (1 - epoch / epochs) x sum |w| over every parameter, added to the retain cross-entropy."""
    start = copy.deepcopy(original.state_dict())
    ours = run_ours(original, t, "l1_sparse", {"lr": 0.05, "alpha": 3e-3}, epochs=2)
    ref, gen = by_hand(original)
    opt = sgd(ref, 0.05)
    for epoch in range(2):
        alpha = 3e-3 * (1 - epoch / 2)
        for rows in order(len(t.retain_x), gen):
            l1 = sum(p.abs().sum() for p in ref.parameters())
            descend(opt, ce(ref(t.retain_x[rows]), t.retain_y[rows]) + alpha * l1)
    assert_same_weights(ours, ref, start)


def kl_t2(student, teacher, temperature=4.0):
    """Per row: KL(softmax(teacher / T) || softmax(student / T)) x T^2."""
    p_t = (teacher / temperature).softmax(1)
    return (p_t * ((teacher / temperature).log_softmax(1) - (student / temperature).log_softmax(1))).sum(1) \
        * temperature ** 2


def test_scrub_maximises_forget_kl_then_minimises_retain_ce_and_kl(original, t):
    """msteps = 1 of 2 epochs: epoch 1 is a max pass (-mean KL on forget batches) then a min pass
    (0.99 x CE + 0.001 x mean KL on retain batches); epoch 2 is a min pass alone. The teacher is the
    original, frozen, in eval mode."""
    start = copy.deepcopy(original.state_dict())
    ours = run_ours(original, t, "scrub", {"lr": 0.01, "msteps": 1}, epochs=2)
    teacher = copy.deepcopy(original).eval()
    ref, gen = by_hand(original)
    opt = sgd(ref, 0.01)
    for epoch in range(2):
        if epoch < 1:
            for rows in order(len(t.forget_x), gen):
                x = t.forget_x[rows]
                with torch.no_grad():
                    target = teacher(x)
                descend(opt, -kl_t2(ref(x), target).mean())
        for rows in order(len(t.retain_x), gen):
            x = t.retain_x[rows]
            with torch.no_grad():
                target = teacher(x)
            out = ref(x)
            descend(opt, 0.99 * ce(out, t.retain_y[rows]) + 0.001 * kl_t2(out, target).mean())
    assert_same_weights(ours, ref, start)


def test_neggrad_plus_replays_the_first_forget_pass_like_itertools_cycle(original, t):
    """SCRUB's loop, ``zip(retain_loader, cycle(forget_loader))``: the retain order, then one forget
    order whose batches are replayed in the same order whenever they run out; each set through its
    own forward pass; alpha x CE(retain) - (1 - alpha) x CE(forget). With BatchNorm in the model the
    running statistics must match too."""
    start = copy.deepcopy(original.state_dict())
    ours = run_ours(original, t, "neggrad_plus", {"lr": 0.01, "alpha": 0.9}, epochs=2)
    ref, gen = by_hand(original)
    opt = sgd(ref, 0.01)
    for _ in range(2):
        retain = order(len(t.retain_x), gen)
        forget = order(len(t.forget_x), gen)
        for r, f in zip(retain, itertools.cycle(forget)):
            loss = 0.9 * ce(ref(t.retain_x[r]), t.retain_y[r]) - 0.1 * ce(ref(t.forget_x[f]), t.forget_y[f])
            descend(opt, loss)
    assert any("running_mean" in k for k in ours.state_dict())
    assert_same_weights(ours, ref, start)


def falw_by_hand(model, t, logits, y, tau):
    """FaLW's weight from its definition, with the statistics of the validation split under the
    current model in eval mode (recomputed at every step, after the batch's forward pass)."""
    model.eval()
    with torch.no_grad():
        p_val = model(t.val_x).softmax(1).gather(1, t.val_y[:, None]).squeeze(1)
    model.train()
    mu = torch.stack([p_val[t.val_y == c].mean() for c in range(t.num_classes)])
    sigma = torch.stack([p_val[t.val_y == c].std(unbiased=False) for c in range(t.num_classes)])
    counts = t.forget_counts.double()
    balance = (counts.sum() / (t.num_classes * counts.clamp(min=1))) ** tau
    p = logits.detach().softmax(1).gather(1, y[:, None]).squeeze(1)
    z = (p - mu[y]) / sigma[y]
    return 1 + torch.sign(z) * torch.tanh(z.abs()) ** (1 / balance[y].float())


def test_ga_with_falw_weighs_each_forget_loss_by_the_step_fresh_weight(original, t):
    start = copy.deepcopy(original.state_dict())
    ours = run_ours(original, t, "ga", {"lr": 3e-3, "tau": 0.3}, epochs=1, falw=True)
    ref, gen = by_hand(original)
    opt = sgd(ref, 3e-3)
    for rows in order(len(t.forget_x), gen):
        logits = ref(t.forget_x[rows])
        w = falw_by_hand(ref, t, logits, t.forget_y[rows], 0.3)
        per_sample = -logits.log_softmax(1).gather(1, t.forget_y[rows][:, None]).squeeze(1)
        descend(opt, -(w * per_sample).sum() / len(rows))
    assert_same_weights(ours, ref, start)


def test_salun_steps_random_labels_through_the_top_half_saliency_mask(original, t):
    """The mask: |gradient of the forget cross-entropy| summed over forget batches of 64 on the
    original in eval mode, the largest half of all weights kept. The step: RL's, with the other
    gradients zeroed before SGD (the default ``grad`` mode: weight decay and momentum still act)."""
    start = copy.deepcopy(original.state_dict())
    ours = run_ours(original, t, "salun", {"lr": 0.02}, epochs=1)
    ref, gen = by_hand(original)
    ref.eval()
    for rows in torch.arange(len(t.forget_x)).split(BS):
        (-ce(ref(t.forget_x[rows]), t.forget_y[rows])).backward()
    sal = {n: p.grad.abs() for n, p in ref.named_parameters()}
    ref.zero_grad(set_to_none=True)
    ref.train()
    every = torch.cat([g.flatten() for g in sal.values()])
    cut = every.sort(descending=True).values[round(0.5 * len(every)) - 1]
    mask = {n: (g >= cut).float() for n, g in sal.items()}
    opt = sgd(ref, 0.02)
    nf, nr = len(t.forget_x), len(t.retain_x)
    labels = torch.randint(0, t.num_classes, (nf,), generator=gen)
    for idx in order(nf + nr, gen):
        f, r = idx[idx < nf], idx[idx >= nf] - nf
        loss = ce(ref(torch.cat([t.forget_x[f], t.retain_x[r]])), torch.cat([labels[f], t.retain_y[r]]))
        opt.zero_grad()
        loss.backward()
        for n, p in ref.named_parameters():
            p.grad.mul_(mask[n])
        opt.step()
    assert_same_weights(ours, ref, start)


def test_boundary_expanding_trains_forget_rows_into_a_new_shadow_output(original, t):
    """A C+1-way head: the old rows copied, the shadow row from the layer's default initialisation
    (drawn after seeding with the run's seed), the optimiser built after the widening; forget batches
    trained to the shadow label C."""
    from falw_ray.models import get_head, set_head

    start = copy.deepcopy(original.state_dict())
    ours = run_ours(original, t, "boundary_expanding", {"lr": 0.01}, epochs=1)
    ref, gen = by_hand(original)
    torch.manual_seed(SEED)
    head = get_head(ref)
    wide = torch.nn.Linear(head.in_features, head.out_features + 1)
    with torch.no_grad():
        wide.weight[:-1] = head.weight
        wide.bias[:-1] = head.bias
    set_head(ref, wide)
    opt = sgd(ref, 0.01)
    shadow = torch.full((BS,), t.num_classes)
    for rows in order(len(t.forget_x), gen):
        descend(opt, ce(ref(t.forget_x[rows]), shadow[:len(rows)]))
    assert get_head(ours).out_features == t.num_classes + 1
    assert_same_weights(ours, ref, start)


def test_boundary_shrink_fine_tunes_forget_rows_to_their_neighbour_labels(original, t):
    """After the FGSM relabelling (pinned in test_method_fidelity.py), plain fine-tuning of the forget
    set to the new labels."""
    from falw_ray.unlearn.boundary_shrink import neighbour_labels

    start = copy.deepcopy(original.state_dict())
    ours = run_ours(original, t, "boundary_shrink", {"lr": 0.01}, epochs=2)
    labels = neighbour_labels(copy.deepcopy(original).eval(), t, t.forget_x, t.forget_y, 0.1, BS)
    ref, gen = by_hand(original)
    opt = sgd(ref, 0.01)
    for _ in range(2):
        for rows in order(len(t.forget_x), gen):
            descend(opt, ce(ref(t.forget_x[rows]), labels[rows]))
    assert_same_weights(ours, ref, start)
