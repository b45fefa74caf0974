"""A completed trial's status and result, computed here alone: the journal's Recorder, the searcher,
the tables, the report and the progress lines all take them from this module (the metric and column
names themselves are in ``falw_ray.columns``, below the core and the study layer alike)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ...columns import OBJECTIVE

if TYPE_CHECKING:
    from ...scenario import Scenario

FINISHED, STOPPED, DIVERGED, ERROR = "finished", "stopped early", "diverged", "error"
STATUSES = (FINISHED, STOPPED, DIVERGED, ERROR)
"""A completed trial ran every epoch, was stopped early by ASHA, diverged (and reported the worst
Avg. Gap), or failed past its retries."""
RUNNING = "running"
"""Not a completed trial's status: an MLflow run still open (its study was interrupted), as a report
rebuilt from the store sees it."""


def status(result: dict | None, epochs: int, error: bool = False) -> str:
    """The one rule for a completed trial's status, from its last reported result (``failed``: a trial
    that could not run, reported instead of raised so that Tune does not retry it)."""
    if error or not result or OBJECTIVE not in result or result.get("failed"):
        return ERROR
    if result.get("diverged"):
        return DIVERGED
    return FINISHED if result.get("epoch") == epochs else STOPPED


def outcome(result: dict | None, epochs: int, error: bool = False) -> tuple[str, float]:
    """(status, Avg. Gap) of a completed trial; NaN for a trial that failed."""
    s = status(result, epochs, error)
    return s, math.nan if s == ERROR else float(result[OBJECTIVE])


STAGES = ("search", "select", "final")
"""A study's stages: the search (on the scenario's own seed), the re-evaluation of each cell's top
configurations on selection seeds (optional), and the final re-runs of the chosen one on new seeds."""


def trial_stage(config: dict) -> str:
    """A re-run's Tune config is ``{"select": {...}}`` or ``{"final": {...}}``; a search trial's is flat."""
    return next((s for s in STAGES[1:] if s in config), "search")


def stage_config(config: dict) -> dict:
    """The trial's own settings (cell, seed, hyperparameters), whatever its stage."""
    stage = trial_stage(config)
    return config[stage] if stage != "search" else config


def scenario_label(s: Scenario) -> str:
    return f"{s.dataset_label}{s.options_label}-{s.model_label}-{s.forget.label}"
