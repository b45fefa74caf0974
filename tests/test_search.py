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
    cells = build_cells(load_study(ROOT / "studies" / "digits.yaml"))
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


def test_searcher_reevaluates_the_top_k_on_selection_seeds_and_sends_the_lowest_mean_to_the_final_seeds():
    """Driven by hand: 4 search trials of one cell, the best 2 distinct configurations re-run on 2
    selection seeds, then the one with the lower mean (not the search's best) on the 3 final seeds."""
    from falw_ray.study.search import CellSearcher

    cell = next(c for c in build_cells(load_study(ROOT / "studies" / "digits.yaml")) if c.id.endswith("/ga"))
    searcher = CellSearcher([cell], trials_per_cell=4, seed=0, final_seeds=[7, 8, 9], select_seeds=[5, 6], top_k=2)
    configs = {f"s{i}": searcher.suggest(f"s{i}") for i in range(4)}
    assert all(c["cell"] == cell.id and set(c) == {"cell", *cell.space} for c in configs.values())
    assert searcher.suggest("waiting") is None, "no re-run before the cell's search is over"
    gaps = {"s0": 3.0, "s1": 1.0, "s2": 2.0, "s3": 0.5}
    for tid, gap in gaps.items():
        epoch = cell.epochs if tid != "s3" else 1          # s3 was stopped early: never a candidate
        searcher.on_trial_complete(tid, {"avg_gap": gap, "epoch": epoch})
    select = [searcher.suggest(f"r{i}") for i in range(4)]
    lr = {tid: configs[tid]["lr"] for tid in configs}
    assert [(c["select"]["rank"], c["select"]["seed"], c["select"]["lr"]) for c in select] == [
        (0, 5, lr["s1"]), (0, 6, lr["s1"]), (1, 5, lr["s2"]), (1, 6, lr["s2"])]
    assert searcher.suggest("waiting") is None, "no final run before every selection run is in"
    for i, gap in enumerate([4.0, 4.0, 2.5, 3.5]):      # rank 0: mean 4.0; rank 1: mean 3.0
        searcher.on_trial_complete(f"r{i}", {"avg_gap": gap, "epoch": cell.epochs})
    final = [searcher.suggest(f"f{i}") for i in range(3)]
    assert [(c["final"]["seed"], c["final"]["lr"]) for c in final] == [(7, lr["s2"]), (8, lr["s2"]), (9, lr["s2"])]
    assert searcher.chosen[cell.id]["rank"] == 1
    assert searcher.suggest("end") == "FINISHED"
