import numpy as np
import pytest

from falw_ray.data import (
    classwise_forget, load_dataset, longtail_counts, longtail_forget, longtail_weights, make_splits, random_forget,
)


def test_cifar10_check_values():
    assert longtail_counts(4500, [4500] * 10, 1.0) == [1537, 768, 512, 384, 307, 256, 219, 192, 171, 154]


def test_cifar100_head_forgotten_whole_at_30_percent():
    counts = longtail_counts(13500, [450] * 100, 1.0)
    assert sum(counts) == 13500
    assert sum(c == 450 for c in counts) == 21
    assert counts[:21] == [450] * 21


@pytest.mark.parametrize("gamma", [0.0, 0.25, 1 / 3, 0.5, 1.0, 1.5, 2.0])
@pytest.mark.parametrize("n", [1, 14, 15, 129, 999, 4500])
def test_sums_caps_and_monotone(gamma, n):
    sizes = [500] * 10
    counts = longtail_counts(n, sizes, gamma)
    assert sum(counts) == n
    assert all(0 <= c <= s for c, s in zip(counts, sizes))
    assert all(a >= b for a, b in zip(counts, counts[1:])), counts


def test_gamma_zero_is_uniform():
    assert longtail_counts(4500, [4500] * 10, 0.0) == [450] * 10
    for n in (14, 15, 33, 129):
        counts = longtail_counts(n, [100] * 10, 0.0)
        assert max(counts) - min(counts) <= 1 and sum(counts) == n


def test_caps_follow_each_class_pool_and_head_size():
    sizes = [10, 40, 5, 40, 40]
    counts = longtail_counts(40, sizes, 0.5)
    assert sum(counts) == 40
    assert counts[2] <= 5 and max(counts) <= 10
    with pytest.raises(ValueError, match="caps allow"):
        longtail_counts(46, sizes, 0.5)


def test_weights_and_bad_input():
    pi = longtail_weights(10, 1.0)
    assert pi.sum() == pytest.approx(1.0) and pi[0] == pytest.approx(2 * pi[1])
    with pytest.raises(ValueError, match="n_forget"):
        longtail_counts(101, [10] * 10, 1.0)
    with pytest.raises(ValueError, match="gamma"):
        longtail_counts(10, [10] * 10, -1.0)


def test_sampling_is_seeded_and_per_class():
    labels = np.repeat(np.arange(10), 100)
    a = longtail_forget(labels, 10, 0.1, 1.0, seed=3)
    b = longtail_forget(labels, 10, 0.1, 1.0, seed=3)
    c = longtail_forget(labels, 10, 0.1, 1.0, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(np.unique(a)) == len(a) == 100
    assert np.bincount(labels[a], minlength=10).tolist() == longtail_counts(100, [100] * 10, 1.0)


def test_random_and_classwise():
    labels = np.repeat(np.arange(5), 20)
    r = random_forget(labels, 0.25, seed=0)
    assert len(r) == 25 and np.array_equal(r, random_forget(labels, 0.25, seed=0))
    cw = classwise_forget(labels, [1, 3])
    assert set(labels[cw]) == {1, 3} and len(cw) == 40


def test_digits_splits_are_disjoint_and_documented_sizes():
    data = load_dataset("digits")
    s = make_splits(data, "longtail", 0.1, 1.0, (), seed=0)
    assert len(s.val) == 150 and len(s.test) == 360
    assert np.bincount(data.train_y[s.val]).tolist() == [15] * 10
    assert len(np.intersect1d(s.val, s.pool)) == 0
    assert np.array_equal(np.sort(np.concatenate([s.forget, s.retain])), s.pool)
    assert len(s.forget) == round(0.1 * len(s.pool))
    counts = np.bincount(data.train_y[s.forget], minlength=10)
    assert counts.tolist() == longtail_counts(len(s.forget), np.bincount(data.train_y[s.pool]).tolist(), 1.0)
    assert len(s.mia_members) == len(s.test)
