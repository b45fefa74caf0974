"""The study journal keeps finished trials' results across a crash of the driver."""
from __future__ import annotations

import math

from falw_ray.study.journal import Journal


def test_append_then_load_keeps_what_the_trial_reported(tmp_path):
    j = Journal(tmp_path / "ray" / "s-search.finished.jsonl")
    j.append("t1", {"avg_gap": 3.5, "epoch": 5, "fa_per_class": [1.0, None], "cell": "ga",
                    "training_iteration": 5, "time_total_s": 2.0, "trial_id": "t1", "config": {"cell": "ga"},
                    "mia": float("nan")})
    j.append("t2", {"avg_gap": 1.0, "epoch": 2})
    done = Journal(j.path).load()
    assert set(done) == {"t1", "t2"}
    assert {k: v for k, v in done["t1"].items() if k != "mia"} == {
        "avg_gap": 3.5, "epoch": 5, "fa_per_class": [1.0, None], "cell": "ga"}
    assert math.isnan(done["t1"]["mia"])


def test_a_line_cut_short_by_a_crash_is_ignored_and_reset_starts_over(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    j.append("t1", {"avg_gap": 2.0})
    with open(j.path, "a") as f:
        f.write('{"trial_id": "t2", "res')
    assert list(j.load()) == ["t1"]
    j.reset()
    assert j.load() == {}
