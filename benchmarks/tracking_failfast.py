"""How fast a study with an unreachable MLflow tracking URI stops, against the cluster start it spares.

    python benchmarks/tracking_failfast.py                 # 3 rotating rounds
    python benchmarks/tracking_failfast.py --repeats 5 --json /tmp/failfast.json

The claim (falw_ray/study/runner.py, README "Tracking is checked first"): an unreachable tracking
URI stops ``Study.run`` with one line before any baseline is trained, and costs about a second, not
a Ray start. The test suite checks that nothing is trained or written
(tests/test_reliability.py::test_unreachable_tracking_fails_before_compute); the time is measured
here, not asserted there.

Sides, in rotating order each round, each in a fresh storage folder and with no Ray running:
  closed-port  ``Study.from_yaml(tests/data/tiny_study.yaml).run(tracking_uri="http://127.0.0.1:<closed port>")``
  bad-scheme   the same with ``tracking_uri="nosuchscheme://somewhere"``
  ray-start    ``ray.init(num_cpus=2, include_dashboard=False)`` then ``ray.shutdown()``: what a study
               would have paid before noticing, had it checked tracking after starting Ray
Each failing side is checked to raise TrackingError and to leave its storage folder unwritten.
"""
from __future__ import annotations

import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

TINY = common.ROOT / "tests" / "data" / "tiny_study.yaml"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fail_once(uri: str) -> float:
    from falw_ray.study.runner import Study
    from falw_ray.study.tracking.tracker import TrackingError

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        start = time.perf_counter()
        try:
            Study.from_yaml(TINY).run(tracking_uri=uri, storage=store, progress=False)
        except TrackingError:
            seconds = time.perf_counter() - start
        else:
            raise SystemExit(f"{uri}: the study ran; expected TrackingError")
        if store.exists():
            raise SystemExit(f"{uri}: the failed study wrote {store}")
    return seconds


def ray_start_once() -> float:
    import ray

    start = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.shutdown()
    return time.perf_counter() - start


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    info = common.header("tracking fail-fast")
    import ray

    if ray.is_initialized():
        ray.shutdown()
    port = closed_port()
    sides = {
        "closed-port": lambda i: fail_once(f"http://127.0.0.1:{port}"),
        "bad-scheme": lambda i: fail_once("nosuchscheme://somewhere"),
        "ray-start": lambda i: ray_start_once(),
    }
    results = common.paired(sides, args.repeats)
    rows = []
    spared = common.seconds_of(results["ray-start"])
    for name in ("closed-port", "bad-scheme"):
        secs = common.seconds_of(results[name])
        rows.append({"side": name, "median s": common.median(secs), "rounds": secs,
                     "ray start / this": common.median(spared) / common.median(secs)})
    rows.append({"side": "ray-start", "median s": common.median(spared), "rounds": spared, "ray start / this": 1.0})
    print(common.table(rows, ["side", "median s", "rounds", "ray start / this"]))
    common.save_json(args.json, {"machine": info, "results": results, "rows": rows})


if __name__ == "__main__":
    main()
