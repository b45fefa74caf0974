"""Studies survive crashes, faults and bad input: tests that really kill processes and break files."""
from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
from mlflow.tracking import MlflowClient

from falw_ray.study.runner import Study
from falw_ray.study.spec import load_study
from falw_ray.study.tracking.tracker import TrackingError

ROOT = Path(__file__).resolve().parents[1]
SOAK = ROOT / "tests" / "data" / "soak_study.yaml"
TINY = ROOT / "tests" / "data" / "tiny_study.yaml"
BIN = Path(sys.executable).parent
SOAK_CELLS = ("digits-cnn-lt0.1-g1/ft", "digits-cnn-lt0.1-g1/ga", "digits-cnn-lt0.1-g1/ga+falw")


def _psutil():
    import ray._private.thirdparty  # noqa: F401  (Ray ships psutil)
    import psutil

    return psutil


def finished_search_runs(db: Path) -> int:
    try:
        with sqlite3.connect(db) as c:
            return c.execute(
                "select count(*) from runs r join tags t on r.run_uuid = t.run_uuid "
                "where t.key = 'stage' and t.value = 'search' and r.status = 'FINISHED'").fetchone()[0]
    except sqlite3.Error:
        return 0


def history(uri: str, run_id: str) -> list[tuple[int, float]]:
    """A run's Avg. Gap at each logged step."""
    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, "avg_gap"))


def assert_soak_table(path: Path) -> None:
    """The soak study's final table: a row per cell (FT; GA without and with FaLW), Retrain, the original model."""
    table = pd.read_csv(path)
    rows = sorted(zip(table["method"], table["falw"].astype(str)))
    assert rows == [("ft", "off"), ("ga", "off"), ("ga", "on"), ("original", "-"), ("retrain", "-")], rows


def trial_runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], "tags.kind = 'trial'", max_results=10000)


def own_trial_workers() -> list:
    """The trial worker processes of the Ray this test process started (ray.init starts the raylet as
    its child, the raylet the workers): never another study's or another user's Ray on the machine."""
    psutil = _psutil()
    found = []
    for p in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if any("ImplicitFunc" in part for part in p.cmdline()):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


class Killer(threading.Thread):
    """Kills busy trial worker processes of this test's own Ray (SIGKILL) at random moments, ``kills``
    times unless the study ends first (the tests then assert it did not)."""

    def __init__(self, kills: int, seconds: float, seed: int = 0, pause: tuple[float, float] = (1.0, 4.0)):
        super().__init__(daemon=True)
        self.kills, self.seconds, self.rng, self.pause = kills, seconds, random.Random(seed), pause
        self.killed: list[int] = []
        self.stop = threading.Event()

    def run(self):
        psutil = _psutil()
        deadline = time.time() + self.seconds
        while len(self.killed) < self.kills and time.time() < deadline and not self.stop.is_set():
            time.sleep(self.rng.uniform(*self.pause))
            busy = []
            for p in own_trial_workers():
                try:
                    if p.cpu_percent(0.2) > 20:
                        busy.append(p)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            if busy:
                victim = self.rng.choice(busy)
                try:
                    victim.send_signal(signal.SIGKILL)
                    self.killed.append(victim.pid)
                except psutil.NoSuchProcess:
                    pass


@pytest.fixture()
def local_ray():
    ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def soak_spec(trials: int):
    spec = load_study(SOAK)
    return spec.model_copy(update={"search": spec.search.model_copy(update={"trials": trials})})


def assert_complete(result, uri: str, expected: int):
    assert len(result.trials) == expected
    assert (result.trials["status"] == "finished").all(), result.trials[["cell", "status"]]
    assert result.trials["cell"].value_counts().to_dict() == {c: expected // 3 for c in SOAK_CELLS}
    assert len(result.final) == 3 and (result.final["status"] == "finished").all(), "one final seed per cell"
    runs = trial_runs(uri, "soak")
    search = [r for r in runs if r.data.tags["stage"] == "search"]
    assert len(search) == expected and len({r.data.tags["trial_id"] for r in search}) == expected, "one run per trial"
    assert sorted(r.data.tags["stage"] for r in runs) == ["final"] * 3 + ["search"] * expected
    assert all(r.info.status == "FINISHED" for r in runs)
    assert_soak_table(result.results_dir / "table.csv")


def test_killed_trial_worker_is_retried(tmp_path, local_ray):
    killer = Killer(kills=1, seconds=120)
    killer.start()
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    result = Study(soak_spec(trials=2), "soak").run(tracking_uri=uri, storage=tmp_path, progress=False)
    killer.stop.set()
    killer.join(10)
    assert len(killer.killed) == 1, "the test must really have killed a trial worker"
    assert_complete(result, uri, expected=6)


def test_soak_random_worker_kills(tmp_path, local_ray):
    killer = Killer(kills=3, seconds=90, seed=7, pause=(0.5, 2.0))
    killer.start()
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    result = Study(soak_spec(trials=4), "soak").run(tracking_uri=uri, storage=tmp_path, progress=False)
    killer.stop.set()
    killer.join(10)
    assert len(killer.killed) == 3 and len(set(killer.killed)) == 3, f"three workers killed: {killer.killed}"
    assert_complete(result, uri, expected=12)


def test_diverging_trials_get_the_worst_objective(tmp_path, local_ray):
    spec = load_study(TINY)
    exploding = spec.methods[0].model_copy(update={"falw": "off", "space": {"lr": load_study(TINY).methods[0].space["lr"]
                                                                            .model_copy(update={"low": 1e3, "high": 1e4})}})
    spec = spec.model_copy(update={"methods": [exploding, spec.methods[1]]})
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    result = Study(spec, "tiny").run(tracking_uri=uri, storage=tmp_path, progress=False)
    ga = result.trials[result.trials["method"] == "ga"]
    assert len(ga) == 2 and (ga["status"] == "diverged").all()
    assert (ga["avg_gap"] == 100.0).all()
    ft = result.trials[result.trials["method"] == "ft"]
    assert len(ft) == 2 and (ft["status"] == "finished").all() and (ft["avg_gap"] < 100.0).all()
    assert "ft" in set(result.table["method"])
    runs = trial_runs(uri, "tiny")
    ga_runs = [r for r in runs if r.data.tags["method"] == "ga" and r.data.tags["stage"] == "search"]
    assert len(ga_runs) == 2
    assert all(r.info.status == "FINISHED" and r.data.tags.get("diverged") == "true" for r in ga_runs)
    assert all(r.data.metrics["avg_gap"] == 100.0 for r in ga_runs)
    ft_runs = [r for r in runs if r.data.tags["method"] == "ft" and r.data.tags["stage"] == "search"]
    assert len(ft_runs) == 2 and all(r.data.tags.get("diverged") != "true" for r in ft_runs)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("uri", [f"http://127.0.0.1:{_closed_port()}", "nosuchscheme://somewhere"])
def test_unreachable_tracking_fails_before_compute(tmp_path, local_ray, uri):
    with pytest.raises(TrackingError, match=f"^MLflow tracking at {re.escape(uri)} is unreachable: ") as e:
        Study.from_yaml(TINY).run(tracking_uri=uri, storage=tmp_path / "store", progress=False)
    assert "\n" not in str(e.value), "one line"
    assert not (tmp_path / "store").exists(), "nothing trained or written"


BROKEN = {
    "malformed": "name: x\nscenarios: [\n",
    "empty": "",
    "unknown_key": "name: x\nscenarios: [{dataset: digits}]\nmethods: [{name: ga}]\ntrails: 3\n",
    "wrong_type": "name: x\nscenarios: [{dataset: digits}]\nmethods: [{name: ga}]\nsearch: {trials: many}\n",
    "ratio": "name: x\nscenarios: [{dataset: digits, forget: {ratio: 1.5}}]\nmethods: [{name: ga}]\n",
    "gamma": "name: x\nscenarios: [{dataset: digits, forget: {gamma: -1}}]\nmethods: [{name: ga}]\n",
    "dataset": "name: x\nscenarios: [{dataset: mnist}]\nmethods: [{name: ga}]\n",
    "model": "name: x\nscenarios: [{dataset: digits, model: resnet50}]\nmethods: [{name: ga}]\n",
    "method": "name: x\nscenarios: [{dataset: digits}]\nmethods: [{name: gradient_ascent}]\n",
    "bounds": "name: x\nscenarios: [{dataset: digits}]\nmethods: [{name: ga, space: {lr: {low: 0.1, high: 0.001}}}]\n",
    "zero_trials": "name: x\nscenarios: [{dataset: digits}]\nmethods: [{name: ga}]\nsearch: {trials: 0}\n",
    "negative_cpu": "name: x\nscenarios: [{dataset: digits}]\nmethods: [{name: ga}]\nresources: {cpu: -1}\n",
    "data_dir": "name: x\nscenarios: [{dataset: cifar10, data_dir: /nonexistent/cifar}]\nmethods: [{name: ga}]\n",
    "gpus": "name: x\nscenarios: [{dataset: digits}]\nmethods: [{name: ga}]\nresources: {cpu: 1, gpu: 3}\n",
    "code": "name: !!python/object/apply:os.system ['touch pwned']\nscenarios: [{dataset: digits}]\nmethods: [{name: ga}]\n",
}
FIELD = {"unknown_key": "trails", "wrong_type": "search.trials", "ratio": "ratio", "gamma": "gamma",
         "dataset": "dataset", "model": "model", "method": "methods[0]", "bounds": "lr", "zero_trials": "trials",
         "negative_cpu": "resources.cpu", "data_dir": "scenarios[0].data_dir", "gpus": "resources.gpu",
         "malformed": "line", "empty": "empty", "code": "YAML"}


SUBPROCESS = {"gpus", "code", "malformed"}
"""Cases run as a real ``falw-ray`` process (exit code, stderr, no traceback); the rest go through
the same ``main()`` in this process, which keeps the suite fast."""


def check_error(case: str, stderr: str, code: int, folder: Path, study: Path) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.strip().splitlines() if line.startswith("falw-ray:")]
    assert len(errors) == 1 and errors[0].startswith(f"falw-ray: {case}.yaml: "), stderr
    assert FIELD[case] in errors[0], stderr
    assert sorted(p.name for p in folder.iterdir()) == [study.name], "nothing written"


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_study_exits_cleanly_and_writes_nothing(tmp_path, case, capsys, monkeypatch):
    study = tmp_path / f"{case}.yaml"
    study.write_text(BROKEN[case])
    if case in SUBPROCESS:
        run = subprocess.run([str(BIN / "falw-ray"), "run", study.name], cwd=tmp_path, capture_output=True,
                             text=True, timeout=300, env={**os.environ, "RAY_ADDRESS": ""})
        check_error(case, run.stderr, run.returncode, tmp_path, study)
    else:
        from falw_ray.cli import main

        monkeypatch.chdir(tmp_path)
        code = main(["run", study.name])
        check_error(case, capsys.readouterr().err, code, tmp_path, study)


def test_storage_that_cannot_be_written_stops_the_study_in_one_line_before_anything(tmp_path):
    """Storage under a regular file (as on a read-only or wrong mount): one line naming the folder, no
    Ray start, no MLflow store written."""
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    run = subprocess.run([sys.executable, "-m", "falw_ray.cli", "run", str(ROOT / "tests" / "data" / "tiny_study.yaml"),
                          "--storage", str(blocker / "store"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.splitlines() == [f"falw-ray: --storage: {blocker / 'store'} is not writable "
                                       f"({blocker} is not a writable folder)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_folder"]
