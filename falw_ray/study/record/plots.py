"""A study's plots as small PNGs: per-class deviation from Retrain, and the search of every cell.

- ``deviation_<scenario>.png``: per class, from the head (class 0, most forget samples) to the tail,
  the mean over seeds of FA_c - FA_c(Retrain) for each method, FaLW on solid and off dashed; below,
  the same deviation averaged over the head, middle and tail thirds (docs/method.md, Metrics).
  Above zero a class is under-forgotten, below zero over-forgotten.
- ``search/<scenario>/<cell>_history.png`` (every cell with a trial that finished, stopped early or
  diverged): each trial's last Avg. Gap in the order the trials started, the best so far by the
  rule that chooses a cell's configuration (results.best_of: finished trials only; stopped-early
  and diverged ones only while none has finished, drawn dashed), and the chosen configuration starred;
  ``<cell>_lr_tau.png`` (cells that search lr and tau): every trial over lr x tau coloured by its
  Avg. Gap, the chosen configuration starred; ``<cell>_lr.png`` (cells that search lr without tau):
  Avg. Gap over lr, the same way; ``<cell>_importances.png``: Optuna's parameter importances, only
  for cells that search two or more hyperparameters and have four or more finished trials.
  "Chosen" is the configuration that went to the final seeds: with a selection stage it may be
  another than the search's best (the legend then says so).

Pure functions of the study's frames: no Ray and no MLflow here. The runner draws them from its
results, ``falw-ray report`` from the MLflow store; both give the same files when both know the
chosen configuration (see :func:`write_all`). For the importances each cell's Optuna study is
rebuilt from its trials (``create_trial``, :func:`cell_study`), so the plots need no live search.
Figures are drawn with matplotlib's Agg renderer (100 dpi).
"""
from __future__ import annotations

import math
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from .results import best_of, ranked
from ...columns import EPOCH_METRICS, LABELS, METRICS, OBJECTIVE, RUN_PARAMS, TRIAL_COLUMNS, TRIAL_METRICS
from .trials import DIVERGED, FINISHED, STOPPED

DPI = 100
GAP = LABELS[OBJECTIVE]
OK_STATUSES = (FINISHED, STOPPED)
BEST_LABEL = "best so far (finished trials)"
BEST_EARLY_LABEL = "best so far (none finished yet: stopped early or diverged)"
COLOR_TRIAL, COLOR_BEST = "#4c72b0", "#c44e52"
GROUP_COLORS = {"head": "#4c72b0", "mid": "#9a9a9a", "tail": "#dd8452"}
GROUP_NAMES = {"head": "head", "mid": "middle", "tail": "tail"}
HP_SKIP = {*METRICS, *EPOCH_METRICS, *TRIAL_METRICS, *TRIAL_COLUMNS, *RUN_PARAMS, f"selection_{OBJECTIVE}",
           f"selection_{OBJECTIVE}_std", "fa_per_class", "started_at", "ended_at", "gpus", "gpu_share",
           "mlflow_run_id", "order", "best", "rank", "error", "search_rank", "selection_seeds"}
"""Columns of a trials frame that are no hyperparameter: every metric, and what places or names a trial."""
DRAW_ERRORS = (KeyError, ValueError, TypeError, OSError)
"""What drawing from a study's frames can raise, and all that is caught: a column the frames lack
(KeyError: a store written by an older version), a value numpy, matplotlib or Optuna refuse
(ValueError, TypeError: a missing value, a trial outside its search range), a file that cannot be
written (OSError). Anything else is a bug and raises."""


def _pyplot():
    """pyplot for Optuna's plots, on the Agg backend unless the process already chose one."""
    if "matplotlib.pyplot" not in sys.modules:
        import matplotlib

        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure(width: float, height: float, **kwargs):
    """A figure outside pyplot's global state, rendered by Agg."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def slug(text: str) -> str:
    """A file-name-safe form of a scenario or cell label."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "_"


ORIGINAL = "original"
"""The original model's own row (no unlearning): drawn in grey, dotted, as the gap to beat."""


def series_label(method: str, falw: bool) -> str:
    if method == ORIGINAL:
        return "original (no unlearning)"
    return f"{method} + FaLW" if falw and method != "falw" else method


# ---------------------------------------------------------------- deviation from Retrain, per class


def reference_map(reference) -> dict:
    """Retrain's per-class FA as {(scenario, seed): list} from a frame with columns scenario, seed
    and fa_per_class, or from a dict keyed by scenario or by (scenario, seed)."""
    if reference is None:
        return {}
    if isinstance(reference, pd.DataFrame):
        if reference.empty or "fa_per_class" not in reference:
            return {}
        return {(r.scenario, int(r.seed)): list(r.fa_per_class) for r in reference.itertuples()
                if r.fa_per_class is not None and not _is_nan(r.fa_per_class)}
    return dict(reference)


def _is_nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def deviation_frame(final_df: pd.DataFrame, reference_per_class) -> pd.DataFrame:
    """Per scenario, method, FaLW and class: mean and std over seeds of FA_c - FA_c(Retrain),
    each seed against the model retrained with that seed. Columns: scenario, method, falw,
    cls, gap, std, seeds."""
    refs = reference_map(reference_per_class)
    gaps: dict[tuple, list[np.ndarray]] = {}
    for r in final_df.itertuples():
        values = getattr(r, "fa_per_class", None)
        if values is None or _is_nan(values):
            continue
        ref = refs.get((r.scenario, int(r.seed)), refs.get(r.scenario))
        if ref is None:
            continue
        fa, rf = np.asarray(values, dtype=float), np.asarray(ref, dtype=float)
        if fa.shape != rf.shape:
            continue
        gaps.setdefault((r.scenario, r.method, bool(r.falw)), []).append(fa - rf)
    rows = []
    for (scenario, method, falw), vectors in gaps.items():
        stack = np.vstack(vectors)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, std = np.nanmean(stack, axis=0), np.nanstd(stack, axis=0)
        for c, (m, s) in enumerate(zip(mean, std)):
            rows.append({"scenario": scenario, "method": method, "falw": falw, "cls": c, "gap": float(m),
                         "std": float(s), "seeds": len(vectors)})
    return pd.DataFrame(rows, columns=["scenario", "method", "falw", "cls", "gap", "std", "seeds"])


def _groups(num_classes: int) -> dict[str, np.ndarray]:
    from ...metrics import class_groups

    return class_groups(num_classes)


def deviation_plot(final_df: pd.DataFrame, reference_per_class, out_dir: str | Path) -> list[Path]:
    """One PNG per scenario, ``out_dir/deviation_<scenario>.png`` (see the module docstring)."""
    frame = deviation_frame(final_df, reference_per_class)
    out_dir = Path(out_dir)
    paths = [_draw(out_dir / f"deviation_{slug(scenario)}.png", lambda path: _deviation_figure(scenario, data, path))
             for scenario, data in frame.groupby("scenario", sort=False)]
    return [p for p in paths if p is not None]


def _draw(path: Path, draw) -> Path | None:
    """What ``draw(path)`` gives (the file it wrote, or None for nothing to draw); if it fails, None and
    one warning naming the file and why, the other plots still drawn: a study's results must not be
    lost to a figure."""
    try:
        return draw(path)
    except DRAW_ERRORS as e:
        warnings.warn(f"falw_ray: plot {path} not drawn: {type(e).__name__}: {e}", RuntimeWarning, stacklevel=2)
        return None


def method_order() -> list[str]:
    """Every method in the registry's order: the order of the series and, by position, their
    colour, the same in every study and whatever order the runs come in."""
    from ...unlearn import METHODS, PRESETS

    return [m for m in METHODS if m != "retrain"] + [m for m in PRESETS if m not in METHODS]


def _deviation_figure(scenario: str, data: pd.DataFrame, path: Path) -> Path:
    from matplotlib import colormaps

    num_classes = int(data["cls"].max()) + 1
    groups = _groups(num_classes)
    known = method_order()
    methods = sorted(set(data["method"]), key=lambda m: (known.index(m) if m in known else len(known), m))
    palette = colormaps["tab10"].colors
    color = {m: palette[(known.index(m) if m in known else len(known) + i) % len(palette)]
             for i, m in enumerate(methods)}
    color[ORIGINAL] = "#7f7f7f"
    series = sorted({(m, f) for m, f in zip(data["method"], data["falw"])},
                    key=lambda s: (methods.index(s[0]), s[1]))
    seeds = int(data["seeds"].max())

    fig = _figure(12, 7.2, layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=[2.2, 1])
    for name, rows in groups.items():
        if len(rows):
            top.axvspan(rows[0] - 0.5, rows[-1] + 0.5, color=GROUP_COLORS[name], alpha=0.07, lw=0)
            top.text((rows[0] + rows[-1]) / 2, 1.0, GROUP_NAMES[name], transform=top.get_xaxis_transform(),
                     ha="center", va="bottom", fontsize=9, color="#555555")
    top.axhline(0, color="black", lw=0.9)
    marker = num_classes <= 40
    for method, falw in series:
        rows = data[(data["method"] == method) & (data["falw"] == falw)].sort_values("cls")
        style = ":" if method == ORIGINAL else "-" if falw else "--"
        top.plot(rows["cls"], rows["gap"], color=color[method], ls=style, lw=1.8 if falw else 1.4,
                 marker=("o" if falw else "s") if marker else None, ms=4, label=series_label(method, falw))
    top.set_xlim(-0.5, num_classes - 0.5)
    if num_classes <= 20:
        top.set_xticks(range(num_classes))
    top.set_xlabel("class, sorted head → tail (class 0 has the most forget samples)")
    top.set_ylabel("FA − FA(Retrain) (pp)\n> 0 under-forgotten, < 0 over-forgotten", fontsize=9)
    top.set_title(f"{scenario}: per-class forget accuracy gap to Retrain, head → tail "
                  f"(mean over {seeds} seed{'s' if seeds != 1 else ''}; solid = FaLW on, dashed = off)",
                  fontsize=10, pad=16)
    top.grid(axis="y", alpha=0.3)
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False, title="method")

    width = 0.8 / 3
    for s, (method, falw) in enumerate(series):
        rows = data[(data["method"] == method) & (data["falw"] == falw)].sort_values("cls")
        gap = rows["gap"].to_numpy()
        for g, (name, idx) in enumerate(groups.items()):
            vals = gap[idx] if len(idx) else np.array([])
            vals = vals[~np.isnan(vals)]
            value = float(vals.mean()) if len(vals) else 0.0
            bottom.bar(s + (g - 1) * width, value, width, color=GROUP_COLORS[name], edgecolor="white",
                       label=GROUP_NAMES[name] if s == 0 else None)
    bottom.axhline(0, color="black", lw=0.9)
    bottom.set_xticks(range(len(series)), [series_label(m, f) for m, f in series], fontsize=9, rotation=25,
                      ha="right", rotation_mode="anchor")
    bottom.set_ylabel("mean over\nthe third (pp)", fontsize=9)
    bottom.set_title("the same gap averaged over head / middle / tail classes", fontsize=9)
    bottom.grid(axis="y", alpha=0.3)
    bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False, title="classes")
    return _save(fig, path)


# ------------------------------------------------------------------------------- search plots


def _space_of(cell, trials: pd.DataFrame) -> dict:
    """{name: (low, high, log, integer)} of a cell's searched hyperparameters: the cell's own space
    when known (a Cell, or a mapping of Param-like objects), else inferred from the trials."""
    space = getattr(cell, "space", cell)
    if isinstance(space, Mapping) and space:
        out = {}
        for name, p in space.items():
            if name not in trials:
                continue
            low, high = float(p.low), float(p.high)
            vals = pd.to_numeric(trials[name], errors="coerce").dropna()
            if len(vals):
                low, high = min(low, float(vals.min())), max(high, float(vals.max()))
            out[name] = (low, high, bool(p.log) and low > 0, bool(getattr(p, "integer", False)))
        return out
    return infer_space(trials)


def infer_space(trials: pd.DataFrame, method: str | None = None) -> dict:
    """The searched hyperparameters of one cell's trials: numeric columns that vary between trials
    (and lr, always searched). Ranges and log scales come from the method's declared space when it
    has the parameter, widened to what the trials used; otherwise from the trials alone."""
    from ...unlearn import TAU, get_method

    declared = {}
    method = method or (trials["method"].iloc[0] if "method" in trials and len(trials) else None)
    try:
        declared = dict(get_method(method).params) if method else {}
    except ValueError:  # a method this version does not know
        declared = {}
    declared.setdefault("tau", TAU)
    out = {}
    for name in trials.columns:
        if name in HP_SKIP:
            continue
        vals = pd.to_numeric(trials[name], errors="coerce")
        if vals.isna().all():
            continue
        vals = vals.dropna()
        if vals.nunique() < 2 and name != "lr":
            continue
        low, high = float(vals.min()), float(vals.max())
        p = declared.get(name)
        if p is not None:
            low, high, log, integer = min(low, p.low), max(high, p.high), bool(p.log), bool(p.integer)
        else:
            log = low > 0 and high / low >= 100
            integer = bool((vals == vals.round()).all()) and high - low >= 2
        if high <= low:
            high = low + (abs(low) * 0.1 or 1.0)
        out[name] = (low, high, log and low > 0, integer)
    return out


def _ordered(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials in the order the search created them: by an ``order`` column when there is one
    (the MLflow runs' start times), else as listed (Tune's results come in creation order)."""
    if "order" in trials and trials["order"].notna().any():
        keys = ["order", "trial_id"] if "trial_id" in trials else ["order"]
        return trials.sort_values(keys, kind="stable", na_position="last").reset_index(drop=True)
    return trials.reset_index(drop=True)


def _outcomes(trials: pd.DataFrame) -> list[tuple[str, float]]:
    """(status, Avg. Gap) per trial, as results.ranked and results.best_of take them."""
    gap = pd.to_numeric(trials[OBJECTIVE], errors="coerce").astype(float)
    return list(zip(trials["status"].astype(str), gap))


def best_so_far(trials: pd.DataFrame) -> pd.DataFrame:
    """After each of a cell's trials (in the order the search created them), the trial the study's
    rule would choose from the trials so far (results.best_of: the lowest Avg. Gap among finished
    trials; stopped-early and diverged ones only while none has finished). Columns: ``value`` (its
    Avg. Gap, NaN while none has a result), ``pick`` (its position, -1 while none) and ``finished`` (whether the
    pick ran every epoch: from the first finished trial on, ``value`` is the running minimum over
    the finished trials alone)."""
    outcomes = _outcomes(trials)
    rows = []
    for i in range(len(outcomes)):
        pick = best_of(outcomes[:i + 1])
        rows.append({"value": outcomes[pick][1] if pick is not None else math.nan,
                     "pick": pick if pick is not None else -1,
                     "finished": pick is not None and outcomes[pick][0] == FINISHED})
    return pd.DataFrame(rows, columns=["value", "pick", "finished"])


def _is_true(v) -> bool:
    return str(v).strip().lower() in ("true", "1", "1.0")


def _position_of(trials: pd.DataFrame, space: dict, row: Mapping) -> int | None:
    """Where in ``trials`` (one cell, reset index) the configuration of ``row`` is: the search trial
    with the same ``trial_id``, else one with the same searched hyperparameters (the rule's best of
    those, else the lowest Avg. Gap, as the runner's choice of the row it tags ``best``)."""
    tid = row.get("trial_id")
    if "trial_id" in trials and tid is not None and not _is_nan(tid):
        hits = np.flatnonzero(trials["trial_id"].astype(str).to_numpy() == str(tid))
        if len(hits):
            return int(hits[0])
    names = [n for n in space if n in trials and pd.notna(pd.to_numeric(row.get(n), errors="coerce"))]
    if not names:
        return None
    same = np.logical_and.reduce([
        np.isclose(pd.to_numeric(trials[n], errors="coerce").to_numpy(dtype=float),
                   float(pd.to_numeric(row.get(n), errors="coerce")), rtol=1e-9, atol=0.0)
        for n in names])
    matches = set(np.flatnonzero(same).tolist())
    if not matches:
        return None
    by_rule = [i for i in ranked(_outcomes(trials)) if i in matches]
    if by_rule:
        return by_rule[0]
    gap = pd.to_numeric(trials[OBJECTIVE], errors="coerce")
    return min(matches, key=lambda i: (math.inf if pd.isna(gap.iloc[i]) else float(gap.iloc[i]), i))


def chosen_position(trials: pd.DataFrame, space: dict, chosen: pd.DataFrame | None = None) -> int | None:
    """Where in ``trials`` (one cell, in creation order, reset index) the configuration the study
    chose for this cell is:

    - from ``chosen``, a frame with the cell's row(s) (``cell`` and its hyperparameters, e.g. best.csv,
      or the cell's final re-runs, which ran the chosen configuration): with a selection stage this
      may be another configuration than the search's best;
    - else from a ``best`` column of the trials (MLflow's ``best`` tag on the chosen search trial);
    - else by the rule alone (results.best_of), which is the choice when no selection stage ran."""
    cell = trials["cell"].iloc[0] if "cell" in trials and len(trials) else None
    if chosen is not None and len(chosen) and "cell" in chosen and cell is not None:
        for _, row in chosen[chosen["cell"] == cell].iterrows():
            pos = _position_of(trials, space, row)
            if pos is not None:
                return pos
    if "best" in trials:
        marked = np.flatnonzero([_is_true(v) for v in trials["best"]])
        if len(marked):
            return int(marked[0])
    return best_of(_outcomes(trials))


def chosen_label(trials: pd.DataFrame, pos: int) -> str:
    """The star's legend entry: "chosen", its search Avg. Gap, and whether the selection seeds chose it
    over the search's best (the rule's pick, the end of the best-so-far line)."""
    gap = pd.to_numeric(trials[OBJECTIVE], errors="coerce").iloc[pos]
    value = f": {GAP} {gap:.2f}" if pd.notna(gap) and trials["status"].iloc[pos] != DIVERGED else ""
    other = pos != best_of(_outcomes(trials))
    return f"chosen{value}" + (" (by the selection seeds)" if other else "")


def cell_study(trials: pd.DataFrame, space: dict):
    """The cell's search as an Optuna study, one trial per Tune trial in the order they started, under
    the rule that chooses a cell's configuration (results.ranked): a finished trial is COMPLETE with
    its last Avg. Gap; a stopped-early one is PRUNED, its last Avg. Gap the intermediate value at the
    epoch it stopped (a gap after fewer epochs is not comparable with a finished one's, so it stays
    out of Optuna's best value and of the importances, as the rule keeps it out of the choice);
    diverged, failed and unfinished trials are FAIL, with no value: a diverged trial's Avg. Gap (100)
    is the worst finite objective it is given so the sampler avoids its region, not a measurement,
    and would otherwise count in the importances. The history plot draws stopped-early and diverged
    trials from the trials themselves (see :func:`history_figure`)."""
    import optuna
    from optuna.distributions import FloatDistribution, IntDistribution
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {n: (IntDistribution(int(lo), int(hi), log=log) if integer else FloatDistribution(lo, hi, log=log))
             for n, (lo, hi, log, integer) in space.items()}
    study = optuna.create_study(direction="minimize")
    for _, row in _ordered(trials).iterrows():
        params = {}
        for n, d in dists.items():
            v = pd.to_numeric(row.get(n), errors="coerce")
            if pd.notna(v):
                params[n] = round(float(v)) if isinstance(d, IntDistribution) else float(v)
        used = {n: dists[n] for n in params}
        value = pd.to_numeric(row.get(OBJECTIVE), errors="coerce")
        measured = pd.notna(value) and math.isfinite(value)
        status = row.get("status")
        attrs = {"status": status}
        if status == FINISHED and measured:
            study.add_trial(create_trial(params=params, distributions=used, value=float(value), user_attrs=attrs))
        elif status == STOPPED and measured:
            step = pd.to_numeric(row.get("epochs_done"), errors="coerce")
            study.add_trial(create_trial(params=params, distributions=used, state=TrialState.PRUNED, user_attrs=attrs,
                                         intermediate_values={int(step) if pd.notna(step) else 0: float(value)}))
        else:
            study.add_trial(create_trial(params=params, distributions=used, state=TrialState.FAIL, user_attrs=attrs))
    return study


def search_plots(trials_df: pd.DataFrame, cells: Mapping | None, out_dir: str | Path,
                 chosen: pd.DataFrame | None = None) -> list[Path]:
    """Per cell: optimisation history, parameter importances when possible, and Avg. Gap over
    lr x tau (or over lr), under ``out_dir/search/<scenario>/`` (see the module docstring).

    ``cells``: cell id -> Cell (or -> {name: Param-like}); a cell not in it has its space
    inferred from the trials (:func:`infer_space`). ``chosen``: the configuration chosen per cell
    (see :func:`chosen_position`), starred in the history and lr (x tau) plots."""
    out_dir = Path(out_dir)
    cells = cells or {}
    paths: list[Path] = []
    for cell_id, trials in trials_df.groupby("cell", sort=False):
        scenario, _, label = str(cell_id).rpartition("/")
        folder = out_dir / "search" / slug(scenario or "study")
        stem = slug(label or cell_id)
        trials = _ordered(trials)
        space = _space_of(cells.get(cell_id), trials)
        pick = chosen_position(trials, space, chosen)
        if _drawn(trials).any():
            paths.append(_draw(folder / f"{stem}_history.png",
                               lambda path: _save(history_figure(trials, str(cell_id), pick), path)))
            title = f"{cell_id}: hyperparameter importances for {GAP} (finished trials)"
            paths.append(_draw(folder / f"{stem}_importances.png",
                               lambda path: _importances(cell_study(trials, space), space, title, path)))
        if "lr" in space:
            name = "lr_tau" if "tau" in space else "lr"
            paths.append(_draw(folder / f"{stem}_{name}.png",
                               lambda path: _save(landscape_figure(trials, space, str(cell_id), pick), path)))
    return [p for p in paths if p is not None]


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _titled(ax, title: str) -> None:
    for loc in ("left", "right"):
        ax.set_title("", loc=loc)
    ax.set_title(title, fontsize=10)


def _save_pyplot(ax, path: Path) -> Path:
    plt = _pyplot()
    fig = ax.figure
    fig.set_size_inches(7, 4.5)
    fig.set_dpi(DPI)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _drawn(trials: pd.DataFrame) -> np.ndarray:
    """Which trials the history plot draws: finished, stopped early and diverged ones with a value."""
    gap = pd.to_numeric(trials[OBJECTIVE], errors="coerce").to_numpy(dtype=float)
    return np.isfinite(gap) & trials["status"].astype(str).isin((FINISHED, STOPPED, DIVERGED)).to_numpy()


def history_figure(trials: pd.DataFrame, cell_id: str, chosen: int | None = None):
    """The cell's optimisation history (trials in creation order, reset index): each trial's last
    Avg. Gap (finished filled, stopped early hollow, diverged a red x along the top), the best so far
    by the rule that chooses the configuration (:func:`best_so_far`: solid over finished trials,
    dashed while none had finished), and the chosen configuration starred."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(7, 4.5, layout="constrained")
    ax = fig.subplots()
    status = trials["status"].astype(str).to_numpy()
    gap = pd.to_numeric(trials[OBJECTIVE], errors="coerce").to_numpy(dtype=float)
    x = np.arange(len(trials))
    drawn = _drawn(trials)
    full, early, diverged = drawn & (status == FINISHED), drawn & (status == STOPPED), drawn & (status == DIVERGED)
    measured = gap[full | early]
    ax.scatter(x[full], gap[full], s=36, color=COLOR_TRIAL, edgecolors="black", linewidths=0.4, label="finished",
               zorder=3)
    if early.any():
        ax.scatter(x[early], gap[early], s=36, facecolors="none", edgecolors=COLOR_TRIAL, linewidths=1.4,
                   label=f"stopped early ({GAP} at its last rung)", zorder=3)
    best = best_so_far(trials)
    values, finished = best["value"].to_numpy(dtype=float), best["finished"].to_numpy(dtype=bool)
    if finished.any():
        ax.plot(x[finished], values[finished], drawstyle="steps-post", color=COLOR_BEST, lw=1.8, label=BEST_LABEL,
                zorder=2)
    before = ~finished & np.isfinite(values)
    if before.any():
        ax.plot(x[before], values[before], drawstyle="steps-post", color=COLOR_BEST, lw=1.2, ls="--",
                label=BEST_EARLY_LABEL, zorder=2)
    top = None
    if len(measured):  # the scale of measured gaps; a diverged trial's 100 would flatten them
        lo, hi = float(measured.min()), float(measured.max())
        pad = 0.08 * (hi - lo) or 0.1 * (abs(hi) or 1.0)
        top = hi + 2 * pad
        ax.set_ylim(lo - pad, top + pad)
    if diverged.any():
        ax.scatter(x[diverged], np.full(int(diverged.sum()), top) if top is not None else gap[diverged], marker="x",
                   color="red", s=40, label="diverged" + (" (off the scale)" if top is not None else ""), zorder=3)
    if chosen is not None and drawn[chosen]:
        y = top if status[chosen] == DIVERGED and top is not None else gap[chosen]
        ax.scatter([x[chosen]], [y], marker="*", s=320, facecolors="none", edgecolors="black", linewidths=1.2,
                   label=chosen_label(trials, chosen), zorder=4)
    hidden = len(trials) - int(drawn.sum())
    note = f" ({hidden} failed or unfinished, not shown)" if hidden else ""
    ax.set_title(f"{cell_id}: optimisation history{note}", fontsize=10)
    ax.set_xlim(-0.5, max(len(trials) - 0.5, 0.5))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial (in the order they started)")
    ax.set_ylabel(f"{GAP} (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def _importances(study, space: dict, title: str, path: Path) -> Path | None:
    """Optuna's importances (its default evaluator, PED-ANOVA) over the finished trials (the COMPLETE
    ones of :func:`cell_study`): only for two or more searched hyperparameters and at least four
    finished trials with different values (fewer say nothing)."""
    from optuna.visualization.matplotlib import plot_param_importances

    done = [t for t in study.trials if t.value is not None]
    if len(space) < 2 or len(done) < 4 or len({t.value for t in done}) < 2:
        return None
    plt = _pyplot()
    with plt.rc_context(), warnings.catch_warnings():  # Optuna sets a global style: keep it in here
        warnings.simplefilter("ignore")  # its notes on few trials per regime, not failures
        ax = plot_param_importances(study, target_name=GAP)
        _titled(ax, title)
        return _save_pyplot(ax, path)


def landscape_figure(trials: pd.DataFrame, space: dict, cell_id: str, chosen: int | None = None):
    """Every trial at its (lr, tau), coloured by its last Avg. Gap; the configuration the study chose
    starred (:func:`chosen_position`). Without tau: Avg. Gap over lr. Hollow markers: stopped
    early; red x: diverged or failed. ``trials``: one cell, reset index."""
    from matplotlib.colors import Normalize

    fig = _figure(7, 4.8, layout="constrained")
    ax = fig.subplots()
    gap = pd.to_numeric(trials[OBJECTIVE], errors="coerce")
    status = trials["status"].astype(str)
    ok = status.isin(OK_STATUSES) & gap.notna()
    lr = pd.to_numeric(trials["lr"], errors="coerce")
    has_tau = "tau" in space
    y = pd.to_numeric(trials["tau"], errors="coerce") if has_tau else gap.copy()
    if ok.any():
        norm = Normalize(vmin=float(gap[ok].min()), vmax=float(gap[ok].max()) if gap[ok].nunique() > 1
                         else float(gap[ok].min()) + 1e-9)
        full = ok & (status == FINISHED)
        early = ok & (status == STOPPED)
        sc = ax.scatter(lr[full], y[full], c=gap[full], cmap="RdYlGn_r", norm=norm, s=60, edgecolors="black",
                        linewidths=0.5, label="finished", zorder=3)
        if early.any():
            ax.scatter(lr[early], y[early], facecolors="none", edgecolors=[sc.cmap(norm(v)) for v in gap[early]],
                       s=60, linewidths=1.6, label="stopped early", zorder=3)
        if has_tau:
            fig.colorbar(sc, ax=ax, label=f"{GAP} (lower is better)")
    bad = ~ok & lr.notna()
    if not has_tau:  # no tau axis: a trial without a measured gap sits at the top of the measured ones
        y[~ok] = float(gap[ok].max()) if ok.any() else 1.0
    if bad.any():
        ax.scatter(lr[bad], y[bad], marker="x", color="red", s=50, label="diverged / failed", zorder=3)
    if chosen is not None and pd.notna(lr.iloc[chosen]) and pd.notna(y.iloc[chosen]):
        ax.scatter([lr.iloc[chosen]], [y.iloc[chosen]], marker="*", s=320, facecolors="none", edgecolors="black",
                   linewidths=1.2, label=chosen_label(trials, chosen), zorder=4)
    lo, hi, log, _ = space["lr"]
    if log:
        ax.set_xscale("log")
    ax.set_xlim(lo / 1.2 if log else lo - 0.02 * (hi - lo), hi * 1.2 if log else hi + 0.02 * (hi - lo))
    ax.set_xlabel("lr (learning rate)" + (", log scale" if log else ""))
    if has_tau:
        tlo, thi, _, _ = space["tau"]
        ax.set_ylim(tlo - 0.03 * (thi - tlo), thi + 0.03 * (thi - tlo))
        ax.set_ylabel("tau (FaLW balancing factor)")
        ax.set_title(f"{cell_id}: {GAP} over lr × tau ({int(ok.sum())} trials)", fontsize=10)
    else:
        ax.set_ylabel(f"{GAP} (lower is better)")
        ax.set_title(f"{cell_id}: {GAP} over lr ({int(ok.sum())} trials)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


# ---------------------------------------------------------------------------------------- all


def write_all(final_df: pd.DataFrame, reference, trials_df: pd.DataFrame, cells: Mapping | None,
              out_dir: str | Path, original: pd.DataFrame | None = None,
              chosen: pd.DataFrame | None = None) -> list[Path]:
    """Every plot of a study into ``out_dir``: the deviation plots from the finished final re-runs
    and Retrain's per-class FA (``reference``: see :func:`reference_map`), and the search plots
    of every cell, starring the configuration chosen per cell: ``chosen`` (best.csv's rows) when
    given, else the one the final re-runs ran (``final_df`` rows with ``cell`` and hyperparameters),
    else the trials' ``best`` column, else the rule (see :func:`chosen_position`). A plot that its
    data or its file keep from being drawn (:data:`DRAW_ERRORS`) is one warning naming it and why,
    never an exception: a study's results must not be lost to a figure."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    final_ok = final_df[final_df["status"] == FINISHED] if "status" in final_df else final_df
    if original is not None and len(original):
        final_ok = pd.concat([original.assign(method=ORIGINAL, falw=False), final_ok], ignore_index=True)
    for what, draw in (("deviation", lambda: deviation_plot(final_ok, reference, out_dir)),
                       ("search", lambda: search_plots(trials_df, cells, out_dir,
                                                      chosen if chosen is not None else final_df))):
        try:
            paths.extend(draw())
        except DRAW_ERRORS as e:  # the frames themselves: each figure is caught where it is drawn
            warnings.warn(f"falw_ray: {what} plots failed ({out_dir}): {type(e).__name__}: {e}", RuntimeWarning,
                          stacklevel=2)
    return paths
