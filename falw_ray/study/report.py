"""Rebuild a study's tables from the MLflow store alone: no Ray, no result files needed."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .results import final_table, format_table, to_markdown
from .tracking import Tracker, TrackingError


def final_frames(tracker: Tracker, study_run: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(final re-runs, retrained references) of one study run, as recorded in MLflow."""
    rows = []
    for run in tracker.children(study_run, "trial", "tags.stage = 'final' and attributes.status = 'FINISHED'"):
        p, m, t = run.data.params, run.data.metrics, run.data.tags
        if t.get("diverged") == "true" or "avg_gap" not in m:
            continue
        rows.append({"scenario": t["label"], "method": p["method"], "falw": p["falw"] == "True", "seed": int(p["seed"]),
                     **{k: m.get(k) for k in ("fa", "ra", "ta", "mia", "avg_gap", "rte")}, "seconds": m.get("elapsed")})
    seeds = {(r["scenario"], r["seed"]) for r in rows}
    refs = []
    for run in tracker.children(study_run, "baseline", "tags.role = 'retrained'"):
        p, m = run.data.params, run.data.metrics
        key = (p.get("label"), int(p["seed"]))
        if key in seeds:
            refs.append({"scenario": key[0], "seed": key[1], **{k: m[k] for k in ("fa", "ra", "ta", "mia")},
                         "seconds": m["train_seconds"]})
    return pd.DataFrame(rows), pd.DataFrame(refs).drop_duplicates(["scenario", "seed"])


def report(study: str, tracking_uri: str | None = None, out_dir: str | Path | None = None, run_id: str | None = None):
    """The final table of ``study`` (an experiment name) from its latest study run, or from ``run_id``."""
    tracker = Tracker(tracking_uri, study)
    tracker.connect()
    study_run = run_id or tracker.latest_study_run()
    if study_run is None:
        raise TrackingError(f"no study run of {study!r} in MLflow at {tracker.uri}")
    final, reference = final_frames(tracker, study_run)
    if final.empty:
        raise TrackingError(f"study run {study_run} of {study!r} has no finished final-stage runs yet")
    table = final_table(final, reference)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "table.csv", index=False)
        (out / "table.md").write_text(to_markdown(format_table(table)))
    return table
