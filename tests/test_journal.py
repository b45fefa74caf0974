"""The study journal: the one durable record of completed trials that resume reads."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from falw_ray.study.record.journal import Journal, changes, header
from falw_ray.study.record.recorder import entry
from falw_ray.study.spec import load_study, parse_study

TINY = Path(__file__).resolve().parent / "data" / "tiny_study.yaml"


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


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full to inject ENOSPC")
def test_a_full_disk_is_an_error_naming_the_journal(tmp_path):
    """ENOSPC at the write (through /dev/full, which fails every write with it): the error names the
    file and the trial, so a study never carries on believing a trial is recorded."""
    j = Journal("/dev/full")
    with pytest.raises(OSError, match=r"^/dev/full: could not record trial t1 \(No space left on device\)"):
        j.append(entry("t1", "search", {"seq": 0}, 0, "finished", {"avg_gap": 2.0}))


def study_header(**changes) -> dict:
    """The header tests/data/tiny_study.yaml's journal starts with, the study changed by ``changes``
    (dotted field -> value)."""
    data = load_study(TINY).model_dump(mode="json")
    for field, value in changes.items():
        *path, last = field.split(".")
        target = data
        for key in path:
            target = target[int(key)] if key.isdigit() else target[key]
        target[last] = value
    spec = parse_study(data)
    return header(spec, "sha-" + str(sorted(changes.items())), "0.1.0", spec.tracking.uri or "sqlite:///m.db",
                  spec.tracking.experiment or spec.name)


def test_a_change_to_the_trials_is_named_and_one_that_keeps_them_is_stated():
    old = study_header()
    assert changes(old, study_header()) == (None, [])
    change, notes = changes(old, study_header(**{"methods.0.space.lr.high": 0.05}))
    assert change == "methods[0].space.lr.high: 0.01 -> 0.05" and notes == []
    assert changes(old, study_header(**{"search.trials": 3}))[0] == "search.trials: 2 -> 3"
    assert changes(old, study_header(**{"final.seeds": [2]}))[0].startswith("final seeds: [1] -> [2]")
    change, notes = changes(old, study_header(**{"final.seeds": [1, 2], "tracking.uri": "sqlite:///other.db",
                                                 "search.max_concurrent": 1, "resources.cpu": 2}))
    assert change is None
    assert notes == ["final seeds [1] -> [1, 2]: 1 more final run(s) per cell",
                     "tracking URI sqlite:///m.db -> sqlite:///other.db"]
    assert changes(old, study_header(**{"description": "edited"})) == (
        None, ["the study file changed in no setting that decides its trials"])
    assert changes(None, old)[0] is None, "a journal from before headers is not refused"


def test_a_journal_is_started_once_and_set_aside_whole(tmp_path):
    """start writes the header alone and never over an existing journal; set_aside renames it (a new
    name each time, none overwritten), so every recorded trial stays on disk."""
    j = Journal(tmp_path / "ray" / "tiny.finished.jsonl")
    head = study_header()
    j.start(head)
    assert j.header() == head and j.load() == {}
    j.append(entry("t1", "search", {"seq": 0}, 0, "finished", {"avg_gap": 2.0}))
    before = j.path.read_bytes()
    with pytest.raises(FileExistsError, match="never overwritten"):
        j.start(study_header())
    assert j.path.read_bytes() == before
    first = j.set_aside()
    assert not j.path.exists() and first.read_bytes() == before
    j.start(head)
    second = j.set_aside()
    assert second != first and first.read_bytes() == before and Journal(second).load() == {}
    assert sorted(p.name for p in j.path.parent.iterdir()) == sorted([first.name, second.name])
