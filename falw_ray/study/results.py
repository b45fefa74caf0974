"""Study results as tables: every trial, the best configuration per cell, and the final mean +- std table."""
from __future__ import annotations

import numpy as np
import pandas as pd

SUMMARY = ("fa", "ra", "ta", "mia", "avg_gap")
LABELS = {"fa": "FA", "ra": "RA", "ta": "TA", "mia": "MIA", "avg_gap": "Avg. Gap", "seconds": "Time (s)", "rte": "RTE"}


def best_of(outcomes: list[tuple[str, float]]) -> int | None:
    """Which of a cell's trials, given as (status, avg_gap) in the order they were created, is its
    best: the lowest Avg. Gap among those that ran every epoch and did not diverge (early-stopped and
    diverged ones count only when none finished, failed ones never), the earliest on a tie."""
    finished = [i for i, (status, _) in enumerate(outcomes) if status == "finished"]
    pool = finished or [i for i, (status, _) in enumerate(outcomes) if status != "error"]
    scored = [i for i in pool if not np.isnan(outcomes[i][1])]
    return min(scored, key=lambda i: outcomes[i][1]) if scored else None


def best_per_cell(trials: pd.DataFrame, cells: dict) -> pd.DataFrame:
    """The best trial of each cell (see :func:`best_of`)."""
    rows = []
    for cell_id, group in trials.groupby("cell", sort=False):
        best = best_of(list(zip(group["status"], group["avg_gap"].astype(float))))
        if best is not None:
            rows.append(group.iloc[best])
    return pd.DataFrame(rows).reset_index(drop=True)


def final_table(final: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per scenario, method and FaLW, with Retrain's own row first per scenario."""
    cols = [*SUMMARY, "seconds", "rte"]
    frames = [reference.assign(method="retrain", falw="-", avg_gap=0.0, rte=1.0)] if len(reference) else []
    frames.append(final.assign(falw=final["falw"].map({True: "on", False: "off"})))
    data = pd.concat(frames, ignore_index=True)
    grouped = data.groupby(["scenario", "method", "falw"], sort=False)[cols]
    table = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=0).add_suffix("_std"))
    table["seeds"] = grouped.size()
    table = table.reset_index()
    best = table[table["method"] != "retrain"].groupby("scenario")["avg_gap_mean"].idxmin()
    table["best"] = table.index.isin(best.values)
    return table


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout: 'mean +- std' strings, the best Avg. Gap per scenario marked."""
    out = table[["scenario", "method", "falw"]].copy()
    for c in (*SUMMARY, "seconds", "rte"):
        out[LABELS[c]] = [f"{m:.2f} ± {s:.2f}" for m, s in zip(table[f"{c}_mean"], table[f"{c}_std"])]
    out["Avg. Gap"] = [f"**{v}**" if b else v for v, b in zip(out["Avg. Gap"], table["best"])]
    return out


def to_markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.4g}"
    return str(v)
