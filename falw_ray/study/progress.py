"""Live progress of a study's stage on the driver (a Tune callback), for terminals and CI logs.

In a terminal ("live"): one line per finished trial (cell, epochs, Avg. Gap, the cell's best so
far, time left) and, every ``FALW_RAY_PROGRESS_EVERY`` seconds (30), a status block: trials
finished / stopped early / diverged / failed, running and to go; cells done and running; the best
Avg. Gap so far per cell; elapsed time and an estimate of what remains.

Quiet by default where stderr is not a terminal or ``CI`` is set: only a one-line status every
five minutes (so a long job is seen alive) and a summary line when the stage ends.
``FALW_RAY_PROGRESS=live|quiet`` chooses either way. No cursor tricks: plain appended lines.
"""
from __future__ import annotations

import math
import os
import sys
import time

from ray.tune import Callback

from ..columns import OBJECTIVE
from ..console import PREFIX, shorten, width as terminal_width
from .record.trials import ERROR, FINISHED, STATUSES, STOPPED, stage_config, status, trial_stage

QUIET_EVERY = 300.0
"""Seconds between the one-line statuses of the quiet mode."""
MAX_CELL_LINES = 24
"""A status block lists every cell up to this many, else only the cells with running trials."""
SAID = {**{s: s for s in STATUSES}, ERROR: "failed"}
"""A status as a person reads it: a trial that raised "failed" rather than the files' "error"."""


class CellNames:
    """Cell ids (``scenario/label``) as short as a line needs them: whole when they fit, else
    without the scenario's parts every cell shares (one scenario: the label alone), else with the
    rest of the scenario shortened at its dashes. The label (method, FaLW) stays whole."""

    def __init__(self, cells):
        scenarios = list(dict.fromkeys(str(c).rpartition("/")[0] for c in cells))
        split = [s.split("-") for s in scenarios]
        same = len({len(p) for p in split}) == 1
        keep = [i for i in range(len(split[0])) if len({p[i] for p in split}) > 1] if split and same else None
        self.short = {s: "-".join(p[i] for i in keep) if keep is not None else s for s, p in zip(scenarios, split)}
        self.widest = max((len(str(c)) for c in cells), default=0)
        self.widest_reduced = max((len(self.reduced(str(c))) for c in cells), default=0)

    def reduced(self, cell: str) -> str:
        """The cell without the scenario parts every cell shares: nothing cut, nothing lost."""
        scenario, _, label = cell.rpartition("/")
        short = self.short.get(scenario, scenario)
        return f"{short}/{label}" if short else label

    def __call__(self, cell: str, room: int) -> str:
        """``cell`` in at most ``room`` columns, named the way every cell of the stage fits (whole, or
        without the shared parts) so that its lines read alike; cut only where even that does not fit."""
        if len(cell) <= room and self.widest <= room:
            return cell
        name = self.reduced(cell)
        if len(name) <= room:
            return name
        short, _, label = name.rpartition("/")
        if short and room - len(label) - 1 >= 4:
            return f"{shorten(short, room - len(label) - 1)}/{label}"
        return shorten(label, room, seps="_+")


def progress_mode(stream=None) -> str:
    """'live' in a terminal, 'quiet' in CI or when the output goes to a file or pipe."""
    forced = os.environ.get("FALW_RAY_PROGRESS", "").strip().lower()
    if forced in ("live", "quiet"):
        return forced
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        return "quiet"
    stream = stream or sys.stderr
    try:
        return "live" if stream.isatty() else "quiet"
    except (AttributeError, ValueError):
        return "quiet"


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class ProgressLine(Callback):
    """Progress of one stage (``search`` or ``final``) of ``total`` trials over ``cells``."""

    OUTCOMES = tuple(SAID[s] for s in STATUSES)

    def __init__(self, stage: str, total: int, say, cells: dict, mode: str | None = None,
                 every: float | None = None, clock=time.time, at_most: bool = False, exact=None,
                 width: int | None = None):
        """``at_most``: ``total`` is an upper bound (the selection stage re-runs only distinct
        configurations) until ``exact()`` (the searcher's count, None while unknown) says how many.
        ``width``: the terminal's columns (see :func:`falw_ray.console.width`); a line and its
        ``falw-ray: `` fit in it."""
        self.stage, self.total, self.say, self.cells, self.at_most = stage, total, say, cells, at_most
        self.room = (width or terminal_width()) - len(PREFIX)
        self.names = CellNames(cells)
        self.exact = exact
        self.mode = mode or progress_mode()
        self.every = float(every if every is not None else os.environ.get("FALW_RAY_PROGRESS_EVERY", "30"))
        if self.mode == "quiet":
            self.every = max(self.every, QUIET_EVERY)
        self.clock = clock
        self.start = clock()
        self.last_status = self.start
        self.done = self.resumed = 0
        self.best: dict[str, float] = {}          # cell -> best Avg. Gap of trials that ran every epoch
        self.best_early: dict[str, float] = {}    # cell -> best of trials stopped early
        self.last: dict[str, dict] = {}
        self.outcome: dict[str, str] = {}
        self.cell_of: dict[str, str] = {}
        self.running: set[str] = set()
        self.ended = False

    # ---------------------------------------------------------------------------- Tune hooks

    def on_trial_start(self, iteration, trials, trial, **info):
        if not self._mine(trial):
            return
        if not self.cell_of:  # the stage's clock starts with its first trial
            self.start = self.last_status = self.clock()
        self.cell_of[trial.trial_id] = self._cell(trial)
        self.running.add(trial.trial_id)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if not self._mine(trial):
            return
        self.last[trial.trial_id] = result
        self.cell_of.setdefault(trial.trial_id, self._cell(trial))

    def on_trial_complete(self, iteration, trials, trial, **info):
        if not self._mine(trial):
            self._end_if_done(trials)  # a stage with no trial left ends with another stage's trial
            return
        result = self.last.get(trial.trial_id, {})
        cell = self.cells.get(self._cell(trial))
        epochs = cell.epochs if cell is not None else result.get("epoch")  # a cell not given: its last epoch ends it
        self._finish(trials, trial, status(result, epochs))

    def on_trial_error(self, iteration, trials, trial, **info):
        if self._mine(trial):
            self._finish(trials, trial, ERROR)
        else:
            self._end_if_done(trials)

    def on_step_end(self, iteration, trials, **info):
        self._end_if_done(trials)
        now = self.clock()
        if now - self.last_status >= self.every and self.running:
            self.last_status = now
            self.say(self.status(trials) if self.mode == "live" else self.headline(trials))

    def on_experiment_end(self, trials, **info):
        if not self.ended:
            self._end(trials)

    def _end(self, trials) -> None:
        self.ended = True
        self.say(f"stage ended: {self.headline(None, final=True)}")

    def _settle(self) -> bool:
        """Whether every trial of the stage has completed; an upper bound becomes the exact count
        once the searcher knows it. A stage ends only after the stages before it: each waits for
        every trial of the one before."""
        if self.at_most and self.exact is not None and (n := self.exact()) is not None:
            self.total, self.at_most = n, False
        return not self.at_most and self.done >= self.total

    def _end_if_done(self, trials) -> None:
        if not self.ended and self._settle():
            self._end(trials)

    # ---------------------------------------------------------------------------- the text

    def _mine(self, trial) -> bool:
        """One Tune run holds both stages: each stage's progress counts its own trials."""
        return trial_stage(trial.config) == self.stage

    def _cell(self, trial) -> str:
        return stage_config(trial.config).get("cell", "?")

    def _finish(self, trials, trial, how: str) -> None:
        if trial.trial_id in self.outcome:
            return
        self.outcome[trial.trial_id] = how
        self.running.discard(trial.trial_id)
        self.done += 1
        result = self.last.get(trial.trial_id, {})
        cell = self._cell(trial)
        self.cell_of[trial.trial_id] = cell
        gap = result.get(OBJECTIVE)
        self._keep_best(cell, how, gap)
        self._settle()
        if self.mode == "live":
            self._trial_line(trials, cell, how, result, gap)
        self._end_if_done(trials)

    def _trial_line(self, trials, cell: str, how: str, result: dict, gap) -> None:
        """One line per trial, within the terminal's width: stage count, cell, epochs, its Avg. Gap,
        the cell's best by the rule that chooses its configuration, and the time left. Where the
        cell does not fit whole it loses the scenario parts every cell shares, then the numbers
        their padding, then the scenario is cut (see :class:`CellNames`)."""
        best = self.cell_best(cell)
        what = "" if how == FINISHED else " " + SAID[how].split()[0]
        head = f"{self.stage} {self.done}/{self._total()} "
        epoch = f" e{result.get('epoch', 0)} "
        for pad in (True, False):
            num = "6.2f" if pad else ".2f"
            gap_txt = f"gap {gap:{num}}" if gap is not None else "no result"
            best_txt = (f"  best {best:{num}}" if pad else f" best {best:{num}}") if best is not None else ""
            tail = f"{gap_txt}{what}{best_txt}{'  ' if pad else ' '}~{_duration(self.eta())} left"
            room = self.room - len(head) - len(epoch) - len(tail)
            if self.names.widest_reduced <= room:
                break
        self.say(f"{head}{self.names(cell, room)}{epoch}{tail}")

    def _total(self) -> str:
        return f"≤{self.total}" if self.at_most else str(self.total)

    def _running(self, trials) -> int:
        return sum(1 for t in trials if t.status == "RUNNING" and self._mine(t))

    def cell_best(self, cell: str) -> float | None:
        """The best Avg. Gap so far as the study will pick it (results.best_per_cell): among the
        trials that ran every epoch; among those stopped early only while none did."""
        return self.best.get(cell, self.best_early.get(cell))

    def eta(self) -> float:
        """What remains at the pace so far (trials done per second, concurrency included)."""
        if self.done <= self.resumed:
            return float("nan")
        return (self.clock() - self.start) / (self.done - self.resumed) * max(0, self.total - self.done)

    def _keep_best(self, cell: str, how: str, gap) -> None:
        if gap is not None and how in (FINISHED, STOPPED):
            pool = self.best if how == FINISHED else self.best_early
            pool[cell] = min(gap, pool.get(cell, float("inf")))

    def replay(self, records: dict[str, dict]) -> "ProgressLine":
        """Count the trials of this stage a resumed study completed before (journal records), so
        its counts and cells are the study's, not this run's alone; the pace is this run's."""
        for record in records.values():
            if record["stage"] != self.stage:
                continue
            trial_id, how = record["trial_id"], record["status"]
            cell = stage_config(record["config"]).get("cell", "?")
            self.outcome[trial_id], self.cell_of[trial_id] = how, cell
            self._keep_best(cell, how, record["result"].get(OBJECTIVE))
        self.done = self.resumed = len(self.outcome)
        self.ended = self._settle()  # a stage the study completed before: it said so then
        return self

    def counts(self) -> dict[str, int]:
        """Trials done per status, as :data:`SAID` words it."""
        out = dict.fromkeys(self.OUTCOMES, 0)
        for how in self.outcome.values():
            out[SAID[how]] += 1
        return out

    def _per_cell(self) -> int | None:
        n = len(self.cells)
        return self.total // n if n and self.total % n == 0 and not self.at_most else None

    def cell_states(self) -> dict[str, dict]:
        """Per cell seen so far: trials done, running, its best Avg. Gap."""
        states: dict[str, dict] = {}
        for tid, cell in self.cell_of.items():
            s = states.setdefault(cell, {"done": 0, "running": 0})
            if tid in self.outcome:
                s["done"] += 1
            elif tid in self.running:
                s["running"] += 1
        for cell, s in states.items():
            s["best"] = self.cell_best(cell)
        return states

    def headline(self, trials=None, final: bool = False) -> str:
        c = self.counts()
        running = self._running(trials) if trials is not None else len(self.running)
        elapsed = self.clock() - self.start
        per_cell = self._per_cell()
        states = self.cell_states()
        cells_running = sum(1 for s in states.values() if s["running"])
        if per_cell:
            cells_done = sum(1 for s in states.values() if s["done"] >= per_cell)
            cells = f"cells {cells_done}/{self.total // per_cell} done"
        else:
            cells = f"cells {cells_running} running"
        tail = f"in {_duration(elapsed)}" if final else f"{_duration(elapsed)}, ~{_duration(self.eta())} left"
        outcomes = ", ".join(f"{c[SAID[s]]} {SAID[s].split()[0]}" for s in STATUSES if s == FINISHED or c[SAID[s]])
        return (f"{self.stage} {self.done}/{self._total()} done ({outcomes}), "
                f"{running} running; {cells}; {tail}")

    def status(self, trials=None) -> str:
        """The headline and one line per cell: trials done / expected, running, best Avg. Gap so far."""
        states = self.cell_states()
        per_cell = self._per_cell()
        shown = states if len(states) <= MAX_CELL_LINES else {k: v for k, v in states.items() if v["running"]}
        rest = f"  {'trials':>7}  {'running':>7}  best Avg. Gap"
        room = max(4, self.room - 2 - len(rest))
        names = {cell: self.names(cell, room) for cell in shown}
        width = max([len(n) for n in names.values()] + [4])
        lines = [f"status: {self.headline(trials)}", f"  {'cell':<{width}}{rest}"]
        for cell in sorted(shown):
            s = shown[cell]
            done = f"{s['done']}/{per_cell}" if per_cell else str(s["done"])
            best = f"{s['best']:.2f}" if s["best"] is not None else "-"
            lines.append(f"  {names[cell]:<{width}}  {done:>7}  {s['running']:>7}  {best}")
        if len(shown) < len(states):
            lines.append(f"  ... and {len(states) - len(shown)} cell(s) with no running trial")
        return "\n".join(lines)
