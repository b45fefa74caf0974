"""Shared fixtures: the digits scenario and its baselines, trained once per test session."""
from __future__ import annotations

import pytest
import torch

from falw_ray.baselines import train_baselines
from falw_ray.scenario import Scenario


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_scenario() -> Scenario:
    return Scenario(dataset="digits")


@pytest.fixture(scope="session")
def digits_baselines(digits_scenario):
    return train_baselines(digits_scenario, "cpu")
