"""The shared MLflow views and run names falw_ray writes, checked against a real MLflow SQLite store
(no study run: the runs are made by the Tracker as a study makes them). tests/test_mlflow_ui.py
checks the same views in a browser, over a study that ran."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from falw_ray.study.search.cells import build_cells
from falw_ray.study.spec import parse_study
from falw_ray.study.tracking.tracker import GROUP, REFERENCES, Tracker, cell_run_name, trial_run, view_state

ROOT = Path(__file__).resolve().parents[1]


def cells_of(gamma) -> dict:
    data = yaml.safe_load((ROOT / "tests" / "data" / "tiny_study.yaml").read_text())
    data["scenarios"][0]["forget"]["gamma"] = gamma
    return {c.id: c for c in build_cells(parse_study(data))}


def test_a_cell_run_is_named_by_its_method_alone_unless_the_study_has_several_scenarios():
    one = cells_of(1.0)
    assert sorted(cell_run_name(c, one) for c in one.values()) == ["ft", "ga+falw"]
    two = cells_of([1.0, 2.0])
    names = sorted(cell_run_name(c, two) for c in two.values())
    assert names == ["ft | digits-cnn-lt0.1-g1", "ft | digits-cnn-lt0.1-g2",
                     "ga+falw | digits-cnn-lt0.1-g1", "ga+falw | digits-cnn-lt0.1-g2"]


def test_the_cells_view_puts_lr_and_tau_after_three_metrics_and_the_final_view_groups_by_cell():
    cell = view_state("cell", "R")
    metrics = [c for c in cell["selectedColumns"] if c.startswith("metrics.")]
    # MLflow shows a view's metrics first: two of them leave lr and tau on a 1600-pixel screen.
    assert metrics == ["metrics.`avg_gap`", "metrics.`avg_gap_std`"]
    assert {"params.`lr`", "params.`tau`"} <= set(cell["selectedColumns"])
    final = view_state("final", "R")
    assert final["groupBy"] == {"aggregateFunction": "average",
                                "groupByKeys": [{"mode": "tag", "groupByData": GROUP}]}
    assert "groupBy" not in view_state("search", "R")


def test_the_cells_view_filter_finds_the_cells_and_the_reference_rows_with_their_avg_gap(tmp_path):
    cells = cells_of(1.0)
    tracker = Tracker(f"sqlite:///{tmp_path / 'm.db'}", "views")
    tracker.connect()
    tracker.start_study("study", {}, journal="j")
    runs = {cid: tracker.cell_run(c, cells) for cid, c in cells.items()}
    # A trial run carries its cell's run name, which the final view groups by.
    config = {"stage": "final", "final": {"cell": next(iter(cells)), "seed": 1, "lr": 0.01, "tau": 0.5}}
    _, _, tags = trial_run(config, cells, "t1")
    assert tags[GROUP] == cell_run_name(cells[next(iter(cells))], cells)
    table = pd.DataFrame([
        {"scenario": "digits-cnn-lt0.1-g1", "method": "retrain", "falw": "-", "avg_gap_mean": 0.0,
         "avg_gap_std": 0.0, "fa_mean": 90.0, "fa_std": 1.0, "ra_mean": 99.0, "ra_std": 0.5, "ta_mean": 95.0,
         "ta_std": 0.2, "mia_mean": 20.0, "mia_std": 2.0, "seeds": 3},
        {"scenario": "digits-cnn-lt0.1-g1", "method": "original", "falw": "-", "avg_gap_mean": 14.6,
         "avg_gap_std": 0.7, "fa_mean": 100.0, "fa_std": 0.0, "ra_mean": 100.0, "ra_std": 0.0, "ta_mean": 95.5,
         "ta_std": 0.1, "mia_mean": 60.0, "mia_std": 3.0, "seeds": 3},
        {"scenario": "digits-cnn-lt0.1-g1", "method": "ft", "falw": "off", "avg_gap_mean": 5.6,
         "avg_gap_std": 0.4, "seeds": 3},
    ])
    refs = tracker.log_references(table, cells)
    assert set(refs) == {("digits-cnn-lt0.1-g1", "retrain"), ("digits-cnn-lt0.1-g1", "original")}
    again = tracker.log_references(table.assign(avg_gap_mean=table["avg_gap_mean"] + 1), cells)
    assert again == refs, "a study that ends again updates its reference runs, it does not add more"

    shown = tracker.client.search_runs([tracker.experiment_id], view_state("cell", tracker.study_run)["searchFilter"])
    by_name = {r.info.run_name: r for r in shown}
    assert set(by_name) == {"ft", "ga+falw", *REFERENCES.values()}
    assert {r.info.run_id for r in shown} == {*runs.values(), *refs.values()}
    retrain, original = by_name[REFERENCES["retrain"]], by_name[REFERENCES["original"]]
    assert retrain.data.metrics["avg_gap"] == 1.0 and original.data.metrics["avg_gap"] == pytest.approx(15.6)
    assert original.data.metrics["avg_gap_std"] == pytest.approx(0.7) and original.data.metrics["fa"] == 100.0
    assert original.data.metrics["seeds"] == 3 and original.info.status == "FINISHED"
    assert original.data.tags["method"] == "original" and original.data.tags["scenario"] == "digits-cnn-lt0.1-g1-s0"
    # Another study run's rows are not in this one's view.
    tracker.start_study("study again", {}, journal="j2")
    assert not tracker.client.search_runs([tracker.experiment_id], view_state("cell", tracker.study_run)["searchFilter"])
