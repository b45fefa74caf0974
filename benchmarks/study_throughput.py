"""Benchmark 1: study throughput. The quickstart's trials run by falw_ray vs the same trials run
one after another in one process, the reference-codebase way.

    python benchmarks/study_throughput.py                  # the quickstart as shipped, 2 pairs
    python benchmarks/study_throughput.py --repeats 4      # more pairs
    python benchmarks/study_throughput.py --quick          # 2 trials per cell, final seed 0 (a few minutes)

falw_ray side: ``Study.from_yaml(quickstart).run(...)``, the public API, on a local Ray started for
the run (its start is timed) with the baseline store already warm (benchmark 2 measures the cold
start), MLflow tracking to a SQLite file, progress printing off. Trials run as the study says
(one CPU each, so two at a time on two cores; torch.set_num_threads(1) inside each trial), with
ASHA early stopping and the final re-runs over seeds.

Reference side (benchmarks/reference.py): the very trials that falw_ray ran (same cells, methods,
hyperparameters and seeds), one after another in this process: data loaded and split anew per
trial and read through per-sample DataLoaders, the original model's weights torch.load-ed anew,
evaluation of forget/retain/test + the MIA once each run has finished (as the reference codebases
do), nothing tracked, torch's default thread count (all cores), as a script would (--ref-threads
changes that). Two reference sides: "epochs as run" gives each trial the epochs falw_ray's trial
actually ran (early stopping is not counted in falw_ray's favour); "full epochs" gives each its
cell's whole budget, which is what a sweep of the same configurations costs with a codebase that
has no early stopping.

Overhead share (falw_ray side): per-trial seconds measured inside the Ray workers by a setup hook
(benchmarks/instrument.py): unlearning epochs vs everything else. "Trial wall time" is slot time:
the wall time from the first trial's start to the last one's end x the trials that run at once
(search and final trials share one Tune run); what is not unlearning epochs in it is
overhead (set-up, evaluation, waiting in tune.report, scheduling gaps between trials).
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import instrument  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent


def load_study(path: Path, trials: int | None, seeds: list[int] | None):
    from falw_ray.study.runner import Study
    from falw_ray.study.spec import load_study as load

    spec = load(path)
    update = {}
    if trials is not None:
        update["search"] = spec.search.model_copy(update={"trials": trials})
    if seeds is not None:
        update["final"] = spec.final.model_copy(update={"seeds": seeds})
    return Study(spec.model_copy(update=update) if update else spec, str(path))


def init_ray(trace: Path | None, num_cpus: int | None = None, **extra) -> None:
    import ray

    from falw_ray.study.cluster.launch import QUIET_ENV

    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    env = dict(QUIET_ENV)
    runtime_env = None
    if trace is not None:
        env.update(PYTHONPATH=str(BENCH_DIR), FALW_BENCH_TRACE=str(trace))
        runtime_env = {"env_vars": env, "worker_process_setup_hook": "instrument.setup"}
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=extra.pop("include_dashboard", False), log_to_driver=False,
             runtime_env=runtime_env, **extra)


def run_falw(study_path: Path, workdir: Path, warm_store: Path | None, uri: str, tag: str,
             trials: int | None, seeds: list[int] | None, fresh: bool = True, poll: float | None = None) -> dict:
    """One Study.run on a fresh local Ray, storage ``workdir/tag``: emptied first when ``fresh``
    (then the baseline store is copied from ``warm_store`` if given), reused as it is otherwise.
    ``poll``: sample the object store's usage every ``poll`` seconds while the study runs."""
    import threading

    import ray

    root = workdir / tag
    if fresh and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    if fresh and warm_store is not None:
        shutil.copytree(warm_store, root / "baselines")
    trace = root / "trace.jsonl"
    if trace.exists():
        trace.unlink()
    study = load_study(study_path, trials, seeds)
    samples: list = []
    stop = threading.Event()

    def sampler():
        from ray._private.internal_api import memory_summary

        address = ray.get_runtime_context().gcs_address  # other Ray clusters may run on this machine
        while not stop.wait(poll):
            try:
                text = memory_summary(address=address, stats_only=True)
            except Exception:  # noqa: BLE001 - the cluster may be going down
                continue
            samples.append((time.time(), *object_store_usage(text)))

    start = time.perf_counter()
    init_ray(trace)
    ray_up = time.perf_counter() - start
    thread = threading.Thread(target=sampler, daemon=True) if poll else None
    if thread:
        thread.start()
    try:
        result = study.run(tracking_uri=uri, storage=root, progress=False)
    finally:
        wall = time.perf_counter() - start
        stop.set()
        if thread:
            thread.join(timeout=30)
        ray.shutdown()
    trial_recs, roles = instrument.read(trace)
    return {"seconds": wall, "ray_init": ray_up, "result": result, "study": study, "trace": trial_recs,
            "roles": roles, "concurrency": getattr(study, "concurrency", None), "root": root,
            "object_store": samples}


def object_store_usage(text: str) -> tuple[float, int]:
    """(MiB, objects) from ``ray._private.internal_api.memory_summary(stats_only=True)``."""
    import re

    m = re.search(r"Plasma memory usage (\d+) MiB, (\d+) objects", text)
    return (float(m.group(1)), int(m.group(2))) if m else (float("nan"), -1)


def trial_list(run: dict) -> list[dict]:
    """The trials falw_ray ran, as (scenario, method, falw, hp, epochs, batch size) to replay."""
    from falw_ray.experiment import UNLEARN_BATCH_SIZE

    study, result = run["study"], run["result"]
    cells = {c.id: c for c in study.cells}
    out = []
    for stage, frame in (("search", result.trials), ("final", result.final)):
        for _, row in frame.iterrows():
            if row["status"] == "error":
                continue
            cell = cells[row["cell"]]
            scenario = cell.at_seed(int(row["seed"]))
            epochs = int(row["epochs_done"]) if row["status"] != "diverged" else cell.epochs
            out.append({
                "stage": stage, "scenario": scenario, "method": cell.method, "falw": cell.falw,
                "hp": {**{k: float(row[k]) for k in cell.space}, **cell.fixed}, "epochs": max(1, epochs),
                "full_epochs": cell.epochs,
                "batch_size": cell.batch_size or UNLEARN_BATCH_SIZE.get(scenario.dataset, 512),
                "refresh": study.spec.search.falw_refresh_every,
            })
    return out


def run_reference(trials: list[dict], store: Path, threads: int | None, full: bool = False) -> dict:
    """The trials one after another; ``full``: each for its cell's whole epoch budget, as a sweep with
    a codebase that has no early stopping runs it, else for the epochs falw_ray's trial ran."""
    import torch

    import reference

    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    parts = {"setup": 0.0, "eval": 0.0, "unlearn": 0.0}
    epochs = 0
    try:
        for t in trials:
            r = reference.run_trial(store, t["scenario"], t["method"], t["falw"], t["hp"],
                                    t["full_epochs"] if full else t["epochs"],
                                    t["batch_size"], t["refresh"])
            for k in parts:
                parts[k] += r[k]
            epochs += r["epochs"]
    finally:
        torch.set_num_threads(saved)
    wall = time.perf_counter() - start
    return {"seconds": wall, "trials": len(trials), "epochs": epochs, **parts,
            "threads": threads or saved}


def overhead(run: dict) -> dict:
    """Shares of falw_ray's trial slot time: unlearning epochs vs the rest, from the worker trace."""
    recs = run["trace"]
    result = run["result"]
    slots = run["concurrency"] or 1
    keep = set(result.trials["trial_id"].dropna()) | set(result.final["trial_id"].dropna())
    parts = {"unlearn_epochs": 0.0, "eval": 0.0, "report_wait": 0.0, "setup": 0.0}
    rs = [r for r in recs if r["trial"] in keep]
    slot_seconds = 0.0
    if rs:  # one Tune run holds both stages: the slots are busy from the first trial's start to the last's end
        begin = min(r["wall_at"] - r["trial_seconds"] for r in rs)
        end = max(r["wall_at"] for r in rs)
        slot_seconds = slots * (end - begin)
    for r in rs:
        for k in parts:
            parts[k] += r[k]
    other = slot_seconds - sum(parts.values())
    out = {f"{k}_share": v / slot_seconds for k, v in parts.items()} if slot_seconds else {}
    out.update(slot_seconds=slot_seconds, other_share=other / slot_seconds if slot_seconds else float("nan"),
               overhead_share=1 - parts["unlearn_epochs"] / slot_seconds if slot_seconds else float("nan"),
               study_overhead_share=1 - parts["unlearn_epochs"] / (slots * run["seconds"]),
               unlearn_epochs_seconds=parts["unlearn_epochs"], trials_traced=len(recs),
               elapsed_reported_sum=float(sum(r.get("elapsed_reported") or 0 for r in recs)),
               peak_worker_rss_mib=max((r["maxrss_mib"] for r in recs), default=float("nan")))
    return out


def main() -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--study", type=Path, default=common.ROOT / "studies" / "quickstart.yaml")
    p.add_argument("--repeats", type=int, default=2, help="pairs (falw_ray run + reference run)")
    p.add_argument("--trials", type=int, default=None, help="override search.trials (default: the study's)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override final.seeds")
    p.add_argument("--ref-threads", type=int, nargs="+", default=None,
                   help="torch thread settings of the reference, one side each (default: torch's default; "
                        "0 = torch's default)")
    p.add_argument("--ref-epochs", nargs="+", choices=["ran", "full"], default=["ran", "full"],
                   help="reference sides: the epochs each falw_ray trial ran (early stopping not credited), "
                        "and/or every configuration's full epoch budget (a sweep without early stopping)")
    p.add_argument("--quick", action="store_true", help="2 trials per cell, final seed 0 only (a few minutes)")
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args()
    if args.quick:
        args.trials = args.trials or 2
        args.seeds = args.seeds or [0]
    info = common.header("benchmark 1: study throughput")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="falw_bench_throughput_"))
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    print(f"work dir {workdir}", flush=True)

    print("warm-up: one study run to fill the baseline store (not timed) ...", flush=True)
    warm = run_falw(args.study, workdir, None, uri, "warmup", args.trials, args.seeds)
    store = warm["root"] / "baselines"
    print(f"  warm-up took {warm['seconds']:.1f}s; store {store}", flush=True)
    last = {"list": trial_list(warm)}
    falw_runs, ref_runs = [], []

    def falw_side(i):
        run = run_falw(args.study, workdir, store, uri, f"run{i}", args.trials, args.seeds)
        last["list"] = trial_list(run)
        n = len(last["list"])
        epochs = sum(t["epochs"] for t in last["list"])
        res = {"seconds": run["seconds"], "trials": n, "epochs": epochs, "ray_init": run["ray_init"],
               "concurrency": run["concurrency"], **overhead(run)}
        falw_runs.append(res)
        return res

    def ref_side(threads, full):
        def run(i):
            res = run_reference(last["list"], store, threads, full)
            res["full"] = full
            ref_runs.append(res)
            return res
        return run

    def ref_name(threads, mode):
        t = f"{threads} thread{'s' if threads != 1 else ''}" if threads else "torch default threads"
        return f"reference, {'full epochs' if mode == 'full' else 'epochs as run'} ({t})"

    ref_threads = args.ref_threads or [None]
    names = {(t, mode): ref_name(t, mode) for mode in args.ref_epochs for t in ref_threads}
    sides = {"falw_ray": falw_side, **{n: ref_side(t, mode == "full") for (t, mode), n in names.items()}}
    results = common.paired(sides, args.repeats)
    f = results["falw_ray"]
    refs = {n: results[n] for n in names.values()}

    def tpm(x):
        return x["trials"] / x["seconds"] * 60

    def epm(x):
        return x["epochs"] / x["seconds"] * 60

    rows = [{"side": "falw_ray (Study.run)", "trials": f[0]["trials"], "epochs": f[0]["epochs"],
             "wall s (median)": common.median([x["seconds"] for x in f]),
             "trials/min": common.median([tpm(x) for x in f]), "epochs/min": common.median([epm(x) for x in f]),
             "threads": "1 per trial"}]
    for name, r in refs.items():
        rows.append({"side": name, "trials": r[0]["trials"], "epochs": r[0]["epochs"],
                     "wall s (median)": common.median([x["seconds"] for x in r]),
                     "trials/min": common.median([tpm(x) for x in r]), "epochs/min": common.median([epm(x) for x in r]),
                     "threads": r[0]["threads"]})
    print("\n" + common.table(rows, floatfmt="{:.2f}"))
    ratios = {}
    for mode in args.ref_epochs:
        # against the faster reference thread setting of each pair (the conservative comparison)
        group = [refs[names[(t, mode)]] for t in ref_threads]
        best_ref = [max((g[i] for g in group), key=tpm) for i in range(args.repeats)]
        ratios[mode] = [tpm(a) / tpm(b) for a, b in zip(f, best_ref)]
        print(f"\nthroughput ratio vs the reference, {'full epochs' if mode == 'full' else 'epochs as run'} "
              f"(trials per minute; the faster thread setting of each pair): median "
              f"{common.median(ratios[mode]):.2f}x, pairs {common.fmt_pairs(ratios[mode])} (target >= 1.8x)")
    keys = ["overhead_share", "unlearn_epochs_share", "eval_share", "report_wait_share", "setup_share", "other_share",
            "study_overhead_share"]
    orow = [{"run": i + 1, **{k: x.get(k, float("nan")) for k in keys}, "ray_init s": x["ray_init"],
             "peak worker RSS MiB": x.get("peak_worker_rss_mib")} for i, x in enumerate(f)]
    print("\nfalw_ray trial slot time (concurrency x wall time from the first trial's start to the last's end), shares:")
    print(common.table(orow, floatfmt="{:.3f}"))
    med_over = common.median([x.get("overhead_share", float("nan")) for x in f])
    print(f"per-trial overhead share (median): {med_over:.1%} (target <= 20%)")
    for name, r in refs.items():
        ref_share = [1 - x["unlearn"] / x["seconds"] for x in r]
        print(f"{name}: share of its wall time that is not unlearning epochs {common.median(ref_share):.1%} "
              f"(set-up {common.median([x['setup'] / x['seconds'] for x in r]):.1%}, "
              f"evaluation {common.median([x['eval'] / x['seconds'] for x in r]):.1%})")
    common.save_json(args.json, {"machine": info, "falw_ray": f, "reference": {n: v for n, v in refs.items()},
                                 "tpm_ratios": ratios, "warmup_seconds": warm["seconds"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
