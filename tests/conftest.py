"""Shared fixtures: the digits scenario and its baselines, trained once per test session."""
from __future__ import annotations

import os
import shutil

import pytest
import torch

import ray

from falw_ray.baselines import model_from, tensors_for, train_baselines
from falw_ray.data.registry import load_dataset
from falw_ray.scenario import Scenario

# Messages wrap at the terminal's width and tests match whole sentences, so the suite runs wide
# unless a test sets COLUMNS itself (tests/test_console_width.py checks wrapping at 80 and 100);
# pytest's own lines keep the real terminal's width.
_PYTEST_COLUMNS = shutil.get_terminal_size().columns
os.environ.setdefault("COLUMNS", "1000")


def pytest_sessionstart(session):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter._tw.fullwidth = _PYTEST_COLUMNS


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_scenario() -> Scenario:
    return Scenario(dataset="digits")


@pytest.fixture(scope="session")
def digits_baselines(digits_scenario):
    return train_baselines(digits_scenario, "cpu")


@pytest.fixture(scope="module")
def t(digits_baselines):
    """The digits scenario's tensors on the CPU."""
    return tensors_for(digits_baselines, torch.device("cpu"))


@pytest.fixture()
def original(digits_baselines):
    """A fresh copy of the digits original model."""
    return model_from(digits_baselines.scenario, load_dataset("digits"), digits_baselines.original, torch.device("cpu"))


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of two CPUs for a module's studies (request with pytestmark usefixtures)."""
    ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
