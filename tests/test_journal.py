"""The study journal keeps finished trials' results across a crash of the driver."""
from __future__ import annotations

import json
import math

import pytest

from falw_ray.study.journal import Journal


def test_append_then_load_keeps_what_the_trial_reported(tmp_path):
    j = Journal(tmp_path / "ray" / "s-search.finished.jsonl")
    j.append("t1", {"avg_gap": 3.5, "epoch": 5, "fa_per_class": [1.0, None], "cell": "ga",
                    "training_iteration": 5, "time_total_s": 2.0, "trial_id": "t1", "config": {"cell": "ga"},
                    "mia": float("nan")})
    j.append("t2", {"avg_gap": 1.0, "epoch": 2})
    done = Journal(j.path).load()
    assert list(done) == ["t1", "t2"]
    assert {k: v for k, v in done["t1"].items() if k != "mia"} == {
        "avg_gap": 3.5, "epoch": 5, "fa_per_class": [1.0, None], "cell": "ga"}
    assert math.isnan(done["t1"]["mia"])
    assert done["t2"] == {"avg_gap": 1.0, "epoch": 2}
    lines = j.path.read_text().splitlines()
    assert len(lines) == 2 and [json.loads(line)["trial_id"] for line in lines] == ["t1", "t2"], "one line per trial"


def test_a_trial_appended_twice_keeps_its_last_result(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    j.append("t1", {"avg_gap": 4.0, "epoch": 1})
    j.append("t1", {"avg_gap": 2.5, "epoch": 3})
    assert j.load() == {"t1": {"avg_gap": 2.5, "epoch": 3}}


def test_a_line_cut_short_by_a_crash_is_ignored_and_reset_starts_over(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    j.append("t1", {"avg_gap": 2.0})
    with open(j.path, "a") as f:
        f.write('{"trial_id": "t2", "res')
    assert j.load() == {"t1": {"avg_gap": 2.0}}
    j.reset()
    assert not j.path.exists()
    assert j.load() == {}


def test_a_trial_finished_after_a_torn_line_is_kept(tmp_path):
    """A resumed study keeps appending to the journal its crash left behind (runner: load, no reset)."""
    j = Journal(tmp_path / "j.jsonl")
    j.append("t1", {"avg_gap": 2.0})
    with open(j.path, "a") as f:
        f.write('{"trial_id": "t2", "res')
    j.append("t3", {"avg_gap": 1.5})
    assert j.load() == {"t1": {"avg_gap": 2.0}, "t3": {"avg_gap": 1.5}}
