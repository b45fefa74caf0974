"""The search's early stopping: per-cell ASHA on the epoch a trial reports, evaluated only at its rungs."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from falw_ray.study.search.cells import build_cells
from falw_ray.study.search.scheduler import CellScheduler, rung_epochs
from falw_ray.study.spec import load_study

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("grace,rf,max_t", [(2, 2, 5), (2, 2, 10), (1, 2, 10), (1, 3, 10), (2, 1.5, 10), (5, 2, 3)])
def test_rung_epochs_are_ashas_milestones(grace, rf, max_t):
    asha = ASHAScheduler(time_attr="epoch", metric="avg_gap", mode="min", max_t=max_t,
                         grace_period=min(grace, max_t), reduction_factor=rf)
    milestones = {math.ceil(m) for m, _ in asha._brackets[0]._rungs}
    assert rung_epochs(grace, rf, max_t) == sorted(milestones)


def test_trials_reporting_only_at_rungs_are_stopped_within_their_cell():
    cells = build_cells(load_study(ROOT / "studies" / "digits.yaml"))
    ga, ft = (next(c for c in cells if c.id.endswith(f"/{m}")) for m in ("ga", "ft"))
    sched = CellScheduler(cells, grace_period=2, reduction_factor=2)
    trials = [Trial("fake", config={"cell": c.id}, stub=True) for c in (ga, ga, ft)]
    for t in trials:
        sched.on_trial_add(None, t)

    def report(trial, epoch, gap):
        return sched.on_trial_result(None, trial, {"epoch": epoch, "avg_gap": gap, "training_iteration": 1})

    assert report(trials[0], 2, 5.0) == TrialScheduler.CONTINUE
    assert report(trials[1], 2, 9.0) == TrialScheduler.STOP, "worse than its cell's first trial at the first rung"
    assert report(trials[2], 2, 50.0) == TrialScheduler.CONTINUE, "another cell: not compared with ga's trials"
    assert report(trials[0], 4, 4.0) == TrialScheduler.CONTINUE


def test_searcher_reevaluates_the_top_k_on_selection_seeds_and_sends_the_lowest_mean_to_the_final_seeds():
    """Driven by hand: 4 search trials of one cell, the best 2 distinct configurations re-run on 2
    selection seeds, then the one with the lower mean (not the search's best) on the 3 final seeds."""
    from falw_ray.study.search.searcher import CellSearcher

    cell = next(c for c in build_cells(load_study(ROOT / "studies" / "digits.yaml")) if c.id.endswith("/ga"))
    searcher = CellSearcher([cell], trials_per_cell=4, seed=0, final_seeds=[7, 8, 9], select_seeds=[5, 6], top_k=2)
    configs = {f"s{i}": searcher.suggest(f"s{i}") for i in range(4)}
    assert all(c["cell"] == cell.id and set(c) == {"cell", "seq", *cell.space} for c in configs.values())
    assert [c["seq"] for c in configs.values()] == [0, 1, 2, 3], "the order the searcher created them in"
    assert searcher.suggest("waiting") is None, "no re-run before the cell's search is over"
    gaps = {"s0": 3.0, "s1": 1.0, "s2": 2.0, "s3": 0.5}
    for tid, gap in gaps.items():
        epoch = cell.epochs if tid != "s3" else 1          # s3 was stopped early: never a candidate
        searcher.on_trial_complete(tid, {"avg_gap": gap, "epoch": epoch})
    select = [searcher.suggest(f"r{i}") for i in range(4)]
    lr = {tid: configs[tid]["lr"] for tid in configs}
    assert [(c["select"]["rank"], c["select"]["seed"], c["select"]["lr"]) for c in select] == [
        (0, 5, lr["s1"]), (0, 6, lr["s1"]), (1, 5, lr["s2"]), (1, 6, lr["s2"])]
    assert searcher.suggest("waiting") is None, "no final run before every selection run is in"
    for i, gap in enumerate([4.0, 4.0, 2.5, 3.5]):      # rank 0: mean 4.0; rank 1: mean 3.0
        searcher.on_trial_complete(f"r{i}", {"avg_gap": gap, "epoch": cell.epochs})
    final = [searcher.suggest(f"f{i}") for i in range(3)]
    assert [(c["final"]["seed"], c["final"]["lr"]) for c in final] == [(7, lr["s2"]), (8, lr["s2"]), (9, lr["s2"])]
    assert searcher.chosen[cell.id]["rank"] == 1
    assert not searcher.finished(), "final runs still out"
    for i in range(3):
        searcher.on_trial_complete(f"f{i}", {"avg_gap": 1.0, "epoch": cell.epochs})
    assert searcher.finished()
    assert searcher.suggest("end") == "FINISHED"


def record(trial_id: str, config: dict, gap: float | None, epoch: int, status: str = "finished") -> dict:
    """A journal entry as TrialLogger writes it."""
    from falw_ray.study.record.trials import trial_stage
    from falw_ray.study.record.recorder import entry

    result = None if gap is None else {"avg_gap": gap, "epoch": epoch}
    return entry(trial_id, trial_stage(config), config, config["seq"], status, result, [result] if result else [])


def test_a_searcher_rebuilt_from_the_journal_creates_only_the_missing_trials_and_chooses_as_before():
    """Replay: a study killed with 3 of 4 search trials and 1 of 4 selection runs completed resumes
    with 1 new search trial (its Optuna study told the 3 it has), then the 3 selection runs it lacks,
    and sends the same configuration to the final seeds as a study never interrupted."""
    from falw_ray.study.search.searcher import CellSearcher

    cell = next(c for c in build_cells(load_study(ROOT / "studies" / "digits.yaml")) if c.id.endswith("/ga"))
    args = dict(trials_per_cell=4, seed=0, final_seeds=[7, 8], select_seeds=[5, 6], top_k=2)
    first = CellSearcher([cell], **args)
    configs = {f"s{i}": first.suggest(f"s{i}") for i in range(4)}
    done = {t: record(t, configs[t], g, cell.epochs) for t, g in (("s0", 3.0), ("s1", 1.0), ("s3", 2.0))}

    again = CellSearcher([cell], **args, done=done)
    assert again.started[cell.id] == 3 and len(again.studies[cell.id].trials) == 3
    assert sorted(t.value for t in again.studies[cell.id].trials) == [1.0, 2.0, 3.0]
    new = again.suggest("n0")
    assert new["seq"] == 4 and set(new) == {"cell", "seq", *cell.space}, "numbered after the journal's trials"
    assert again.suggest("wait") is None
    again.on_trial_complete("n0", {"avg_gap": 9.0, "epoch": cell.epochs})
    select = [again.suggest(f"r{i}") for i in range(4)]
    lr = {t: configs[t]["lr"] for t in ("s1", "s3")}
    assert [(c["select"]["rank"], c["select"]["seed"], c["select"]["lr"]) for c in select] == [
        (0, 5, lr["s1"]), (0, 6, lr["s1"]), (1, 5, lr["s3"]), (1, 6, lr["s3"])]
    done["n0"] = record("n0", new, 9.0, cell.epochs)
    done["r2"] = record("r2", select[2], 2.0, cell.epochs)

    third = CellSearcher([cell], **args, done=done)
    rest = [third.suggest(f"q{i}") for i in range(3)]
    assert [(c["select"]["rank"], c["select"]["seed"]) for c in rest] == [(0, 5), (0, 6), (1, 6)], "r2 is not run again"
    assert third.suggest("wait") is None
    for tid, gap in zip(("q0", "q1", "q2"), (4.0, 4.0, 3.0)):  # rank 0: mean 4.0; rank 1: mean 2.5
        third.on_trial_complete(tid, {"avg_gap": gap, "epoch": cell.epochs})
    final = [third.suggest(f"f{i}") for i in range(2)]
    assert [(c["final"]["seed"], c["final"]["lr"]) for c in final] == [(7, lr["s3"]), (8, lr["s3"])]
    for i, c in enumerate(final):
        done[f"f{i}"] = record(f"f{i}", c, 1.0, cell.epochs)
    for tid, c, gap in zip(("q0", "q1", "q2"), rest, (4.0, 4.0, 3.0)):
        done[tid] = record(tid, c, gap, cell.epochs)
    assert CellSearcher([cell], **args, done=done).finished(), "every trial of the study is in the journal"
    assert CellSearcher([cell], **args, done=done).suggest("x") == "FINISHED"


class PublicOnly:
    """A stand-in for one cell's ASHA with nothing but the public scheduler interface: it stops the
    trials it is told to and records every call, so any reach into ASHA's internals fails here."""

    __slots__ = ("stop", "calls")

    def __init__(self, stop: set[str]):
        self.stop, self.calls = stop, []

    def on_trial_add(self, controller, trial):
        self.calls.append(("add", trial.trial_id))

    def on_trial_result(self, controller, trial, result):
        self.calls.append(("result", trial.trial_id))
        return TrialScheduler.STOP if trial.trial_id in self.stop else TrialScheduler.CONTINUE

    def on_trial_complete(self, controller, trial, result):
        self.calls.append(("complete", trial.trial_id))

    def on_trial_remove(self, controller, trial):
        self.calls.append(("remove", trial.trial_id))


def test_the_scheduler_keeps_its_own_records_of_trials_and_stops():
    """Stop count and debug_string come from the decisions the cells' schedulers returned, and a trial
    is completed or removed only in the cell scheduler that was given it, once."""
    cells = build_cells(load_study(ROOT / "studies" / "digits.yaml"))
    ga, ft = (next(c for c in cells if c.id.endswith(f"/{m}")) for m in ("ga", "ft"))
    sched = CellScheduler(cells, grace_period=2, reduction_factor=2)
    a, b, c, d = (Trial("fake", config={"cell": cid}, stub=True) for cid in (ga.id, ga.id, ft.id, ft.id))
    fake = {ga.id: PublicOnly({a.trial_id}), ft.id: PublicOnly({c.trial_id})}
    sched.ashas = {cid: fake.get(cid, PublicOnly(set())) for cid in sched.ashas}
    stranger = Trial("fake", config={"cell": "no/such+cell"}, stub=True)
    for t in (a, b, c, stranger):                      # d is never added
        sched.on_trial_add(None, t)
    decisions = [sched.on_trial_result(None, t, {"epoch": 2, "avg_gap": 1.0}) for t in (a, b, c, c, stranger)]
    assert decisions == ["STOP", "CONTINUE", "STOP", "STOP", "CONTINUE"]
    assert sched.stopped[ga.id] == 1 and sched.stopped[ft.id] == 2 and sum(sched.stopped.values()) == 3
    assert sched.debug_string() == f"ASHA per cell ({len(cells)} cells): 3 trial(s) stopped early"
    assert sched.seen[ga.id] == {a.trial_id, b.trial_id} and sched.seen[ft.id] == {c.trial_id}
    sched.on_trial_complete(None, a, {"epoch": 2, "avg_gap": 1.0})
    sched.on_trial_complete(None, a, {"epoch": 2, "avg_gap": 1.0})   # twice: forwarded once
    sched.on_trial_error(None, b)
    sched.on_trial_remove(None, b)                                   # already removed: not forwarded
    sched.on_trial_complete(None, d, {"epoch": 2, "avg_gap": 1.0})   # never added: not forwarded
    sched.on_trial_remove(None, stranger)
    assert fake[ga.id].calls == [("add", a.trial_id), ("add", b.trial_id), ("result", a.trial_id),
                                 ("result", b.trial_id), ("complete", a.trial_id), ("remove", b.trial_id)]
    assert fake[ft.id].calls == [("add", c.trial_id), ("result", c.trial_id), ("result", c.trial_id)]
    assert sched.seen[ga.id] == set() and sched.seen[ft.id] == {c.trial_id}


def test_the_scheduler_counts_what_ashas_own_decisions_say():
    """With Ray's real ASHA: the count of STOP decisions it returned is the count of trials stopped."""
    cells = build_cells(load_study(ROOT / "studies" / "digits.yaml"))
    ga = next(c for c in cells if c.id.endswith("/ga"))
    sched = CellScheduler(cells, grace_period=2, reduction_factor=2)
    trials = [Trial("fake", config={"cell": ga.id}, stub=True) for _ in range(4)]
    for t in trials:
        sched.on_trial_add(None, t)
    said = [sched.on_trial_result(None, t, {"epoch": 2, "avg_gap": g, "training_iteration": 1})
            for t, g in zip(trials, (5.0, 9.0, 4.0, 8.0))]
    assert said.count(TrialScheduler.STOP) == sched.stopped[ga.id] >= 1, said
    assert f"{said.count(TrialScheduler.STOP)} trial(s) stopped early" in sched.debug_string()
    for t in trials:
        sched.on_trial_complete(None, t, {"epoch": 2, "avg_gap": 1.0})
    assert sched.seen[ga.id] == set()


def test_a_scheduler_rebuilt_from_the_journal_judges_new_trials_against_the_recorded_rungs():
    """Replay: two search trials the journal holds (reported at rungs 2 and 4, then the last epoch)
    fill each rung of their cell's real ASHA; a new trial worse than both at the first rung is stopped
    there, where a scheduler with empty rungs lets it go on. Other stages and other cells are untouched."""
    cells = build_cells(load_study(ROOT / "studies" / "digits.yaml"))
    ga = next(c for c in cells if c.id.endswith("/ga"))
    from falw_ray.study.record.recorder import entry

    history = [{"epoch": 2, "avg_gap": 1.0}, {"epoch": 4, "avg_gap": 0.8}, {"epoch": ga.epochs, "avg_gap": 0.7}]
    journal = {f"r{i}": entry(f"r{i}", "search", {"cell": ga.id, "seq": i}, i, "finished", history[-1], history)
               for i in range(2)}
    journal["f"] = record("f", {"final": {"cell": ga.id, "seed": 3}, "seq": 2}, 0.5, ga.epochs)
    rebuilt = CellScheduler(cells, grace_period=2, reduction_factor=2).replay(journal)
    empty = CellScheduler(cells, grace_period=2, reduction_factor=2)
    assert rebuilt.stopped == empty.stopped and all(not s for s in rebuilt.seen.values()), "replayed, not counted"
    for sched, expected in ((rebuilt, TrialScheduler.STOP), (empty, TrialScheduler.CONTINUE)):
        new = Trial("fake", config={"cell": ga.id}, stub=True)
        sched.on_trial_add(None, new)
        assert sched.on_trial_result(None, new, {"epoch": 2, "avg_gap": 1.5}) == expected
    better = Trial("fake", config={"cell": ga.id}, stub=True)
    rebuilt.on_trial_add(None, better)
    assert rebuilt.on_trial_result(None, better, {"epoch": 2, "avg_gap": 0.9}) == TrialScheduler.CONTINUE
    assert rebuilt.on_trial_result(None, better, {"epoch": 4, "avg_gap": 0.95}) == TrialScheduler.STOP, \
        "judged at the second rung against the recorded 0.8"
