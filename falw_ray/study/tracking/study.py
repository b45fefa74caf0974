"""The study's own MLflow run: opened (or found again by its journal's id) before any trial, given the
study's answers (best trials, files, plots, paired differences, each cell's outcome) after the last,
and closed as the study ended."""
from __future__ import annotations

import pandas as pd

from ...console import first_line
from ..record.results import cell_summary
from ..record.trials import scenario_label
from .tracker import TRACKING_ERRORS, Tracker


def open_study_run(tracker: Tracker, spec, source: str, n_cells: int, head: dict, resume: bool, say) -> str:
    """The study run a resumed study's journal names (found in whatever store ``tracker`` writes
    to), else a new one tagged with the journal's id."""
    if resume and (run := tracker.resume_study(head.get("journal"))) is not None:
        say(f"resuming study run {run}")
        return run
    return tracker.start_study(spec.name, {
        "study": spec.name, "source": source, "cells": n_cells, "trials_per_cell": spec.search.trials,
        "final_seeds": spec.final_seeds(), "selection_seeds": spec.selection.seeds,
        "selection_top_k": spec.selection.top_k}, head.get("journal", ""))


def close_study_run(tracker: Tracker, study_run: str, status: str, stage: str) -> str | None:
    """Close the study run and any trial or cell run left open; returns why MLflow could not be
    written (one line), or None."""
    try:
        if status == "KILLED":
            tracker.tag(study_run, {"interrupted_stage": stage})
        for run in tracker.unfinished_children():
            tracker.end(run, "KILLED" if status == "KILLED" else "FAILED")
        tracker.end(study_run, status)
    except TRACKING_ERRORS as e:
        return first_line(e)
    return None


def track_outcome(result, tracker: Tracker, cell_runs: dict, cells: dict) -> None:
    """The study's answers into MLflow: the chosen trials tagged ``best``, the files and plots as the
    study run's artifacts, the paired differences and the original model on the study run, each
    cell's outcome on its run, and Retrain's and the original model's rows beside the cells (the
    cells view ranks them all)."""
    for run_id in result.best["mlflow_run_id"].dropna():
        tracker.tag(run_id, {"best": "true"})
    for name, path in result.paths.items():
        if name == "plots":
            if path.is_dir() and any(path.iterdir()):
                tracker.client.log_artifacts(result.study_run_id, str(path), artifact_path="plots")
        else:
            tracker.client.log_artifact(result.study_run_id, str(path))
    tracker.log_outcome(result.paired, result.original, result.warnings)
    tracker.log_references(result.table, cells)
    log_cells(tracker, cell_runs, cells, result.best, result.final, result.paired)


def log_cells(tracker: Tracker, runs: dict, cells: dict, best: pd.DataFrame, final: pd.DataFrame,
              paired: pd.DataFrame) -> None:
    """Each cell's run gets the cell's answer (the chosen hyperparameters and its final seeds'
    summary, see results.cell_summary) and is closed: the MLflow cell view compares these rows."""
    for cid, cell in cells.items():
        run = runs.get(cid)
        if run is None:
            continue
        chosen = best[best["cell"] == cid]
        hp = {k: chosen.iloc[0][k] for k in cell.space} if len(chosen) else {}
        tracker.log_cell(run, {**hp, **{f"option.{k}": v for k, v in cell.options.items()}},
                         cell_summary(final, paired, cid, cell.method, cell.falw, scenario_label(cell.scenario)))
        tracker.end(run, "FINISHED")
