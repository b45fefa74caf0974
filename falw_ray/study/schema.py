"""A trial's status and the rule that gives it, defined once; with the metric names and column sets
the study layer reads here (defined in ``falw_ray.columns``, below the core and this layer alike).

Tables, plots, MLflow and progress lines derive from these names; adding a metric is one entry in
``columns.METRICS`` plus its computation (``falw_ray.metrics``).
"""
from __future__ import annotations

import math

from ..columns import (  # noqa: F401 - the study layer's modules import these names from here
    CELL_METRICS, EPOCH_METRICS, GAPS, GROUP_DEVS, GROUP_GAPS, LABELS, MEASURED, METRICS, MODE, OBJECTIVE,
    RETRAIN_ROW, SUMMARY_GAPS, TABLE_METRICS, TIMES, TRIAL_METRICS, MetricDef,
)

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
