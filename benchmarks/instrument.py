"""Measuring inside Ray trial workers without changing falw_ray: a worker setup hook.

``ray.init(runtime_env={"worker_process_setup_hook": "instrument.setup", "env_vars": {...}})``
(benchmarks/ on the workers' PYTHONPATH) wraps, in every worker process, the functions a trial
calls through module attributes: the trainable's ``run_method``, ``experiment.unlearn`` (to time
the callback that evaluates and reports after each epoch), ``experiment.evaluate`` and
``ray.tune.report``. Each report appends one JSON line to $FALW_BENCH_TRACE with what the trial
spent so far: unlearning epochs (everything in ``unlearn`` outside the per-epoch callback),
evaluation, waiting in ``tune.report`` (Tune's function API blocks there until the driver asks for
the next result), set-up before ``unlearn`` starts, and the worker's peak RSS. The wrappers cost
microseconds and change no result.

Baseline-store hooks: the driver-side build task calls ``train_role`` only on a store miss; the
wrapper records each call and its seconds, so "zero seconds training baselines" is measured.
"""
from __future__ import annotations

import json
import os
import resource
import time


def _append(path: str, rec: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def setup() -> None:
    path = os.environ.get("FALW_BENCH_TRACE")
    if not path:
        return
    import ray
    from ray import tune

    import falw_ray.baselines as baselines
    import falw_ray.experiment as ex
    import falw_ray.study.cluster.shared as shared
    import falw_ray.study.search.trainable as tr

    cur: dict = {}
    orig_run_method, orig_unlearn, orig_evaluate, orig_report = tr.run_method, ex.unlearn, ex.evaluate, tune.report
    orig_train_role = shared.train_role

    def run_method(base, *args, **kwargs):
        try:
            trial = tune.get_context().get_trial_id()
        except Exception:  # noqa: BLE001 - outside Tune
            trial = None
        arrays = list(base.original.values()) + list(base.retrained.values())
        cur.clear()
        cur.update(trial=trial, run_method_at=time.perf_counter(), eval=0.0, report=0.0, callbacks=0.0,
                   unlearn_at=None, cb_at=None,
                   baseline_readonly=all(not a.flags.writeable for a in arrays if hasattr(a, "flags")),
                   baseline_key=base.scenario.key(),
                   baseline_mib=sum(getattr(a, "nbytes", 0) for a in arrays) / 2**20)
        return orig_run_method(base, *args, **kwargs)

    def unlearn(model, method, t, *args, on_epoch=None, **kwargs):
        cur["unlearn_at"] = time.perf_counter()

        def callback(epoch, m):
            cur["cb_at"] = time.perf_counter()
            try:
                on_epoch(epoch, m)
            finally:
                cur["callbacks"] += time.perf_counter() - cur["cb_at"]
                cur["cb_at"] = None

        return orig_unlearn(model, method, t, *args, on_epoch=callback if on_epoch else None, **kwargs)

    def evaluate(model, t):
        s = time.perf_counter()
        try:
            return orig_evaluate(model, t)
        finally:
            cur["eval"] += time.perf_counter() - s

    def report(metrics, *args, **kwargs):
        now = time.perf_counter()
        if cur.get("unlearn_at") is not None and "trial_seconds" in metrics:
            cb_at = cur["cb_at"] if cur.get("cb_at") is not None else now
            trial_start = now - float(metrics["trial_seconds"])
            _append(path, {
                "pid": os.getpid(), "trial": cur.get("trial"), "epoch": metrics.get("epoch"),
                "wall_at": time.time(), "trial_seconds": float(metrics["trial_seconds"]),
                "setup": cur["unlearn_at"] - trial_start,
                "before_run_method": cur["run_method_at"] - trial_start,
                "unlearn_epochs": cb_at - cur["unlearn_at"] - cur["callbacks"],
                "eval": cur["eval"], "report_wait": cur["report"],
                "elapsed_reported": metrics.get("elapsed"),
                "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "baseline_readonly": cur.get("baseline_readonly"), "baseline_key": cur.get("baseline_key"),
                "baseline_mib": cur.get("baseline_mib"),
            })
        s = time.perf_counter()
        try:
            return orig_report(metrics, *args, **kwargs)
        finally:
            cur["report"] = cur.get("report", 0.0) + time.perf_counter() - s

    def train_role(role, scenario, *args, **kwargs):
        s = time.perf_counter()
        try:
            return orig_train_role(role, scenario, *args, **kwargs)
        finally:
            _append(path, {"pid": os.getpid(), "train_role": role, "scenario": scenario.name,
                           "seconds": time.perf_counter() - s, "wall_at": time.time()})

    tr.run_method = run_method
    ex.unlearn = unlearn
    ex.evaluate = evaluate
    tune.report = report
    # The build task is shipped to workers by value, with its global train_role resolved by name in
    # falw_ray.baselines when the worker unpickles it: patch it there (and in shared, for safety).
    shared.train_role = baselines.train_role = train_role
    _ = ray  # imported so a missing Ray fails here, loudly


def read(path) -> tuple[list[dict], list[dict]]:
    """(per-trial last records, train_role records) from a trace file."""
    trials: dict = {}
    roles = []
    if not os.path.exists(path):
        return [], []
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            if "train_role" in rec:
                roles.append(rec)
            elif rec.get("trial"):
                trials[rec["trial"]] = rec
    return list(trials.values()), roles
