"""falw_ray: tune and compare unlearning methods on long-tailed forget sets, judged as gaps to Retrain.

The public API is the names below, imported on first use: ``import falw_ray`` itself loads no
torch, Ray or MLflow (a CLI start or a plugin module importing ``falw_ray`` stays cheap).

- running: ``Study`` (a study file on Ray), ``Experiment`` (one scenario, no Ray), ``Scenario``,
  ``ForgetSpec``, ``Recipe``;
- writing a method (docs/plugins.md): ``Method``, ``Param``, ``Option``, ``Batch``, ``UnlearnState``,
  ``falw_weighted_mean`` and ``forget_weights`` (how FaLW's weights enter a per-sample forget loss),
  ``DivergedError``;
- writing a data loader: ``DatasetArrays``.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "Study": "falw_ray.study.runner",
    "StudyResult": "falw_ray.study.runner",
    "StudyError": "falw_ray.study.spec",
    "Experiment": "falw_ray.experiment",
    "RunResult": "falw_ray.experiment",
    "Scenario": "falw_ray.scenario",
    "ForgetSpec": "falw_ray.scenario",
    "Recipe": "falw_ray.recipe",
    "Method": "falw_ray.unlearn.base",
    "Param": "falw_ray.unlearn.base",
    "Option": "falw_ray.unlearn.base",
    "Batch": "falw_ray.unlearn.base",
    "UnlearnState": "falw_ray.unlearn.base",
    "DivergedError": "falw_ray.unlearn.base",
    "falw_weighted_mean": "falw_ray.unlearn.losses",
    "forget_weights": "falw_ray.unlearn.losses",
    "DatasetArrays": "falw_ray.data.arrays",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'falw_ray' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
