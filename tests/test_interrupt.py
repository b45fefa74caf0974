"""An interrupted study is not a result: Ctrl-C (SIGINT) or SIGTERM mid-study exits non-zero, says
which stage was cut and how to continue, closes its MLflow runs as KILLED; resume then completes it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_study.yaml"


def start(tmp_path: Path, command: str = "run") -> subprocess.Popen:
    cmd = [sys.executable, "-m", "falw_ray.cli", command, str(TINY), "--storage", str(tmp_path / "store"),
           "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**os.environ, "FALW_RAY_PROGRESS": "live"}, start_new_session=True)


def trial_ids(journal: Path) -> set[str]:
    """The trials the journal records (its lines but the header)."""
    if not journal.exists():
        return set()
    return {r["trial_id"] for r in map(json.loads, journal.read_text().splitlines()) if "trial_id" in r}


def wait_for_finished_trials(journal: Path, proc: subprocess.Popen, n: int, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the study ended before it could be interrupted: {proc.communicate()[1][-2000:]}")
        if len(trial_ids(journal)) >= n:
            return
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no {n} finished trial(s) in {journal} within {timeout} s")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_study_exits_non_zero_and_resume_completes_it(tmp_path, sig):
    journal = tmp_path / "store" / "ray" / "tiny.finished.jsonl"
    proc = start(tmp_path)
    wait_for_finished_trials(journal, proc, 1)
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    said = [line for line in err.splitlines() if "interrupted during the" in line]
    assert len(said) == 1 and said[0].startswith("falw-ray: interrupted during the search stage"), err[-3000:]
    assert said[0].endswith(f"Continue with: falw-ray resume {TINY} --storage {tmp_path / 'store'} "
                            f"--tracking-uri sqlite:///{tmp_path / 'm.db'}")
    assert "done in" not in err and "Avg. Gap" not in out, "no table for a study that did not end"
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    study = [r for r in runs if r.data.tags.get("kind") == "study"]
    assert len(study) == 1 and study[0].info.status == "KILLED"
    assert study[0].data.tags["interrupted_stage"] == "search"
    assert not [r for r in runs if r.info.status == "RUNNING"]
    finished = trial_ids(journal)
    if sig != signal.SIGINT:
        return  # what resume does after an interrupt is the same for either signal: checked once

    again = start(tmp_path, "resume")
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    assert "Avg. Gap" in out and "done in" in err
    runs = client.search_runs([exp.experiment_id])
    study = [r for r in runs if r.data.tags.get("kind") == "study"]
    assert len(study) == 1 and study[0].info.status == "FINISHED"
    trials = [r for r in runs if r.data.tags.get("kind") == "trial"]
    assert len(trials) == 4 + 2 and len({r.data.tags["trial_id"] for r in trials}) == 6
    assert finished <= {r.data.tags["trial_id"] for r in trials}, "trials finished before the interrupt are kept"
    assert all(r.info.status == "FINISHED" for r in trials)
