"""Study results as tables: every trial, the configuration chosen per cell, the final mean +- std table
with Retrain's and the original model's rows, paired differences between cells, and range warnings."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ...columns import CELL_METRICS, LABELS, METRICS, OBJECTIVE, RETRAIN_ROW
from ...console import fit_table, shorten, width as terminal_width, wrap
from .trials import DIVERGED, ERROR, FINISHED


def ranked(outcomes: list[tuple[str, float]]) -> list[int]:
    """A cell's trials, given as (status, avg_gap) in the order they were created, best first: by
    Avg. Gap among those that ran every epoch and did not diverge (early-stopped and diverged ones
    count only when none finished, failed ones never), the earlier first on a tie."""
    finished = [i for i, (status, _) in enumerate(outcomes) if status == FINISHED]
    pool = finished or [i for i, (status, _) in enumerate(outcomes) if status != ERROR]
    return sorted((i for i in pool if not np.isnan(outcomes[i][1])), key=lambda i: (outcomes[i][1], i))


def best_of(outcomes: list[tuple[str, float]]) -> int | None:
    """The best of a cell's trials by :func:`ranked`'s rule, or None when none has a result."""
    order = ranked(outcomes)
    return order[0] if order else None


def selection_gap(status: str, gap: float) -> float:
    """What one selection run adds to its candidate's mean (see :func:`choose`): its Avg. Gap when
    it ran every epoch or diverged (the worst gap, on purpose); NaN for one that failed."""
    return gap if status in (FINISHED, DIVERGED) else math.nan


def choose(candidate_gaps: list[list[float]]) -> int:
    """Which of a cell's re-evaluated candidates (Avg. Gap per selection seed, candidates in search
    rank order) goes to the final stage: the lowest mean; a candidate with a failed run never wins
    over one without; the better search rank on a tie."""
    def mean(gaps: list[float]) -> float:
        return math.inf if not gaps or any(math.isnan(g) for g in gaps) else float(np.mean(gaps))
    return min(range(len(candidate_gaps)), key=lambda i: (mean(candidate_gaps[i]), i))


def best_per_cell(trials: pd.DataFrame, cells: dict) -> pd.DataFrame:
    """The best trial of each cell (see :func:`best_of`)."""
    rows = []
    for cell_id, group in trials.groupby("cell", sort=False):
        best = best_of(list(zip(group["status"], group[OBJECTIVE].astype(float))))
        if best is not None:
            rows.append(group.iloc[best])
    return pd.DataFrame(rows).reset_index(drop=True)


REFERENCE_ROWS = ("retrain", "original")
"""Rows that are not unlearning methods: Retrain (the target, gap 0) and the original model itself
("do nothing": the gap every method starts from and must beat)."""


def final_table(final: pd.DataFrame, reference: pd.DataFrame, original: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean and std over seeds per scenario, method and FaLW, with Retrain's row and the original
    model's own row (its gaps to Retrain: doing nothing) first per scenario."""
    cols = list(METRICS)
    frames = [reference.assign(method="retrain", falw="-", **RETRAIN_ROW)] if len(reference) else []
    if original is not None and len(original):
        frames.append(original.assign(method="original", falw="-", seconds=0.0, rte=0.0))
    frames.append(final.assign(falw=final["falw"].map({True: "on", False: "off"})))
    data = pd.concat(frames, ignore_index=True)
    grouped = data.groupby(["scenario", "method", "falw"], sort=False)[cols]
    table = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=0).add_suffix("_std"))
    table["seeds"] = grouped.size()
    table = table.reset_index()
    first = {sc: i for i, sc in enumerate(dict.fromkeys(data["scenario"]))}
    table = table.sort_values("scenario", key=lambda col: col.map(first), kind="stable").reset_index(drop=True)
    methods = table[~table["method"].isin(REFERENCE_ROWS)]
    low = methods.groupby("scenario")[f"{OBJECTIVE}_mean"].transform("min").round(2)
    table["best"] = table.index.isin(methods.index[methods[f"{OBJECTIVE}_mean"].round(2) == low])
    return table


def format_table(table: pd.DataFrame, markdown: bool = False) -> pd.DataFrame:
    """The paper's layout: 'mean ± std' strings; the best Avg. Gap per scenario (every row that ties
    at two decimals) in bold for Markdown, marked in a column of its own for the console."""
    out = table[["scenario", "method", "falw"]].copy()
    for c in METRICS:
        out[LABELS[c]] = [f"{m:.2f} ± {s:.2f}" for m, s in zip(table[f"{c}_mean"], table[f"{c}_std"])]
    if markdown:
        best = LABELS[OBJECTIVE]
        out[best] = [f"**{v}**" if b else v for v, b in zip(out[best], table["best"])]
    else:
        out["best"] = ["*" if b else "" for b in table["best"]]
    return out


METHOD_ROOM = 24
"""At most this many columns for a method's name in a console table (a plugin's long name is cut)."""


def _by_scenario(frame: pd.DataFrame, lines_of, columns: int) -> list[str]:
    """Per scenario (in the frame's order): its name as a heading, then the lines ``lines_of`` gives
    for its rows."""
    out = []
    for scenario in dict.fromkeys(frame["scenario"]):
        out += ["" if out else None, shorten(str(scenario), columns)]
        out += lines_of(frame["scenario"] == scenario)
    return [line for line in out if line is not None]


def console_table(table: pd.DataFrame, columns: int | None = None) -> str:
    """The final table as the console shows it, no line wider than ``columns`` (the terminal's):
    the scenario as a heading above its rows, then method, FaLW and as many metrics as fit; the
    metrics that do not (Time and RTE on 100 columns) follow in a second block under the same
    heading. table.csv and table.md keep every column on one row."""
    columns = columns or terminal_width()
    shown = format_table(table)
    shown["method"] = [shorten(m, METHOD_ROOM, seps="_") for m in shown["method"]]
    header = ["method", "falw"]
    for c in METRICS:  # "best" sits beside the Avg. Gap it marks, in whichever block that is
        header += [LABELS[c], "best"] if c == OBJECTIVE else [LABELS[c]]
    all_rows = [list(row) for row in shown[header].itertuples(index=False)]

    def lines_of(mask) -> list[str]:
        rows = [r for r, keep in zip(all_rows, mask) if keep]
        blocks = fit_table(header, rows, 2, columns, glued=frozenset({header.index("best")}), widths_from=all_rows)
        return [line for k, block in enumerate(blocks) for line in ([""] if k else []) + block]

    return "\n".join(_by_scenario(shown, lines_of, columns))


def console_paired(paired: pd.DataFrame, columns: int | None = None) -> str:
    """Paired differences as the console shows them: per scenario heading, its pairs' rows (the
    pair, mean difference, interval, wins, p), the pair's names cut to fit ``columns``."""
    columns = columns or terminal_width()
    shown = format_paired(paired)
    header = list(shown.columns[1:])
    rest = sum(max(len(header[i]), *(len(str(v)) for v in shown[header[i]])) + 2 for i in range(1, len(header)))
    room = max(12, columns - 2 - rest)
    shown["difference"] = [shorten(d, room, seps=" ") for d in shown["difference"]]
    all_rows = [[str(v) for v in row] for row in shown[header].itertuples(index=False)]

    def lines_of(mask) -> list[str]:
        rows = [r for r, keep in zip(all_rows, mask) if keep]
        blocks = fit_table(header, rows, 1, columns, widths_from=all_rows)
        return [line for k, block in enumerate(blocks) for line in ([""] if k else []) + block]

    return "\n".join(_by_scenario(shown, lines_of, columns))


def show(table: pd.DataFrame, paired: pd.DataFrame, warnings: list[str], columns: int | None = None) -> str:
    """The final table, the paired differences and the range warnings, as the console shows them:
    no line wider than ``columns`` (the terminal's), every value of the files there."""
    columns = columns or terminal_width()
    parts = [console_table(table, columns)]
    if len(paired):
        parts.append("\n".join(wrap("paired Avg. Gap differences over the final seeds (negative: the second is "
                                    "closer to Retrain):", columns)) + "\n" + console_paired(paired, columns))
    if warnings:
        parts.append("\n".join(["chosen values at the edge of their search range:",
                                *wrap("\n".join(f"  {w}" for w in warnings), columns)]))
    return "\n\n".join(parts)


def paired_difference(a: pd.DataFrame, b: pd.DataFrame, metric: str = OBJECTIVE) -> dict:
    """``b - a`` on ``metric``, paired by seed (both ran on the same baselines and splits): mean,
    std, a 95% t interval, how often b was lower (wins), and a paired t-test's two-sided p-value."""
    from scipy import stats

    joined = a[["seed", metric]].merge(b[["seed", metric]], on="seed", suffixes=("_a", "_b")).dropna()
    d = (joined[f"{metric}_b"] - joined[f"{metric}_a"]).to_numpy(dtype=np.float64)
    n = len(d)
    out = {"n": n, "mean": float(d.mean()) if n else math.nan, "std": float(d.std(ddof=1)) if n > 1 else math.nan,
           "ci_low": math.nan, "ci_high": math.nan, "wins": int((d < 0).sum()), "ties": int((d == 0).sum()),
           "p_value": math.nan}
    if n > 1:
        half = stats.t.ppf(0.975, n - 1) * out["std"] / math.sqrt(n)
        out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
        if out["std"] > 0:
            out["p_value"] = float(stats.ttest_rel(joined[f"{metric}_b"], joined[f"{metric}_a"]).pvalue)
    return out


def paired_table(final: pd.DataFrame, pairs: list[tuple[str, str]] = ()) -> pd.DataFrame:
    """Per scenario, each method's FaLW on minus off, then each named pair of cell labels (b minus a),
    on the final seeds' Avg. Gap: negative means the second is closer to Retrain."""
    rows = []
    done = final[final["status"] == FINISHED] if "status" in final else final
    labels = done["method"] + np.where(done["falw"] & (done["method"] != "falw"), "+falw", "")
    done = done.assign(label=labels)
    for scenario, group in done.groupby("scenario", sort=False):
        wanted = [(m, f"{m}+falw") for m in group["method"].unique() if m != "falw"] + list(pairs)
        for a, b in dict.fromkeys(wanted):
            ra, rb = group[group["label"] == a], group[group["label"] == b]
            if len(ra) and len(rb):
                rows.append({"scenario": scenario, "a": a, "b": b, **paired_difference(ra, rb)})
    return pd.DataFrame(rows, columns=["scenario", "a", "b", "n", "mean", "std", "ci_low", "ci_high", "wins",
                                       "ties", "p_value"])


def format_paired(paired: pd.DataFrame) -> pd.DataFrame:
    """Paired differences for people: 'b - a', mean [95% interval], wins out of n, p."""
    def num(v: float) -> str:
        return "-" if math.isnan(v) else f"{v:+.2f}"

    return pd.DataFrame({
        "scenario": paired["scenario"], "difference": paired["b"] + " - " + paired["a"],
        f"{LABELS[OBJECTIVE]} diff": [num(v) for v in paired["mean"]],
        "95% interval": [f"[{num(lo)}, {num(hi)}]" for lo, hi in zip(paired["ci_low"], paired["ci_high"])],
        "wins": [f"{w}/{n}" for w, n in zip(paired["wins"], paired["n"])],
        "p (paired t)": ["-" if math.isnan(p) else f"{p:.3f}" for p in paired["p_value"]],
    })


def cell_summary(final: pd.DataFrame, paired: pd.DataFrame, cell_id: str, method: str, falw: bool,
                 scenario: str) -> dict[str, float]:
    """A cell's final result: mean and std over its finished final runs of every ``CELL_METRICS``,
    the number of seeds, and, for a FaLW cell, the paired difference to its FaLW-off twin
    (``falw_diff`` = on minus off, with its interval, wins and p-value)."""
    runs = final[(final["cell"] == cell_id) & (final["status"] == FINISHED)] if len(final) else final
    out: dict[str, float] = {"seeds": float(len(runs))}
    for k in CELL_METRICS:
        if len(runs) and k in runs:
            out[k] = float(runs[k].mean())
            out[f"{k}_std"] = float(runs[k].std(ddof=0))
    if falw and method != "falw" and len(paired):
        row = paired[(paired["scenario"] == scenario) & (paired["a"] == method) & (paired["b"] == f"{method}+falw")]
        if len(row):
            r = row.iloc[0]
            out.update({"falw_diff": r["mean"], "falw_diff_ci_low": r["ci_low"], "falw_diff_ci_high": r["ci_high"],
                        "falw_wins": float(r["wins"]), "falw_p_value": r["p_value"]})
    return out


EDGE = 0.02
"""A chosen value within this share of its range (log scale for log ranges) sits at the range's edge."""


def edge_warnings(chosen: pd.DataFrame, spaces: dict) -> list[str]:
    """One line per chosen hyperparameter at the edge of its searched range: the optimum may lie
    outside it. ``spaces`` maps a cell to its searched Params."""
    out = []
    for _, row in chosen.iterrows():
        for name, p in spaces.get(row["cell"], {}).items():
            v = row.get(name)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            lo, hi, x = (math.log(p.low), math.log(p.high), math.log(v)) if p.log else (p.low, p.high, float(v))
            pos = (x - lo) / (hi - lo)
            if pos <= EDGE:
                out.append(f"{row['cell']}: {name} = {v:.3g} at its lower bound {p.low:g}: widen the range")
            elif pos >= 1 - EDGE:
                out.append(f"{row['cell']}: {name} = {v:.3g} at its upper bound {p.high:g}: widen the range")
    return out


def table_notes(paired: pd.DataFrame, warnings: list[str]) -> str:
    """What table.md says under the table: the reference rows, the paired differences, the edges."""
    lines = ["", "retrain: the model retrained without the forget set (every gap is taken to it). "
             "original: the original model itself, no unlearning (the gap each method starts from).", ""]
    if len(paired):
        lines += ["Paired differences of Avg. Gap over the final seeds (second minus first; negative: the second "
                  "is closer to Retrain; wins: seeds where it is lower):", "", to_markdown(format_paired(paired))]
    if warnings:
        lines += ["Chosen values at the edge of their search range:", ""] + [f"- {w}" for w in warnings] + [""]
    return "\n".join(lines)


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
