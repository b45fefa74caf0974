"""Early stopping per cell: ASHA for each cell's own trials, in one Tune scheduler."""
from __future__ import annotations

import math
from types import SimpleNamespace

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from ...columns import MODE, OBJECTIVE
from .cells import Cell

METRIC = OBJECTIVE


def rung_epochs(grace_period: int, reduction_factor: float, max_t: int) -> list[int]:
    """The epochs at which ASHA compares a cell's trials (its rung milestones, as Ray's ASHA lays
    them out), rounded up to whole epochs: the only epochs, with the last, that a search must evaluate."""
    grace = min(grace_period, max_t)
    rungs = int(math.log(max_t / grace) / math.log(reduction_factor) + 1)
    return sorted({math.ceil(grace * reduction_factor ** k) for k in range(rungs)})


class CellScheduler(FIFOScheduler):
    """ASHA per cell: a trial is stopped early only against the trials of its own cell. Its clock is
    the epoch a trial reports (not the count of reports), as trials report only at rungs.

    Only ASHA's public scheduler interface is used: which trials each cell's ASHA holds (``seen``,
    added in on_trial_add, dropped once it completes or is removed) and how many it stopped
    (``stopped``, the STOP decisions its on_trial_result returned) are this scheduler's own records,
    so a new Ray that renames ASHA's internals changes nothing here."""

    def __init__(self, cells: list[Cell], grace_period: int, reduction_factor: float):
        super().__init__()
        self.ashas = {
            c.id: ASHAScheduler(time_attr="epoch", metric=METRIC, mode=MODE, max_t=c.epochs,
                                grace_period=min(grace_period, c.epochs), reduction_factor=reduction_factor)
            for c in cells
        }
        self.seen: dict[str, set[str]] = {c.id: set() for c in cells}  # trials each cell's ASHA holds
        self.stopped: dict[str, int] = {c.id: 0 for c in cells}      # STOP decisions of each cell's ASHA

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True

    def replay(self, records: dict[str, dict]) -> "CellScheduler":
        """Each cell's ASHA given the search trials the journal holds, result by result as they
        reported them, then completed: a resumed study judges its new trials at every rung against
        the results recorded before the interruption, not against empty rungs. (Their STOP decisions
        were taken before: they are not counted again.)"""
        for record in sorted(records.values(), key=lambda r: r["seq"]):
            trial = SimpleNamespace(trial_id=record["trial_id"], config=record["config"])
            if (cell := self._cell(trial)) is None or not record["history"]:
                continue
            asha = self.ashas[cell]
            asha.on_trial_add(None, trial)
            for result in record["history"]:
                asha.on_trial_result(None, trial, result)
            asha.on_trial_complete(None, trial, record["history"][-1])
        return self

    def _cell(self, trial) -> str | None:
        cell = trial.config.get("cell")
        return cell if cell in self.ashas else None

    def on_trial_add(self, tune_controller, trial):
        if (cell := self._cell(trial)) is not None:
            self.ashas[cell].on_trial_add(tune_controller, trial)
            self.seen[cell].add(trial.trial_id)

    def on_trial_result(self, tune_controller, trial, result):
        if (cell := self._cell(trial)) is None:
            return TrialScheduler.CONTINUE
        decision = self.ashas[cell].on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP:
            self.stopped[cell] += 1
        return decision

    def _release(self, trial) -> str | None:
        """The trial's cell when its ASHA holds the trial (which it then no longer does), else None:
        a trial is completed or removed in ASHA at most once, and never one it was not given."""
        cell = self._cell(trial)
        if cell is None or trial.trial_id not in self.seen[cell]:
            return None
        self.seen[cell].discard(trial.trial_id)
        return cell

    def on_trial_complete(self, tune_controller, trial, result):
        if (cell := self._release(trial)) is not None:
            self.ashas[cell].on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        if (cell := self._release(trial)) is not None:
            self.ashas[cell].on_trial_remove(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial):
        self.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return f"ASHA per cell ({len(self.ashas)} cells): {sum(self.stopped.values())} trial(s) stopped early"
