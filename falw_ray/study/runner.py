"""The Study API: run a study file on the local machine or a connected Ray cluster.

Data flow: spec -> cells -> baselines (store, Ray tasks for missing ones, object refs) -> one Tune run
over all cells: each cell's search, then as soon as it ends its top configurations re-run on the
selection seeds (when the study names any) and the chosen one re-run over the final seeds, which are
new -> tables (CSV, Markdown, MLflow: Retrain, the original model, every method, paired differences)
and plots.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from .cells import STAGES, Cell, build_cells, scenario_label, stage_config
from ..metrics import gaps as gaps_to
from .results import show as show_results
from .results import (best_per_cell, cell_summary, choose, edge_warnings, selection_gap, final_table, format_paired, format_table,
                      paired_table, table_notes, to_markdown)
from .spec import StudyError, StudySpec, load_study, parse_study
from .progress import ProgressLine
from .connect import connect_ray
from .journal import Journal, Recorder, changes, header
from .nodes import check_shared_storage
from ..columns import TRIAL_COLUMNS
from ..console import first_line, printer
from ..console import say as console_say
from . import raylog
from .schema import ERROR, FINISHED, MEASURED, OBJECTIVE, TRIAL_METRICS
from .tracking import TRACKING_ERRORS, Tracker, TrialLogger

QUIET_ENV = {
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_DEDUP_LOGS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    # Trials are recorded in the study's journal and tracked in MLflow: none of Tune's per-trial
    # files (JSON, CSV, TensorBoard), which cost the controller loop a file sync per result.
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
}


class StudyInterrupted(RuntimeError):
    """The study was stopped (Ctrl-C, SIGTERM) before every stage ended: not a result."""

    def __init__(self, stage: str, resume: str):
        self.stage, self.resume = stage, resume
        super().__init__(f"interrupted during the {stage} stage; finished trials are kept. Continue with: {resume}")


MAX_FAILURES = 5
"""Retries of a trial whose worker died: bounded, and enough for a node lost more than once."""


@dataclass
class StudyResult:
    trials: pd.DataFrame
    best: pd.DataFrame
    final: pd.DataFrame
    table: pd.DataFrame
    baselines: pd.DataFrame
    results_dir: Path
    study_run_id: str
    tracking_uri: str
    seconds: float = 0.0
    paths: dict = field(default_factory=dict)
    selection: pd.DataFrame = field(default_factory=pd.DataFrame)
    paired: pd.DataFrame = field(default_factory=pd.DataFrame)
    warnings: list[str] = field(default_factory=list)

    def failures(self) -> dict[str, int]:
        """Each distinct error of the study's failed trials (one line each) and how many trials it ended."""
        errors = [e for frame in (self.trials, self.selection, self.final) if "error" in frame
                  for e in frame.loc[frame["status"] == ERROR, "error"].fillna("failed")]
        return {e: errors.count(e) for e in dict.fromkeys(errors)}

    def show(self, columns: int | None = None) -> str:
        """The final table, the paired differences and the range warnings, as the console shows them
        (see :func:`results.show`), within ``columns`` (the terminal's width when not given)."""
        return show_results(self.table, self.paired, self.warnings, columns)


class Study:
    """A validated study, ready to run. Build it from YAML, a dict, or a StudySpec."""

    def __init__(self, spec: StudySpec | dict, source: str = "<study>"):
        self.spec = spec if isinstance(spec, StudySpec) else parse_study(spec, source)
        self.source = source
        # The study's content hash, as its journal's header names it: the file's bytes (from_yaml), else the spec's.
        self.digest = hashlib.sha256(json.dumps(self.spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
        self.stage = "start"
        try:
            self.cells: list[Cell] = build_cells(self.spec)
        except ValueError as e:
            raise StudyError(f"{source}: {e}") from None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "Study":
        study = cls(load_study(path), str(path))
        study.digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        return study

    def run(
        self,
        address: str | None = None,
        tracking_uri: str | None = None,
        storage: str | os.PathLike | None = None,
        progress: bool = True,
        resume: bool = False,
        verbose: bool = False,
        sync_only: bool = False,
        fresh: bool = False,
    ) -> StudyResult:
        """Run (or, with ``resume``, continue) the study. ``verbose`` shows Ray's, Tune's and MLflow's
        own log lines and the trial workers' output, which a study otherwise keeps off the console.
        ``sync_only``: resume a study whose trials are all recorded, to write what MLflow missed
        (and the tables), refusing if any trial is still to run. ``fresh``: run over an unfinished
        journal, which is set aside (renamed), never deleted. What to do is decided by the journal
        alone (see :meth:`_decide`)."""
        import ray

        spec = self.spec
        if not verbose:
            _quiet_libraries()
        spec.preflight(self.source)
        say = printer(progress)
        raylog.quiet_node_loss(console_say, MAX_FAILURES, on=not verbose)  # said even when quiet: not progress
        started = time.time()
        root = Path(storage or spec.storage).expanduser().resolve()
        results_dir = root / spec.name
        options = [*(["--storage", str(root)] if storage else []),
                   *(["--tracking-uri", tracking_uri] if tracking_uri else []), *(["--address", address] if address else [])]
        self._resume = " ".join(["falw-ray resume", self.source, *options])
        self._start = " ".join(["falw-ray run", self.source, *options])
        self._fresh = f"{self._start} --fresh"
        _check_writable(root, "--storage" if storage else f"{self.source}: storage")
        # Tracking is checked before Ray starts (an unreachable store costs a second, not a cluster
        # start) and written only once the cluster can hold a trial: a bad study writes nothing.
        tracker = Tracker(tracking_uri or spec.tracking.uri, spec.tracking.experiment or spec.name, root / "mlartifacts")
        journal = self._journal(root)
        head = header(spec, self.digest, __version__, tracker.uri, tracker.experiment_name)
        notes = self._decide(journal, head, "sync" if sync_only else "resume" if resume else "run", fresh)
        for k, v in QUIET_ENV.items():
            os.environ.setdefault(k, v)
        tracker.check()
        from . import ship

        env = ship.runtime_env(self.cells, {"env_vars": dict(QUIET_ENV)} if address else None)
        if ray.is_initialized() and (missing := ship.unshipped(env))[0]:
            if missing[1]:  # an earlier study's connection, without this one's plugins: remake it
                ray.shutdown()
            else:
                say(f"Ray was started before this study, without its plugin modules {missing[0]}: a worker that "
                    "cannot import them fails its trials; start Ray with runtime_env={'py_modules': [...]}")
        if not ray.is_initialized():
            local = {} if address else {"_node_ip_address": "127.0.0.1"}
            connect_ray(address, include_dashboard=False, log_to_driver=verbose,
                        logging_level=logging.INFO if verbose else logging.ERROR, runtime_env=env, **local)
            ship.connected(env)
        _check_resources(spec, self.source, address, ray.cluster_resources())
        check_shared_storage(root)
        self.concurrency = spec.search.max_concurrent or _slots(spec, address, ray.cluster_resources())
        tracker.connect()
        say(f"results: {results_dir}; baseline store: {root / 'baselines'}; MLflow: {tracker.uri}")
        resume = resume or sync_only
        if not resume:
            if journal.path.exists():
                say(f"the previous journal of study {spec.name} is kept as {journal.set_aside()}")
            journal.start(head)
        for note in notes:
            say(f"{journal.path}: {note}")
        kept = journal.header() or {}
        study_run = tracker.resume_study(kept.get("journal")) if resume else None
        if study_run is None:
            study_run = tracker.start_study(
                f"{spec.name}", {"study": spec.name, "source": self.source, "cells": len(self.cells),
                                 "trials_per_cell": spec.search.trials, "final_seeds": spec.final_seeds(),
                                 "selection_seeds": spec.selection.seeds, "selection_top_k": spec.selection.top_k},
                kept.get("journal", ""))
        else:
            say(f"resuming study run {study_run}")
        say(f"study {spec.name}: {len(self.cells)} cells x {spec.search.trials} trials, "
            + (f"top {spec.selection.top_k} re-run on seeds {spec.selection.seeds}, " if spec.selection.seeds else "")
            + f"final seeds {spec.final_seeds()}; MLflow {tracker.uri} (run {study_run})")
        status = "FAILED"
        self._tracking_down = None
        previous = _terminate_as_interrupt()
        try:
            result = self._run(tracker, root, results_dir, say)
            status = "FINISHED"
            result.seconds = time.time() - started
            say(f"done in {result.seconds:.0f}s; results in {results_dir}")
            return result
        except KeyboardInterrupt:
            status = "KILLED"
            open_stages = getattr(getattr(self, "_recorder", None), "open", {}).values()
            self.stage = min(open_stages, key=STAGES.index, default=self.stage)
            raise StudyInterrupted(self.stage, self._resume) from None
        except StudyInterrupted:
            status = "KILLED"
            raise
        finally:
            try:
                if self._tracking_down is None:
                    if status == "KILLED":
                        tracker.tag(study_run, {"interrupted_stage": self.stage})
                    for run in tracker.unfinished_children():
                        tracker.end(run, "KILLED" if status == "KILLED" else "FAILED")
                    tracker.end(study_run, status)
            except TRACKING_ERRORS as e:
                self._tracking_down = first_line(e)
            if self._tracking_down is not None:
                say(f"MLflow at {tracker.uri} could not be written ({self._tracking_down}); every completed "
                    f"trial is in {self._journal(root).path}. Once MLflow is back, "
                    f"`{self._resume}` writes what is missing and runs nothing again")
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def _journal(self, root: Path) -> Journal:
        return Journal(root / "ray" / f"{self.spec.name}.finished.jsonl")

    def _searcher(self, records: dict):
        from .search import CellSearcher

        spec = self.spec
        return CellSearcher(self.cells, spec.search.trials, spec.search.sampler_seed, spec.final_seeds(),
                            spec.selection.seeds, spec.selection.top_k, done=records)

    def _decide(self, journal: Journal, head: dict, command: str, fresh: bool) -> list[str]:
        """Whether ``command`` (run, resume, sync) may go on, from the journal alone, before anything
        starts or is written: refusals are one line; returns what to state (changes to the study
        file that leave its trials as they were). ``run`` starts a new journal, setting the old one
        aside, unless the old one is this study's and unfinished (resume it, or ``fresh``); resume
        and sync continue the journal, refused where there is none or the study's trials changed."""
        name = self.spec.name
        if command == "run":
            if fresh or not journal.path.exists() or changes(journal.header(), head)[0] is not None:
                return []
            records = journal.load()
            if self._replayed(journal, records).finished():
                return []
            raise StudyError(f"{journal.path}: study {name} has an unfinished journal ({len(records)} trial(s) "
                             f"recorded): `{self._resume}` continues it, `{self._fresh}` starts over (the old "
                             "journal is kept under a new name)")
        if not journal.path.exists():
            raise StudyError(f"{journal.path}: no journal of study {name}: nothing to {command}; "
                             f"start the study with `{self._start}`")
        change, notes = changes(journal.header(), head)
        if change is not None:
            raise StudyError(f"{journal.path}: {self.source} changed since the journal was written in a way that "
                             f"changes its trials ({change}); {command} refused, the journal untouched: undo the "
                             f"change, or `{self._fresh}` starts over (the old journal is kept under a new name)")
        if command == "sync" and not self._replayed(journal, journal.load()).finished():
            raise StudyError(f"{journal.path}: study {name} still has trials to run; sync runs none "
                             f"(`{self._resume}` does)")
        return notes

    def _replayed(self, journal: Journal, records: dict):
        """The searcher in the state the journal's trials put it in; a journal that does not fit
        the study (written before headers, by another version of it) is a one-line refusal."""
        try:
            return self._searcher(records)
        except (KeyError, ValueError) as e:
            raise StudyError(f"{journal.path}: the journal's trials do not fit {self.source} ({type(e).__name__}: "
                             f"{first_line(e)}); `{self._fresh}` starts over (the old journal is kept under a "
                             "new name)") from None

    def _run(self, tracker: Tracker, root: Path, results_dir: Path, say) -> StudyResult:
        from ray import tune
        from ray.tune.error import TuneError

        from .search import CellScheduler, rung_epochs
        from .shared import SharedObjects
        from .ship import plugin_methods
        from .trainable import unlearning_trial

        spec, cells = self.spec, {c.id: c for c in self.cells}
        shared = SharedObjects()
        res = spec.resources
        store_root = str(root / "baselines")

        logged = {(r.data.tags["scenario"], r.data.tags["role"]) for r in tracker.children(tracker.study_run, "baseline")}

        def baselines_for(scenarios):
            shared.start(scenarios, store_root, res.cpu, res.gpu)
            for ev in shared.wait(scenarios, say):
                s, m = ev["scenario"], ev["metrics"]
                for role in ("original", "retrained"):
                    if (s.name, role) in logged:  # a resumed study logged it before
                        continue
                    secs = m["original_seconds"] if role == "original" else m["retrain_seconds"]
                    self._logger.writer.submit(tracker.log_baseline, s, scenario_label(s), role, m[role], secs, ev[role])

        def evaluated_epochs() -> dict | None:
            """Search trials are judged at ASHA's rungs and their last epoch, final runs at the last."""
            if spec.search.evaluate == "every_epoch":
                return None
            es = spec.early_stopping
            rungs = {c.id: rung_epochs(es.grace_period, es.reduction_factor, c.epochs) if es.enabled else []
                     for c in self.cells}
            last = {c.id: (c.epochs,) for c in self.cells}
            return {"search": {c.id: tuple(sorted({c.epochs, *rungs[c.id]})) for c in self.cells},
                    "select": last, "final": last}

        def trainable():
            fn = tune.with_parameters(unlearning_trial, cells=cells, baselines=dict(shared.baselines),
                                      datasets=dict(shared.datasets), threads=max(1, int(res.cpu)),
                                      falw_refresh_every=spec.search.falw_refresh_every,
                                      evaluate=evaluated_epochs(), compile=spec.search.compile,
                                      precision=spec.search.precision, plugins=plugin_methods(self.cells))
            return tune.with_resources(fn, {"cpu": res.cpu, "gpu": res.gpu})

        final_seeds, select_seeds = spec.final_seeds(), spec.selection.seeds
        n_search, n_final = len(self.cells) * spec.search.trials, len(self.cells) * len(final_seeds)
        n_select = len(self.cells) * spec.selection.top_k * len(select_seeds)  # at most: fewer distinct configs, fewer runs
        journal = self._journal(root)
        records = journal.load()
        searcher = self._searcher

        search_alg = searcher(records)
        complete = search_alg.finished()
        runs, rebuilt = {}, 0
        if records:
            # The journal is the record: MLflow gets exactly one complete run per trial in it (rebuilt
            # where the crash cut its writes off, or all of them in a store new to the study), and
            # no run of a trial cut off before it completed.
            runs, rebuilt = tracker.sync_trials(records, cells)
            if not complete:
                say(f"resuming from {journal.path}: {len(records)} completed trial(s) kept"
                    + (f", {rebuilt} MLflow run(s) rebuilt" if rebuilt else ""))
        recorder = self._recorder = Recorder(journal, cells)
        logger = self._logger = TrialLogger(tracker, cells, recorder, runs)
        if complete:
            logger.setup()  # what the logger writes when Tune starts (the search space): Tune will not start
        run_config = tune.RunConfig(
            name=spec.name, storage_path=str(root / "ray"), verbose=0,
            callbacks=[recorder, logger, ProgressLine("search", n_search, say, cells).replay(records),
                       *([ProgressLine("select", n_select, say, cells, at_most=True,
                                       exact=search_alg.selection_runs).replay(records)]
                         if select_seeds else []),
                       ProgressLine("final", n_final, say, cells).replay(records)],
            failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
        )

        # Every baseline first, the final stage's seeds too: a cell's final runs start as soon as its
        # search is over, and no trial holds a CPU waiting for a baseline task that needs one.
        final_scenarios = [c.at_seed(seed) for c in self.cells for seed in final_seeds]
        select_scenarios = [c.at_seed(seed) for c in self.cells for seed in select_seeds]
        self.stage = "baselines"
        baselines_for(spec.scenario_list() + select_scenarios + final_scenarios)
        self.stage = "search"
        if not complete:
            # Tune's own experiment folder is a cache (the journal is the record): a fresh one per run.
            shutil.rmtree(root / "ray" / spec.name, ignore_errors=True)
            scheduler = (CellScheduler(self.cells, spec.early_stopping.grace_period,
                                       spec.early_stopping.reduction_factor).replay(records)
                         if spec.early_stopping.enabled else None)
            tuner = tune.Tuner(trainable(), run_config=run_config, tune_config=tune.TuneConfig(
                search_alg=search_alg, scheduler=scheduler,
                num_samples=max(1, n_search + n_select + n_final - len(records)),
                max_concurrent_trials=self.concurrency, reuse_actors=True,
            ))
            try:
                with _no_result_files_warning():
                    tuner.fit()
            except TuneError:
                if recorder.failure is not None:  # the journal could not be written: that, not Tune's traceback
                    raise recorder.failure from None
                raise
        lost = logger.flush()
        records = journal.load()
        if recorder.open or not searcher(records).finished():
            # Tune ends fit() early, without an error, when it is interrupted: trials still open (or
            # a study short of its trials) mean the study did not end.
            self.stage = min(recorder.open.values(), key=STAGES.index, default=_open_stage(records, n_search, bool(select_seeds)))
            raise StudyInterrupted(self.stage, self._resume)
        runs = dict(logger.runs)
        if lost:
            say(f"{len(lost)} MLflow write(s) did not reach {tracker.uri} (first: {lost[0]}); "
                "rebuilding those runs from the journal")
            runs = self._sync(tracker, records, cells, say) or runs
        trials = _trials_frame(records, cells, runs, "search")
        selection = _trials_frame(records, cells, runs, "select")
        final = _trials_frame(records, cells, runs, "final")
        best = _chosen(best_per_cell(trials, cells), selection, trials, cells)
        if best.empty:  # no cell has a trial that ran: the tables keep their columns
            best = trials.iloc[0:0]
        final["seconds"] = final["elapsed"]
        keys = {s.key() for s in final_scenarios}
        reference = _reference_frame(shared.events, keys)
        original = _original_frame(shared.events, keys)
        order = {cid: i for i, cid in enumerate(cells)}  # the study's order of cells, not the order runs ended
        ranked_final = final.iloc[np.argsort(final["cell"].map(order).to_numpy(), kind="stable")] if len(final) else final
        table = final_table(ranked_final[ranked_final["status"] == FINISHED], reference, original)
        paired = paired_table(final, spec.compare)
        warnings = edge_warnings(best, {cid: c.space for cid, c in cells.items()})
        baselines = pd.DataFrame([{k: (v.name if k == "scenario" else v) for k, v in e.items() if k != "metrics"}
                                  for e in shared.events])
        result = StudyResult(trials=trials, best=best, final=final, table=table, baselines=baselines,
                             results_dir=results_dir, study_run_id=tracker.study_run, tracking_uri=tracker.uri,
                             selection=selection, paired=paired, warnings=warnings)
        for w in warnings:
            say(w)
        result.paths = _write(result, reference, cells, original)
        if complete:
            say(f"study {spec.name} was complete in {journal.path}: no trial run; {rebuilt} MLflow run(s) rebuilt "
                f"from it at {tracker.uri}, tables rewritten in {results_dir}")
        try:
            _track(result, tracker, logger.cell_runs, cells, original)
        except TRACKING_ERRORS as e:
            self._tracking_down = first_line(e)
        return result

    def _sync(self, tracker: Tracker, records: dict, cells: dict, say) -> dict | None:
        """The journal's trials into MLflow (Tracker.sync_trials); None while the store is down."""
        try:
            runs, rebuilt = tracker.sync_trials(records, cells)
        except TRACKING_ERRORS as e:
            self._tracking_down = first_line(e)
            return None
        say(f"MLflow: {rebuilt} trial run(s) rebuilt from the journal")
        return runs


def _quiet_libraries() -> None:
    """Keep the libraries' INFO and WARNING lines (MLflow's database set-up, Ray's start and its
    token-authentication notice, Tune's state saves) off the console; errors still show. The
    protections those lines describe stay on."""
    for name in ("mlflow", "alembic", "ray", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # MLflow's client prints a "View run ... at" line per run it closes on a server: hundreds per study.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


@contextmanager
def _no_result_files_warning():
    """fit() reads each trial's result files back into its ResultGrid and warns that there are none:
    the study writes none (its journal holds the results) and does not read the grid."""
    log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _trials_frame(records: dict[str, dict], cells: dict, runs: dict, stage: str) -> pd.DataFrame:
    """One row per completed trial of a stage, from the journal, in the order the searcher created
    them; an error row names its own trial (cell, seed, hyperparameters) and the error."""
    rows = []
    for record in sorted(records.values(), key=lambda r: r["seq"]):
        if record["stage"] != stage:
            continue
        config = stage_config(record["config"])
        cell = cells[config["cell"]]
        m = record["result"]
        scenario = cell.at_seed(config["seed"]) if "seed" in config else cell.scenario
        rows.append({
            **dict(zip(TRIAL_COLUMNS, (cell.id, scenario_label(scenario), cell.method, cell.falw, scenario.seed,
                                       record["trial_id"], record["status"], m.get("epoch", 0)))),
            **({"rank": config["rank"]} if "rank" in config else {}),
            **cell.hp(config),
            **{k: m.get(k, float("nan")) for k in TRIAL_METRICS},
            "fa_per_class": m.get("fa_per_class"),
            "started_at": m.get("started_at"), "ended_at": m.get("reported_at"), "gpus": m.get("gpus"),
            "gpu_share": m.get("gpu_share"),
            "mlflow_run_id": runs.get(record["trial_id"]),
            **({"error": record.get("error", "")} if record["status"] == ERROR else {}),
        })
    # No trial of the stage completed (every one failed before reporting): the frame still has its
    # columns, so the tables of what did finish are written.
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=EMPTY_TRIALS)


EMPTY_TRIALS = ["cell", "scenario", "method", "falw", "seed", "trial_id", "status", "epochs_done", *TRIAL_METRICS,
                "fa_per_class", "started_at", "ended_at", "gpus", "gpu_share", "mlflow_run_id"]


def _open_stage(records: dict[str, dict], n_search: int, selecting: bool) -> str:
    """The earliest stage a study cut off between trials had not finished."""
    if sum(r["stage"] == "search" for r in records.values()) < n_search:
        return "search"
    return "select" if selecting and not any(r["stage"] == "final" for r in records.values()) else "final"


def _chosen(best: pd.DataFrame, selection: pd.DataFrame, trials: pd.DataFrame, cells: dict) -> pd.DataFrame:
    """Each cell's configuration that went to the final seeds, as its search trial's row: the search's
    best, or, where a selection stage ran, the candidate with the lowest mean Avg. Gap over the
    selection seeds (results.choose, the searcher's own rule), with that mean and its spread."""
    if not len(selection):
        return best
    rows = []
    for _, row in best.iterrows():
        runs = selection[selection["cell"] == row["cell"]]
        if not len(runs):
            rows.append(row)
            continue
        space = list(cells[row["cell"]].space)
        ranks = sorted(runs["rank"].unique())
        gaps = [[selection_gap(s, g) for s, g in zip(runs[runs["rank"] == r]["status"], runs[runs["rank"] == r][OBJECTIVE])]
                for r in ranks]
        pick = ranks[choose(gaps)]
        picked = runs[runs["rank"] == pick]
        same = trials[(trials["cell"] == row["cell"])
                      & np.logical_and.reduce([trials[k] == picked.iloc[0][k] for k in space])]
        out = same.sort_values(OBJECTIVE, kind="stable").iloc[0].copy() if len(same) else row.copy()
        out["search_rank"] = int(pick) + 1
        out[f"selection_{OBJECTIVE}"] = float(picked[OBJECTIVE].mean())
        out[f"selection_{OBJECTIVE}_std"] = float(picked[OBJECTIVE].std(ddof=0))
        out["selection_seeds"] = len(picked)
        rows.append(out)
    return pd.DataFrame(rows).reset_index(drop=True)


def _log_cells(tracker: Tracker, runs: dict, cells: dict, best: pd.DataFrame, final: pd.DataFrame,
               paired: pd.DataFrame) -> None:
    """Each cell's run gets the cell's answer (the chosen hyperparameters and its final seeds'
    summary, see results.cell_summary) and is closed: the MLflow cell view compares these rows."""
    for cid, cell in cells.items():
        run = runs.get(cid)
        if run is None:
            continue
        chosen = best[best["cell"] == cid]
        hp = {k: chosen.iloc[0][k] for k in cell.space} if len(chosen) else {}
        tracker.log_cell(run, {**hp, **{f"option.{k}": v for k, v in cell.options.items()}},
                         cell_summary(final, paired, cid, cell.method, cell.falw, scenario_label(cell.scenario)))
        tracker.end(run, "FINISHED")


def _original_frame(events: list[dict], keys: set[str]) -> pd.DataFrame:
    """The original model's own metrics and gaps to Retrain per final seed: what doing nothing scores."""
    rows = []
    for e in events:
        if e["key"] in keys:
            o, r = e["metrics"]["original"], e["metrics"]["retrained"]
            g = gaps_to(o, r)
            rows.append({"scenario": scenario_label(e["scenario"]), "seed": e["scenario"].seed,
                         **{k: o[k] for k in MEASURED}, **g, "fa_per_class": o.get("fa_per_class")})
    return pd.DataFrame(rows)


def _reference_frame(events: list[dict], keys: set[str]) -> pd.DataFrame:
    rows = []
    for e in events:
        if e["key"] in keys:
            m = e["metrics"]["retrained"]
            rows.append({"scenario": scenario_label(e["scenario"]), "seed": e["scenario"].seed,
                         **{k: m[k] for k in MEASURED}, "seconds": e["metrics"]["retrain_seconds"],
                         "fa_per_class": m.get("fa_per_class")})
    return pd.DataFrame(rows)


def _write(result: StudyResult, reference: pd.DataFrame | None = None, cells: dict | None = None,
           original: pd.DataFrame | None = None) -> dict:
    """The result files and plots (written whether or not MLflow can be reached)."""
    d = result.results_dir
    d.mkdir(parents=True, exist_ok=True)
    paths = {
        "trials": d / "trials.csv", "best": d / "best.csv", "final": d / "final.csv",
        "table": d / "table.csv", "table_md": d / "table.md", "baselines": d / "baselines.csv",
        "paired": d / "paired.csv",
    }
    if len(result.selection):
        paths["selection"] = d / "selection.csv"
        write_atomic(paths["selection"], result.selection.to_csv(index=False))
    write_atomic(paths["paired"], result.paired.to_csv(index=False))
    for name, frame in (("trials", result.trials), ("best", result.best), ("final", result.final),
                        ("table", result.table), ("baselines", result.baselines)):
        write_atomic(paths[name], frame.to_csv(index=False))
    write_atomic(paths["table_md"], to_markdown(format_table(result.table, markdown=True))
                 + table_notes(result.paired, result.warnings))
    from .plots import write_all

    paths["plots"] = d / "plots"
    write_all(result.final, reference, result.trials, cells, paths["plots"], original, chosen=result.best)
    return paths


def _track(result: StudyResult, tracker: Tracker, cell_runs: dict, cells: dict, original: pd.DataFrame) -> None:
    """The study's answers into MLflow: the chosen trials tagged ``best``, the files and plots as the
    study run's artifacts, the paired differences and the original model on the study run, and each
    cell's outcome on its run."""
    for run_id in result.best["mlflow_run_id"].dropna():
        tracker.tag(run_id, {"best": "true"})
    for name, path in result.paths.items():
        if name == "plots":
            if path.is_dir() and any(path.iterdir()):
                tracker.client.log_artifacts(result.study_run_id, str(path), artifact_path="plots")
        else:
            tracker.client.log_artifact(result.study_run_id, str(path))
    tracker.log_outcome(result.paired, original, result.warnings)
    _log_cells(tracker, cell_runs, cells, result.best, result.final, result.paired)


def _terminate_as_interrupt():
    """SIGTERM (a job stopped, a container shut down) ends the study as Ctrl-C does: its state
    saved, its MLflow runs closed as KILLED, the resume command printed. Returns the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` through a synced temporary file and a rename: a crash or a full disk
    leaves the old file or the new one, never a truncated one. Errors name the file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(f"{path}: could not write ({e.strerror or e}); the previous version, if any, is kept") from None


def _check_writable(root: Path, field: str) -> None:
    """Storage must take files before anything starts: one line naming it, not a traceback later.
    Checked without writing (a study refused later must leave nothing behind): the folder, or the
    nearest one above it that exists, must be a writable directory (a read-only mount is not)."""
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise StudyError(f"{field}: {root} is not writable ({probe} is not a writable folder)")


def _check_resources(spec: StudySpec, source: str, address: str | None, cluster: dict) -> None:
    """A local cluster cannot grow: a trial that asks for more than it has would wait forever."""
    if address is not None:
        return
    for name, need, have in (("gpu", spec.resources.gpu, cluster.get("GPU", 0)), ("cpu", spec.resources.cpu, cluster.get("CPU", 0))):
        if need > have:
            raise StudyError(f"{source}: resources.{name}: a trial asks for {need:g} but this Ray cluster has {have:g}")


def _slots(spec: StudySpec, address: str | None, cluster: dict) -> int:
    """How many trials run at once. Tune starts one trial at a time for a custom searcher unless told
    this: on a local cluster it is what the resources hold; on a remote (autoscaling) cluster, a
    generous 16 keeps enough trials pending for the autoscaler to see the demand."""
    if address is not None:
        return 16
    slots = int(cluster.get("CPU", 1) // spec.resources.cpu)
    if spec.resources.gpu > 0:
        slots = min(slots, int(cluster.get("GPU", 0) // spec.resources.gpu))
    return max(1, slots)
