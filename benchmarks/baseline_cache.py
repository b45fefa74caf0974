"""Benchmark 2: the baseline cache. A cold study (empty baseline store) vs the same study again.

    python benchmarks/baseline_cache.py                     # quickstart cut to 2 trials per cell, 2 pairs
    python benchmarks/baseline_cache.py --full --repeats 2  # the quickstart as shipped

Each pair: a fresh storage folder, ``Study.run`` cold (every original and retrained model is trained
and stored), then ``Study.run`` of the same study on the same storage (warm: the store holds them).
Both runs start their own local Ray (timed). Seconds spent training baselines are measured inside the
Ray workers (benchmarks/instrument.py wraps the store's training call), and the study's own record
(``result.baselines``: hit / trained per model) is printed alongside. The order cannot alternate
(the warm run needs the cold one first); pairs are independent.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from study_throughput import run_falw  # noqa: E402


def main() -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--study", type=Path, default=common.ROOT / "studies" / "quickstart.yaml")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--full", action="store_true", help="the study as shipped (default: 2 trials per cell)")
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args()
    info = common.header("benchmark 2: baseline cache")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="falw_bench_cache_"))
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    trials = None if args.full else 2
    rows, figures = [], {"machine": info, "pairs": []}
    for i in range(args.repeats):
        tag = f"pair{i}"
        out = {}
        for kind in ("cold", "warm"):
            run = run_falw(args.study, workdir, None, uri, tag, trials, None, fresh=(kind == "cold"))
            roles = run["roles"]
            statuses = run["result"].baselines
            counts = {s: int(((statuses["original"] == s).sum() + (statuses["retrained"] == s).sum()))
                      for s in ("trained", "hit", "rebuilt")}
            out[kind] = {"seconds": run["seconds"], "train_calls": len(roles),
                         "train_seconds": sum(r["seconds"] for r in roles), **counts,
                         "trials": len(run["result"].trials) + len(run["result"].final)}
            print(f"  pair {i + 1}/{args.repeats}: {kind}: {run['seconds']:.1f}s, baselines trained "
                  f"{out[kind]['train_calls']} ({out[kind]['train_seconds']:.1f}s of training), "
                  f"store: {counts}", flush=True)
        figures["pairs"].append(out)
        rows.append({"pair": i + 1, "cold s": out["cold"]["seconds"], "warm s": out["warm"]["seconds"],
                     "cold/warm": out["cold"]["seconds"] / out["warm"]["seconds"],
                     "cold: models trained": out["cold"]["train_calls"],
                     "cold: s training": out["cold"]["train_seconds"],
                     "warm: models trained": out["warm"]["train_calls"],
                     "warm: s training": out["warm"]["train_seconds"],
                     "warm: store hits": out["warm"]["hit"], "trials/run": out["warm"]["trials"]})
    cold = [r["cold s"] for r in rows]
    warm = [r["warm s"] for r in rows]
    s = common.ratio_summary(cold, warm)
    print("\n" + common.table(rows, floatfmt="{:.2f}"))
    print(f"\ncold {s['median_slow']:.1f}s vs warm {s['median_fast']:.1f}s (medians): ratio of medians "
          f"{s['ratio_of_medians']:.2f}x, pairs {common.fmt_pairs(s['pair_ratios'])}; warm runs trained "
          f"{sum(r['warm: models trained'] for r in rows)} models ({sum(r['warm: s training'] for r in rows):.1f}s)")
    common.save_json(args.json, {**figures, "summary": s})
    return 0


if __name__ == "__main__":
    sys.exit(main())
