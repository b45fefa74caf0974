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


BUILDER = """
import sys, time
import numpy as np
from falw_ray.baselines import Trained
from falw_ray.store import BaselineStore

def slow_train():
    time.sleep(1.5)
    return Trained({"w": np.full((64, 64), float(sys.argv[2]), dtype=np.float32)}, seconds=1.5)

entry, status = BaselineStore(sys.argv[1]).get_or_train("original", "shared", slow_train)
print(status, float(entry.state["w"][0, 0]))
"""


def test_two_builders_at_once_train_once(tmp_path):
    """Two processes (two studies) ask for the same missing baseline at the same moment."""
    import subprocess
    import sys

    script = tmp_path / "build.py"
    script.write_text(BUILDER)
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "store"), str(v)],
                              stdout=subprocess.PIPE, text=True) for v in (1, 2)]
    lines = sorted(p.communicate(timeout=120)[0].split("\n")[0] for p in procs)
    statuses = [line.split()[0] for line in lines]
    assert statuses == ["hit", "trained"], lines
    values = {line.split()[1] for line in lines}
    assert len(values) == 1, "the second process got the first one's entry, not its own"
    assert BaselineStore(tmp_path / "store").load("original", "shared").state["w"].shape == (64, 64)


FULL_DISK = """
import resource, signal, sys
import numpy as np
from falw_ray.baselines import Trained
from falw_ray.store import BaselineStore

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)          # writes past the limit fail with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
big = Trained({"w": np.ones((1000, 1000), dtype=np.float32)}, seconds=1.0)   # 4 MB: cannot fit
try:
    BaselineStore(sys.argv[1]).save("retrained", "k", big)
except OSError as e:
    print("failed:", e)
"""


def test_full_disk_leaves_no_half_written_entry(tmp_path):
    import subprocess
    import sys

    store = BaselineStore(tmp_path)
    store.save("retrained", "k", entry(3.0))
    script = tmp_path / "full.py"
    script.write_text(FULL_DISK)
    out = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.stdout.startswith("failed:") and "nothing was stored" in out.stdout, out.stdout + out.stderr
    assert store.load("retrained", "k").state["w"][0, 0] == 3.0, "the old entry is intact"
    leftovers = [p.name for p in (tmp_path / "retrained").iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers
