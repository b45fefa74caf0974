"""The study journal: the one durable record of completed trials that resume reads."""
from __future__ import annotations

import json
import math
import os

import pytest

from falw_ray.study.journal import Journal, entry


def test_an_entry_keeps_what_the_trial_reported_and_not_what_tune_added(tmp_path):
    j = Journal(tmp_path / "ray" / "s.finished.jsonl")
    last = {"avg_gap": 3.5, "epoch": 5, "fa_per_class": [1.0, None], "cell": "ga", "training_iteration": 5,
            "time_total_s": 2.0, "trial_id": "t1", "config": {"cell": "ga"}, "mia": float("nan")}
    j.append(entry("t1", "search", {"cell": "ga", "lr": 0.1, "seq": 0}, 0, "finished", last,
                   [{"avg_gap": 4.0, "epoch": 2, "time_total_s": 1.0}, last]))
    j.append(entry("t2", "final", {"final": {"cell": "ga", "seed": 3, "lr": 0.1}, "seq": 1}, 1, "error", None,
                   error="ActorDiedError: the worker died"))
    done = Journal(j.path).load()
    assert list(done) == ["t1", "t2"]
    t1 = done["t1"]
    assert (t1["stage"], t1["seq"], t1["status"], t1["config"]) == ("search", 0, "finished", {"cell": "ga", "lr": 0.1, "seq": 0})
    assert {k: v for k, v in t1["result"].items() if k != "mia"} == {
        "avg_gap": 3.5, "epoch": 5, "fa_per_class": [1.0, None], "cell": "ga"}
    assert math.isnan(t1["result"]["mia"])
    assert t1["history"][0] == {"avg_gap": 4.0, "epoch": 2}, "Tune's own keys are not kept"
    assert done["t2"]["error"] == "ActorDiedError: the worker died" and done["t2"]["result"] == {}
    lines = j.path.read_text().splitlines()
    assert [json.loads(line)["trial_id"] for line in lines] == ["t1", "t2"], "one line per trial"


def test_a_trial_appended_twice_keeps_its_last_entry(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    j.append(entry("t1", "search", {"seq": 0}, 0, "stopped early", {"avg_gap": 4.0, "epoch": 1}))
    j.append(entry("t1", "search", {"seq": 0}, 0, "finished", {"avg_gap": 2.5, "epoch": 3}))
    assert j.load()["t1"]["result"] == {"avg_gap": 2.5, "epoch": 3}


def test_a_line_cut_short_by_a_crash_is_ignored_and_later_entries_are_kept(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    j.append(entry("t1", "search", {"seq": 0}, 0, "finished", {"avg_gap": 2.0}))
    with open(j.path, "a") as f:
        f.write('{"trial_id": "t2", "sta')
    assert list(j.load()) == ["t1"]
    j.append(entry("t3", "search", {"seq": 2}, 2, "finished", {"avg_gap": 1.5}))
    assert list(j.load()) == ["t1", "t3"]
    j.reset()
    assert not j.path.exists() and j.load() == {}


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full to inject ENOSPC")
def test_a_full_disk_is_an_error_naming_the_journal(tmp_path):
    """ENOSPC at the write (through /dev/full, which fails every write with it): the error names the
    file and the trial, so a study never carries on believing a trial is recorded."""
    j = Journal("/dev/full")
    with pytest.raises(OSError, match=r"^/dev/full: could not record trial t1 \(No space left on device\)"):
        j.append(entry("t1", "search", {"seq": 0}, 0, "finished", {"avg_gap": 2.0}))
