"""A study on a real two-node Ray cluster (a head and a worker in this machine, 1 CPU each) loses its
worker node and still ends; a node that does not see the storage is named before anything runs."""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
from ray.cluster_utils import Cluster

from falw_ray.study.record.journal import Journal
from falw_ray.study.cluster.nodes import MARKER, check_shared_storage
from falw_ray.study.runner import Study
from falw_ray.study.spec import StudyError, load_study

ROOT = Path(__file__).resolve().parents[1]
SOAK = ROOT / "tests" / "data" / "soak_study.yaml"
RAY = Path(sys.executable).parent / "ray"
STUDY_LIMIT_S = 300
"""A hang fails the test after this long instead of blocking the suite (the study takes about a minute)."""


def _psutil():
    import ray._private.thirdparty  # noqa: F401  (Ray ships psutil)
    import psutil

    return psutil


def stop_processes(procs: list[subprocess.Popen]) -> None:
    """Stop the Ray nodes a fixture started, and every process under them, by their ids (never `ray stop`)."""
    psutil = _psutil()
    family = []
    for proc in procs:
        try:
            family += [proc.pid, *(p.pid for p in psutil.Process(proc.pid).children(recursive=True))]
        except psutil.NoSuchProcess:
            family.append(proc.pid)
    for proc in reversed(procs):
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    for pid in family:
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture()
def cluster(monkeypatch):
    """Without token authentication on every process alike. (A driver that turns token mode on by
    itself, as connect_ray does where a token file exists, against nodes started without it, cannot
    serve its objects' locations to the other nodes: their reads fail with OwnerDiedError.)"""
    from ray._raylet import Config

    ray.shutdown()
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    Config.initialize("")
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    yield c
    ray.shutdown()
    c.shutdown()
    monkeypatch.undo()
    Config.initialize("")  # Ray caches its config in this process: later tests get the default auth mode again


def _alive(n: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if sum(node["Alive"] for node in ray.nodes()) == n:
            return
        time.sleep(0.2)
    pytest.fail(f"the cluster did not reach {n} alive node(s) within {timeout:.0f}s")


def test_a_worker_node_lost_mid_study_does_not_hang_it(tmp_path, cluster, capfd):
    """Its raylet killed (as by the OOM killer or a crash), the node is lost mid-study: the study
    ends, and the console says so in one line (which node, what becomes of its trials) where Ray
    would print its raylet's 20-line state dump and Tune a traceback per trial."""
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    spec = load_study(SOAK)
    spec = spec.model_copy(update={"search": spec.search.model_copy(update={"trials": 2})})
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = Study(spec, "soak").run(address=cluster.address, storage=tmp_path, tracking_uri=uri,
                                                        progress=False)
        except BaseException as e:  # handed to the test thread, which reports it
            outcome["error"] = e

    study = threading.Thread(target=run, daemon=True)
    started = time.time()
    study.start()
    journal = Journal(tmp_path / "ray" / "soak.finished.jsonl")
    while study.is_alive() and not journal.load():  # a trial recorded (the header alone is not one)
        assert time.time() - started < STUDY_LIMIT_S, "no trial finished"
        time.sleep(0.2)
    assert study.is_alive(), f"the study ended before a trial finished: {outcome}"
    # Both baselines (search seed and final seed) were built at once, one on each 1-CPU node.
    worker.all_processes["raylet"][0].process.kill()
    lost_at = time.time() - started
    study.join(STUDY_LIMIT_S - (time.time() - started))
    assert not study.is_alive(), f"the study hung after its worker node was removed at {lost_at:.0f}s"
    assert "error" not in outcome, repr(outcome.get("error"))
    result = outcome["result"]

    trials = pd.read_csv(result.results_dir / "trials.csv")
    assert len(trials) == 6 and trials["trial_id"].is_unique, trials[["cell", "trial_id", "status"]]
    assert (trials["status"] == "finished").all(), trials[["cell", "status"]]
    final = pd.read_csv(result.results_dir / "final.csv")
    assert len(final) == 3 and (final["status"] == "finished").all(), final[["cell", "status"]]
    with sqlite3.connect(tmp_path / "m.db") as db:
        statuses = dict(db.execute("select status, count(*) from runs group by status").fetchall())
    assert set(statuses) == {"FINISHED"}, statuses
    out, err = capfd.readouterr()
    assert "[state-dump]" not in out + err and "Traceback" not in out + err, (out + err)[-3000:]
    said = [line for line in err.splitlines() if "lost node" in line or "lost its worker" in line]
    lost = [line for line in said if "lost node" in line]
    # The node's line comes from whichever tells first: Ray's message of its raylet's death ("raylet
    # died"), or the GCS's node table, read when a trial's worker is found dead ("gone"). Where the
    # GCS has not marked the node dead before the study ends, only its trials' lines say the loss.
    assert said, f"the loss is said: {err[-3000:]}"
    assert lost in ([], *([f"falw-ray: lost node {worker.node_ip_address} ({worker.node_id[:12]}, {cause}): its "
                          "trials run again elsewhere"] for cause in ("raylet died", "gone"))), err[-3000:]
    assert all(line.endswith("it starts again") for line in said if "lost its worker" in line), said
    cluster.remove_node(worker, allow_graceful=False)


def test_storage_check_on_nodes_that_share_it_passes_and_leaves_nothing(tmp_path, cluster):
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    _alive(2)
    root = tmp_path / "new" / "storage"
    check_shared_storage(root)
    assert not (tmp_path / "new").exists(), "the folders made for the marker are removed"
    root.mkdir(parents=True)
    check_shared_storage(root)
    assert list(root.iterdir()) == []


def test_storage_check_on_one_node_asks_nobody_and_writes_nothing(tmp_path):
    ray.shutdown()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        started = time.perf_counter()
        check_shared_storage(tmp_path / "storage")
        assert time.perf_counter() - started < 0.5
        assert list(tmp_path.iterdir()) == []
    finally:
        ray.shutdown()


@pytest.fixture()
def private_node(tmp_path, cluster):
    """A worker node in its own mount namespace with an empty tmpfs over ``tmp_path / 'storage'``:
    a real node that does not see the storage the driver writes to."""
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs mount namespaces (unshare -m, as root)")
    storage = tmp_path / "storage"
    storage.mkdir()
    ray.init(address=cluster.address, log_to_driver=False)
    proc = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f'mount -t tmpfs tmpfs "{storage}" && exec "{RAY}" start --address={cluster.address} --num-cpus=1 '
         "--block --disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    try:
        _alive(2)
        ours = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != ray.get_runtime_context().get_node_id()]
        yield storage, ours[0]
    finally:
        stop_processes([proc])


def test_a_node_that_does_not_see_the_storage_is_named_in_one_line(private_node):
    storage, node_id = private_node
    with pytest.raises(StudyError) as info:
        check_shared_storage(storage)
    message = str(info.value)
    assert "\n" not in message
    assert node_id[:12] in message and str(storage) in message, message
    assert message.startswith("storage: node ") and "No such file" in message, message
    assert not any(p.name.startswith(MARKER) for p in storage.iterdir()), "a refused check leaves no marker"


def test_a_study_on_such_a_cluster_is_refused_before_writing_anything(private_node, tmp_path):
    """The storage check runs when the study connects, before its journal or MLflow is written."""
    storage, node_id = private_node
    with pytest.raises(StudyError, match=f"storage: node .*{node_id[:12]}.* {storage} "):
        Study.from_yaml(ROOT / "tests" / "data" / "tiny_study.yaml").run(
            address="auto", storage=storage, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", progress=False)
    assert list(storage.iterdir()) == [] and not (tmp_path / "m.db").exists(), "nothing written, MLflow untouched"


def test_a_baseline_built_where_the_driver_cannot_see_it_stops_the_study(tmp_path):
    """A node that joined after the start's check (an autoscaled worker) and trains into storage of
    its own is caught when its baseline task returns: one line naming the node, the role and the
    path; a baseline that is in the shared store passes."""
    from falw_ray.scenario import Scenario
    from falw_ray.store import BaselineStore
    from falw_ray.study.cluster.shared import check_stored

    scenario = Scenario(dataset="digits")
    store = BaselineStore(tmp_path)
    with pytest.raises(StudyError) as err:
        check_stored(scenario, str(tmp_path), "10.0.0.7")
    assert str(err.value) == (f"storage: node 10.0.0.7 built the original baseline of {scenario.name} into its own "
                              f"{store.path('original', scenario.original_key())}, which this driver does not see: "
                              "every node must mount the study's storage at the same path")
    store.path("original", scenario.original_key()).mkdir(parents=True)
    with pytest.raises(StudyError, match="built the retrained baseline"):
        check_stored(scenario, str(tmp_path), "10.0.0.7")
    store.path("retrained", scenario.key()).mkdir(parents=True)
    check_stored(scenario, str(tmp_path), "10.0.0.7")
