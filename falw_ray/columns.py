"""What a result is named, defined once, below both the core and the study layer: the metrics
(name, label, direction, kind), their gaps to Retrain, the column sets of every table, and the
columns that identify a trial. The core (metrics, experiment) and the study layer (schema, tables,
MLflow, plots) import these names; adding a metric is one entry in METRICS plus its computation
(``falw_ray.metrics``).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricDef:
    key: str
    label: str
    lower_is_better: bool | None = None
    """None: judged only as a gap to Retrain (its own value has no better direction)."""
    retrain: float | None = None
    """Retrain's value when it holds by definition, not by measurement (0 for a gap to it, 1 for RTE)."""
    kind: str = "measured"
    """``measured`` (a model's own score, with a per-metric gap to Retrain, ``<key>_gap``), ``gap``
    (a summary of the gaps, e.g. Avg. Gap) or ``time``: where the metric goes follows from it."""


METRICS: dict[str, MetricDef] = {m.key: m for m in (
    MetricDef("fa", "FA"), MetricDef("ra", "RA"), MetricDef("ta", "TA"), MetricDef("mia", "MIA"),
    MetricDef("avg_gap", "Avg. Gap", lower_is_better=True, retrain=0.0, kind="gap"),
    MetricDef("seconds", "Time (s)", lower_is_better=True, kind="time"),
    MetricDef("rte", "RTE", lower_is_better=True, retrain=1.0, kind="time"),
)}
"""The final table's columns, in its order (and a compare table's). A new metric is one entry here
plus its computation (``falw_ray.metrics``: a measured one in ``evaluate``, a gap summary in ``gaps``)."""
LABELS = {k: m.label for k, m in METRICS.items()}
RETRAIN_ROW = {k: m.retrain for k, m in METRICS.items() if m.retrain is not None}
"""Retrain's row in a table where it is defined, not measured."""

OBJECTIVE, MODE = "avg_gap", "min"
"""What a search minimises and the tables rank by."""

MEASURED = tuple(k for k, m in METRICS.items() if m.kind == "measured")
GAPS = tuple(f"{k}_gap" for k in MEASURED)
SUMMARY_GAPS = tuple(k for k, m in METRICS.items() if m.kind == "gap")
GROUP_GAPS = ("fa_gap_head", "fa_gap_mid", "fa_gap_tail")
GROUP_DEVS = ("fa_dev_head", "fa_dev_mid", "fa_dev_tail")
TIMES = ("elapsed", "rte")

EPOCH_METRICS = (*MEASURED, *GAPS, *SUMMARY_GAPS, *GROUP_GAPS, *GROUP_DEVS, *TIMES)
"""What a trial reports at an evaluated epoch and its MLflow run logs at that step."""
TRIAL_METRICS = (*MEASURED, *GAPS, *SUMMARY_GAPS, *GROUP_GAPS, *TIMES, "trial_seconds")
"""A trial's metric columns in trials.csv, selection.csv and final.csv."""
TABLE_METRICS = (*MEASURED, *SUMMARY_GAPS)
"""The columns the final table summarises (mean and std over seeds)."""
CELL_METRICS = (*SUMMARY_GAPS, *MEASURED, *GAPS)
"""What a cell's MLflow run carries (mean and std over its final seeds)."""

TRIAL_COLUMNS = ("cell", "scenario", "method", "falw", "seed", "trial_id", "status", "epochs_done")
"""What identifies a trial and how it ended: the first columns of trials.csv, selection.csv and final.csv."""
RUN_PARAMS = ("method", "falw", "scenario", "dataset", "model", "forget", "gamma", "seed", "epochs")
"""A trial's MLflow parameters that place it (every other parameter is a hyperparameter)."""
