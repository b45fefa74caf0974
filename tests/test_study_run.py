"""Studies end to end on a real local Ray, real Optuna and a SQLite MLflow store."""
from __future__ import annotations

from pathlib import Path

import json

import numpy as np
import pytest
import ray
from mlflow.tracking import MlflowClient

from falw_ray.experiment import Experiment
from falw_ray.scenario import BASELINE_CODE_VERSION
from falw_ray.study.search.cells import build_cells
from falw_ray.study.report import report
from falw_ray.study.runner import Study
from falw_ray.study.spec import load_study

ROOT = Path(__file__).resolve().parents[1]
GAP_METRICS = ("fa_gap", "ra_gap", "ta_gap", "mia_gap", "avg_gap")


pytestmark = pytest.mark.usefixtures("local_ray")


def digits_study(trials: int, seeds: list[int], selection: list[int] = (10,)) -> Study:
    """The shipped digits smoke study with its search budget cut to fit the test suite."""
    spec = load_study(ROOT / "studies" / "digits.yaml")
    spec = spec.model_copy(update={
        "search": spec.search.model_copy(update={"trials": trials}),
        "selection": spec.selection.model_copy(update={"seeds": list(selection)}),
        "final": spec.final.model_copy(update={"seeds": seeds}),
    })
    return Study(spec, "studies/digits.yaml")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("digits")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    study = digits_study(trials=3, seeds=[1, 2])
    return study, study.run(tracking_uri=uri, storage=tmp / "store", progress=False), uri, tmp


def candidates(result, cell_id: str, space: list[str]) -> int:
    """How many configurations of a cell the selection stage re-runs: its distinct search trials in
    the ranking rule's pool (finished ones, else any that reported), at most top_k = 2; none if one."""
    from falw_ray.study.record.results import ranked

    trials = result.trials[result.trials["cell"] == cell_id]
    order = ranked(list(zip(trials["status"], trials["avg_gap"].astype(float))))
    n = min(2, len({tuple(float(trials.iloc[i][k]) for k in space) for i in order}))
    return n if n > 1 else 0


def test_digits_trials_table_and_files(first_run):
    study, result, _, _ = first_run
    cells = build_cells(study.spec)
    assert len(cells) == 9
    assert len(result.trials) == len(cells) * 3
    assert set(result.trials["cell"]) == {c.id for c in cells}
    assert np.isfinite(result.trials["avg_gap"]).all()
    assert len(result.best) == len(cells)
    assert len(result.final) == len(cells) * 2 and (result.final["status"] == "finished").all()
    assert sorted(result.final["seed"].unique()) == [1, 2], "final seeds are new: the search ran on 0"
    table = result.table
    assert len(table) == len(cells) + 2
    assert list(table["method"][:2]) == ["retrain", "original"] and (table["seeds"] == 2).all()
    methods = table[~table["method"].isin(["retrain", "original"])]
    low = methods["avg_gap_mean"].round(2).min()
    assert list(table["best"]) == [False, False, *(methods["avg_gap_mean"].round(2) == low)]
    for name in ("trials", "best", "final", "table", "table_md", "baselines", "paired"):
        assert result.paths[name].exists()
    md = result.paths["table_md"].read_text()
    assert "Avg. Gap" in md and "Paired differences" in md and "original: the original model itself" in md
    store = first_run[3] / "store" / "baselines"
    retrained = list((store / "retrained").glob("*/weights.pt"))
    assert len(retrained) == 4 and len(list((store / "original").glob("*/weights.pt"))) == 4, "seeds 0, 10, 1, 2"
    for entry in (p.parent for p in retrained):
        names = {p.name for p in entry.iterdir()}
        assert {"meta.json", "metrics.json", "weights.pt"} <= names and "splits.npz" not in names, "splits are recomputed"
        assert json.loads((entry / "meta.json").read_text())["code_version"] == BASELINE_CODE_VERSION


def test_selection_reruns_each_cells_top_configurations_and_final_takes_the_lowest_mean(first_run):
    """Each cell's best 2 distinct search configurations re-run on selection seed 10; the one with the
    lower mean Avg. Gap there (not necessarily the search's best) is re-run on the final seeds, each
    final run after every search and selection run of its cell."""
    from falw_ray.study.record.results import choose

    study, result, _, _ = first_run
    sel = result.selection
    assert len(sel) > 0, "with 3 trials per cell, some cell has two finished configurations"
    for cell in study.cells:
        space = list(cell.space)
        runs = sel[sel["cell"] == cell.id]
        assert len(runs) == candidates(result, cell.id, space), cell.id
        finals = result.final[result.final["cell"] == cell.id]
        chosen = result.best[result.best["cell"] == cell.id].iloc[0]
        if len(runs):
            assert set(runs["seed"]) == {10}
            ranks = sorted(runs["rank"].unique())
            pick = ranks[choose([list(runs[runs["rank"] == r]["avg_gap"]) for r in ranks])]
            assert chosen["search_rank"] == pick + 1
            assert chosen["selection_avg_gap"] == pytest.approx(runs[runs["rank"] == pick]["avg_gap"].mean())
            for k in space:
                assert (finals[k] == runs[runs["rank"] == pick].iloc[0][k]).all(), (cell.id, k)
            assert finals["started_at"].min() >= runs["ended_at"].max()
        for k in space:
            assert (finals[k] == chosen[k]).all(), (cell.id, k)
        searched = result.trials[result.trials["cell"] == cell.id]
        assert sorted(finals["seed"]) == [1, 2]
        assert finals["started_at"].min() >= searched["ended_at"].max()


def test_original_row_is_the_original_models_gap_to_retrain(first_run):
    """"Do nothing" in the table: the stored original model's own gaps to the retrained model of each
    final seed, averaged, exactly as metrics.gaps computes them."""
    from falw_ray.data.registry import load_dataset
    from falw_ray.metrics import gaps
    from falw_ray.store import BaselineStore
    from falw_ray.baselines import stored_baselines

    study, result, _, tmp = first_run
    store = BaselineStore(tmp / "store" / "baselines")
    cell = study.cells[0]
    per_seed = []
    for seed in (1, 2):
        base, _ = stored_baselines(cell.at_seed(seed), store, load_dataset("digits"))
        per_seed.append(gaps(base.original_metrics, base.retrained_metrics)["avg_gap"])
    row = result.table[result.table["method"] == "original"].iloc[0]
    assert row["avg_gap_mean"] == pytest.approx(np.mean(per_seed), abs=1e-9)
    assert row["avg_gap_std"] == pytest.approx(np.std(per_seed), abs=1e-9)


def test_paired_falw_differences_are_on_minus_off_per_seed(first_run):
    _, result, _, _ = first_run
    paired = result.paired
    assert sorted(paired["a"]) == ["ga", "rl", "salun", "scrub"] and (paired["b"] == paired["a"] + "+falw").all()
    final = result.final
    for r in paired.itertuples():
        on = final[(final["method"] == r.a) & final["falw"]].set_index("seed")["avg_gap"]
        off = final[(final["method"] == r.a) & ~final["falw"]].set_index("seed")["avg_gap"]
        d = (on - off).to_numpy()
        assert r.n == 2 and r.mean == pytest.approx(d.mean()) and r.wins == int((d < 0).sum())
        assert r.ci_low <= r.mean <= r.ci_high


def test_a_study_trial_reproduces_experiment_run_bit_for_bit(first_run):
    """A final re-run and a finished search trial give, metric for metric, what the Python API gives
    with the same hyperparameters, seed and stored baselines (on the CPU, bit for bit)."""
    from falw_ray.data.registry import load_dataset
    from falw_ray.experiment import Experiment
    from falw_ray.store import BaselineStore
    from falw_ray.baselines import stored_baselines

    study, result, _, tmp = first_run
    store = BaselineStore(tmp / "store" / "baselines")
    cells = {c.id: c for c in study.cells}
    search = result.trials[(result.trials["status"] == "finished") & result.trials["falw"]]
    for row in (result.final[result.final["falw"]].iloc[0], search.iloc[0]):
        cell = cells[row["cell"]]
        base, _ = stored_baselines(cell.at_seed(int(row["seed"])), store, load_dataset("digits"))
        got = Experiment(baselines=base, device="cpu").run(cell.method, cell.falw, hp=cell.hp(row.to_dict()),
                                                           epochs=cell.epochs, batch_size=cell.batch_size)
        for k in ("fa", "ra", "ta", "mia"):
            assert got.metrics[k] == row[k], (row["cell"], k)
        assert got.gaps["avg_gap"] == row["avg_gap"]


def test_digits_mlflow_runs(first_run):
    study, result, uri, _ = first_run
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("digits")
    runs = client.search_runs([exp.experiment_id], max_results=10000)
    assert all(r.info.status != "RUNNING" for r in runs)
    study_run = client.get_run(result.study_run_id)
    assert study_run.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("study_run") == result.study_run_id]
    search = [r for r in children if r.data.tags.get("kind") == "trial" and r.data.tags["stage"] == "search"]
    final = [r for r in children if r.data.tags.get("kind") == "trial" and r.data.tags["stage"] == "final"]
    baselines = [r for r in children if r.data.tags.get("kind") == "baseline"]
    select = [r for r in children if r.data.tags.get("kind") == "trial" and r.data.tags["stage"] == "select"]
    assert len(search) == 9 * 3 and len(final) == 9 * 2 and len(select) == len(result.selection)
    assert len(baselines) == 4 * 2, "original + retrained for seeds 0, 10, 1 and 2"
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
    # One run per cell under the study run, its trials nested under it, carrying the cell's answer.
    cell_runs = {r.data.tags["cell"]: r for r in children if r.data.tags.get("kind") == "cell"}
    assert set(cell_runs) == set(cells)
    assert all(r.data.tags["mlflow.parentRunId"] == result.study_run_id for r in cell_runs.values())
    for r in search + final + select:
        assert r.data.tags["mlflow.parentRunId"] == cell_runs[r.data.tags["cell"]].info.run_id
        label = cells[r.data.tags["cell"]].label
        assert r.info.run_name.startswith(f"{label} s{r.data.params['seed']} {r.data.tags['stage']} "), r.info.run_name
    for cid, r in cell_runs.items():
        row = result.table[(result.table["method"] == cells[cid].method)
                           & (result.table["falw"] == ("on" if cells[cid].falw else "off"))].iloc[0]
        assert r.data.metrics["avg_gap"] == pytest.approx(row["avg_gap_mean"])
        assert r.data.metrics["avg_gap_std"] == pytest.approx(row["avg_gap_std"])
        assert r.data.metrics["seeds"] == 2 and r.info.status == "FINISHED"
        chosen = result.best[result.best["cell"] == cid].iloc[0]
        assert float(r.data.params["lr"]) == pytest.approx(chosen["lr"])
        assert r.info.run_name == cells[cid].label, "one scenario: a cell run is named by its method alone"
        if cells[cid].falw:
            pair = result.paired[result.paired["b"] == cells[cid].label].iloc[0]
            assert r.data.metrics["falw_diff"] == pytest.approx(pair["mean"])
            assert r.data.metrics["falw_wins"] == pair["wins"]
        else:
            assert "falw_diff" not in r.data.metrics
    artifacts = {a.path for a in client.list_artifacts(result.study_run_id)}
    assert {"table.csv", "table.md", "trials.csv"} <= artifacts


def test_report_rebuilds_the_table_from_mlflow(first_run):
    _, result, uri, tmp = first_run
    table = report("digits", uri, out_dir=tmp / "report")
    cols = ["scenario", "method", "falw", "avg_gap_mean", "avg_gap_std", "fa_mean", "mia_mean"]
    expected = result.table[cols].sort_values(["method", "falw"]).reset_index(drop=True)
    got = table[cols].sort_values(["method", "falw"]).reset_index(drop=True)
    assert np.allclose(got[cols[3:]].to_numpy(float), expected[cols[3:]].to_numpy(float))
    assert (tmp / "report" / "table.md").exists()


def test_second_run_trains_no_baseline(first_run):
    _, first, uri, tmp = first_run
    trained_first = first.baselines[["original", "retrained"]].to_numpy().ravel().tolist()
    assert trained_first.count("trained") == 8, "seeds 0, 10, 1 and 2: each an original and a retrained model"
    again = digits_study(trials=1, seeds=[1, 2]).run(tracking_uri=uri, storage=tmp / "store", progress=False)
    statuses = again.baselines[["original", "retrained"]].to_numpy().ravel().tolist()
    assert statuses and set(statuses) == {"hit"}


def test_fractional_gpus_pack_trials(tmp_path):
    """Two trials of 0.5 GPU share one (declared) GPU at the same time; the CPU runs them here."""
    ray.shutdown()
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
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
    from falw_ray.study.cluster.shared import SharedObjects, dataset_key

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


def test_every_epoch_evaluation_and_a_per_epoch_falw_refresh_run_in_a_study(tmp_path):
    """search.evaluate: every_epoch logs every epoch of every trial (search and final) to MLflow, and
    falw_refresh_every reaches the trials: RL + FaLW at fixed hyperparameters ends elsewhere when
    FaLW's statistics are refreshed once per epoch instead of at every step."""
    def spec(name: str, refresh: int) -> dict:
        return {"name": name, "scenarios": [{"dataset": "digits"}],
                "methods": [{"name": "rl", "falw": "on", "epochs": 3, "space": {"lr": 0.01, "tau": 0.2}}],
                "search": {"trials": 1, "evaluate": "every_epoch", "falw_refresh_every": refresh},
                "early_stopping": {"enabled": False}, "final": {"seeds": [1]}}

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    every_step = Study(spec("every_step", 1)).run(tracking_uri=uri, storage=tmp_path, progress=False)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("every_step")
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("kind") == "trial"]
    assert sorted(r.data.tags["stage"] for r in runs) == ["final", "search"]
    for r in runs:
        assert [m.step for m in client.get_metric_history(r.info.run_id, "avg_gap")] == [1, 2, 3]
    per_epoch = Study(spec("per_epoch", 0)).run(tracking_uri=uri, storage=tmp_path, progress=False)
    # The same run in this process, from the baselines the study stored: the trial computed exactly it.
    exp = Experiment({"dataset": "digits"}, store=tmp_path / "baselines", device="cpu", progress=False)
    alone = {every: exp.run("rl", True, hp={"lr": 0.01, "tau": 0.2}, epochs=3, falw_refresh_every=every)
             for every in (1, 0)}
    assert every_step.trials.iloc[0]["avg_gap"] == pytest.approx(alone[1].gaps["avg_gap"], abs=1e-9)
    assert per_epoch.trials.iloc[0]["avg_gap"] == pytest.approx(alone[0].gaps["avg_gap"], abs=1e-9)
    assert alone[1].gaps["avg_gap"] != alone[0].gaps["avg_gap"], "the refresh schedule changes the run"
