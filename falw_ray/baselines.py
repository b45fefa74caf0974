"""The original and retrained models of a scenario, trained from scratch, with their metrics."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from .data.arrays import DatasetArrays
from .data.device import Augment, to_device
from .data.registry import load_dataset, make_splits
from .data.splits import Splits
from .metrics import evaluate
from .models import build_model
from .scenario import Scenario
from .store import CorruptEntry, Trained
from .tensors import ScenarioTensors, scenario_tensors
from .train import fit, pick_device, prepare_model, seed_everything

StateArrays = dict[str, np.ndarray]
"""A state dict as numpy arrays: zero-copy through Ray's object store, plain to save."""

ROLES = ("original", "retrained")


@dataclass
class Baselines:
    scenario: Scenario
    splits: Splits
    original: StateArrays
    retrained: StateArrays
    original_metrics: dict
    retrained_metrics: dict
    original_seconds: float
    retrain_seconds: float


def to_arrays(model: nn.Module) -> StateArrays:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_arrays(model: nn.Module, state: StateArrays) -> nn.Module:
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    return model


def scenario_data(scenario: Scenario) -> DatasetArrays:
    """The scenario's data set, generated with its options (loaded once per process)."""
    return load_dataset(*scenario.data_args())


def scenario_splits(scenario: Scenario, data: DatasetArrays | None = None) -> tuple[DatasetArrays, Splits]:
    data = data if data is not None else scenario_data(scenario)
    f = scenario.forget
    return data, make_splits(data, f.kind, f.ratio, f.gamma, f.classes, scenario.seed)


def fresh_model(scenario: Scenario, data: DatasetArrays, device: torch.device) -> nn.Module:
    return prepare_model(build_model(scenario.model, data.num_classes, data.input_shape), device)


def model_from(scenario: Scenario, data: DatasetArrays, state: StateArrays, device: torch.device) -> nn.Module:
    return prepare_model(load_arrays(build_model(scenario.model, data.num_classes, data.input_shape), state), device)


def train_role(
    role: str,
    scenario: Scenario,
    device: torch.device | str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    data: DatasetArrays | None = None,
) -> Trained:
    """Train the ``original`` model on the whole pool, or the ``retrained`` one on the retain set,
    with the scenario's recipe and seed. The original ignores the forget set, so scenarios that
    differ only there can share it. ``data``: the scenario's arrays when the caller has them (a
    node without the data's files is handed them), else loaded here."""
    if role not in ROLES:
        raise ValueError(f"unknown baseline role {role!r}; expected one of {ROLES}")
    device = pick_device(device)
    data, splits = scenario_splits(scenario, data)
    rows = splits.pool if role == "original" else splits.retain
    x = to_device(data, data.train_x[rows], device)
    y = torch.from_numpy(data.train_y[rows]).to(device)
    recipe = scenario.recipe
    gen = seed_everything(scenario.seed)
    model = fresh_model(scenario, data, device)
    report = (lambda e, _loss: progress(role, e + 1, recipe.epochs)) if progress else None
    start = time.perf_counter()
    fit(model, x, y, recipe, gen, Augment(data.crop_pad, data.flip), on_epoch=report)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return Trained(to_arrays(model), time.perf_counter() - start)


def assemble(scenario: Scenario, original: Trained, retrained: Trained, device=None,
             metrics: dict | None = None, data: DatasetArrays | None = None) -> Baselines:
    """Baselines of one scenario: both models evaluated on its forget / retain / test sets, unless
    ``metrics`` (role -> metrics) recorded from that very evaluation are given."""
    data, splits = scenario_splits(scenario, data)
    if metrics is None:
        device = pick_device(device)
        t = scenario_tensors(data, splits, device)
        metrics = {role: evaluate(model_from(scenario, data, tr.state, device), t)
                   for role, tr in (("original", original), ("retrained", retrained))}
    return Baselines(
        scenario=scenario, splits=splits, original=original.state, retrained=retrained.state,
        original_metrics=metrics["original"], retrained_metrics=metrics["retrained"],
        original_seconds=original.seconds, retrain_seconds=retrained.seconds,
    )


def train_baselines(scenario: Scenario, device=None, progress=None) -> Baselines:
    """Both baselines of a scenario, trained here with no store: the plain-library path."""
    return assemble(scenario, *(train_role(r, scenario, device, progress) for r in ROLES), device=device)


def tensors_for(baselines: Baselines, device: torch.device, data: DatasetArrays | None = None) -> ScenarioTensors:
    s = baselines.scenario
    data = data if data is not None else scenario_data(s)
    return scenario_tensors(data, baselines.splits, device)


METRICS = "metrics.json"
"""Both models' metrics, recorded beside the retrained entry when the pair is built: a later load needs
no evaluation."""


def baseline_event(b: Baselines) -> dict:
    """What a study reports and logs of a pair: both models' metrics and training times."""
    return {"original": b.original_metrics, "retrained": b.retrained_metrics,
            "original_seconds": b.original_seconds, "retrain_seconds": b.retrain_seconds}


def stored_baselines(scenario: Scenario, store, data: DatasetArrays | None = None) -> tuple[Baselines, dict] | None:
    """Both baselines straight from a :class:`falw_ray.store.BaselineStore`, with the metrics recorded
    when they were built, or None when anything is missing or fails its checksum (then
    :func:`store_baselines` rebuilds it). Nothing is trained or evaluated."""
    try:
        original = store.load("original", scenario.original_key())
        retrained = store.load("retrained", scenario.key())
        metrics = json.loads((store.path("retrained", scenario.key()) / METRICS).read_text())
    except (CorruptEntry, OSError, json.JSONDecodeError):
        return None
    if original is None or retrained is None:
        return None
    b = assemble(scenario, original, retrained, metrics=metrics, data=data)
    return b, {"original": "hit", "retrained": "hit", "metrics": baseline_event(b)}


def store_baselines(scenario: Scenario, store, device=None, log: Callable[[str], None] | None = None,
                    progress: Callable[[str, int, int], None] | None = None,
                    data: DatasetArrays | None = None) -> tuple[Baselines, dict]:
    """Both baselines of a scenario from the store, each trained (and stored) only where missing or
    corrupt, then evaluated and their metrics recorded with the pair. Returns the baselines and
    what happened to each role ("hit", "trained" or "rebuilt") with the metrics."""
    trained, events = {}, {}
    for role in ROLES:
        key = scenario.original_key() if role == "original" else scenario.key()
        info = {"scenario": scenario.model_dump(mode="json", exclude={"forget"} if role == "original" else None)}
        trained[role], events[role] = store.get_or_train(
            role, key, lambda r=role: train_role(r, scenario, device, progress, data), info, log=log)
    b = assemble(scenario, trained["original"], trained["retrained"], device=device, data=data)
    metrics = {"original": b.original_metrics, "retrained": b.retrained_metrics}
    store.attach("retrained", scenario.key(), {METRICS: json.dumps(metrics, indent=1).encode()})
    return b, {**events, "metrics": baseline_event(b)}
