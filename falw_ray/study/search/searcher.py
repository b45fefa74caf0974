"""One Tune search over every cell, so the cluster stays busy across cells: a searcher that gives
each cell its own seeded Optuna TPE study and trial budget, and a scheduler that gives each cell
its own ASHA early stopping."""
from __future__ import annotations


import optuna
from ray.tune.search import Searcher

from ...unlearn import Param
from .cells import Cell
from ..record.trials import ERROR, outcome, stage_config, trial_stage
from ..record.results import choose, ranked, selection_gap
from ...columns import MODE, OBJECTIVE

METRIC = OBJECTIVE


def optuna_space(space: dict[str, Param]) -> dict[str, optuna.distributions.BaseDistribution]:
    out = {}
    for name, p in space.items():
        if p.integer:
            out[name] = optuna.distributions.IntDistribution(int(p.low), int(p.high), log=p.log)
        else:
            out[name] = optuna.distributions.FloatDistribution(p.low, p.high, log=p.log)
    return out


class CellSearcher(Searcher):
    """Round-robins new trials over cells with budget left; each cell's Optuna study (asked and told
    directly) sees only its trials.

    When a cell's search trials have all completed, its re-runs are queued next, so one Tune run holds
    the whole study and no cell waits for the slowest cell: with ``select_seeds``, its ``top_k`` best
    distinct configurations (``results.ranked``, the rule the study's tables use) once per selection
    seed (config ``{"select": {"cell", "seed", "rank", **hp}}``); then, once those are in, the one
    with the lowest mean (``results.choose``) once per final seed (``{"final": {"cell", "seed", **hp}}``).
    Without selection seeds the search's best goes straight to the final seeds.

    ``done`` (the study journal's entries) is replayed first: a resumed study's searcher is in the
    state its completed trials put it in, and creates only the trials still missing. Every config
    carries ``seq``, the order the searcher created it in, which the journal keeps."""

    def __init__(self, cells: list[Cell], trials_per_cell: int, seed: int = 0, final_seeds: list[int] | None = None,
                 select_seeds: list[int] | None = None, top_k: int = 1, done: dict[str, dict] | None = None):
        super().__init__(metric=OBJECTIVE, mode=MODE)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.cells = [c.id for c in cells]
        self.epochs = {c.id: c.epochs for c in cells}
        self.space = {c.id: list(c.space) for c in cells}
        self.distributions = {c.id: optuna_space(c.space) for c in cells if c.space}
        self.budget = trials_per_cell
        self.final_seeds = list(final_seeds or [])
        self.select_seeds = list(select_seeds or [])
        self.top_k = top_k
        self.studies = {
            c.id: optuna.create_study(direction="minimize" if MODE == "min" else "maximize",
                                      sampler=optuna.samplers.TPESampler(seed=seed + i,
                                                                         n_startup_trials=min(4, trials_per_cell)))
            for i, c in enumerate(cells) if c.space
        }
        self.asked: dict[str, optuna.trial.Trial] = {}
        self.seq = 0
        self.started = {c.id: 0 for c in cells}
        self.owner: dict[str, str] = {}
        self.configs: dict[str, dict] = {}
        self.outcomes: dict[str, dict[str, tuple]] = {c.id: {} for c in cells}  # trial -> (status, avg_gap)
        self.queue: list[dict] = []
        self.reruns: dict[str, tuple[str, int, int]] = {}  # select trial -> (cell, rank, seed)
        self.candidates: dict[str, list[dict]] = {}         # cell -> configurations re-evaluated, by rank
        self.select_gaps: dict[str, dict[tuple[int, int], float]] = {c.id: {} for c in cells}
        self.chosen: dict[str, dict] = {}                   # cell -> configuration sent to the final seeds
        self.queued = self.rerun = 0                        # re-runs queued, and completed
        for record in sorted((done or {}).values(), key=lambda r: r["seq"]):
            self._replay(record)

    def suggest(self, trial_id: str):
        if self.queue:
            config = self.queue.pop(0)
            if "select" in config:
                c = config["select"]
                self.reruns[trial_id] = (c["cell"], c["rank"], c["seed"])
            return self._numbered(config)
        open_cells = [c for c in self.cells if self.started[c] < self.budget]
        if not open_cells:
            return Searcher.FINISHED if self.finished() else None
        cell = min(open_cells, key=lambda c: self.started[c])
        self.started[cell] += 1
        self.owner[trial_id] = cell
        config = {}
        if cell in self.studies:
            self.asked[trial_id] = self.studies[cell].ask(fixed_distributions=self.distributions[cell])
            config = dict(self.asked[trial_id].params)
        self.configs[trial_id] = config
        return self._numbered({"cell": cell, **config})

    def _numbered(self, config: dict) -> dict:
        self.seq += 1
        return {**config, "seq": self.seq - 1}

    def finished(self) -> bool:
        """Every search trial, re-run and final run the study needs has completed."""
        searched = all(len(self.outcomes[c]) == self.budget for c in self.cells)
        chosen = not self.final_seeds or len(self.chosen) == len(self.cells)
        return searched and chosen and not self.queue and self.rerun == self.queued

    def selection_runs(self) -> int | None:
        """How many selection re-runs the study makes: known once every cell's search has ended."""
        if not self.final_seeds or not self.select_seeds:
            return 0
        if len(self.candidates) < len(self.cells):
            return None
        return sum(len(c) * len(self.select_seeds) for c in self.candidates.values() if len(c) > 1)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self.reruns:
            self._selection_done(trial_id, result, error)
            return
        cell = self.owner.get(trial_id)
        if cell is None:
            self.rerun += 1  # a final run
            return
        status, gap = outcome(result, self.epochs[cell], error)
        if trial_id in self.asked:
            state = optuna.trial.TrialState.FAIL if status == ERROR else optuna.trial.TrialState.COMPLETE
            self.studies[cell].tell(self.asked.pop(trial_id), None if status == ERROR else gap, state=state)
        self._searched(cell, trial_id, (status, gap))

    def _replay(self, record: dict) -> None:
        """A completed trial from the journal, as if Tune had just completed it."""
        config, trial_id = record["config"], record["trial_id"]
        self.seq = max(self.seq, int(record["seq"]) + 1)
        stage, cfg = trial_stage(config), stage_config(config)
        error = record["status"] == ERROR
        if stage == "search":
            cell = cfg["cell"]
            self.started[cell] += 1
            self.owner[trial_id] = cell
            self.configs[trial_id] = {k: cfg[k] for k in self.space[cell]}
            status, gap = outcome(record["result"], self.epochs[cell], error)
            if cell in self.studies:
                self.studies[cell].add_trial(optuna.trial.create_trial(
                    params=self.configs[trial_id], distributions=self.distributions[cell],
                    value=None if status == ERROR else gap,
                    state=optuna.trial.TrialState.FAIL if status == ERROR else optuna.trial.TrialState.COMPLETE))
            self._searched(cell, trial_id, (status, gap))
            return
        queued = {stage: {k: v for k, v in cfg.items() if k != "seq"}}
        self.queue.remove(queued)  # queued when the trials before it were replayed
        if stage == "select":
            self.reruns[trial_id] = (cfg["cell"], cfg["rank"], cfg["seed"])
            self._selection_done(trial_id, record["result"], error)
        else:
            self.rerun += 1

    def _searched(self, cell: str, trial_id: str, result: tuple[str, float]) -> None:
        self.outcomes[cell][trial_id] = result
        if self.final_seeds and len(self.outcomes[cell]) == self.budget and cell not in self.candidates:
            order = [t for t in self.owner if t in self.outcomes[cell]]  # as the searcher created them
            configs: list[dict] = []
            for i in ranked([self.outcomes[cell][t] for t in order]):
                hp = {k: self.configs[order[i]][k] for k in self.space[cell]}
                if hp not in configs:
                    configs.append(hp)
            self.candidates[cell] = configs[:self.top_k] if self.select_seeds else configs[:1]
            if len(self.candidates[cell]) > 1:
                self._queue([{"select": {"cell": cell, "seed": s, "rank": r, **hp}}
                             for r, hp in enumerate(self.candidates[cell]) for s in self.select_seeds])
            else:
                self._final(cell, 0)

    def _queue(self, configs: list[dict]) -> None:
        self.queue += configs
        self.queued += len(configs)

    def _selection_done(self, trial_id: str, result: dict | None, error: bool) -> None:
        cell, rank, seed = self.reruns[trial_id]
        self.rerun += 1
        status, gap = outcome(result, self.epochs[cell], error)
        self.select_gaps[cell][(rank, seed)] = selection_gap(status, gap)
        expected = len(self.candidates[cell]) * len(self.select_seeds)
        if len(self.select_gaps[cell]) == expected and cell not in self.chosen:
            gaps = [[self.select_gaps[cell][(r, s)] for s in self.select_seeds] for r in range(len(self.candidates[cell]))]
            self._final(cell, choose(gaps))

    def _final(self, cell: str, rank: int) -> None:
        hp = self.candidates[cell][rank] if self.candidates.get(cell) else None
        self.chosen[cell] = {"rank": rank, **(hp or {})}
        if hp is not None:
            self._queue([{"final": {"cell": cell, "seed": s, **hp}} for s in self.final_seeds])

    def save(self, checkpoint_path: str) -> None:
        """Nothing: a resumed study rebuilds its searcher from the journal, never from Tune's copy."""

    def restore(self, checkpoint_path: str) -> None:
        raise NotImplementedError("a study resumes from its journal (journal.py), not from Tune's saved state")
