import json

import numpy as np
import pytest

from falw_ray.baselines import Trained
from falw_ray.store import META, WEIGHTS, BaselineStore, CorruptEntry


def entry(value: float = 1.0) -> Trained:
    return Trained({"w": np.full((3, 2), value, dtype=np.float32), "n": np.array(4)}, seconds=2.5)


def test_round_trip_and_hit(tmp_path):
    store = BaselineStore(tmp_path)
    calls = []
    first, status = store.get_or_train("original", "k1", lambda: calls.append(1) or entry(), {"scenario": "s"})
    again, status2 = store.get_or_train("original", "k1", lambda: calls.append(1) or entry(9.0))
    assert (status, status2, len(calls)) == ("trained", "hit", 1)
    assert np.array_equal(again.state["w"], first.state["w"]) and again.seconds == 2.5
    assert json.loads((store.path("original", "k1") / META).read_text())["scenario"] == "s"


def test_truncated_weights_are_detected_and_rebuilt(tmp_path):
    store = BaselineStore(tmp_path)
    store.save("retrained", "k", entry())
    weights = store.path("retrained", "k") / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(CorruptEntry, match="checksum"):
        store.load("retrained", "k")
    messages = []
    rebuilt, status = store.get_or_train("retrained", "k", lambda: entry(5.0), log=messages.append)
    assert status == "rebuilt" and "checksum" in messages[0]
    assert store.load("retrained", "k").state["w"][0, 0] == 5.0


def test_failed_write_leaves_no_entry(tmp_path):
    store = BaselineStore(tmp_path)
    bad = Trained({"w": object()}, 1.0)
    with pytest.raises(Exception):
        store.save("original", "k", bad)
    assert store.load("original", "k") is None
    assert [p.name for p in (tmp_path / "original").iterdir()] == []
