"""The study's result rules on hand-made frames: ranking, selection, paired differences, range edges."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from falw_ray.study.record.results import (choose, console_table, edge_warnings, final_table, format_paired, format_table,
                                    paired_difference, paired_table, ranked, show)
from falw_ray.unlearn import Param


def test_ranked_puts_finished_trials_first_and_breaks_ties_by_order():
    outcomes = [("stopped early", 0.5), ("finished", 3.0), ("finished", 2.0), ("error", math.nan),
                ("finished", 2.0), ("diverged", 100.0)]
    assert ranked(outcomes) == [2, 4, 1]
    assert ranked([("stopped early", 4.0), ("error", math.nan), ("diverged", 100.0), ("stopped early", 1.0)]) == [3, 0, 2]
    assert ranked([("error", math.nan)]) == []


def test_choose_takes_the_lowest_mean_and_never_a_failed_candidate():
    assert choose([[4.0, 6.0], [3.0, 6.5], [5.0, 5.0]]) == 1          # means 5.0, 4.75, 5.0
    assert choose([[1.0, math.nan], [9.0, 9.0]]) == 1                 # a failed run disqualifies
    assert choose([[2.0, 4.0], [3.0, 3.0]]) == 0                      # tie on the mean: better search rank


def test_paired_difference_matches_scipy_and_a_hand_computed_case():
    a = pd.DataFrame({"seed": [1, 2, 3, 4], "avg_gap": [5.0, 6.0, 7.0, 8.0]})
    b = pd.DataFrame({"seed": [4, 3, 2, 1], "avg_gap": [7.0, 5.0, 5.5, 3.0]})   # joined by seed, not by row
    d = np.array([3.0 - 5.0, 5.5 - 6.0, 5.0 - 7.0, 7.0 - 8.0])                # -2, -0.5, -2, -1
    out = paired_difference(a, b)
    assert out["n"] == 4 and out["wins"] == 4 and out["ties"] == 0
    assert out["mean"] == pytest.approx(-1.375)
    assert out["std"] == pytest.approx(np.std(d, ddof=1)) and out["std"] == pytest.approx(0.75)  # sqrt(1.6875 / 3)
    half = stats.t.ppf(0.975, 3) * np.std(d, ddof=1) / 2.0
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((-1.375 - half, -1.375 + half))
    assert out["p_value"] == pytest.approx(stats.ttest_rel([3.0, 5.5, 5.0, 7.0], [5.0, 6.0, 7.0, 8.0]).pvalue)
    # by hand: t = -1.375 / (0.75 / 2) = -3.667 on 3 degrees of freedom, two-sided p = 0.0351
    assert out["p_value"] == pytest.approx(2 * stats.t.sf(1.375 / 0.375, 3)) and out["p_value"] == pytest.approx(0.0351, abs=1e-4)


def test_paired_table_pairs_falw_on_with_off_per_scenario_and_named_pairs():
    rows = []
    for scenario in ("s1", "s2"):
        for seed in (1, 2, 3):
            rows += [{"scenario": scenario, "method": "ga", "falw": False, "seed": seed, "avg_gap": 10.0 + seed,
                      "status": "finished"},
                     {"scenario": scenario, "method": "ga", "falw": True, "seed": seed, "avg_gap": 8.0 + 2 * seed,
                      "status": "finished"},
                     {"scenario": scenario, "method": "falw", "falw": True, "seed": seed, "avg_gap": 1.0,
                      "status": "finished"}]
    table = paired_table(pd.DataFrame(rows), [("ga", "falw")])
    assert list(zip(table["scenario"], table["a"], table["b"])) == [
        ("s1", "ga", "ga+falw"), ("s1", "ga", "falw"), ("s2", "ga", "ga+falw"), ("s2", "ga", "falw")]
    first = table.iloc[0]
    assert first["mean"] == pytest.approx(0.0) and first["wins"] == 1 and first["ties"] == 1   # -1, 0, +1
    assert table.iloc[1]["mean"] == pytest.approx(-11.0) and table.iloc[1]["wins"] == 3
    shown = format_paired(table)
    assert shown.iloc[1]["difference"] == "falw - ga" and shown.iloc[1]["wins"] == "3/3"


def test_final_table_has_retrain_and_original_rows_and_bolds_every_tie():
    final = pd.DataFrame([{"scenario": "s", "method": m, "falw": f, "seed": seed, "fa": 1.0, "ra": 2.0, "ta": 3.0,
                           "mia": 4.0, "avg_gap": g, "seconds": 1.0, "rte": 0.1}
                          for m, f, g in (("ga", False, 2.0), ("ga", True, 2.0), ("rl", False, 5.0)) for seed in (1, 2)])
    reference = pd.DataFrame([{"scenario": "s", "seed": seed, "fa": 1.0, "ra": 2.0, "ta": 3.0, "mia": 4.0,
                               "seconds": 10.0} for seed in (1, 2)])
    original = pd.DataFrame([{"scenario": "s", "seed": seed, "fa": 9.0, "ra": 2.0, "ta": 3.0, "mia": 4.0,
                              "avg_gap": 0.5 * seed} for seed in (1, 2)])
    table = final_table(final, reference, original)
    assert list(zip(table["method"], table["falw"])) == [("retrain", "-"), ("original", "-"), ("ga", "off"),
                                                        ("ga", "on"), ("rl", "off")]
    assert table.loc[1, "avg_gap_mean"] == pytest.approx(0.75) and table.loc[1, "avg_gap_std"] == pytest.approx(0.25)
    assert list(table["best"]) == [False, False, True, True, False], "the original never counts as best; ties all bold"
    md = format_table(table, markdown=True)
    assert md["Avg. Gap"].tolist()[2:4] == ["**2.00 ± 0.00**"] * 2
    console = format_table(table)
    assert not any("**" in v for v in console["Avg. Gap"]) and console["best"].tolist() == ["", "", "*", "*", ""]


def test_edge_warnings_name_the_value_the_bound_and_the_fix():
    spaces = {"c/ga": {"lr": Param(1e-3, 1e-4, 1e-1, log=True), "alpha": Param(0.5, 0.0, 1.0)}}
    chosen = pd.DataFrame([{"cell": "c/ga", "lr": 1.05e-4, "alpha": 0.99},
                           {"cell": "c/ga", "lr": 3e-3, "alpha": 0.5}])
    assert edge_warnings(chosen, spaces) == [
        "c/ga: lr = 0.000105 at its lower bound 0.0001: widen the range",
        "c/ga: alpha = 0.99 at its upper bound 1: widen the range",
    ]


def test_final_table_keeps_each_scenarios_rows_together_reference_rows_first():
    final = pd.DataFrame([{"scenario": sc, "method": "ga", "falw": False, "seed": 1, "fa": 1.0, "ra": 1.0, "ta": 1.0,
                           "mia": 1.0, "avg_gap": 1.0, "seconds": 1.0, "rte": 0.1} for sc in ("g1", "g2")])
    ref = pd.DataFrame([{"scenario": sc, "seed": 1, "fa": 1.0, "ra": 1.0, "ta": 1.0, "mia": 1.0, "seconds": 9.0}
                        for sc in ("g1", "g2")])
    orig = ref.assign(avg_gap=5.0).drop(columns=["seconds"])
    table = final_table(final, ref, orig)
    assert list(zip(table["scenario"], table["method"])) == [
        ("g1", "retrain"), ("g1", "original"), ("g1", "ga"), ("g2", "retrain"), ("g2", "original"), ("g2", "ga")]


QUICKSTART = Path(__file__).resolve().parent / "data" / "quickstart"
"""table.csv, paired.csv and table.md of the quickstart run README shows (studies/quickstart.yaml)."""


def quickstart_results():
    table = pd.read_csv(QUICKSTART / "table.csv", keep_default_na=False)
    paired = pd.read_csv(QUICKSTART / "paired.csv")
    warnings = [line[2:] for line in (QUICKSTART / "table.md").read_text().splitlines() if line.startswith("- ")]
    return table, paired, warnings


@pytest.mark.parametrize("columns", [100, 80])
def test_the_console_tables_fit_the_terminal_and_keep_every_value(columns):
    """The quickstart's table, paired differences and warnings within 100 and 80 columns: the
    scenario once as a heading, then every row's method, FaLW and each of its values somewhere."""
    table, paired, warnings = quickstart_results()
    text = show(table, paired, warnings, columns)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= columns, [line for line in lines if len(line) > columns]
    assert lines[0] == "mnist1d-conv1d-lt0.1-g1"
    assert sum(line.count("mnist1d-conv1d-lt0.1-g1 ") for line in lines) == 0, "no row repeats the scenario"
    shown = format_table(table)
    for i, row in shown.iterrows():
        found = [line for line in lines if line.split()[:2] == [row["method"], row["falw"]]]
        assert len(found) == (2 if columns <= 100 else 1), (row["method"], found)
        values = " ".join(found)
        for label in ("FA", "RA", "TA", "MIA", "Avg. Gap", "Time (s)", "RTE"):
            assert row[label] in values, (label, row[label], found)
        assert (values.split()[-1] == "*") == bool(row["best"]) or (" *  " in values) == bool(row["best"])
    for d in format_paired(paired)["difference"]:
        assert any(line.split(" - ")[0].strip() + " - " + d.split(" - ")[1] == d for line in lines if " - " in line), d
    for w in warnings:
        assert w in " ".join(text.split()), w


def test_time_and_rte_go_to_a_second_block_on_100_columns_and_avg_gap_stays_beside_best():
    table, _, _ = quickstart_results()
    at_100 = console_table(table, 100).split("\n\n")
    assert at_100[0].splitlines()[1].split() == ["method", "falw", "FA", "RA", "TA", "MIA", "Avg.", "Gap", "best"]
    assert at_100[1].splitlines()[0].split() == ["method", "falw", "Time", "(s)", "RTE"]
    at_80 = console_table(table, 80).split("\n\n")
    assert at_80[1].splitlines()[0].split() == ["method", "falw", "Avg.", "Gap", "best", "Time", "(s)", "RTE"]
    wide = console_table(table, 200).splitlines()
    assert len(wide) == 1 + 1 + len(table), "one block where everything fits"


def test_several_scenarios_each_get_a_heading_and_long_names_are_cut_between_words():
    table, _, _ = quickstart_results()
    other = table.assign(scenario="cifar100-resnet18-lt0.3-g2",
                         method=table["method"].replace({"ga": "a_very_long_plugin_method_name_indeed"}))
    text = console_table(pd.concat([table, other], ignore_index=True), 80)
    lines = text.splitlines()
    assert [line for line in lines if line and not line.startswith(" ")] == ["mnist1d-conv1d-lt0.1-g1",
                                                                          "cifar100-resnet18-lt0.3-g2"]
    assert any(line.split()[:1] == ["a_…_method_name_indeed"] for line in lines), lines
    assert max(len(line) for line in lines) <= 80


def test_readme_shows_the_quickstart_as_the_console_prints_it():
    """README's quickstart sample is this formatter's output of the measured run's files on a
    100 column terminal, numbers and all."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    sample = readme.split("and prints:\n\n```\n", 1)[1].split("\n```", 1)[0]
    table, paired, warnings = quickstart_results()
    assert sample == show(table, paired, warnings, 100)
