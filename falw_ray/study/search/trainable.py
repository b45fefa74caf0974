"""The Tune trainable: one unlearning run from shared baselines, reporting gaps to Retrain every epoch."""
from __future__ import annotations

import os
import time

import ray
import torch
from ray import tune

from ...experiment import run_method
from ...plugins import PluginError
from ...unlearn import DivergedError, FalwUnused
from ..record.trials import stage_config, trial_stage
from ...columns import OBJECTIVE
from ..cluster.ship import register, this_node
from ..cluster.shared import dataset_key

DIVERGED_GAP = 100.0
"""Avg. Gap reported by a diverged trial: the worst a gap in percentage points can be, so the
search learns to avoid the region instead of crashing on it."""


def unlearning_trial(config: dict, cells: dict, baselines: dict, datasets: dict, threads: int, falw_refresh_every: int,
                     evaluate: dict | None = None, compile: bool = False, precision: str = "fp32",
                     plugins: dict | None = None):
    """One search trial, or a re-run on another seed when ``config`` is ``{"select" | "final": {...}}``.

    ``evaluate`` maps a stage (cells.STAGES) and a cell to the epochs its trials are
    evaluated (and report) at; None: every epoch. ``plugins`` maps the study's plugin methods to
    the ``module:ATTR`` they are imported by here (ship.py); a trial imports its own method only.

    A plugin this worker cannot import, or a method that ignores FaLW's weights with FaLW on, ends
    the trial with a failed result (``failed``, the error in one line naming the node): no
    exception, so Tune does not retry what would fail the same way each time."""
    started, started_at = time.perf_counter(), time.time()
    assigned = ray.get_runtime_context().get_assigned_resources()
    node = ray.get_runtime_context().get_node_id()
    placement = {"started_at": started_at, "gpus": ",".join(map(str, ray.get_gpu_ids())),
                 "gpu_share": assigned.get("GPU", 0.0), "pid": os.getpid(), "node": node}
    torch.set_num_threads(max(1, threads))
    stage, cfg = trial_stage(config), stage_config(config)
    cell = cells[cfg["cell"]]
    scenario = cell.at_seed(cfg["seed"]) if "seed" in cfg else cell.scenario
    base = ray.get(baselines[scenario.key()])
    data = ray.get(datasets[dataset_key(scenario)])
    retrain_seconds = base.retrain_seconds

    def report(row: dict) -> None:
        tune.report({**row, **placement, "cell": cell.id, "seed": scenario.seed, "diverged": False,
                     "rte": row["elapsed"] / retrain_seconds, "trial_seconds": time.perf_counter() - started,
                     "reported_at": time.time()})

    try:
        register({cell.method: plugins[cell.method]} if cell.method in (plugins or {}) else {})
        run_method(base, cell.method, cell.falw, hp=cell.hp(cfg), epochs=cell.epochs, batch_size=cell.batch_size,
                   falw_refresh_every=falw_refresh_every, on_epoch=report, data=data,
                   eval_epochs=None if evaluate is None else evaluate[stage][cell.id], compile=compile,
                   options=cell.options, precision=precision)
    except DivergedError as e:
        tune.report({**placement, OBJECTIVE: DIVERGED_GAP, "diverged": True, "error": str(e), "cell": cell.id,
                     "seed": scenario.seed, "trial_seconds": time.perf_counter() - started})
    except (PluginError, FalwUnused) as e:
        tune.report({**placement, OBJECTIVE: float("nan"), "failed": True, "cell": cell.id, "seed": scenario.seed,
                     "error": f"node {this_node()}: {e}",
                     "trial_seconds": time.perf_counter() - started})
