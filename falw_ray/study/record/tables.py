"""A study's tables, built from its journal alone: one row per trial and stage, each cell's chosen
configuration, the final table beside Retrain and the original model, the paired differences, and
the files and plots written from them."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ...columns import MEASURED, OBJECTIVE, TRIAL_COLUMNS, TRIAL_METRICS
from ...metrics import gaps as gaps_to
from .results import (best_per_cell, choose, edge_warnings, final_table, format_table, paired_table, selection_gap,
                      show, table_notes, to_markdown)
from .trials import ERROR, FINISHED, scenario_label, stage_config


@dataclass
class StudyResult:
    trials: pd.DataFrame
    best: pd.DataFrame
    final: pd.DataFrame
    table: pd.DataFrame
    baselines: pd.DataFrame
    results_dir: Path
    study_run_id: str
    tracking_uri: str
    seconds: float = 0.0
    paths: dict = field(default_factory=dict)
    selection: pd.DataFrame = field(default_factory=pd.DataFrame)
    paired: pd.DataFrame = field(default_factory=pd.DataFrame)
    warnings: list[str] = field(default_factory=list)
    reference: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Retrain's metrics per final seed."""
    original: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The original model's metrics and gaps per final seed: what doing nothing scores."""

    def failures(self) -> dict[str, int]:
        """Each distinct error of the study's failed trials (one line each) and how many trials it ended."""
        errors = [e for frame in (self.trials, self.selection, self.final) if "error" in frame
                  for e in frame.loc[frame["status"] == ERROR, "error"].fillna("failed")]
        return {e: errors.count(e) for e in dict.fromkeys(errors)}

    def show(self, columns: int | None = None) -> str:
        """The final table, the paired differences and the range warnings, as the console shows them
        (see :func:`results.show`), within ``columns`` (the terminal's width when not given)."""
        return show(self.table, self.paired, self.warnings, columns)


def trials_frame(records: dict[str, dict], cells: dict, runs: dict, stage: str) -> pd.DataFrame:
    """One row per completed trial of a stage, from the journal, in the order the searcher created
    them; an error row names its own trial (cell, seed, hyperparameters) and the error."""
    rows = []
    for record in sorted(records.values(), key=lambda r: r["seq"]):
        if record["stage"] != stage:
            continue
        config = stage_config(record["config"])
        cell = cells[config["cell"]]
        m = record["result"]
        scenario = cell.at_seed(config["seed"]) if "seed" in config else cell.scenario
        rows.append({
            **dict(zip(TRIAL_COLUMNS, (cell.id, scenario_label(scenario), cell.method, cell.falw, scenario.seed,
                                       record["trial_id"], record["status"], m.get("epoch", 0)))),
            **({"rank": config["rank"]} if "rank" in config else {}),
            **cell.hp(config),
            **{k: m.get(k, float("nan")) for k in TRIAL_METRICS},
            "fa_per_class": m.get("fa_per_class"),
            "started_at": m.get("started_at"), "ended_at": m.get("reported_at"), "gpus": m.get("gpus"),
            "gpu_share": m.get("gpu_share"),
            "mlflow_run_id": runs.get(record["trial_id"]),
            **({"error": record.get("error", "")} if record["status"] == ERROR else {}),
        })
    # No trial of the stage completed (every one failed before reporting): the frame still has its
    # columns, so the tables of what did finish are written.
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=EMPTY_TRIALS)


EMPTY_TRIALS = ["cell", "scenario", "method", "falw", "seed", "trial_id", "status", "epochs_done", *TRIAL_METRICS,
                "fa_per_class", "started_at", "ended_at", "gpus", "gpu_share", "mlflow_run_id"]


def open_stage(records: dict[str, dict], n_search: int, selecting: bool) -> str:
    """The earliest stage a study cut off between trials had not finished."""
    if sum(r["stage"] == "search" for r in records.values()) < n_search:
        return "search"
    return "select" if selecting and not any(r["stage"] == "final" for r in records.values()) else "final"


def chosen(best: pd.DataFrame, selection: pd.DataFrame, trials: pd.DataFrame, cells: dict) -> pd.DataFrame:
    """Each cell's configuration that went to the final seeds, as its search trial's row: the search's
    best, or, where a selection stage ran, the candidate with the lowest mean Avg. Gap over the
    selection seeds (results.choose, the searcher's own rule), with that mean and its spread."""
    if not len(selection):
        return best
    rows = []
    for _, row in best.iterrows():
        runs = selection[selection["cell"] == row["cell"]]
        if not len(runs):
            rows.append(row)
            continue
        space = list(cells[row["cell"]].space)
        ranks = sorted(runs["rank"].unique())
        gaps = [[selection_gap(s, g) for s, g in zip(runs[runs["rank"] == r]["status"], runs[runs["rank"] == r][OBJECTIVE])]
                for r in ranks]
        pick = ranks[choose(gaps)]
        picked = runs[runs["rank"] == pick]
        same = trials[(trials["cell"] == row["cell"])
                      & np.logical_and.reduce([trials[k] == picked.iloc[0][k] for k in space])]
        out = same.sort_values(OBJECTIVE, kind="stable").iloc[0].copy() if len(same) else row.copy()
        out["search_rank"] = int(pick) + 1
        out[f"selection_{OBJECTIVE}"] = float(picked[OBJECTIVE].mean())
        out[f"selection_{OBJECTIVE}_std"] = float(picked[OBJECTIVE].std(ddof=0))
        out["selection_seeds"] = len(picked)
        rows.append(out)
    return pd.DataFrame(rows).reset_index(drop=True)


def original_frame(events: list[dict], keys: set[str]) -> pd.DataFrame:
    """The original model's own metrics and gaps to Retrain per final seed: what doing nothing scores."""
    rows = []
    for e in events:
        if e["key"] in keys:
            o, r = e["metrics"]["original"], e["metrics"]["retrained"]
            g = gaps_to(o, r)
            rows.append({"scenario": scenario_label(e["scenario"]), "seed": e["scenario"].seed,
                         **{k: o[k] for k in MEASURED}, **g, "fa_per_class": o.get("fa_per_class")})
    return pd.DataFrame(rows)


def reference_frame(events: list[dict], keys: set[str]) -> pd.DataFrame:
    rows = []
    for e in events:
        if e["key"] in keys:
            m = e["metrics"]["retrained"]
            rows.append({"scenario": scenario_label(e["scenario"]), "seed": e["scenario"].seed,
                         **{k: m[k] for k in MEASURED}, "seconds": e["metrics"]["retrain_seconds"],
                         "fa_per_class": m.get("fa_per_class")})
    return pd.DataFrame(rows)


def study_tables(records: dict, cells: dict, runs: dict, events: list[dict], final_keys: set[str], compare,
                 results_dir: Path, study_run: str, tracking_uri: str) -> "StudyResult":
    """Every table of the study from its journal's trials and its baselines' events."""
    trials, selection, final = (trials_frame(records, cells, runs, stage) for stage in ("search", "select", "final"))
    best = chosen(best_per_cell(trials, cells), selection, trials, cells)
    if best.empty:  # no cell has a trial that ran: the tables keep their columns
        best = trials.iloc[0:0]
    final["seconds"] = final["elapsed"]
    reference, original = reference_frame(events, final_keys), original_frame(events, final_keys)
    order = {cid: i for i, cid in enumerate(cells)}  # the study's order of cells, not the order runs ended
    ranked = final.iloc[np.argsort(final["cell"].map(order).to_numpy(), kind="stable")] if len(final) else final
    baselines = pd.DataFrame([{k: (v.name if k == "scenario" else v) for k, v in e.items() if k != "metrics"}
                              for e in events])
    return StudyResult(trials=trials, best=best, final=final, baselines=baselines, results_dir=results_dir,
                       table=final_table(ranked[ranked["status"] == FINISHED], reference, original),
                       study_run_id=study_run, tracking_uri=tracking_uri, selection=selection,
                       paired=paired_table(final, compare), reference=reference, original=original,
                       warnings=edge_warnings(best, {cid: c.space for cid, c in cells.items()}))

def write_tables(result: StudyResult, cells: dict | None = None) -> dict:
    """The result files and plots (written whether or not MLflow can be reached)."""
    d = result.results_dir
    d.mkdir(parents=True, exist_ok=True)
    paths = {
        "trials": d / "trials.csv", "best": d / "best.csv", "final": d / "final.csv",
        "table": d / "table.csv", "table_md": d / "table.md", "baselines": d / "baselines.csv",
        "paired": d / "paired.csv",
    }
    if len(result.selection):
        paths["selection"] = d / "selection.csv"
        write_atomic(paths["selection"], result.selection.to_csv(index=False))
    write_atomic(paths["paired"], result.paired.to_csv(index=False))
    for name, frame in (("trials", result.trials), ("best", result.best), ("final", result.final),
                        ("table", result.table), ("baselines", result.baselines)):
        write_atomic(paths[name], frame.to_csv(index=False))
    write_atomic(paths["table_md"], to_markdown(format_table(result.table, markdown=True))
                 + table_notes(result.paired, result.warnings))
    from .plots import write_all

    paths["plots"] = d / "plots"
    write_all(result.final, result.reference, result.trials, cells, paths["plots"], result.original,
              chosen=result.best)
    return paths


def write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` through a synced temporary file and a rename: a crash or a full disk
    leaves the old file or the new one, never a truncated one. Errors name the file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(f"{path}: could not write ({e.strerror or e}); the previous version, if any, is kept") from None
