"""The Study API: run a study file on the local machine or a connected Ray cluster.

Data flow: spec -> cells -> baselines (store, Ray tasks for missing ones, object refs) -> one Tune run
over all cells: each cell's search, then as soon as it ends its top configurations re-run on the
selection seeds (when the study names any) and the chosen one re-run over the final seeds, which are
new -> the journal (the record) -> tables (CSV, Markdown, plots) and MLflow (Retrain, the original
model, every method, paired differences).

The runner composes the rooms below it, the record (``record/``), the search (``search/``), tracking
(``tracking/``) and the cluster (``cluster/``), and decides from the journal alone what a command may do.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..console import first_line, printer, say as say_always
from .cluster import raylog
from .cluster.launch import quiet_libraries, start_ray
from .progress import ProgressLine
from .record.journal import Journal, changes, header, journal_path
from .record.recorder import Recorder
from .record.tables import StudyResult, open_stage, study_tables, write_tables
from .record.trials import STAGES, scenario_label
from .search.cells import Cell, build_cells
from .search.tuner import MAX_FAILURES, run_trials, searcher, trial_budget
from .spec import StudyError, StudySpec, load_study, parse_study
from .tracking.sink import TrialLogger
from .tracking.study import close_study_run, open_study_run, track_outcome
from .tracking.tracker import TRACKING_ERRORS, Tracker

__all__ = ["Study", "StudyInterrupted", "StudyResult"]


class StudyInterrupted(RuntimeError):
    """The study was stopped (Ctrl-C, SIGTERM) before every stage ended: not a result."""

    def __init__(self, stage: str, resume: str):
        self.stage, self.resume = stage, resume
        super().__init__(f"interrupted during the {stage} stage; finished trials are kept. Continue with: {resume}")


@dataclass(frozen=True)
class Commands:
    """The command lines a study's messages tell a person to type, with the options it was given."""
    start: str
    resume: str
    fresh: str

    @classmethod
    def of(cls, source: str, storage, tracking_uri: str | None, address: str | None) -> "Commands":
        options = [*(["--storage", str(storage)] if storage else []),
                   *(["--tracking-uri", tracking_uri] if tracking_uri else []), *(["--address", address] if address else [])]
        start = " ".join(["falw-ray run", source, *options])
        return cls(start, " ".join(["falw-ray resume", source, *options]), f"{start} --fresh")


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

    def run(self, address: str | None = None, tracking_uri: str | None = None, storage: str | os.PathLike | None = None,
            progress: bool = True, resume: bool = False, verbose: bool = False, sync_only: bool = False,
            fresh: bool = False) -> StudyResult:
        """Run (or, with ``resume``, continue) the study. ``verbose`` shows Ray's, Tune's and MLflow's
        own log lines and the trial workers' output, which a study otherwise keeps off the console.
        ``sync_only``: resume a study whose trials are all recorded, to write what MLflow missed
        (and the tables), refusing if any trial is still to run. ``fresh``: run over an unfinished
        journal, which is set aside (renamed), never deleted. What to do is decided by the journal
        alone (see :meth:`_decide`), before anything is written."""
        spec, say, started = self.spec, printer(progress), time.time()
        if not verbose:
            quiet_libraries()
        raylog.quiet_node_loss(say_always, MAX_FAILURES, on=not verbose)  # said even when quiet: not progress
        spec.preflight(self.source)
        root = Path(storage or spec.storage).expanduser().resolve()
        self.commands = Commands.of(self.source, root if storage else None, tracking_uri, address)
        _check_writable(root, "--storage" if storage else f"{self.source}: storage")
        # Tracking is checked before Ray starts (an unreachable store costs a second, not a cluster
        # start) and written only once the cluster can hold a trial: a bad study writes nothing.
        tracker = Tracker(tracking_uri or spec.tracking.uri, spec.tracking.experiment or spec.name, root / "mlartifacts")
        journal = Journal(journal_path(root, spec.name))
        head = header(spec, self.digest, __version__, tracker.uri, tracker.experiment_name)
        notes = self._decide(journal, head, "sync" if sync_only else "resume" if resume else "run", fresh)
        tracker.check()
        self.concurrency = start_ray(spec, self.source, self.cells, address, root, verbose, say)
        tracker.connect()
        say(f"results: {root / spec.name}; baseline store: {root / 'baselines'}; MLflow: {tracker.uri}")
        if not (resume or sync_only):
            if journal.path.exists():
                say(f"the previous journal of study {spec.name} is kept as {journal.set_aside()}")
            journal.start(head)
        for note in notes:
            say(f"{journal.path}: {note}")
        study_run = open_study_run(tracker, spec, self.source, len(self.cells), journal.header() or {},
                                   resume or sync_only, say)
        say(f"study {spec.name}: {len(self.cells)} cells x {spec.search.trials} trials, "
            + (f"top {spec.selection.top_k} re-run on seeds {spec.selection.seeds}, " if spec.selection.seeds else "")
            + f"final seeds {spec.final_seeds()}; MLflow {tracker.uri} (run {study_run})")
        status, self._tracking_down, previous = "FAILED", None, _terminate_as_interrupt()
        try:
            result = self._run(tracker, journal, root, say)
            status, result.seconds = "FINISHED", time.time() - started
            say(f"done in {result.seconds:.0f}s; results in {result.results_dir}")
            return result
        except KeyboardInterrupt:
            status = "KILLED"
            open_stages = getattr(getattr(self, "_recorder", None), "open", {}).values()
            self.stage = min(open_stages, key=STAGES.index, default=self.stage)
            raise StudyInterrupted(self.stage, self.commands.resume) from None
        except StudyInterrupted:
            status = "KILLED"
            raise
        finally:
            if self._tracking_down is None:
                self._tracking_down = close_study_run(tracker, study_run, status, self.stage)
            if self._tracking_down is not None:
                say(f"MLflow at {tracker.uri} could not be written ({self._tracking_down}); every completed "
                    f"trial is in {journal.path}. Once MLflow is back, "
                    f"`{self.commands.resume}` writes what is missing and runs nothing again")
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

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
                             f"recorded): `{self.commands.resume}` continues it, `{self.commands.fresh}` starts over (the old "
                             "journal is kept under a new name)")
        if not journal.path.exists():
            raise StudyError(f"{journal.path}: no journal of study {name}: nothing to {command}; "
                             f"start the study with `{self.commands.start}`")
        change, notes = changes(journal.header(), head)
        if change is not None:
            raise StudyError(f"{journal.path}: {self.source} changed since the journal was written in a way that "
                             f"changes its trials ({change}); {command} refused, the journal untouched: undo the "
                             f"change, or `{self.commands.fresh}` starts over (the old journal is kept under a new name)")
        if command == "sync" and not self._replayed(journal, journal.load()).finished():
            raise StudyError(f"{journal.path}: study {name} still has trials to run; sync runs none "
                             f"(`{self.commands.resume}` does)")
        return notes

    def _replayed(self, journal: Journal, records: dict):
        """The searcher in the state the journal's trials put it in; a journal that does not fit
        the study (written before headers, by another version of it) is a one-line refusal."""
        try:
            return searcher(self.spec, self.cells, records)
        except (KeyError, ValueError) as e:
            raise StudyError(f"{journal.path}: the journal's trials do not fit {self.source} ({type(e).__name__}: "
                             f"{first_line(e)}); `{self.commands.fresh}` starts over (the old journal is kept under a "
                             "new name)") from None

    def _run(self, tracker: Tracker, journal: Journal, root: Path, say) -> StudyResult:
        """Baselines, then the trials the journal does not hold, then the tables and MLflow's answers."""
        from .cluster.shared import SharedObjects

        spec, cells = self.spec, {c.id: c for c in self.cells}
        records = journal.load()
        complete = searcher(spec, self.cells, records).finished()
        logged = {(r.data.tags["scenario"], r.data.tags["role"]) for r in tracker.children(tracker.study_run, "baseline")}
        # The journal is the record: MLflow gets exactly one complete run per trial in it (rebuilt
        # where the crash cut its writes off, or all of them in a store new to the study), and
        # no run of a trial cut off before it completed.
        runs, rebuilt = tracker.sync_trials(records, cells) if records else ({}, 0)
        if records and not complete:
            say(f"resuming from {journal.path}: {len(records)} completed trial(s) kept"
                + (f", {rebuilt} MLflow run(s) rebuilt" if rebuilt else ""))
        recorder = self._recorder = Recorder(journal, cells)
        logger = TrialLogger(tracker, cells, recorder, runs)
        shared = SharedObjects()
        final_scenarios = [c.at_seed(seed) for c in self.cells for seed in spec.final_seeds()]
        self.stage = "baselines"
        self._baselines(shared, logger, logged, str(root / "baselines"), final_scenarios, say)
        self.stage = "search"
        if complete:
            logger.setup()  # what the logger writes when Tune starts (the search space): Tune will not start
        else:
            search = searcher(spec, self.cells, records)
            run_trials(spec, self.cells, root, search, records, [recorder, logger, *self._progress(search, records, say)],
                       self.concurrency, shared, recorder)
        lost = logger.flush()
        records = journal.load()
        if recorder.open or not searcher(spec, self.cells, records).finished():
            # Tune ends fit() early, without an error, when it is interrupted: trials still open (or
            # a study short of its trials) mean the study did not end.
            self.stage = min(recorder.open.values(), key=STAGES.index, default=open_stage(
                records, trial_budget(spec, self.cells)["search"], bool(spec.selection.seeds)))
            raise StudyInterrupted(self.stage, self.commands.resume)
        runs = dict(logger.runs)
        if lost:
            say(f"{len(lost)} MLflow write(s) did not reach {tracker.uri} (first: {lost[0]}); "
                "rebuilding those runs from the journal")
            runs = self._sync(tracker, records, cells, say) or runs
        result = study_tables(records, cells, runs, shared.events, {s.key() for s in final_scenarios}, spec.compare,
                              root / spec.name, tracker.study_run, tracker.uri)
        for w in result.warnings:
            say(w)
        result.paths = write_tables(result, cells)
        if complete:
            say(f"study {spec.name} was complete in {journal.path}: no trial run; {rebuilt} MLflow run(s) rebuilt "
                f"from it at {tracker.uri}, tables rewritten in {result.results_dir}")
        try:
            track_outcome(result, tracker, logger.cell_runs, cells)
        except TRACKING_ERRORS as e:
            self._tracking_down = first_line(e)
        return result

    def _baselines(self, shared, logger: TrialLogger, logged: set, store_root: str, final_scenarios: list, say) -> None:
        """Every baseline before any trial, the selection and final seeds' too: a cell's final runs
        start as soon as its search is over, and no trial holds a CPU waiting for a baseline task
        that needs one. Each is logged to MLflow once (``logged``: by an earlier run of the study)."""
        spec, tracker = self.spec, logger.tracker
        scenarios = [*spec.scenario_list(), *(c.at_seed(s) for c in self.cells for s in spec.selection.seeds),
                     *final_scenarios]
        shared.start(scenarios, store_root, spec.resources.cpu, spec.resources.gpu)
        for ev in shared.wait(scenarios, say):
            s, m = ev["scenario"], ev["metrics"]
            for role in ("original", "retrained"):
                if (s.name, role) not in logged:
                    secs = m["original_seconds"] if role == "original" else m["retrain_seconds"]
                    logger.writer.submit(tracker.log_baseline, s, scenario_label(s), role, m[role], secs, ev[role])

    def _progress(self, search, records: dict, say) -> list[ProgressLine]:
        """One progress line per stage, each replaying the journal's trials so counts go on from there;
        the selection's count is exact once the running searcher (``search``) knows it."""
        cells, budget = {c.id: c for c in self.cells}, trial_budget(self.spec, self.cells)
        select = ([ProgressLine("select", budget["select"], say, cells, at_most=True,
                                exact=search.selection_runs).replay(records)]
                  if self.spec.selection.seeds else [])
        return [ProgressLine("search", budget["search"], say, cells).replay(records), *select,
                ProgressLine("final", budget["final"], say, cells).replay(records)]

    def _sync(self, tracker: Tracker, records: dict, cells: dict, say) -> dict | None:
        """The journal's trials into MLflow (Tracker.sync_trials); None while the store is down."""
        try:
            runs, rebuilt = tracker.sync_trials(records, cells)
        except TRACKING_ERRORS as e:
            self._tracking_down = first_line(e)
            return None
        say(f"MLflow: {rebuilt} trial run(s) rebuilt from the journal")
        return runs

def _terminate_as_interrupt():
    """SIGTERM (a job stopped, a container shut down) ends the study as Ctrl-C does: its state
    saved, its MLflow runs closed as KILLED, the resume command printed. Returns the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)

def _check_writable(root: Path, field: str) -> None:
    """Storage must take files before anything starts: one line naming it, not a traceback later.
    Checked without writing (a study refused later must leave nothing behind): the folder, or the
    nearest one above it that exists, must be a writable directory (a read-only mount is not)."""
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise StudyError(f"{field}: {root} is not writable ({probe} is not a writable folder)")
