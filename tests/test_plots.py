"""A study's plots: drawn by the runner from a real small study, logged to MLflow, and redrawn by
``report`` from the MLflow store alone; plus the deviation and search plots on frames made here."""
from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from study_store import tiny_study

from falw_ray.study import plots
from falw_ray.study.report import final_frames, report, search_frame
from falw_ray.study.tracking import Tracker, per_class_from_metrics

SCENARIO = "digits-cnn-lt0.1-g1"
EXPECTED = {  # tests/data/tiny_study.yaml: ga with FaLW (lr and tau searched), ft (lr only)
    "plots/deviation_digits-cnn-lt0.1-g1.png",
    f"plots/search/{SCENARIO}/ga_falw_history.png",
    f"plots/search/{SCENARIO}/ga_falw_lr_tau.png",
    f"plots/search/{SCENARIO}/ft_history.png",
    f"plots/search/{SCENARIO}/ft_lr.png",
}


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG file, checking its signature and header chunk."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    assert data.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82"), f"{path} is truncated"
    return struct.unpack(">II", data[16:24])


FIXED_SIZE = {  # figures saved at their own size (100 dpi): deviation 12 x 7.2 in, lr (x tau) 7 x 4.8 in
    "deviation_": (1200, 720), "_lr_tau.png": (700, 480), "_lr.png": (700, 480),
}


def assert_sensible_png(path: Path) -> None:
    width, height = png_size(path)
    fixed = [size for key, size in FIXED_SIZE.items() if key in Path(path).name]
    if fixed:
        assert (width, height) == fixed[0], (path, width, height)
    else:  # Optuna's plots, cropped to what they draw (bbox_inches="tight") from 7 x 4.5 in
        assert 400 <= width <= 700 and 300 <= height <= 450, (path, width, height)
    assert 5_000 < path.stat().st_size < 400_000, (path, path.stat().st_size)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_study(tmp_path_factory)


def test_the_study_writes_its_plots(tiny):
    assert EXPECTED <= set(tiny.plots), tiny.plots
    for rel in tiny.plots:
        assert_sensible_png(tiny.results_dir / rel)


def test_the_plots_are_artifacts_of_the_study_run(tiny):
    client = MlflowClient(tiny.uri)

    def listing(path: str) -> set[str]:
        out = set()
        for a in client.list_artifacts(tiny.study_run_id, path):
            out |= listing(a.path) if a.is_dir else {a.path}
        return out

    assert EXPECTED <= listing("plots")
    assert "search_space.json" in {a.path for a in client.list_artifacts(tiny.study_run_id)}


def test_per_class_fa_is_in_mlflow(tiny):
    """The deviation plots' data: per-class FA on every final re-run (as the runner saw it) and on
    the retrained baseline, so the plots can be rebuilt from MLflow alone."""
    tracker = Tracker(tiny.uri, tiny.experiment)
    tracker.connect()
    final, reference, original = final_frames(tracker, tiny.study_run_id)
    assert len(final) == 2 and len(reference) == 1 and len(original) == 1
    assert set(final["seed"]) == set(reference["seed"]) == set(original["seed"]), "one final seed, its own baselines"
    assert len(original["fa_per_class"].iloc[0]) == 10
    runs = {r.info.run_id: r for r in tracker.children(tiny.study_run_id, "trial", "tags.stage = 'final'")}
    assert set(tiny.final_per_class) == set(runs)
    for run_id, expected in tiny.final_per_class.items():
        got = per_class_from_metrics(runs[run_id].data.metrics)
        assert len(got) == 10 and np.allclose(got, expected, equal_nan=True)
    retrained = list(reference["fa_per_class"].iloc[0])
    assert len(retrained) == 10 and all(0.0 <= v <= 100.0 for v in retrained), retrained
    gaps = plots.deviation_frame(final, reference)
    assert len(gaps) == 2 * 10 and set(gaps["method"]) == {"ga", "ft"} and gaps["gap"].notna().all()
    for run_id, per_class in tiny.final_per_class.items():  # one seed: each gap is that run's FA - Retrain's
        method = runs[run_id].data.tags["method"]
        got = gaps[gaps["method"] == method].sort_values("cls")
        assert got["cls"].tolist() == list(range(10))
        assert np.allclose(got["gap"], np.asarray(per_class) - np.asarray(retrained)), (method, got["gap"].tolist())


def test_report_redraws_every_plot_from_mlflow_alone(tiny, tmp_path):
    """With the runner's result files out of the way, ``report`` writes the same plot files."""
    hidden = tiny.results_dir.with_name(tiny.results_dir.name + ".hidden")
    tiny.results_dir.rename(hidden)
    try:
        table = report(tiny.experiment, tiny.uri, out_dir=tmp_path / "again")
    finally:
        hidden.rename(tiny.results_dir)
    written = {str(p.relative_to(tmp_path / "again")) for p in table.attrs["paths"]}
    assert {"table.csv", "table.md"} <= written
    assert set(tiny.plots) <= written, set(tiny.plots) - written
    for rel in tiny.plots:
        assert_sensible_png(tmp_path / "again" / rel)
        assert (tmp_path / "again" / rel).read_bytes() == (tiny.results_dir / rel).read_bytes(), f"{rel} differs"
    assert table["method"].iloc[0] == "retrain" and set(table["method"]) == {"retrain", "original", "ga", "ft"}


def test_report_reads_the_search_back(tiny):
    tracker = Tracker(tiny.uri, tiny.experiment)
    tracker.connect()
    trials = search_frame(tracker, tiny.study_run_id)
    assert len(trials) == 4 and set(trials["status"]) == {"finished"}
    assert trials.loc[trials["method"] == "ga", "tau"].notna().all()
    assert trials.loc[trials["method"] == "ft", "tau"].isna().all()
    # The same trials, values and runs as the runner's own trials.csv, read back from MLflow alone.
    ran = pd.read_csv(tiny.results_dir / "trials.csv", dtype={"trial_id": str})
    ran = ran[ran["cell"].isin(trials["cell"])]
    got = trials.set_index("trial_id").sort_index()
    want = ran.set_index("trial_id").sort_index()
    assert list(got.index) == list(want.index)
    for col in ("cell", "method", "status", "mlflow_run_id"):
        assert got[col].tolist() == want[col].tolist(), col
    assert got["falw"].astype(bool).tolist() == want["falw"].astype(bool).tolist()
    for col in ("avg_gap", "lr", "tau"):
        assert np.allclose(got[col].astype(float), want[col].astype(float), equal_nan=True), col
    space = tracker.search_space(tiny.study_run_id)
    assert set(space) == {f"{SCENARIO}/ga+falw", f"{SCENARIO}/ft"}
    ga, ft = space[f"{SCENARIO}/ga+falw"], space[f"{SCENARIO}/ft"]
    assert set(ga) == {"lr", "tau"} and set(ft) == {"lr"}
    assert (ga["lr"].low, ga["lr"].high, ga["lr"].log) == (1e-3, 1e-2, True), "tiny_study.yaml's lr range"
    assert (ga["tau"].low, ga["tau"].high, ga["tau"].log) == (0.0, 0.5, False), "FaLW's default tau range"
    assert (ft["lr"].low, ft["lr"].high, ft["lr"].log) == (1e-4, 0.1, True), "FT's default lr range"
    for cell, params in space.items():
        rows = trials[trials["cell"] == cell]
        for name, p in params.items():
            assert rows[name].between(p.low, p.high).all(), (cell, name, rows[name].tolist())


# ------------------------------------------------------------------ on frames made here (fast)


def synthetic_final(seeds=(0, 1, 2), classes=9):
    """Methods that under-forget head classes and over-forget tail ones, FaLW shrinking both."""
    rng = np.random.default_rng(0)
    reference = {("s", s): list(rng.uniform(60, 90, classes)) for s in seeds}
    rows = []
    for method in ("ga", "rl", "ft"):
        for falw in ((False,) if method == "ft" else (False, True)):
            for s in seeds:
                dev = np.linspace(12.0, -15.0, classes) * (0.25 if falw else 1.0)
                rows.append({"scenario": "s", "method": method, "falw": falw, "seed": s, "status": "finished",
                             "fa_per_class": list(np.asarray(reference[("s", s)]) + dev)})
    return pd.DataFrame(rows), reference


def test_deviation_frame_is_per_seed_against_its_own_retrain():
    final, reference = synthetic_final()
    gaps = plots.deviation_frame(final, reference)
    ga = gaps[(gaps["method"] == "ga") & ~gaps["falw"]].sort_values("cls")
    assert np.allclose(ga["gap"], np.linspace(12.0, -15.0, 9)) and np.allclose(ga["std"], 0)
    on = gaps[(gaps["method"] == "ga") & gaps["falw"]].sort_values("cls")
    assert np.allclose(on["gap"], 0.25 * np.linspace(12.0, -15.0, 9)) and np.allclose(on["std"], 0)
    assert len(gaps) == 5 * 9, "ga and rl with and without FaLW, ft without: 5 series of 9 classes"
    assert set(gaps["seeds"]) == {3}
    # a reference keyed by scenario alone serves every seed
    one = plots.deviation_frame(final[final["seed"] == 0], {"s": reference[("s", 0)]})
    assert np.allclose(one[(one["method"] == "ga") & ~one["falw"]].sort_values("cls")["gap"], np.linspace(12, -15, 9))


def test_deviation_plot_one_png_per_scenario(tmp_path):
    final, reference = synthetic_final()
    other = final.assign(scenario="t")
    reference.update({("t", s): v for (_, s), v in list(reference.items())})
    paths = plots.deviation_plot(pd.concat([final, other]), reference, tmp_path)
    assert [p.name for p in paths] == ["deviation_s.png", "deviation_t.png"]
    for p in paths:
        assert_sensible_png(p)


def synthetic_trials(n=8):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        status = "diverged" if i == 3 else "stopped early" if i % 3 == 2 else "finished"
        rows.append({"cell": "s/ga+falw", "method": "ga", "falw": True, "status": status, "lr": 10 ** rng.uniform(-3, -2),
                     "tau": rng.uniform(0, 0.5), "avg_gap": 100.0 if status == "diverged" else rng.uniform(0.5, 5)})
        rows.append({"cell": "s/ft", "method": "ft", "falw": False, "status": "finished", "lr": 10 ** rng.uniform(-3, -2),
                     "tau": np.nan, "avg_gap": rng.uniform(0.5, 5)})
    return pd.DataFrame(rows)


def test_search_plots_per_cell(tmp_path):
    paths = plots.search_plots(synthetic_trials(), None, tmp_path)
    names = {str(p.relative_to(tmp_path)) for p in paths}
    assert names == {"search/s/ga_falw_history.png", "search/s/ga_falw_importances.png", "search/s/ga_falw_lr_tau.png",
                     "search/s/ft_history.png", "search/s/ft_lr.png"}, "no importances for a one-parameter cell"
    for p in paths:
        assert_sensible_png(p)


def test_the_rebuilt_optuna_study_mirrors_the_search():
    trials = synthetic_trials()
    ga = trials[trials["cell"] == "s/ga+falw"]
    space = plots.infer_space(ga)
    assert set(space) == {"lr", "tau"} and space["lr"][2] is True and space["tau"][2] is False
    study = plots.cell_study(ga, space)
    assert len(study.trials) == 8
    assert [t.state.name for t in study.trials] == ["FAIL" if s == "diverged" else "COMPLETE" for s in ga["status"]], \
        "the diverged trial carries no value"
    for t, row in zip(study.trials, ga.itertuples()):
        assert t.params == pytest.approx({"lr": row.lr, "tau": row.tau})
        assert t.value == (None if row.status == "diverged" else pytest.approx(row.avg_gap))
    finite = ga[ga["status"] != "diverged"]
    assert study.best_value == pytest.approx(finite["avg_gap"].min())


def test_too_few_trials_draw_no_importances(tmp_path):
    trials = synthetic_trials(n=2)
    names = {p.name for p in plots.search_plots(trials, None, tmp_path)}
    assert "ga_falw_importances.png" not in names and "ga_falw_history.png" in names


def test_a_failing_plot_warns_and_never_raises(tmp_path):
    final, reference = synthetic_final()
    broken = pd.DataFrame({"lr": [0.1]})  # no cell column: the search plots cannot be drawn
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = plots.write_all(final, reference, broken, None, tmp_path)
    assert [p.name for p in paths] == ["deviation_s.png"]
    said = [str(w.message) for w in caught]
    assert len(said) == 1 and "search plots failed" in said[0], said
