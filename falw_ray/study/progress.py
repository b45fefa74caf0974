"""A one-line-per-trial progress report on the driver: compact enough for CI logs, enough to follow."""
from __future__ import annotations

import time

from ray.tune import Callback


class ProgressLine(Callback):
    def __init__(self, stage: str, total: int, say, cells: dict):
        self.stage, self.total, self.say, self.cells = stage, total, say, cells
        self.done = 0
        self.start = time.time()
        self.best: dict[str, float] = {}
        self.last: dict[str, dict] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.last[trial.trial_id] = result

    def _line(self, trials, trial, how: str) -> None:
        self.done += 1
        result = self.last.get(trial.trial_id, {})
        config = trial.config.get("final", trial.config)
        cell = config.get("cell", "?")
        gap = result.get("avg_gap")
        if gap is not None:
            self.best[cell] = min(gap, self.best.get(cell, float("inf")))
        elapsed = time.time() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        running = sum(1 for t in trials if t.status == "RUNNING")
        gap_txt = f"avg_gap {gap:6.2f} (cell best {self.best[cell]:.2f})" if gap is not None else "no result"
        self.say(f"{self.stage} {self.done}/{self.total} [{running} running, {elapsed:.0f}s, ~{eta:.0f}s left] "
                 f"{cell} {how} after {result.get('epoch', 0)} epoch(s): {gap_txt}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = self.last.get(trial.trial_id, {})
        cell = self.cells.get(trial.config.get("final", trial.config).get("cell"))
        if result.get("diverged"):
            how = "diverged"
        elif cell is not None and result.get("epoch", 0) < cell.epochs:
            how = "stopped early"
        else:
            how = "done"
        self._line(trials, trial, how)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trials, trial, "FAILED")
