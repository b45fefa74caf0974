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

from falw_ray.study.record import plots
from falw_ray.study.report import final_frames, report, search_frame
from falw_ray.study.tracking.tracker import Tracker, per_class_from_metrics

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


FIXED_SIZE = {  # saved at their own size (100 dpi): deviation 12 x 7.2 in, lr (x tau) 7 x 4.8 in, history 7 x 4.5 in
    "deviation_": (1200, 720), "_lr_tau.png": (700, 480), "_lr.png": (700, 480), "_history.png": (700, 450),
}


def assert_sensible_png(path: Path) -> None:
    width, height = png_size(path)
    fixed = [size for key, size in FIXED_SIZE.items() if key in Path(path).name]
    if fixed:
        assert (width, height) == fixed[0], (path, width, height)
    else:  # Optuna's importances, cropped to what they draw (bbox_inches="tight") from 7 x 4.5 in
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
    state = {"finished": "COMPLETE", "stopped early": "PRUNED", "diverged": "FAIL"}
    assert [t.state.name for t in study.trials] == [state[s] for s in ga["status"]], \
        "the rule's view: only finished trials carry a value; a diverged one's 100 is no measurement"
    for t, row in zip(study.trials, ga.itertuples()):
        assert t.params == pytest.approx({"lr": row.lr, "tau": row.tau})
        assert t.value == (pytest.approx(row.avg_gap) if row.status == "finished" else None)
        if row.status == "stopped early":
            assert list(t.intermediate_values.values()) == [pytest.approx(row.avg_gap)]
    finished = ga[ga["status"] == "finished"]
    assert study.best_value == pytest.approx(finished["avg_gap"].min())


# The history's best line, the stars and the rule that chooses a cell's configuration (results.best_of).

RULE_TRIALS = [  # (status, Avg. Gap) in the order the search created them
    ("stopped early", 0.5), ("diverged", 100.0), ("finished", 3.0), ("stopped early", 0.2), ("finished", 2.0),
    ("finished", 2.5), ("error", np.nan), ("finished", 1.0), ("stopped early", 0.1), ("finished", 1.5),
]


def rule_trials() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame([{"cell": "s/ga+falw", "method": "ga", "falw": True, "trial_id": f"t{i}", "status": status,
                          "epochs_done": 5 if status == "finished" else 2, "lr": 10 ** rng.uniform(-3, -2),
                          "tau": rng.uniform(0, 0.5), "avg_gap": gap}
                         for i, (status, gap) in enumerate(RULE_TRIALS)])


def lines_by_label(fig) -> dict:
    return {line.get_label(): line for line in fig.axes[0].get_lines()}


def star(fig):
    stars = [c for c in fig.axes[0].collections if c.get_label().startswith("chosen")]
    assert len(stars) == 1, [c.get_label() for c in fig.axes[0].collections]
    return stars[0].get_offsets()[0].tolist(), stars[0].get_label()


def test_the_best_line_is_the_running_minimum_over_finished_trials_only():
    """Stopped-early trials (0.5, 0.2, 0.1: lower than any finished) and the diverged one never lower the
    line once a trial finished; before that, the rule's fallback is drawn apart (dashed)."""
    trials = rule_trials()
    finished = trials["status"] == "finished"
    running = trials["avg_gap"].where(finished).cummin().ffill()       # NaN until the first finished trial
    first = int(np.argmax(finished.to_numpy()))
    best = plots.best_so_far(trials)
    assert best["finished"].tolist() == [i >= first for i in range(len(trials))]
    assert best["value"].iloc[first:].tolist() == running.iloc[first:].tolist() == [3, 3, 2, 2, 2, 1, 1, 1]
    assert best["value"].iloc[:first].tolist() == [0.5, 0.5], "none finished yet: the rule's fallback"
    fig = plots.history_figure(trials, "s/ga+falw", plots.chosen_position(trials, plots.infer_space(trials)))
    lines = lines_by_label(fig)
    assert plots.BEST_LABEL == "best so far (finished trials)"
    solid, dashed = lines[plots.BEST_LABEL], lines[plots.BEST_EARLY_LABEL]
    assert solid.get_xdata().tolist() == list(range(first, len(trials)))
    assert solid.get_ydata().tolist() == running.iloc[first:].tolist()
    assert dashed.get_xdata().tolist() == [0, 1] and dashed.get_ydata().tolist() == [0.5, 0.5]
    assert dashed.get_linestyle() == "--"
    (x, y), label = star(fig)
    assert (x, y) == (7, 1.0) and label == "chosen: Avg. Gap 1.00", "no selection stage: the rule's pick"
    assert plots.chosen_position(trials, {}) == plots.best_of(list(zip(trials["status"], trials["avg_gap"]))) == 7


def test_the_star_marks_the_configuration_chosen_on_the_selection_seeds():
    """best.csv's chosen row (here the search's third-best), the final re-runs' configuration (cell
    and hyperparameters, no search trial id) and MLflow's best tag all put the star on it, in both
    plots; the legend says the selection seeds chose it."""
    trials = rule_trials()
    space = plots.infer_space(trials)
    picked = trials.iloc[5]                                            # finished, Avg. Gap 2.5
    best_csv = pd.DataFrame([{**picked.to_dict(), "search_rank": 3, "selection_avg_gap": 1.2}])
    final = pd.DataFrame([{"cell": "s/ga+falw", "seed": s, "trial_id": f"final{s}", "status": "finished",
                           "lr": picked["lr"], "tau": picked["tau"], "avg_gap": 1.3} for s in (1, 2, 3)])
    tagged = trials.assign(best=[i == 5 for i in range(len(trials))])
    assert plots.chosen_position(trials, space, best_csv) == 5
    assert plots.chosen_position(trials, space, final) == 5
    assert plots.chosen_position(tagged, space) == 5
    assert plots.chosen_position(trials, space, final.assign(cell="s/other")) == 7, "another cell's: the rule"
    (x, y), label = star(plots.landscape_figure(trials, space, "s/ga+falw", 5))
    assert (x, y) == pytest.approx([picked["lr"], picked["tau"]])
    assert label == "chosen: Avg. Gap 2.50 (by the selection seeds)"
    (x, y), label = star(plots.history_figure(trials, "s/ga+falw", 5))
    assert (x, y) == (5, 2.5) and label.endswith("(by the selection seeds)")
    assert "best" not in plots.infer_space(tagged), "the best tag is no hyperparameter"


def test_write_all_stars_what_it_is_told_was_chosen_else_what_the_final_runs_ran(tmp_path, monkeypatch):
    trials = rule_trials()
    final, reference = synthetic_final()
    drawn = []
    original = plots.landscape_figure

    def landscape(t, space, cell_id, pick=None):
        drawn.append(pick)
        return original(t, space, cell_id, pick)

    monkeypatch.setattr(plots, "landscape_figure", landscape)
    ran = final.assign(cell="s/ga+falw", lr=trials["lr"].iloc[4], tau=trials["tau"].iloc[4])
    plots.write_all(ran, reference, trials, None, tmp_path)
    plots.write_all(ran, reference, trials, None, tmp_path, chosen=trials.iloc[[5]])
    plots.write_all(final, reference, trials, None, tmp_path)          # the final frame has no cell: the rule
    assert drawn == [4, 5, 7]


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


def test_a_figure_that_cannot_be_drawn_is_named_and_the_others_still_drawn(tmp_path, monkeypatch):
    import optuna.visualization.matplotlib as optuna_plots

    def refuse(*args, **kwargs):
        raise ValueError("no importances for this search")

    monkeypatch.setattr(optuna_plots, "plot_param_importances", refuse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = plots.search_plots(synthetic_trials(), None, tmp_path)
    said = [str(w.message) for w in caught]
    target = tmp_path / "search/s/ga_falw_importances.png"
    assert said == [f"falw_ray: plot {target} not drawn: ValueError: no importances for this search"]
    assert {p.name for p in paths} == {"ga_falw_history.png", "ga_falw_lr_tau.png", "ft_history.png", "ft_lr.png"}


def test_a_bug_in_a_figure_is_raised_not_swallowed(tmp_path, monkeypatch):
    final, reference = synthetic_final()

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(plots, "history_figure", bug)
    with pytest.raises(ZeroDivisionError):
        plots.write_all(final, reference, synthetic_trials(), None, tmp_path)
