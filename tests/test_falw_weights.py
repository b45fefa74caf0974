import torch

from falw_ray.unlearn.falw import FalwWeigher, balancing_factor, class_confidence_stats, falw_weights

C = 4
COUNTS = torch.tensor([40, 20, 10, 2])
MU = torch.full((C,), 0.6)
SIGMA = torch.full((C,), 0.1)


def weights(p, labels, tau=0.2, counts=COUNTS):
    return falw_weights(torch.as_tensor(p, dtype=torch.float32), torch.as_tensor(labels), MU, SIGMA, counts, tau)


def test_range_open_interval_zero_two():
    p = torch.linspace(0, 1, 101).repeat(C)
    labels = torch.arange(C).repeat_interleave(101)
    w = weights(p, labels, tau=0.5)
    assert (w > 0).all() and (w < 2).all()


def test_sign_follows_z():
    w = weights([0.9, 0.3, 0.6], [0, 0, 0])
    assert w[0] > 1, "more confident than unseen data: under-forgotten, weighted up"
    assert w[1] < 1, "less confident than unseen data: over-forgotten, weighted down"
    assert w[2] == 1


def test_exact_formula():
    p, label, tau = 0.75, 3, 0.3
    z = (p - 0.6) / 0.1
    b = (72 / (C * 2)) ** tau
    expected = 1 + torch.tanh(torch.tensor(z)) ** (1 / b)
    assert torch.isclose(weights([p], [label], tau=tau)[0], expected)


def test_tau_zero_switches_balancing_off():
    assert torch.equal(balancing_factor(COUNTS, 0.0), torch.ones(C))
    w = weights([0.7] * C, list(range(C)), tau=0.0)
    assert torch.allclose(w, w[0].expand(C))


def test_tail_classes_respond_more_steeply():
    b = balancing_factor(COUNTS, 0.2)
    assert b[3] > 1 > b[0]
    for p in (0.62, 0.65, 0.7, 0.55, 0.5):
        w = weights([p] * C, list(range(C)), tau=0.2)
        dev = (w - 1).abs()
        assert dev[3] > dev[2] > dev[1] > dev[0], (p, w)


def test_no_gradient_through_weight():
    p = torch.tensor([0.8, 0.4], requires_grad=True)
    w = falw_weights(p, torch.tensor([0, 1]), MU, SIGMA, COUNTS, 0.2)
    assert not w.requires_grad


def test_zero_sigma_is_guarded():
    w = falw_weights(torch.tensor([0.7]), torch.tensor([0]), MU, torch.zeros(C), COUNTS, 0.2)
    assert torch.isfinite(w).all()


def test_class_stats_are_population_moments():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 3))
    x, y = torch.randn(30, 1, 2, 3), torch.arange(3).repeat(10)
    mu, sigma = class_confidence_stats(model, x, y, 3)
    p = model(x).softmax(1)[torch.arange(30), y].detach()
    for c in range(3):
        assert torch.isclose(mu[c], p[y == c].mean(), atol=1e-6)
        assert torch.isclose(sigma[c], p[y == c].std(unbiased=False), atol=1e-5)


def test_refresh_schedule_counts():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 3))
    x, y = torch.randn(30, 1, 2, 3), torch.arange(3).repeat(10)
    logits, labels = torch.randn(5, 3), torch.zeros(5, dtype=torch.long)
    every_step = FalwWeigher(model, x, y, torch.tensor([5, 0, 0]), 3, 0.2, refresh_every=1)
    per_epoch = FalwWeigher(model, x, y, torch.tensor([5, 0, 0]), 3, 0.2, refresh_every=0)
    for _ in range(2):
        every_step.new_epoch()
        per_epoch.new_epoch()
        for _ in range(4):
            every_step(logits, labels)
            per_epoch(logits, labels)
    assert every_step.refreshes == 8 and per_epoch.refreshes == 2
