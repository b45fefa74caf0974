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
    assert np.array_equal(again.state["w"], np.ones((3, 2), np.float32)) and again.state["w"].dtype == np.float32
    assert again.state["n"].item() == 4 and again.seconds == 2.5
    assert np.array_equal(again.state["w"], first.state["w"])
    meta = json.loads((store.path("original", "k1") / META).read_text())
    assert (meta["scenario"], meta["role"], meta["key"], meta["seconds"]) == ("s", "original", "k1", 2.5)


def test_a_stored_entry_keeps_every_shape(tmp_path):
    store = BaselineStore(tmp_path)
    store.save("original", "k", entry())
    loaded = store.load("original", "k")
    assert {k: v.shape for k, v in loaded.state.items()} == {"w": (3, 2), "n": ()}


def test_truncated_weights_are_detected_and_rebuilt(tmp_path):
    store = BaselineStore(tmp_path)
    store.save("retrained", "k", entry())
    weights = store.path("retrained", "k") / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(CorruptEntry, match="checksum"):
        store.load("retrained", "k")
    messages = []
    rebuilt, status = store.get_or_train("retrained", "k", lambda: entry(5.0), log=messages.append)
    assert status == "rebuilt" and len(messages) == 1 and "checksum" in messages[0] and "rebuilding" in messages[0]
    assert np.array_equal(rebuilt.state["w"], np.full((3, 2), 5.0, np.float32))
    assert np.array_equal(store.load("retrained", "k").state["w"], np.full((3, 2), 5.0, np.float32))


def test_failed_write_leaves_no_entry(tmp_path):
    store = BaselineStore(tmp_path)
    bad = Trained({"w": object()}, 1.0)
    with pytest.raises(OSError, match="nothing was stored"):
        store.save("original", "k", bad)
    assert store.load("original", "k") is None
    assert [p.name for p in (tmp_path / "original").iterdir()] == []


BUILDER = """
import sys, time
from pathlib import Path
import numpy as np
import falw_ray.store
from falw_ray.baselines import Trained
from falw_ray.store import BaselineStore

store_dir, value, other = sys.argv[1], sys.argv[2], sys.argv[3]
meeting = Path(sys.argv[4])


def wait_for(path, seconds):
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return path.exists()


class SeenLock(falw_ray.store.FileLock):
    # Says so before it waits for the store's lock.
    def acquire(self, *args, **kwargs):
        (meeting / f"at-lock-{value}").touch()
        return super().acquire(*args, **kwargs)


falw_ray.store.FileLock = SeenLock


def train():
    with open(meeting / "trained.log", "a") as f:
        f.write(value + "\\n")
    # Hold the lock until the other builder is at it: the two overlap for certain. Without a lock
    # the other never gets here and is training too (then the wait just times out).
    wait_for(meeting / f"at-lock-{other}", 60)
    time.sleep(0.5)
    return Trained({"w": np.full((64, 64), float(value), dtype=np.float32)}, seconds=1.5)


(meeting / f"ready-{value}").touch()
assert wait_for(meeting / f"ready-{other}", 120), "the other builder never started"
entry, status = BaselineStore(store_dir).get_or_train("original", "shared", train)
print(status, float(entry.state["w"][0, 0]), float(entry.state["w"].min()), float(entry.state["w"].max()))
"""


def test_two_builders_at_once_train_once(tmp_path):
    """Two processes (two studies) ask for the same missing baseline at the same moment: both start
    before either asks (a barrier), and the one that trains holds the lock until the other is at it."""
    import subprocess
    import sys

    script, meeting = tmp_path / "build.py", tmp_path / "meeting"
    script.write_text(BUILDER)
    meeting.mkdir()
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "store"), v, other, str(meeting)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for v, other in (("1", "2"), ("2", "1"))]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    assert sorted((meeting / "trained.log").read_text().split()) in (["1"], ["2"]), "trained exactly once"
    (winner,) = (meeting / "trained.log").read_text().split()
    results = dict(zip(("1", "2"), (out.split() for out, _ in outs)))
    loser = "2" if winner == "1" else "1"
    assert results[winner] == ["trained", f"{winner}.0", f"{winner}.0", f"{winner}.0"], results
    assert results[loser] == ["hit", f"{winner}.0", f"{winner}.0", f"{winner}.0"], \
        "the second builder waited and got the first one's entry, not one of its own"
    assert (meeting / "at-lock-1").exists() and (meeting / "at-lock-2").exists()
    stored = BaselineStore(tmp_path / "store").load("original", "shared")
    assert stored.seconds == 1.5 and np.array_equal(stored.state["w"], np.full((64, 64), float(winner), np.float32))


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
    assert np.array_equal(store.load("retrained", "k").state["w"], np.full((3, 2), 3.0, np.float32)), \
        "the old entry is intact"
    leftovers = [p.name for p in (tmp_path / "retrained").iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers


def test_remove_takes_the_entry_whole_and_leaves_nothing_behind(tmp_path):
    store = BaselineStore(tmp_path)
    store.save("retrained", "k", entry())
    store.save("retrained", "other", entry(2.0))
    assert store.remove("retrained", "k") is True
    assert store.load("retrained", "k") is None and not store.path("retrained", "k").exists()
    assert store.remove("retrained", "k") is False, "nothing left to remove"
    assert np.array_equal(store.load("retrained", "other").state["w"], np.full((3, 2), 2.0, np.float32))
    assert sorted(p.name for p in (tmp_path / "retrained").iterdir() if p.name.startswith(".")) == []


def test_remove_leaves_an_entry_whose_lock_is_held(tmp_path):
    """An entry being built (get_or_train holds its lock) is in use: remove gives up at once, intact."""
    from filelock import Timeout

    store = BaselineStore(tmp_path)
    store.save("original", "k", entry(6.0))
    with store.lock("original", "k"):
        with pytest.raises(Timeout):
            store.remove("original", "k", timeout=0)
    assert np.array_equal(store.load("original", "k").state["w"], np.full((3, 2), 6.0, np.float32))
    assert store.remove("original", "k", timeout=0) is True
