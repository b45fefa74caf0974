"""Study results as tables: every trial, the best configuration per cell, and the final mean +- std table."""
from __future__ import annotations

import numpy as np
import pandas as pd

SUMMARY = ("fa", "ra", "ta", "mia", "avg_gap")
LABELS = {"fa": "FA", "ra": "RA", "ta": "TA", "mia": "MIA", "avg_gap": "Avg. Gap", "seconds": "Time (s)", "rte": "RTE"}


def best_per_cell(trials: pd.DataFrame, cells: dict) -> pd.DataFrame:
    """The lowest final Avg. Gap per cell among trials that ran every epoch and did not diverge
    (early-stopped trials count only when no trial of the cell finished)."""
    rows = []
    for cell_id, group in trials.groupby("cell", sort=False):
        ok = group[(group["status"] == "finished")]
        pick = ok if len(ok) else group[group["status"] != "error"]
        if not len(pick):
            continue
        rows.append(pick.loc[pick["avg_gap"].idxmin()])
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
