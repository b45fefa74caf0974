"""The journal is the study's one record: a driver killed at random moments, again and again, and
tracking outages (a stalled, a stopped and a restarted MLflow server) lose no completed trial, run
none twice, and leave MLflow with exactly one complete run per trial and nothing RUNNING."""
from __future__ import annotations

import errno
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from mlflow_server import MlflowServer

ROOT = Path(__file__).resolve().parents[1]
SOAK = ROOT / "tests" / "data" / "soak_study.yaml"
TINY = ROOT / "tests" / "data" / "tiny_study.yaml"


def study(tmp_path: Path, command: str, spec: Path, uri: str, env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "falw_ray.cli", command, str(spec), "--storage", str(tmp_path / "store"),
           "--tracking-uri", uri]
    path = tmp_path / f"{command}-{time.time():.3f}.log"
    with open(path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, text=True,
                                env={**os.environ, "FALW_RAY_PROGRESS": "live", "COLUMNS": "1000", **(env or {})},
                                start_new_session=True)  # lines read whole: no wrapping
    proc.log = path
    return proc


def output(proc: subprocess.Popen) -> str:
    return proc.log.read_text()


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the driver alone (a crash), then the local Ray it started (its process group)."""
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        time.sleep(1)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def records(journal: Path) -> dict[str, dict]:
    if not journal.exists():
        return {}
    out = {}
    for line in journal.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "trial_id" in r:  # not the header
            out[r["trial_id"]] = r
    return out


def wait_for(journal: Path, proc: subprocess.Popen, n: int, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while len(records(journal)) < n:
        if proc.poll() is not None:
            pytest.fail(f"the study ended before {n} trial(s) were recorded:\n{output(proc)}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"no {n} recorded trial(s) within {timeout} s:\n{output(proc)}")
        time.sleep(0.1)


def finish(proc: subprocess.Popen, timeout: float = 900) -> str:
    try:
        proc.wait(timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = output(proc)
    assert proc.returncode == 0, text
    return text


def steps(client: MlflowClient, run_id: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, "avg_gap"))


def assert_one_complete_run_per_trial(uri: str, experiment: str, kept: dict[str, dict]) -> None:
    """Exactly one MLflow run per journal record, FINISHED, its Avg. Gap logged at every epoch the
    record holds; no other trial run; no run of the experiment left RUNNING."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=10000)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    trials = [r for r in runs if r.data.tags.get("kind") == "trial"]
    ids = [r.data.tags["trial_id"] for r in trials]
    assert sorted(ids) == sorted(kept), "one run per recorded trial, no other"
    for run in trials:
        record = kept[run.data.tags["trial_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.tags["stage"] == record["stage"]
        want = sorted((int(h.get("epoch", 0)), h["avg_gap"]) for h in record["history"] if "avg_gap" in h)
        got = steps(client, run.info.run_id)
        assert [e for e, _ in got] == [e for e, _ in want], run.data.tags["trial_id"]
        assert [g for _, g in got] == pytest.approx([g for _, g in want]), run.data.tags["trial_id"]


def assert_trials_csv(results: Path, kept: dict[str, dict]) -> None:
    frames = [pd.read_csv(results / f) for f in ("trials.csv", "final.csv")]
    ids = [t for f in frames for t in f["trial_id"]]
    assert sorted(ids) == sorted(kept) and len(set(ids)) == len(ids), "every recorded trial once"
    assert all((f["status"] == "finished").all() for f in frames)


def test_a_driver_killed_at_random_moments_loses_nothing_and_runs_nothing_twice(tmp_path):
    """Three rounds: run (or resume) the soak study, SIGKILL its driver at a random moment after at
    least one more trial completed; then resume to the end. Each trial completed before a kill keeps
    its record and its MLflow run (same id, same history); the study ends with its 12 search trials
    and 3 final runs, each once."""
    rng = random.Random(7)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    journal = tmp_path / "store" / "ray" / "soak.finished.jsonl"
    before: dict[str, dict] = {}
    client = MlflowClient(uri)
    for round_ in range(3):
        proc = study(tmp_path, "run" if round_ == 0 else "resume", SOAK, uri)
        try:
            wait_for(journal, proc, len(records(journal)) + 1)
            time.sleep(rng.uniform(0.0, 4.0))
        finally:
            kill(proc)
        now = records(journal)
        assert set(before) <= set(now), "a completed trial's record was lost"
        assert all(now[t] == before[t] for t in before), "a completed trial was run again"
        before = now
    runs_before = {r.data.tags["trial_id"]: (r.info.run_id, steps(client, r.info.run_id))
                   for r in client.search_runs([client.get_experiment_by_name("soak").experiment_id],
                                               "tags.kind = 'trial' and attributes.status = 'FINISHED'")}
    text = finish(study(tmp_path, "resume", SOAK, uri))
    assert f"resuming from {journal}: {len(before)} completed trial(s) kept" in text
    kept = records(journal)
    assert {t: kept[t] for t in before} == before
    assert sorted(r["stage"] for r in kept.values()) == ["final"] * 3 + ["search"] * 12
    assert_one_complete_run_per_trial(uri, "soak", kept)
    for trial_id, (run_id, history) in runs_before.items():
        if trial_id in before:  # a completed trial's run, written before the kill, is kept as it was
            assert steps(client, run_id) == history
    assert_trials_csv(tmp_path / "store" / "soak", kept)
    exp = client.get_experiment_by_name("soak")
    logged = sorted((r.data.params["role"], int(r.data.params["seed"]))
                    for r in client.search_runs([exp.experiment_id], "tags.kind = 'baseline'"))
    assert logged == [("original", 0), ("original", 1), ("retrained", 0), ("retrained", 1)], \
        "each baseline logged once, not again on each resume"
    table = pd.read_csv(tmp_path / "store" / "soak" / "table.csv")
    assert sorted(zip(table["method"], table["falw"].astype(str))) == [
        ("ft", "off"), ("ga", "off"), ("ga", "on"), ("original", "-"), ("retrain", "-")]


@pytest.fixture()
def server(tmp_path):
    s = MlflowServer(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "mlflow").start()
    yield s
    s.stop()


def test_a_driver_killed_with_tracking_writes_queued_is_rebuilt_from_the_journal(tmp_path, server):
    """The server stalls (writes queue up in the driver), the driver is killed: the trials recorded
    by then get complete MLflow runs on resume, the ones cut off none, and nothing runs twice."""
    journal = tmp_path / "store" / "ray" / "tiny.finished.jsonl"
    proc = study(tmp_path, "run", TINY, server.uri)
    try:
        wait_for(journal, proc, 1)
        server.stall()
        wait_for(journal, proc, 3)  # trials complete and are recorded while their writes wait
        time.sleep(1)
    finally:
        kill(proc)
        server.unstall()
    recorded = records(journal)
    text = finish(study(tmp_path, "resume", TINY, server.uri))
    assert "MLflow run(s) rebuilt" in text, text
    kept = records(journal)
    assert {t: kept[t] for t in recorded} == recorded, "nothing recorded was run again"
    assert len(kept) == 2 * 2 + 2
    assert_one_complete_run_per_trial(server.uri, "tiny", kept)
    assert_trials_csv(tmp_path / "store" / "tiny", kept)


FAST_FAIL = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3",
             "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
"""MLflow's retry budget made short, so that an outage outlasts it within a test's time."""


def test_a_tracking_outage_past_the_retry_budget_never_stops_the_study(tmp_path, server):
    """The server is stopped mid-study and stays down: the study still finishes (exit 0, its tables
    written), says what was not written and how to finish it; with the server back, resume writes
    every run exactly once and runs no trial again (``falw-ray sync``: resume that refuses to run any)."""
    journal = tmp_path / "store" / "ray" / "tiny.finished.jsonl"
    proc = study(tmp_path, "run", TINY, server.uri, FAST_FAIL)
    wait_for(journal, proc, 1)
    server.stop()
    text = finish(proc)
    assert "could not be written" in text and "falw-ray resume" in text, text
    recorded = records(journal)
    assert len(recorded) == 2 * 2 + 2
    assert_trials_csv(tmp_path / "store" / "tiny", recorded)

    server.start()
    text = finish(study(tmp_path, "sync", TINY, server.uri))
    assert "MLflow run(s) rebuilt" in text, text
    assert records(journal) == recorded, "sync ran nothing again"
    assert_one_complete_run_per_trial(server.uri, "tiny", recorded)
    client = MlflowClient(server.uri)
    exp = client.get_experiment_by_name("tiny")
    study_runs = client.search_runs([exp.experiment_id], "tags.kind = 'study'")
    assert [r.info.status for r in study_runs] == ["FINISHED"]


NO_RETRY = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}
"""No retry budget at all: every write made while the server is down fails."""


def test_a_tracking_server_restarted_mid_study_loses_nothing(tmp_path, server):
    """Stopped (writes fail: no retry budget) and started again while trials run (the soak study with 10
    trials per cell, so that it outlasts the restart): the study ends with every trial's run
    complete, without a resume."""
    import yaml

    spec = yaml.safe_load(SOAK.read_text())
    spec["search"]["trials"] = 10
    longer = tmp_path / "soak.yaml"
    longer.write_text(yaml.safe_dump(spec))
    journal = tmp_path / "store" / "ray" / "soak.finished.jsonl"
    proc = study(tmp_path, "run", longer, server.uri, NO_RETRY)
    try:
        wait_for(journal, proc, 1)
        server.stop()
        time.sleep(2)
        server.start()
        assert len(records(journal)) < 3 * 10, "the study ended before the server was back: make it longer"
    except BaseException:
        kill(proc)
        raise
    text = finish(proc)
    assert "MLflow write(s) did not reach" in text, "the outage was not noticed: the test tested nothing"
    assert "View run" not in text, "MLflow's per-run lines stay off the console"
    assert "could not be written" not in text, text
    kept = records(journal)
    assert len(kept) == 3 * 10 + 3
    assert_one_complete_run_per_trial(server.uri, "soak", kept)
    assert_trials_csv(tmp_path / "store" / "soak", kept)


def test_sync_refuses_a_study_with_trials_still_to_run(tmp_path):
    """sync writes what the journal holds and runs nothing: with trials missing (a study stopped
    before its first trial completed: its journal holds the header alone) it stops in one line
    before Ray or MLflow is touched."""
    from falw_ray.study.record.journal import Journal, header
    from falw_ray.study.runner import Study

    tiny = Study.from_yaml(TINY)
    journal = Journal(tmp_path / "store" / "ray" / "tiny.finished.jsonl")
    journal.start(header(tiny.spec, tiny.digest, "0.1.0", f"sqlite:///{tmp_path / 'm.db'}", "tiny"))
    before = journal.path.read_bytes()
    proc = subprocess.run([sys.executable, "-m", "falw_ray.cli", "sync", str(TINY), "--storage", str(tmp_path / "store"),
                           "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"falw-ray: {tmp_path / 'store' / 'ray' / 'tiny.finished.jsonl'}: study tiny still has "
                                   f"trials to run; sync runs none (`falw-ray resume {TINY} --storage "
                                   f"{tmp_path / 'store'} --tracking-uri sqlite:///{tmp_path / 'm.db'}` does)")
    assert not (tmp_path / "m.db").exists() and journal.path.read_bytes() == before


class FullDisk:
    """``os`` for the journal, with fsync failing as a full disk makes it (ENOSPC) from call ``after`` on."""

    def __init__(self, after: int):
        self.calls, self.after = 0, after

    def fsync(self, fd):
        self.calls += 1
        if self.calls > self.after:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.fsync(fd)

    def __getattr__(self, name):
        return getattr(os, name)


def test_a_full_disk_stops_the_study_naming_the_file_and_resume_completes_it(tmp_path, monkeypatch):
    """The disk fills as the third trial is recorded: the study stops with an error naming the journal
    and the trial (not a traceback from deep inside Tune), the two trials recorded before are intact,
    and once there is room resume completes the study with every trial recorded once. (The journal's
    first synced write is its header: the fourth fails.)"""
    import ray

    from falw_ray.study.record import journal as journal_module
    from falw_ray.study.runner import Study

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    path = tmp_path / "store" / "ray" / "tiny.finished.jsonl"
    monkeypatch.setattr(journal_module, "os", FullDisk(after=3))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with pytest.raises(OSError) as err:
            Study.from_yaml(TINY).run(tracking_uri=uri, storage=tmp_path / "store", progress=False)
    finally:
        ray.shutdown()
    assert re.fullmatch(rf"{re.escape(str(path))}: could not record trial \w+ \(No space left on device\)",
                        str(err.value)), str(err.value)
    assert len(records(path)) == 2
    monkeypatch.undo()

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = Study.from_yaml(TINY).run(tracking_uri=uri, storage=tmp_path / "store", progress=False, resume=True)
    finally:
        ray.shutdown()
    kept = records(path)
    assert len(kept) == 2 * 2 + 2 and sorted(result.trials["trial_id"]) == sorted(
        t for t, r in kept.items() if r["stage"] == "search")
    assert_one_complete_run_per_trial(uri, "tiny", kept)
    assert_trials_csv(tmp_path / "store" / "tiny", kept)
