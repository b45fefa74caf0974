"""The same scenario trains the same model whether its arrays were loaded in the process or came
through Ray (a study's baseline task gets the driver's arrays): a real local Ray, real training."""
from __future__ import annotations

import numpy as np
import pytest
import ray

from falw_ray.baselines import train_role
from falw_ray.data.arrays import DatasetArrays
from falw_ray.data.registry import load_dataset
from falw_ray.recipe import Recipe
from falw_ray.scenario import Scenario

pytestmark = pytest.mark.usefixtures("local_ray")


def fresh_strides(x: np.ndarray) -> tuple[int, ...]:
    return np.empty(x.shape, x.dtype).strides


@pytest.mark.parametrize("dataset", ["digits", "mnist1d"])
def test_a_loaders_arrays_have_the_strides_ray_gives_back(dataset):
    data = load_dataset(dataset)
    back = ray.get(ray.put(data))
    for field in ("train_x", "test_x"):
        mine, theirs = getattr(data, field), getattr(back, field)
        assert mine.strides == theirs.strides == fresh_strides(mine), (field, mine.strides, theirs.strides)


def test_a_view_with_an_odd_stride_is_stored_as_a_fresh_array():
    """``x[:, None]`` gives the new axis stride 0 in NumPy: the arrays keep their values, not that stride."""
    signals = np.random.default_rng(0).standard_normal((6, 40)).astype(np.float32)
    x = signals[:, None, :]
    assert x.strides[1] != fresh_strides(x)[1]
    data = DatasetArrays("s", x, np.arange(6) % 2, x, np.arange(6) % 2, 2, (0.0,), (1.0,), scale=1.0)
    assert data.train_x.strides == fresh_strides(x) and np.array_equal(data.train_x, x)


@ray.remote(num_cpus=1)
def _train_there(scenario: Scenario, data: DatasetArrays):
    import torch

    torch.set_num_threads(1)
    return train_role("retrained", scenario, "cpu", data=data).state


@pytest.mark.parametrize("dataset", ["digits", "mnist1d"])
def test_a_baseline_trained_here_and_in_a_ray_task_is_the_same_model(dataset):
    """Before the arrays were stored with fresh strides, MNIST-1D's models differed here: the CPU's
    convolution takes another path on a size-1 axis whose stride differs, and training grows that."""
    import torch

    scenario = Scenario(dataset=dataset, recipe=Recipe(epochs=2, batch_size=64, lr=0.05, augment=False))
    data = load_dataset(dataset)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = train_role("retrained", scenario, "cpu", data=data).state
    finally:
        torch.set_num_threads(threads)
    there = ray.get(_train_there.remote(scenario, data))
    assert list(here) == list(there)
    different = [k for k in here if not np.array_equal(here[k], there[k])]
    assert different == [], different
