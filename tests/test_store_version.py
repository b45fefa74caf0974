"""Store keys carry the version of the code that trains and evaluates baselines: an entry built by other
code is never found, while it stays on disk until pruned."""
import json

import numpy as np

import falw_ray.scenario
from falw_ray.baselines import Trained
from falw_ray.scenario import BASELINE_CODE_VERSION, Scenario, _digest
from falw_ray.store import META, BaselineStore


def entry(value: float) -> Trained:
    return Trained({"w": np.full((2, 2), value, dtype=np.float32)}, seconds=1.0)


def test_the_version_is_part_of_both_keys():
    s = Scenario(dataset="digits")
    identity = s.model_dump(mode="json", exclude={"data_options", "data_digest"})
    assert s.key() == _digest({**identity, "code_version": BASELINE_CODE_VERSION})
    del identity["forget"]
    assert s.original_key() == _digest({**identity, "code_version": BASELINE_CODE_VERSION})
    assert s.key() != _digest(s.model_dump(mode="json", exclude={"data_options"})), "not the unversioned key"


def test_a_new_code_version_misses_the_store_and_leaves_the_old_entry(tmp_path, monkeypatch):
    s = Scenario(dataset="digits", seed=4)
    store = BaselineStore(tmp_path)
    old_keys = s.key(), s.original_key()
    store.save("retrained", old_keys[0], entry(1.0), {"scenario": s.model_dump(mode="json")})
    store.save("original", old_keys[1], entry(2.0))

    monkeypatch.setattr(falw_ray.scenario, "BASELINE_CODE_VERSION", "2099.01-1")
    new_keys = s.key(), s.original_key()
    assert new_keys[0] != old_keys[0] and new_keys[1] != old_keys[1]
    assert store.load("retrained", new_keys[0]) is None and store.load("original", new_keys[1]) is None
    assert np.array_equal(store.load("retrained", old_keys[0]).state["w"], np.full((2, 2), 1.0, np.float32))
    assert np.array_equal(store.load("original", old_keys[1]).state["w"], np.full((2, 2), 2.0, np.float32))

    calls = []
    got, status = store.get_or_train("retrained", new_keys[0], lambda: calls.append(1) or entry(3.0))
    assert (status, calls) == ("trained", [1]), "the old entry is not reused under the new version"
    meta = json.loads((store.path("retrained", new_keys[0]) / META).read_text())
    assert meta["code_version"] == "2099.01-1"
    old_meta = json.loads((store.path("retrained", old_keys[0]) / META).read_text())
    assert old_meta["code_version"] == BASELINE_CODE_VERSION


def test_meta_records_the_version_and_time_and_info_can_override(tmp_path):
    from datetime import datetime, timezone

    store = BaselineStore(tmp_path)
    before = datetime.now(timezone.utc).replace(microsecond=0)
    store.save("original", "a", entry(1.0), {"scenario": {"dataset": "digits"}})
    store.save("original", "b", entry(1.0), {"code_version": "2025.01-7"})
    a = json.loads((store.path("original", "a") / META).read_text())
    b = json.loads((store.path("original", "b") / META).read_text())
    assert (a["code_version"], a["scenario"], b["code_version"]) == (BASELINE_CODE_VERSION, {"dataset": "digits"},
                                                                      "2025.01-7")
    created = datetime.fromisoformat(a["created"])
    assert created.tzinfo is not None and before <= created <= datetime.now(timezone.utc)
