"""Rebuild a study's table and plots from the MLflow store alone: no Ray, no result files needed."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..columns import MEASURED, METRICS, OBJECTIVE, RUN_PARAMS
from ..metrics import gaps
from .record.results import final_table, format_table, paired_table, table_notes, to_markdown
from .record.trials import FINISHED, RUNNING, status
from .tracking.tracker import Tracker, TrackingError, per_class_from_metrics

LOGGED_AS = {"seconds": "elapsed"}
"""A table column a trial's run logs under another name."""


def default_report_dir(study: str) -> Path:
    """Where ``report`` writes when not told: ``falw_results/<study>/report`` under the working
    directory (beside the study's own results when it ran here with the default storage)."""
    return Path.cwd() / "falw_results" / study / "report"


def final_frames(tracker: Tracker, study_run: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(final re-runs, retrained references, original models) of one study run, as recorded in MLflow; all with
    ``fa_per_class`` (None where the study predates per-class logging). The re-runs come in the
    order they started, which is the study's order of cells, as in the runner's own frames."""
    rows = []
    runs = tracker.children(study_run, "trial", "tags.stage = 'final' and attributes.status = 'FINISHED'")
    for run in sorted(runs, key=lambda r: r.info.start_time):
        p, m, t = run.data.params, run.data.metrics, run.data.tags
        if t.get("diverged") == "true" or OBJECTIVE not in m:
            continue
        rows.append({"scenario": t["label"], "method": p["method"], "falw": p["falw"] == "True", "seed": int(p["seed"]),
                     **{k: m.get(LOGGED_AS.get(k, k)) for k in METRICS},
                     "status": FINISHED, "fa_per_class": per_class_from_metrics(m)})
    seeds = {(r["scenario"], r["seed"]) for r in rows}
    roles: dict[str, list] = {"retrained": [], "original": []}
    for run in tracker.children(study_run, "baseline"):
        p, m = run.data.params, run.data.metrics
        key = (p.get("label"), int(p["seed"]))
        if key in seeds and p.get("role") in roles:
            roles[p["role"]].append({"scenario": key[0], "seed": key[1], **{k: m[k] for k in MEASURED},
                                     "seconds": m["train_seconds"], "fa_per_class": per_class_from_metrics(m)})
    columns = ["scenario", "seed", *MEASURED, "seconds", "fa_per_class"]
    refs = pd.DataFrame(roles["retrained"], columns=columns).drop_duplicates(["scenario", "seed"])
    retrained = {(r["scenario"], r["seed"]): r for r in roles["retrained"]}
    original = []
    for o in roles["original"]:
        r = retrained.get((o["scenario"], o["seed"]))
        if r is not None and (o["scenario"], o["seed"]) not in {(x["scenario"], x["seed"]) for x in original}:
            have_classes = o["fa_per_class"] is not None and r["fa_per_class"] is not None
            g = gaps(o if have_classes else {**o, "fa_per_class": []}, r if have_classes else {**r, "fa_per_class": []})
            original.append({**o, **g})
    return pd.DataFrame(rows), refs, pd.DataFrame(original)


def trial_status(run) -> str:
    """A trial's status by schema's rule, its last result read back from its MLflow run. A run still
    open and not diverged is RUNNING; one closed without end tags (tracked before they existed) counts
    as having run every epoch: nothing recorded says otherwise."""
    p, m, t = run.data.params, run.data.metrics, run.data.tags
    diverged = t.get("diverged") == "true"
    if run.info.status not in ("FINISHED", "FAILED") and not diverged:
        return RUNNING
    epochs = int(p["epochs"]) if "epochs" in p else None
    done = int(t["epochs_done"]) if "epochs_done" in t else epochs
    result = {"epoch": done, "diverged": diverged, **({OBJECTIVE: m[OBJECTIVE]} if OBJECTIVE in m else {})}
    return status(result, epochs, error=run.info.status == "FAILED")


def search_frame(tracker: Tracker, study_run: str) -> pd.DataFrame:
    """The search stage's trials of one study run as recorded in MLflow: cell, method, FaLW, status,
    hyperparameters and last Avg. Gap, in the order the trials started."""
    rows = []
    for run in tracker.children(study_run, "trial", "tags.stage = 'search'"):
        p, m, t = run.data.params, run.data.metrics, run.data.tags
        hp = {}
        for k, v in p.items():
            if k not in RUN_PARAMS:
                try:
                    hp[k] = float(v)
                except ValueError:
                    pass
        rows.append({"cell": t.get("cell"), "scenario": t.get("label"), "method": p.get("method"),
                     "falw": p.get("falw") == "True", "status": trial_status(run), "order": run.info.start_time,
                     "trial_id": t.get("trial_id"), OBJECTIVE: m.get(OBJECTIVE), "mlflow_run_id": run.info.run_id,
                     "best": t.get("best") == "true",
                     **hp})
    frame = pd.DataFrame(rows)
    return frame.sort_values("order", kind="stable").reset_index(drop=True) if len(frame) else frame


def report(study: str, tracking_uri: str | None = None, out_dir: str | Path | None = None, run_id: str | None = None,
           plots: bool = True):
    """The final table of ``study`` (an experiment name) from its latest completed study run (never
    one still running or interrupted), or from ``run_id``.

    Writes ``table.csv``, ``table.md`` and (``plots``) every plot of the study (see
    :mod:`falw_ray.study.record.plots`) into ``out_dir``, by default :func:`default_report_dir`, all from
    the MLflow store alone. The files written are listed in ``table.attrs["paths"]``."""
    from .record import plots as study_plots

    tracker = Tracker(tracking_uri, study)
    tracker.connect()
    study_run = run_id or tracker.latest_study_run(finished=True)
    if study_run is None:
        latest = tracker.latest_study_run()
        raise TrackingError(f"no completed study run of {study!r} in MLflow at {tracker.uri}" + (
            f" (the latest, {latest}, is {tracker.client.get_run(latest).info.status}; name a run with --run)"
            if latest else ""))
    final, reference, original = final_frames(tracker, study_run)
    if final.empty:
        raise TrackingError(f"study run {study_run} of {study!r} has no finished final-stage runs yet")
    table = final_table(final.drop(columns=["fa_per_class"]), reference.drop(columns=["fa_per_class"]),
                        original.drop(columns=["fa_per_class"], errors="ignore"))
    paired = paired_table(final)
    out = Path(out_dir) if out_dir is not None else default_report_dir(study)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "table.csv", out / "table.md"]
    table.to_csv(paths[0], index=False)
    paths[1].write_text(to_markdown(format_table(table, markdown=True)) + table_notes(paired, []))
    if plots:
        trials = search_frame(tracker, study_run)
        paths += study_plots.write_all(final, reference, trials, tracker.search_space(study_run), out / "plots",
                                       original)
    table.attrs["paths"] = paths
    return table
