"""Studies end to end on a real local Ray, real Optuna and a SQLite MLflow store."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import ray
from mlflow.tracking import MlflowClient

from falw_ray.study.cells import build_cells
from falw_ray.study.report import report
from falw_ray.study.runner import Study
from falw_ray.study.spec import load_study

ROOT = Path(__file__).resolve().parents[1]
GAP_METRICS = ("fa_gap", "ra_gap", "ta_gap", "mia_gap", "avg_gap")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def quickstart(trials: int, seeds: list[int]) -> Study:
    """The shipped quickstart study with its search budget cut to fit the test suite."""
    spec = load_study(ROOT / "studies" / "quickstart.yaml")
    spec = spec.model_copy(update={
        "search": spec.search.model_copy(update={"trials": trials}),
        "final": spec.final.model_copy(update={"seeds": seeds}),
    })
    return Study(spec, "studies/quickstart.yaml")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quickstart")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    study = quickstart(trials=2, seeds=[0, 1])
    return study, study.run(tracking_uri=uri, storage=tmp / "store", progress=False), uri, tmp


def test_quickstart_trials_table_and_files(first_run):
    study, result, _, _ = first_run
    cells = build_cells(study.spec)
    assert len(cells) == 9
    assert len(result.trials) == len(cells) * 2
    assert set(result.trials["cell"]) == {c.id for c in cells}
    assert np.isfinite(result.trials["avg_gap"]).all()
    assert len(result.best) == len(cells)
    assert len(result.final) == len(cells) * 2 and (result.final["status"] == "finished").all()
    table = result.table
    assert len(table) == len(cells) + 1 and table.iloc[0]["method"] == "retrain"
    assert (table["seeds"] == 2).all() and table["best"].sum() == 1
    for name in ("trials", "best", "final", "table", "table_md", "baselines"):
        assert result.paths[name].exists()
    assert "Avg. Gap" in result.paths["table_md"].read_text()
    store = first_run[3] / "store" / "baselines"
    retrained = list((store / "retrained").glob("*/weights.pt"))
    assert len(retrained) == 2 and len(list((store / "original").glob("*/weights.pt"))) == 2
    for entry in (p.parent for p in retrained):
        assert {"meta.json", "splits.npz", "metrics.json"} <= {p.name for p in entry.iterdir()}
        assert set(np.load(entry / "splits.npz").files) >= {"forget", "retain", "val", "test"}


def test_final_runs_rerun_each_cells_best_configuration(first_run):
    """The searcher queues a cell's final runs when its search ends: the configuration
    results.best_per_cell picks, once per final seed, each after every search trial of its cell."""
    study, result, _, _ = first_run
    cells = {c.id: c for c in study.cells}
    for _, best in result.best.iterrows():
        runs = result.final[result.final["cell"] == best["cell"]]
        assert sorted(runs["seed"]) == [0, 1]
        for k in cells[best["cell"]].space:
            assert (runs[k] == best[k]).all(), (best["cell"], k)
        searched = result.trials[result.trials["cell"] == best["cell"]]
        assert runs["started_at"].min() >= searched["ended_at"].max()


def test_quickstart_mlflow_runs(first_run):
    study, result, uri, _ = first_run
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("quickstart")
    runs = client.search_runs([exp.experiment_id], max_results=10000)
    assert all(r.info.status != "RUNNING" for r in runs)
    study_run = client.get_run(result.study_run_id)
    assert study_run.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result.study_run_id]
    search = [r for r in children if r.data.tags.get("kind") == "trial" and r.data.tags["stage"] == "search"]
    final = [r for r in children if r.data.tags.get("kind") == "trial" and r.data.tags["stage"] == "final"]
    baselines = [r for r in children if r.data.tags.get("kind") == "baseline"]
    assert len(search) == 9 * 2 and len(final) == 9 * 2
    assert len(baselines) == 2 * 2, "original + retrained for seeds 0 and 1"
    for r in search + final:
        assert all(k in r.data.metrics for k in GAP_METRICS), r.data.metrics
        assert {"method", "falw", "lr", "scenario"} <= set(r.data.params)
        assert r.data.tags["cell"] in {c.id for c in build_cells(study.spec)}
    falw_runs = [r for r in search if r.data.tags["falw"] == "on"]
    assert falw_runs and all("tau" in r.data.params for r in falw_runs)
    # Judged at ASHA's rungs (grace period 2, reduction factor 2) and the last epoch, no others.
    schedule = {5: [2, 4, 5], 10: [2, 4, 8, 10]}
    cells = {c.id: c for c in build_cells(study.spec)}
    for r in search + final:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "avg_gap")]
        epochs = cells[r.data.tags["cell"]].epochs
        if r.data.tags["stage"] == "final":
            assert steps == [epochs]
        else:
            assert steps == schedule[epochs][:len(steps)] and steps, steps
    assert sum(r.data.tags.get("best") == "true" for r in search) == 9
    artifacts = {a.path for a in client.list_artifacts(result.study_run_id)}
    assert {"table.csv", "table.md", "trials.csv"} <= artifacts


def test_report_rebuilds_the_table_from_mlflow(first_run):
    _, result, uri, tmp = first_run
    table = report("quickstart", uri, out_dir=tmp / "report")
    cols = ["scenario", "method", "falw", "avg_gap_mean", "avg_gap_std", "fa_mean", "mia_mean"]
    expected = result.table[cols].sort_values(["method", "falw"]).reset_index(drop=True)
    got = table[cols].sort_values(["method", "falw"]).reset_index(drop=True)
    assert np.allclose(got[cols[3:]].to_numpy(float), expected[cols[3:]].to_numpy(float))
    assert (tmp / "report" / "table.md").exists()


def test_second_run_trains_no_baseline(first_run):
    _, first, uri, tmp = first_run
    trained_first = first.baselines[["original", "retrained"]].to_numpy().ravel().tolist()
    assert trained_first.count("trained") >= 3, "seed 0 and 1 retrained models, and their originals"
    again = quickstart(trials=1, seeds=[0, 1]).run(tracking_uri=uri, storage=tmp / "store", progress=False)
    statuses = again.baselines[["original", "retrained"]].to_numpy().ravel().tolist()
    assert statuses and set(statuses) == {"hit"}


def test_fractional_gpus_pack_trials(tmp_path):
    """Two trials of 0.5 GPU share one (declared) GPU at the same time; the CPU runs them here."""
    ray.shutdown()
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    assert ray.cluster_resources().get("GPU") == 1
    spec = load_study(ROOT / "tests" / "data" / "tiny_study.yaml")
    slow_ft = spec.methods[1].model_copy(update={"epochs": 15})
    spec = spec.model_copy(update={
        "methods": [slow_ft],
        "resources": spec.resources.model_copy(update={"gpu": 0.5}),
        "search": spec.search.model_copy(update={"trials": 4}),
    })
    result = Study(spec, "tiny").run(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", storage=tmp_path, progress=False)
    trials = result.trials
    assert (trials["gpus"] == "0").all(), trials["gpus"].tolist()
    assert (trials["gpu_share"] == 0.5).all()
    spans = sorted(zip(trials["started_at"], trials["ended_at"]))
    overlaps = sum(1 for (s0, e0), (s1, _) in zip(spans, spans[1:]) if s1 < e0)
    assert overlaps >= 1, spans
    with pytest.raises(ValueError, match="resources.gpu"):
        too_many = spec.model_copy(update={"resources": spec.resources.model_copy(update={"gpu": 2})})
        Study(too_many, "tiny").run(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", storage=tmp_path, progress=False)


def test_stored_baselines_load_in_the_driver_and_a_corrupt_one_is_rebuilt(first_run, tmp_path):
    """Warm entries need no Ray task; one whose weights fail their checksum is rebuilt by a task."""
    import shutil

    import torch

    from falw_ray.baselines import model_from, tensors_for
    from falw_ray.metrics import evaluate
    from falw_ray.study.shared import SharedObjects, dataset_key

    study, _, _, tmp = first_run
    store = tmp_path / "baselines"
    shutil.copytree(tmp / "store" / "baselines", store)
    s0, s1 = (c.at_seed(s) for c in study.cells[:1] for s in (0, 1))
    weights = store / "retrained" / s1.key() / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:100])
    shared = SharedObjects()
    shared.start([s0, s1], str(store), 1, 0)
    assert list(shared.pending) == [s1.key()], "only the corrupt entry goes to a Ray task"
    shared.wait([s0, s1], say=lambda _: None)
    events = {e["key"]: e for e in shared.events}
    assert (events[s0.key()]["original"], events[s0.key()]["retrained"]) == ("hit", "hit")
    assert events[s1.key()]["retrained"] == "rebuilt"
    warm, rebuilt = ray.get(shared.baselines[s0.key()]), ray.get(shared.baselines[s1.key()])
    data = ray.get(shared.datasets[dataset_key(s0)])
    again = evaluate(model_from(s0, data, warm.retrained, torch.device("cpu")), tensors_for(warm, torch.device("cpu"), data))
    for k in ("fa", "ra", "ta", "fa_per_class"):
        assert warm.retrained_metrics[k] == again[k], "the recorded metrics are the stored model's"
    assert rebuilt.retrained_metrics["ta"] > 90
