"""Live progress: per-trial lines and status blocks in a terminal, quiet in CI, on a fake clock."""
from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from falw_ray.study.progress import ProgressLine, progress_mode

CELLS = {"s/ga+falw": SimpleNamespace(epochs=3), "s/ft": SimpleNamespace(epochs=2)}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def trial(i: int, cell: str, final: bool = False):
    config = {"final": {"cell": cell, "seed": 0}} if final else {"cell": cell}
    return SimpleNamespace(trial_id=f"t{i}", config=config, status="RUNNING")


def run_stage(mode: str):
    """Four trials over two cells: one finished, one stopped early, one diverged, one still running."""
    clock, said = Clock(), []
    p = ProgressLine("search", 4, said.append, CELLS, mode=mode, every=30, clock=clock, width=100)
    trials = [trial(0, "s/ga+falw"), trial(1, "s/ft"), trial(2, "s/ga+falw"), trial(3, "s/ft")]
    for t in trials:
        p.on_trial_start(0, trials, t)
    clock.now += 10
    p.on_trial_result(0, trials, trials[0], {"epoch": 3, "avg_gap": 1.25})
    p.on_trial_complete(0, trials, trials[0])
    trials[0].status = "TERMINATED"
    p.on_trial_result(0, trials, trials[1], {"epoch": 1, "avg_gap": 4.0})
    p.on_trial_complete(0, trials, trials[1])
    trials[1].status = "TERMINATED"
    p.on_step_end(0, trials)                      # 10 s: no status block yet
    clock.now += 25
    p.on_trial_result(0, trials, trials[2], {"epoch": 1, "avg_gap": 100.0, "diverged": True})
    p.on_trial_complete(0, trials, trials[2])
    trials[2].status = "TERMINATED"
    p.on_step_end(0, trials)                      # 35 s: a status block in a terminal
    return p, said, trials, clock


def test_live_lines_and_status_block():
    _, said, _, _ = run_stage("live")
    lines = "\n".join(said)
    assert said[0] == "search 1/4 s/ga+falw e3 gap   1.25  best   1.25  ~30s left"
    assert said[1] == "search 2/4 s/ft e1 gap   4.00 stopped  best   4.00  ~10s left"
    assert said[2] == "search 3/4 s/ga+falw e1 gap 100.00 diverged  best   1.25  ~12s left"
    assert all(len("falw-ray: " + line) <= 100 for line in said[:3])
    block = said[3]
    assert block.startswith("status: search 3/4 done (1 finished, 1 stopped, 1 diverged), "
                            "1 running; cells 1/2 done; 35s, ~12s left")
    rows = {line.split()[0]: line.split()[1:] for line in block.splitlines()[2:]}
    assert rows == {"s/ga+falw": ["2/2", "0", "1.25"], "s/ft": ["1/2", "1", "4.00"]}, "a diverged trial is no cell best"
    assert len(said) == 4, lines


QUICKSTART = [f"mnist1d-conv1d-lt0.1-g{g}/{label}" for g in (1, 2)
              for label in ("ga", "ga+falw", "salun+falw", "neggrad_plus+falw", "ft")]


def stage_of_long_cells(cells: list[str], columns: int, total: int = 72):
    """Every cell's trial through a live stage on a terminal ``columns`` wide, with status blocks."""
    clock, said = Clock(), []
    p = ProgressLine("search", total, said.append, {c: SimpleNamespace(epochs=8) for c in cells}, mode="live",
                     every=1, clock=clock, width=columns)
    trials = [trial(i, c) for i, c in enumerate(cells)]
    for t in trials:
        p.on_trial_start(0, trials, t)
    for i, t in enumerate(trials):
        clock.now += 61 if i else 4000
        p.on_trial_result(0, trials, t, {"epoch": 8, "avg_gap": 12.345 + i})
        p.on_trial_complete(0, trials, t)
        t.status = "TERMINATED"
        p.on_step_end(0, trials)
    return said


@pytest.mark.parametrize("columns", [100, 80])
def test_trial_lines_fit_the_terminal_and_keep_the_method_whole(columns):
    """A quickstart-like study's cells (scenario/label, two scenarios) on a 100 and an 80 column
    terminal: every line with its ``falw-ray: `` fits, each trial line still names its method and
    FaLW whole, and the scenario keeps what tells the scenarios apart (g1, g2)."""
    said = stage_of_long_cells(QUICKSTART, columns)
    lines = [line for msg in said for line in msg.splitlines()]
    trial_lines = [line for line in said if line.startswith("search ")]
    assert len(trial_lines) == len(QUICKSTART)
    assert all(len("falw-ray: " + line) <= columns for line in trial_lines), trial_lines
    for line, cell in zip(trial_lines, QUICKSTART):
        name = line.split()[2]
        scenario, label = cell.split("/")
        assert name == cell or name.endswith("/" + label), (name, cell)
        assert scenario[-2:] in name.split("/")[0], "the part the scenarios differ in stays"
    status_rows = [line for line in lines if line.startswith("  ") and not line.startswith("  cell")]
    assert status_rows and all(len("falw-ray: " + line) <= columns for line in status_rows), status_rows


def test_one_scenarios_cells_drop_it_before_anything_is_cut():
    """With one scenario the scenario says nothing a line needs: on 80 columns its cells are their
    labels, the numbers still padded."""
    cells = [c for c in QUICKSTART if "-g1/" in c]
    wide = stage_of_long_cells(cells, 120)
    assert [line.split()[2] for line in wide if line.startswith("search ")] == cells
    narrow = [line for line in stage_of_long_cells(cells, 80) if line.startswith("search ")]
    assert [line.split()[2] for line in narrow] == [c.split("/")[1] for c in cells]
    assert narrow[0].startswith("search 1/72 ga e8 gap  12.35  best  12.35  ~"), narrow[0]


def test_cell_names_are_cut_between_the_scenarios_parts_never_in_the_label():
    from falw_ray.study.progress import CellNames

    names = CellNames(["cifar100-resnet18-lt0.3-g0/ga", "cifar100-resnet18-lt0.3-g2/ga", "cifar10-vgg16bn-rand0.1-g1/ga"])
    cell = "cifar100-resnet18-lt0.3-g2/neggrad_plus+falw"
    assert names(cell, 60) == cell
    assert names.reduced(cell) == cell, "no part is shared by all three scenarios"
    assert names(cell, 40) == "cifar100-resnet18-…-g2/neggrad_plus+falw"
    assert names(cell, 31) == "cifar100-…-g2/neggrad_plus+falw"
    assert names(cell, 30) == "…-lt0.3-g2/neggrad_plus+falw"
    assert names(cell, 24) == "…-g2/neggrad_plus+falw"
    two = CellNames(["cifar100-resnet18-lt0.3-g0/ga", "cifar100-resnet18-lt0.3-g2/ga"])
    assert two(cell, 30) == "g2/neggrad_plus+falw", "the shared parts go first, nothing else is cut"
    assert CellNames([cell])(cell, 30) == "neggrad_plus+falw"


def test_the_counts_behind_the_lines():
    """The values the lines print, whatever their wording: outcomes, cells, bests and the time left."""
    p, _, trials, clock = run_stage("live")
    assert p.done == 3 and p.counts() == {"finished": 1, "stopped early": 1, "diverged": 1, "failed": 0}
    assert p.cell_states() == {"s/ga+falw": {"done": 2, "running": 0, "best": 1.25},
                               "s/ft": {"done": 1, "running": 1, "best": 4.0}}
    assert p.cell_best("s/ga+falw") == 1.25, "the diverged trial's 100 is no best"
    assert p.cell_best("s/ft") == 4.0, "stopped early, but the only one so far"
    assert p.eta() == pytest.approx(35.0 / 3), "35 s for 3 trials, 1 to go"
    clock.now += 5
    p.on_trial_result(0, trials, trials[3], {"epoch": 2, "avg_gap": 3.0})
    p.on_trial_complete(0, trials, trials[3])
    assert p.counts() == {"finished": 2, "stopped early": 1, "diverged": 1, "failed": 0} and p.ended
    assert p.cell_best("s/ft") == 3.0 and p.eta() == 0.0


def test_quiet_prints_a_summary_per_stage_only():
    p, said, trials, clock = run_stage("quiet")
    assert said == [], "no per-trial lines and no 30 s blocks when quiet"
    clock.now += 300
    p.on_step_end(0, trials)
    assert len(said) == 1 and said[0].startswith("search 3/4 done") and "\n" not in said[0]
    p.on_trial_error(0, trials, trials[3])
    trials[3].status = "ERROR"
    assert p.counts() == {"finished": 1, "stopped early": 1, "diverged": 1, "failed": 1}
    assert p.cell_states()["s/ft"] == {"done": 2, "running": 0, "best": 4.0}, "a failed trial is no cell best"
    assert len(said) == 2, "the stage ended with its fourth trial: one summary"
    p.on_experiment_end(trials)
    assert len(said) == 2, "and not again at the experiment's end"
    assert said[-1].startswith("stage ended: search 4/4 done (1 finished, 1 stopped, 1 diverged, "
                               "1 failed), 0 running; cells 2/2 done")


def test_final_stage_trials_are_counted_per_cell():
    said = []
    p = ProgressLine("final", 4, said.append, CELLS, mode="live", every=0, clock=Clock())
    trials = [trial(i, cell, final=True) for i, cell in enumerate(["s/ga+falw", "s/ga+falw", "s/ft", "s/ft"])]
    for t in trials:
        p.on_trial_start(0, trials, t)
        p.on_trial_result(0, trials, t, {"epoch": CELLS[t.config["final"]["cell"]].epochs, "avg_gap": 2.0})
    for t in trials[:2]:
        p.on_trial_complete(0, trials, t)
    assert "2 running; cells 1/2 done;" in p.headline()
    assert p.counts() == {"finished": 2, "stopped early": 0, "diverged": 0, "failed": 0}
    assert p.cell_states() == {"s/ga+falw": {"done": 2, "running": 0, "best": 2.0},
                               "s/ft": {"done": 0, "running": 2, "best": None}}


@pytest.mark.parametrize("env,tty,expected", [
    ({}, True, "live"), ({}, False, "quiet"), ({"CI": "true"}, True, "quiet"), ({"CI": "false"}, True, "live"),
    ({"CI": "true", "FALW_RAY_PROGRESS": "live"}, False, "live"), ({"FALW_RAY_PROGRESS": "quiet"}, True, "quiet"),
])
def test_mode_follows_the_terminal_and_ci(monkeypatch, env, tty, expected):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("FALW_RAY_PROGRESS", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    stream = io.StringIO()
    stream.isatty = lambda: tty
    assert progress_mode(stream) == expected


def test_cell_best_is_the_one_the_study_will_pick():
    """As results.best_per_cell: trials that ran every epoch first, stopped-early ones only before any did."""
    p = ProgressLine("search", 3, [].append, CELLS, mode="live", clock=Clock())
    trials = [trial(i, "s/ga+falw") for i in range(3)]
    for t, (epoch, gap) in zip(trials, [(1, 0.5), (3, 2.0), (1, 0.1)]):
        p.on_trial_start(0, trials, t)
        p.on_trial_result(0, trials, t, {"epoch": epoch, "avg_gap": gap})
        p.on_trial_complete(0, trials, t)
        if t is trials[0]:
            assert p.cell_best("s/ga+falw") == 0.5
    assert p.cell_best("s/ga+falw") == 2.0


def test_a_resumed_stage_counts_the_trials_its_journal_holds():
    """After a resume the counts are the study's (the journal's 3 of 4 trials, one of them from the
    final stage and not counted here), the cells' bests include the earlier trials, and the time left
    comes from this run's pace alone."""
    from falw_ray.study.record.recorder import entry

    journal = {
        "a": entry("a", "search", {"cell": "s/ga+falw", "seq": 0}, 0, "finished", {"epoch": 3, "avg_gap": 2.0}),
        "b": entry("b", "search", {"cell": "s/ft", "seq": 1}, 1, "error", None, error="died"),
        "c": entry("c", "final", {"final": {"cell": "s/ft", "seed": 1}, "seq": 2}, 2, "finished", {"epoch": 2}),
    }
    clock, said = Clock(), []
    p = ProgressLine("search", 4, said.append, CELLS, mode="live", every=30, clock=clock).replay(journal)
    assert p.headline(None) == "search 2/4 done (1 finished, 1 failed), 0 running; cells 0/2 done; 0s, ~? left"
    assert (p.done, p.counts()["finished"], p.counts()["failed"], p.cell_best("s/ga+falw")) == (2, 1, 1, 2.0)
    trials = [trial(5, "s/ft")]
    p.on_trial_start(0, trials, trials[0])
    clock.now += 10
    p.on_trial_result(0, trials, trials[0], {"epoch": 2, "avg_gap": 1.5})
    p.on_trial_complete(0, trials, trials[0])
    assert said[0] == "search 3/4 s/ft e2 gap   1.50  best   1.50  ~10s left", "1 trial in 10 s, 1 to go"
    assert p.cell_states() == {"s/ga+falw": {"done": 1, "running": 0, "best": 2.0},
                               "s/ft": {"done": 2, "running": 0, "best": 1.5}}


def select_trial(i: int, cell: str):
    return SimpleNamespace(trial_id=f"s{i}", config={"select": {"cell": cell, "seed": 5, "rank": i % 2}},
                           status="RUNNING")


@pytest.mark.parametrize("reruns", [2, 0])
def test_stage_end_lines_come_in_the_stages_order_with_the_searchers_count(reruns):
    """Tune calls every stage's callback for every trial. The selection stage's count is an upper bound
    (4) until the searcher knows it (after the last search trial): its lines then count to the exact
    number, and its end line comes before the final stage's, also when it has no trial at all."""
    said, known = [], {"n": None}
    lines = [ProgressLine("search", 2, said.append, CELLS, mode="live", every=1e9, clock=Clock()),
             ProgressLine("select", 4, said.append, CELLS, mode="live", every=1e9, clock=Clock(), at_most=True,
                          exact=lambda: known["n"]),
             ProgressLine("final", 2, said.append, CELLS, mode="live", every=1e9, clock=Clock())]
    order = [trial(0, "s/ga+falw"), trial(1, "s/ft"), *[select_trial(i, "s/ft") for i in range(reruns)],
             trial(2, "s/ga+falw", final=True), trial(3, "s/ft", final=True)]
    for t in order:
        if t is order[1]:
            known["n"] = reruns  # the searcher, told before the callbacks, queued the re-runs
        cell = (t.config.get("select") or t.config.get("final") or t.config)["cell"]
        for p in lines:
            p.on_trial_start(0, order, t)
            p.on_trial_result(0, order, t, {"epoch": CELLS[cell].epochs, "avg_gap": 2.0})
            p.on_trial_complete(0, order, t)
        for p in lines:
            p.on_step_end(0, order)
    for p in lines:
        p.on_experiment_end(order)
    ends = [line.split(" done")[0] for line in said if line.startswith("stage ended")]
    assert ends == ["stage ended: search 2/2", f"stage ended: select {reruns}/{reruns}", "stage ended: final 2/2"]
    assert [line.split()[1] for line in said if line.startswith("select ")] == [f"{i}/{reruns}" for i in range(1, reruns + 1)]


def test_a_stage_the_journal_holds_complete_says_nothing_again():
    from falw_ray.study.record.recorder import entry

    journal = {t: entry(t, "search", {"cell": c, "seq": i}, i, "finished", {"epoch": CELLS[c].epochs, "avg_gap": 1.0})
               for i, (t, c) in enumerate([("a", "s/ga+falw"), ("b", "s/ft")])}
    said = []
    p = ProgressLine("search", 2, said.append, CELLS, mode="live", clock=Clock()).replay(journal)
    p.on_trial_complete(0, [], trial(9, "s/ft", final=True))
    p.on_experiment_end([])
    assert p.ended and said == []
