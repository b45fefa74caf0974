"""The Tune callback that writes a study's journal: the one place a completed trial's entry (its
status, last result and history) is computed; the MLflow sink and the progress lines read it here."""
from __future__ import annotations

from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS

from .trials import stage_config, status, trial_stage
from .journal import Journal


TUNE_KEYS = frozenset(AUTO_RESULT_KEYS) | {"trial_id", "done", "experiment_tag", "should_checkpoint"}
"""Keys Tune adds to every result: the record keeps what the trial itself reported."""


def trial_result(result: dict) -> dict:
    """What the trial itself reported, as JSON-safe values."""
    return {k: v for k, v in result.items() if k not in TUNE_KEYS and _plain(v)}


def _plain(v) -> bool:
    return v is None or isinstance(v, (str, int, bool, float, list))


def entry(trial_id: str, stage: str, config: dict, seq: int, status: str, result: dict | None,
          history: list[dict] | None = None, error: str | None = None) -> dict:
    """One completed trial as the journal keeps it."""
    return {"trial_id": trial_id, "stage": stage, "config": config, "seq": seq, "status": status,
            "result": trial_result(result or {}), "history": [trial_result(r) for r in history or []],
            **({"error": error} if error else {})}


class Recorder(Callback):
    """The Tune callback that writes the journal, on the driver, first among the study's callbacks:
    a trial's entry is appended and synced the moment Tune completes it (or gives up on it), before
    MLflow or the progress lines hear of it. The MLflow logger reads the entry back from
    :attr:`records` to close the trial's run as the journal says it ended."""

    def __init__(self, journal: Journal, cells: dict):
        self.journal, self.cells = journal, cells
        self.history: dict[str, list[dict]] = {}
        self.open: dict[str, str] = {}          # trials started and not yet ended -> their stage
        self.records: dict[str, dict] = {}      # trials this run recorded -> their entries
        self.failure: OSError | None = None     # a write that failed: nothing is recorded after it

    def on_trial_start(self, iteration, trials, trial, **info):
        self.open[trial.trial_id] = trial_stage(trial.config)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        history = self.history.setdefault(trial.trial_id, [])
        epoch = int(result.get("epoch", 0))
        if history and epoch <= int(history[-1].get("epoch", 0)):  # a retried trial starts over
            history[:] = [r for r in history if int(r.get("epoch", 0)) < epoch]
        history.append(result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._record(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        try:
            error = str(trial.get_error() or "failed")
        except OSError as e:
            error = f"failed (its error file could not be read: {e.strerror or e})"
        self._record(trial, error.strip().splitlines()[-1][:300] if error.strip() else "failed")

    def _record(self, trial, error: str | None = None) -> None:
        self.open.pop(trial.trial_id, None)
        history = self.history.pop(trial.trial_id, [])
        cell = self.cells[stage_config(trial.config)["cell"]]
        last = history[-1] if history else None
        trial_status = status(last, cell.epochs, error is not None)
        if error is None and last is not None and last.get("failed"):  # failed without raising: its own line
            error = str(last.get("error", "failed"))
        record = entry(trial.trial_id, trial_stage(trial.config), trial.config, int(trial.config.get("seq", -1)),
                       trial_status, last, history, error)
        if self.failure is not None:  # the record cannot be trusted past a failed write: stop recording
            raise self.failure
        try:
            self.journal.append(record)
        except OSError as e:  # a full disk: Tune stops with it, and the runner raises it (naming the file)
            self.failure = e
            raise
        self.records[trial.trial_id] = record
