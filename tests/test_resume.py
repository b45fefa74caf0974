"""Resume, sync and report follow the journal, the study's one record: a completed study resumed runs
nothing and rebuilds MLflow (in whatever store) from it; a study file changed in a way that changes
trials, or a missing journal, is refused in one line with nothing written; early stopping's rungs are
rebuilt from the recorded histories; report takes the latest completed study run. A real local Ray,
real Optuna, SQLite MLflow stores and the digits data."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from falw_ray import __version__
from falw_ray.study.record.journal import Journal, header
from falw_ray.study.record.recorder import entry
from falw_ray.study.report import report
from falw_ray.study.runner import Study
from falw_ray.study.tracking.tracker import Tracker
from test_faults import assert_one_complete_run_per_trial, records

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_study.yaml"


pytestmark = pytest.mark.usefixtures("local_ray")


WIDE = {"FALW_RAY_PROGRESS": "live", "COLUMNS": "1000"}
"""Live progress on a terminal wide enough that no line wraps: these tests read whole lines (the
console's width is tested in test_console_width.py)."""


def run(study: Study, **kwargs) -> tuple[object, list[str]]:
    """Run the study in this process with live progress; returns its result and what it said."""
    out, saved = io.StringIO(), {k: os.environ.get(k) for k in WIDE}
    os.environ.update(WIDE)
    try:
        with contextlib.redirect_stderr(out):
            result = study.run(progress=True, **kwargs)
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.update({k: v})
    return result, [line.removeprefix("falw-ray: ") for line in out.getvalue().splitlines()]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """The tiny study with a selection stage (seed 5, top 2), run to its end."""
    folder = tmp_path_factory.mktemp("resume")
    spec = yaml.safe_load(TINY.read_text())
    spec["selection"] = {"seeds": [5], "top_k": 2}
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{folder / 'm.db'}"
    result, said = run(Study.from_yaml(path), tracking_uri=uri, storage=folder / "store")
    journal = folder / "store" / "ray" / "tiny.finished.jsonl"
    return SimpleNamespace(folder=folder, path=path, uri=uri, result=result, said=said, journal=journal,
                           bytes=journal.read_bytes())


def test_each_stage_counts_its_own_trials_and_the_stages_end_in_order(done):
    """Live progress: each stage's trial lines count 1..n of its n trials (the selection stage's total
    an upper bound, 2 cells x top 2, until the last search trial ends), then the stage says it ended,
    once, in the order search, select, final."""
    r = done.result
    for stage, frame in (("search", r.trials), ("select", r.selection), ("final", r.final)):
        n = len(frame)
        counts = [line.split()[1].split("/") for line in done.said if line.startswith(f"{stage} ")]
        assert [int(i) for i, _ in counts] == list(range(1, n + 1)), (stage, done.said)
        assert counts[-1][1] == str(n) and {total for _, total in counts} <= {str(n), "≤4"}, (stage, counts)
    assert len(r.selection) > 0, "a selection stage ran: the test tested its count"
    ends = [line.split()[2] for line in done.said if line.startswith("stage ended:")]
    assert ends == ["search", "select", "final"], done.said


def test_a_completed_study_resumed_runs_nothing_and_rebuilds_what_mlflow_lacks(done):
    """Resume after the end: no trial runs (the journal is byte-identical: every completed trial is
    appended to it), the study's one MLflow run is reopened and closed again, a trial run deleted from
    the store is rebuilt from the journal, and the tables are rewritten."""
    client = MlflowClient(done.uri)
    kept = records(done.journal)
    gone = done.result.final["mlflow_run_id"].iloc[0]
    client.delete_run(gone)
    (done.result.results_dir / "table.csv").unlink()
    again, said = run(Study.from_yaml(done.path), tracking_uri=done.uri, storage=done.folder / "store", resume=True)
    assert done.journal.read_bytes() == done.bytes
    assert f"study tiny was complete in {done.journal}: no trial run; 1 MLflow run(s) rebuilt from it at {done.uri}, " \
           f"tables rewritten in {done.result.results_dir}" in said
    assert not [line for line in said if line.startswith(("search ", "select ", "final ", "stage ended"))]
    assert sorted(again.trials["trial_id"]) == sorted(done.result.trials["trial_id"])
    assert again.study_run_id == done.result.study_run_id
    assert_one_complete_run_per_trial(done.uri, "tiny", kept)
    exp = client.get_experiment_by_name("tiny")
    assert [r.info.status for r in client.search_runs([exp.experiment_id], "tags.kind = 'study'")] == ["FINISHED"]
    assert (done.result.results_dir / "table.csv").exists()


def test_sync_into_a_new_store_writes_every_trial_and_report_reads_it(done):
    """sync with a tracking store that never saw the study: every journal trial gets its complete run
    there (and the baselines theirs), nothing runs, the new URI is stated; report then rebuilds the
    study's table from that store, from its latest completed study run, not from one in progress."""
    uri = f"sqlite:///{done.folder / 'new.db'}"
    _, said = run(Study.from_yaml(done.path), tracking_uri=uri, storage=done.folder / "store", sync_only=True)
    assert done.journal.read_bytes() == done.bytes
    assert f"{done.journal}: tracking URI {done.uri} -> {uri}" in said
    kept = records(done.journal)
    assert f"study tiny was complete in {done.journal}: no trial run; {len(kept)} MLflow run(s) rebuilt from it " \
           f"at {uri}, tables rewritten in {done.result.results_dir}" in said
    assert_one_complete_run_per_trial(uri, "tiny", kept)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tiny")
    assert len(client.search_runs([exp.experiment_id], "tags.kind = 'baseline'")) == 2 * 3, "seeds 0, 5 and 1"
    study_run = client.search_runs([exp.experiment_id], "tags.kind = 'study'")[0].info.run_id
    assert "search_space.json" in {a.path for a in client.list_artifacts(study_run)}

    in_progress = Tracker(uri, "tiny")
    in_progress.connect()
    in_progress.start_study("tiny", {}, "another-journal")  # a later study, still running
    table = report("tiny", uri, out_dir=done.folder / "report", plots=False)
    cols = ["method", "falw", "avg_gap_mean", "fa_mean", "mia_mean"]
    got, want = (t[cols].sort_values(["method", "falw"]).reset_index(drop=True) for t in (table, done.result.table))
    assert got[cols[:2]].equals(want[cols[:2]])
    assert np.allclose(got[cols[2:]].to_numpy(float), want[cols[2:]].to_numpy(float))


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "falw_ray.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120, env={**os.environ, "COLUMNS": WIDE["COLUMNS"]})


def test_a_changed_study_or_a_missing_journal_is_refused_in_one_line_and_nothing_is_written(done, tmp_path):
    """A killed study (its journal: the header and the first two trials) whose file was then changed
    in a way that changes trials: resume names the change and refuses, the journal untouched. run over
    it says to resume or start over with --fresh. resume with no journal says how to start. Neither
    Ray nor MLflow is touched: no store is created."""
    journal = tmp_path / "store" / "ray" / "tiny.finished.jsonl"
    journal.parent.mkdir(parents=True)
    journal.write_bytes(b"".join(done.bytes.splitlines(keepends=True)[:3]))
    before = journal.read_bytes()
    edited = tmp_path / "edited.yaml"
    edited.write_text(done.path.read_text().replace("high: 0.01", "high: 0.05"))
    assert edited.read_text() != done.path.read_text()
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    where = ["--storage", str(tmp_path / "store"), "--tracking-uri", uri]

    refused = cli("resume", str(edited), *where, cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith(f"falw-ray: {journal}: {edited} changed since the journal was written in a way "
                                     "that changes its trials (methods[0].space.lr.high: 0.01 -> 0.05); resume refused")
    assert f"`falw-ray run {edited} {' '.join(where)} --fresh` starts over" in refused.stderr

    unfinished = cli("run", str(done.path), *where, cwd=tmp_path)
    assert unfinished.returncode == 2 and unfinished.stderr.count("\n") == 1, unfinished.stderr
    assert unfinished.stderr.startswith(f"falw-ray: {journal}: study tiny has an unfinished journal (2 trial(s) "
                                        f"recorded): `falw-ray resume {done.path} {' '.join(where)}` continues it")

    empty = tmp_path / "empty"
    missing = cli("resume", str(done.path), "--storage", str(empty), "--tracking-uri", uri, cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr == (
        f"falw-ray: {empty / 'ray' / 'tiny.finished.jsonl'}: no journal of study tiny: nothing to resume; start the "
        f"study with `falw-ray run {done.path} --storage {empty} --tracking-uri {uri}`\n")
    assert journal.read_bytes() == before and sorted(p.name for p in journal.parent.iterdir()) == [journal.name]
    assert not empty.exists() and not (tmp_path / "m.db").exists()


def test_a_resumed_search_judges_its_new_trials_against_the_recorded_rungs(done):
    """An interrupted study with early stopping (grace 1, rungs at epochs 1, 2 and 4) whose journal
    holds two search trials that matched Retrain at every rung (Avg. Gap 0): resumed, its one new
    search trial, worse at the first rung, is stopped there (with empty rungs it would run on)."""
    spec = yaml.safe_load(TINY.read_text())
    spec.update(name="rungs", methods=[{"name": "ft", "epochs": 4, "space": {"lr": {"low": 1e-3, "high": 1e-2, "log": True}}}],
                search={"trials": 3}, early_stopping={"enabled": True, "grace_period": 1, "reduction_factor": 2})
    path = done.folder / "rungs.yaml"
    path.write_text(yaml.safe_dump(spec))
    study = Study.from_yaml(path)
    cell = study.cells[0]
    journal = Journal(done.folder / "store" / "ray" / "rungs.finished.jsonl")
    journal.start(header(study.spec, study.digest, __version__, done.uri, "rungs"))
    history = [{"epoch": e, "avg_gap": 0.0} for e in (1, 2, 4)]
    for i in range(2):
        journal.append(entry(f"old{i}", "search", {"cell": cell.id, "lr": 0.002 * (i + 1), "seq": i}, i, "finished",
                             history[-1], history))
    result, _ = run(study, tracking_uri=done.uri, storage=done.folder / "store", resume=True)
    new = [r for t, r in records(journal.path).items() if r["stage"] == "search" and not t.startswith("old")]
    assert len(new) == 1 and new[0]["status"] == "stopped early", new
    assert [h["epoch"] for h in new[0]["history"]] == [1] and new[0]["history"][0]["avg_gap"] > 0
    assert sorted(result.trials["status"]) == ["finished", "finished", "stopped early"]


def test_more_final_seeds_resume_a_completed_study_with_only_the_new_final_runs(done, tmp_path):
    """A second final seed added after the end: allowed and stated; resume runs one final run per
    cell on it and nothing else, the journal's earlier lines kept as they were."""
    shutil.copytree(done.folder / "store", tmp_path / "store")
    journal = tmp_path / "store" / "ray" / "tiny.finished.jsonl"
    before = journal.read_bytes()
    spec = yaml.safe_load(done.path.read_text())
    spec["final"]["seeds"] = [1, 2]
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    result, said = run(Study.from_yaml(path), tracking_uri=uri, storage=tmp_path / "store", resume=True)
    assert f"{journal}: final seeds [1] -> [1, 2]: 1 more final run(s) per cell" in said
    after = journal.read_bytes()
    assert after.startswith(before)
    added = records(journal).keys() - records(done.journal).keys()
    assert sorted((records(journal)[t]["stage"], records(journal)[t]["config"]["final"]["seed"]) for t in added) == [
        ("final", 2), ("final", 2)]
    assert sorted(result.final["seed"]) == [1, 1, 2, 2]
