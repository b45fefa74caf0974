"""The MLflow sink of a running study: trial runs written on a background thread from what the
journal's Recorder records, so that Tune's controller loop never waits on the tracking store."""
from __future__ import annotations

import queue
import threading
import time

from ray.tune import Callback

from ...columns import EPOCH_METRICS
from ..record.trials import stage_config
from .tracker import TRACKING_ERRORS, Tracker, trial_run


RETRY_AFTER_S = 30.0
"""How long the writer leaves the store alone after a write failed past MLflow's own retries."""


class Writer:
    """Runs tracking writes in order on one background thread, so that Tune's controller loop (which
    calls the callbacks, and through which every trial's results pass) never waits on the store.

    Tracking is a sink, never a reason to stop: once a write fails past MLflow's own retries, later
    writes are skipped for RETRY_AFTER_S, then tried again. Nothing is lost by skipping: every
    completed trial is in the journal first, and the study (or ``falw-ray sync``) rebuilds its run
    from there (Tracker.sync_trials)."""

    def __init__(self, clock=time.monotonic):
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self.clock = clock
        self.errors: list[str] = []
        self.skipped = 0
        self.down_since: float | None = None

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def submit(self, fn, *args) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._drain, name="falw-ray-tracking", daemon=True)
            self._thread.start()
        self._queue.put((fn, args))

    def _drain(self) -> None:
        while True:
            fn, args = self._queue.get()
            try:
                if self.down_since is not None and self.clock() - self.down_since < RETRY_AFTER_S:
                    self.skipped += 1
                    continue
                fn(*args)
                self.down_since = None
            except TRACKING_ERRORS as e:  # the store is down or failing: rebuilt from the journal later
                self.down_since = self.clock()
                self.errors.append(f"{getattr(fn, '__name__', fn)}: {str(e).strip()[:200]}")
            except Exception as e:  # noqa: BLE001 - a bug in one write must not stop the thread (flush would wait forever)
                self.errors.append(f"{getattr(fn, '__name__', fn)}: {type(e).__name__}: {str(e).strip()[:200]}")
            finally:
                self._queue.task_done()

    def wait(self) -> None:
        self._queue.join()

    @property
    def lost(self) -> bool:
        """Whether any write failed or was skipped since the last :meth:`flush`."""
        return bool(self.errors or self.skipped)

    def flush(self) -> list[str]:
        """Wait until every write submitted so far is done; returns (and forgets) the failures."""
        self.wait()
        errors = self.errors + ([f"{self.skipped} write(s) skipped while the store was down"] if self.skipped else [])
        self.errors, self.skipped = [], 0
        return errors


class TrialLogger(Callback):
    """A Tune callback on the driver that mirrors trials to MLflow, a sink fed from the record: a
    nested run per trial, per-epoch metrics, and the run closed as the trial's journal entry (written
    by the journal's :class:`~falw_ray.study.record.recorder.Recorder`, which Tune calls first) says it ended.

    MLflow writes go through a :class:`Writer` (call :meth:`flush` before reading the runs)."""

    def __init__(self, tracker: Tracker, cells: dict, recorder, runs: dict | None = None):
        self.tracker, self.cells, self.recorder = tracker, cells, recorder
        self.runs: dict[str, str | None] = dict(runs or {})
        self.cell_runs: dict[str, str] = tracker.cell_runs() if tracker.study_run else {}
        self.writer = Writer()

    def flush(self) -> list[str]:
        return self.writer.flush()

    def setup(self, **info):
        if self.tracker.study_run:
            self.writer.submit(self.tracker.log_search_space, self.cells)

    def _cell_run(self, cell) -> str:
        """The cell's run, made when its first trial starts (on the writer's thread, in order)."""
        if cell.id not in self.cell_runs:
            self.cell_runs[cell.id] = self.tracker.cell_run(cell, self.cells)
        return self.cell_runs[cell.id]

    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id in self.runs:  # retried after its worker died: same run
            return
        self.runs[trial.trial_id] = None  # filled in by the writer, which runs the writes in order
        name, params, tags = trial_run(trial.config, self.cells, trial.trial_id)
        cell = self.cells[stage_config(trial.config)["cell"]]

        def start(trial_id=trial.trial_id):
            self.runs[trial_id] = self.tracker.start_run(name, parent=self._cell_run(cell), params=params, tags=tags)

        self.writer.submit(start)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        metrics = {k: result[k] for k in EPOCH_METRICS if k in result}
        epoch, diverged = int(result.get("epoch", 0)), bool(result.get("diverged"))

        def log(trial_id=trial.trial_id):
            run = self.runs.get(trial_id)
            if run is None:
                return
            self.tracker.log_metrics(run, metrics, step=epoch)
            if diverged:
                self.tracker.tag(run, {"diverged": "true"})

        self.writer.submit(log)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial.trial_id)

    def _close(self, trial_id: str) -> None:
        record = self.recorder.records.get(trial_id)
        if record is None:  # not recorded (the journal could not be written): the study stops
            return
        cell = self.cells[stage_config(record["config"])["cell"]]

        def close():
            if (run := self.runs.get(trial_id)) is not None:
                self.tracker.end_trial(run, record, cell)

        self.writer.submit(close)

    def on_experiment_end(self, trials, **info):
        self.writer.wait()
