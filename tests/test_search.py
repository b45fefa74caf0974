"""The search's early stopping: per-cell ASHA on the epoch a trial reports, evaluated only at its rungs."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from falw_ray.study.cells import build_cells
from falw_ray.study.search import CellScheduler, rung_epochs
from falw_ray.study.spec import load_study

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("grace,rf,max_t", [(2, 2, 5), (2, 2, 10), (1, 2, 10), (1, 3, 10), (2, 1.5, 10), (5, 2, 3)])
def test_rung_epochs_are_ashas_milestones(grace, rf, max_t):
    asha = ASHAScheduler(time_attr="epoch", metric="avg_gap", mode="min", max_t=max_t,
                         grace_period=min(grace, max_t), reduction_factor=rf)
    milestones = {math.ceil(m) for m, _ in asha._brackets[0]._rungs}
    assert rung_epochs(grace, rf, max_t) == sorted(milestones)


def test_trials_reporting_only_at_rungs_are_stopped_within_their_cell():
    cells = build_cells(load_study(ROOT / "studies" / "quickstart.yaml"))
    ga, ft = (next(c for c in cells if c.id.endswith(f"/{m}")) for m in ("ga", "ft"))
    sched = CellScheduler(cells, grace_period=2, reduction_factor=2)
    trials = [Trial("fake", config={"cell": c.id}, stub=True) for c in (ga, ga, ft)]
    for t in trials:
        sched.on_trial_add(None, t)

    def report(trial, epoch, gap):
        return sched.on_trial_result(None, trial, {"epoch": epoch, "avg_gap": gap, "training_iteration": 1})

    assert report(trials[0], 2, 5.0) == TrialScheduler.CONTINUE
    assert report(trials[1], 2, 9.0) == TrialScheduler.STOP, "worse than its cell's first trial at the first rung"
    assert report(trials[2], 2, 50.0) == TrialScheduler.CONTINUE, "another cell: not compared with ga's trials"
    assert report(trials[0], 4, 4.0) == TrialScheduler.CONTINUE
