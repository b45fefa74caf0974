"""One rule for a trial's status, and every reader of results using it: progress lines, the report
rebuilt from MLflow, the tables and the plots give a result the status ``schema.status`` gives it."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest

from falw_ray import columns
from falw_ray.study.record import plots, trials as schema
from falw_ray.study.progress import ProgressLine
from falw_ray.study.report import trial_status
from falw_ray.study.record.results import best_of, final_table, format_table
from falw_ray.study.tracking.tracker import end_tags

EPOCHS = 3
RESULTS = {  # hand-written last results of a 3-epoch trial -> the status the rule gives each
    "ran every epoch": ({"epoch": 3, "avg_gap": 1.5}, "finished"),
    "stopped by ASHA at epoch 1": ({"epoch": 1, "avg_gap": 0.5}, "stopped early"),
    "diverged at epoch 2": ({"epoch": 2, "avg_gap": 100.0, "diverged": True}, "diverged"),
    "reported no Avg. Gap": ({"epoch": 3}, "error"),
}


@pytest.mark.parametrize("case", list(RESULTS))
def test_the_status_rule(case):
    result, expected = RESULTS[case]
    assert schema.status(result, EPOCHS) == expected
    gap = schema.outcome(result, EPOCHS)[1]
    assert math.isnan(gap) if expected == "error" else gap == result["avg_gap"]


def test_an_error_wins_over_any_result():
    assert schema.status({"epoch": 3, "avg_gap": 1.5}, EPOCHS, error=True) == "error"
    assert schema.status(None, EPOCHS) == schema.status({}, EPOCHS) == "error"
    assert schema.STATUSES == ("finished", "stopped early", "diverged", "error")


def _progress_of(result: dict) -> tuple[str, dict]:
    """(the status progress records, its counts) for one trial ending with ``result``."""
    p = ProgressLine("search", 1, [].append, {"s/ga": SimpleNamespace(epochs=EPOCHS)}, mode="quiet")
    trial = SimpleNamespace(trial_id="t0", config={"cell": "s/ga"}, status="RUNNING")
    p.on_trial_start(0, [trial], trial)
    p.on_trial_result(0, [trial], trial, result)
    p.on_trial_complete(0, [trial], trial)
    return p.outcome["t0"], p.counts()


@pytest.mark.parametrize("case", list(RESULTS))
def test_progress_gives_the_rule_s_status(case):
    result, expected = RESULTS[case]
    status, counts = _progress_of(result)
    assert status == schema.status(result, EPOCHS) == expected
    word = "failed" if expected == "error" else expected
    assert counts == {w: int(w == word) for w in ("finished", "stopped early", "diverged", "failed")}


def _mlflow_run(result: dict, failed: bool = False) -> SimpleNamespace:
    """The MLflow run tracking.TrialLogger leaves for a trial whose last result is ``result``."""
    tags = {"diverged": "true"} if result.get("diverged") else {}
    tags.update({k: str(v) for k, v in end_tags(result.get("epoch", 0), EPOCHS).items()})
    metrics = {k: v for k, v in result.items() if k in columns.EPOCH_METRICS}
    return SimpleNamespace(info=SimpleNamespace(status="FAILED" if failed else "FINISHED"),
                           data=SimpleNamespace(params={"epochs": str(EPOCHS)}, metrics=metrics, tags=tags))


@pytest.mark.parametrize("case", list(RESULTS))
def test_the_report_reads_the_rule_s_status_back_from_mlflow(case):
    result, expected = RESULTS[case]
    assert trial_status(_mlflow_run(result)) == schema.status(result, EPOCHS) == expected
    assert trial_status(_mlflow_run(result, failed=True)) == "error"


def test_an_open_run_is_running_and_one_without_end_tags_ran_every_epoch():
    run = _mlflow_run({"epoch": 1, "avg_gap": 0.5})
    run.info.status = "RUNNING"
    assert trial_status(run) == schema.RUNNING == "running"
    run.info.status = "FINISHED"
    run.data.tags = {}
    assert trial_status(run) == "finished"


def test_plots_and_the_choice_read_the_statuses_the_rule_gives():
    """A cell of one trial per case: the Optuna study the plots rebuild, the trials the history
    draws and the configuration the rule picks all follow the statuses ``schema.status`` gave."""
    statuses = [schema.status(r, EPOCHS) for r, _ in RESULTS.values()]
    trials = pd.DataFrame([{"cell": "s/ga", "method": "ga", "status": s, "lr": 10 ** -(i + 1), "tau": 0.1 * i,
                            "epochs_done": r.get("epoch"), "avg_gap": r.get("avg_gap", math.nan)}
                           for i, (s, (r, _)) in enumerate(zip(statuses, RESULTS.values()))])
    study = plots.cell_study(trials, plots.infer_space(trials))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED", "FAIL", "FAIL"]
    assert plots._drawn(trials).tolist() == [True, True, True, False]
    assert best_of(list(zip(statuses, trials["avg_gap"]))) == 0, "the finished trial, though one stopped lower"
    assert best_of(list(zip(statuses[1:], trials["avg_gap"][1:]))) == 0, "none finished: the stopped-early one"


def test_every_metric_is_a_table_column_and_no_hyperparameter():
    final = pd.DataFrame([{"scenario": "s", "method": "ga", "falw": False, "seed": s, "fa": 10.0 + s, "ra": 90.0,
                           "ta": 80.0, "mia": 20.0, "avg_gap": 2.0 + s, "seconds": 3.0, "rte": 0.1} for s in (0, 1)])
    reference = pd.DataFrame([{"scenario": "s", "seed": s, "fa": 5.0, "ra": 95.0, "ta": 85.0, "mia": 15.0,
                               "seconds": 30.0} for s in (0, 1)])
    table = final_table(final, reference)
    retrain = table[table["method"] == "retrain"].iloc[0]
    assert (retrain["avg_gap_mean"], retrain["rte_mean"]) == (0.0, 1.0), "Retrain's gap is 0 and its RTE 1"
    assert list(format_table(table).columns) == ["scenario", "method", "falw", "FA", "RA", "TA", "MIA", "Avg. Gap",
                                                 "Time (s)", "RTE", "best"]
    assert set(columns.METRICS) | set(columns.EPOCH_METRICS) | set(columns.TRIAL_METRICS) <= plots.HP_SKIP


def test_the_measured_metrics_are_the_ones_the_core_computes():
    """One definition (falw_ray.columns) for the core and the study layer: the gaps the core computes
    are those of the measured metrics named there."""
    from falw_ray.metrics import gaps
    model = {"fa": 90.0, "ra": 99.0, "ta": 80.0, "mia": 30.0, "fa_per_class": [90.0, 80.0, 100.0]}
    retrain = {"fa": 80.0, "ra": 98.0, "ta": 81.0, "mia": 10.0, "fa_per_class": [70.0, 85.0, 100.0]}
    computed = gaps(model, retrain)
    assert [k for k in computed if k.endswith("_gap") and k.removesuffix("_gap") in model] == list(columns.GAPS)
    assert computed["avg_gap"] == (10.0 + 1.0 + 1.0 + 20.0) / 4
    assert columns.MEASURED == ("fa", "ra", "ta", "mia")
    assert columns.GAPS == ("fa_gap", "ra_gap", "ta_gap", "mia_gap")
    assert columns.TABLE_METRICS == ("fa", "ra", "ta", "mia", "avg_gap")
