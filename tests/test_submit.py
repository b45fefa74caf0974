"""Submit jobs to a real, token-authenticated Ray head started (and stopped) by this module.

The head runs under `ray start --head --block` in its own session and process group,
with its own temp dir, HOME (holding .ray/auth_token) and ports, so it neither finds
nor disturbs any other Ray on the machine; teardown stops only its processes.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray  # noqa: F401  (puts Ray's bundled psutil on sys.path)
import psutil  # noqa: E402
import pandas as pd
from mlflow.tracking import MlflowClient
from ray.job_submission import JobStatus

from falw_ray.cli import main
from falw_ray.study.cluster import launch
from falw_ray.study.cluster.submit import (ENV_VARS, cluster_locations, follow_hint, job_client, study_entrypoint,
                                   submit_entrypoint, submit_study, wait_for_job)

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent  # the job's `python` is the first on the PATH of `ray start`
TINY_STUDY = REPO / "tests" / "data" / "tiny_study.yaml"
TABLE_COLUMNS = ["method", "falw", "FA", "RA", "TA", "MIA", "Avg.", "Gap", "Time", "(s)", "RTE"]
"""The header of ``falw-ray compare``'s table, split on spaces."""
VALUES = ["fa", "ra", "ta", "mia", "avg_gap", "seconds", "rte"]
_CLIENT_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")


def _free_ports(n: int) -> list[int]:
    """n distinct ports the OS calls free now (held open together so none repeats)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _cluster_processes(root: Path, pgid: int) -> list[psutil.Process]:
    """Live processes of this cluster: in its process group, or naming/working in its temp dir."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid == os.getpid() or p.status() == psutil.STATUS_ZOMBIE:
                continue
            if os.getpgid(p.pid) == pgid or str(root) in " ".join(p.cmdline()) or p.cwd().startswith(str(root)):
                found.append(p)
        except (psutil.Error, ProcessLookupError):
            continue
    return found


def _stop(proc: subprocess.Popen, root: Path) -> list[psutil.Process]:
    """SIGTERM the blocking `ray start` (it drains and stops its children), then kill what is left."""
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    tree += _cluster_processes(root, proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=45)
    except subprocess.TimeoutExpired:
        pass
    _, alive = psutil.wait_procs(tree, timeout=10)
    for p in alive + _cluster_processes(root, proc.pid):
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)
    proc.wait(timeout=10)
    return _cluster_processes(root, proc.pid)


@pytest.fixture(scope="module")
def cluster():
    if not (VENV_BIN / "ray").exists():
        pytest.skip(f"no `ray` next to {sys.executable}")
    root = Path(tempfile.mkdtemp(prefix="frt-", dir="/tmp"))  # short: Ray's unix socket paths live under it
    home, token = root / "home", uuid.uuid4().hex
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(token)
    gcs, dash, client, agent, agent_grpc, rt_agent, metrics, node_mgr, obj_mgr = _free_ports(9)
    env = {k: v for k, v in os.environ.items() if k not in _CLIENT_ENV}
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", HOME=str(home), RAY_AUTH_MODE="token",
               RAY_USAGE_STATS_ENABLED="0")
    cmd = [str(VENV_BIN / "ray"), "start", "--head", "--block", f"--port={gcs}", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dash}", "--node-ip-address=127.0.0.1", "--num-cpus=2", "--include-dashboard=true",
           f"--temp-dir={root / 'r'}", f"--ray-client-server-port={client}",
           f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
           f"--runtime-env-agent-port={rt_agent}", f"--metrics-export-port={metrics}",
           f"--node-manager-port={node_mgr}", f"--object-manager-port={obj_mgr}", "--disable-usage-stats"]
    log = open(root / "ray_start.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    with pytest.MonkeyPatch.context() as mp:
        # The client finds the token where `ray start` does, in ~/.ray/auth_token, with no RAY_AUTH_* set.
        for k in _CLIENT_ENV:
            mp.delenv(k, raising=False)
        mp.setenv("HOME", str(home))
        try:
            deadline, last = time.monotonic() + 120, None
            while True:
                if proc.poll() is not None:
                    tail = (root / "ray_start.log").read_text()[-3000:]
                    raise RuntimeError(f"ray start exited {proc.returncode}:\n{tail}")
                try:
                    job_client(address).list_jobs()  # the job API itself, not only the HTTP port
                    break
                except Exception as e:  # noqa: BLE001  (not up yet: refused, 5xx, module still loading)
                    last = e
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Ray dashboard at {address} not ready after 120s: {last}")
                time.sleep(1)
            assert _cluster_processes(root, proc.pid), "cluster processes not visible: teardown check would be vacuous"
            yield SimpleNamespace(address=address, gcs=f"127.0.0.1:{gcs}", token=token, home=home, root=root,
                                  proc=proc)
        finally:
            left = _stop(proc, root)
            log.close()
            shutil.rmtree(root, ignore_errors=True)
            assert not left, f"cluster processes survived teardown: {[p.pid for p in left]}"


def test_submit_entrypoint_runs_compare_with_token_auth(cluster):
    job = submit_entrypoint("python -m falw_ray.cli compare --dataset digits --no-store --methods ga --epochs 1 "
                            "--threads 1",
                            cluster.address, working_dir=REPO)
    status = wait_for_job(cluster.address, job, timeout_s=300)
    logs = job_client(cluster.address).get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    # compare's table (stdout): its header, then Retrain's and the original model's rows and GA's
    # without and with FaLW, nothing else.
    lines = logs.splitlines()
    header = [i for i, line in enumerate(lines) if line.split() == TABLE_COLUMNS]
    assert len(header) == 1, logs[-3000:]
    rows = [line.split() for line in lines[header[0] + 1:header[0] + 5]]
    assert [r[:2] for r in rows] == [["retrain", "-"], ["original", "-"], ["ga", "off"], ["ga", "on"]], logs[-3000:]
    assert all(len(r) == 2 + len(VALUES) for r in rows), rows
    values = [dict(zip(VALUES, map(float, r[2:]))) for r in rows]
    assert (values[0]["avg_gap"], values[0]["rte"]) == (0.0, 1.0), "Retrain is the reference: gap 0, RTE 1"
    assert all(0.0 <= v[k] <= 100.0 for v in values for k in ("fa", "ra", "ta", "mia", "avg_gap")), values
    # ... and each GA run's progress line (stderr) gave the Avg. Gap the table shows.
    said = dict(re.findall(r"falw-ray: ga\s+falw (on|off)\s+Avg\. Gap\s+([0-9.]+)", logs))
    assert said == {"off": f"{values[2]['avg_gap']:.2f}", "on": f"{values[3]['avg_gap']:.2f}"}, logs[-3000:]
    env = "" if "RAY_AUTH_MODE" in os.environ else "RAY_AUTH_MODE=token "  # the CLI sends a token only with it
    assert follow_hint(cluster.address, job).splitlines() == [
        f"follow: {env}ray job logs --follow --address {cluster.address} {job}",
        f"status: {env}ray job status --address {cluster.address} {job}",
        f"stop:   {env}ray job stop --address {cluster.address} {job}"]


def test_cluster_really_requires_the_token(cluster):
    # A request without a token is refused (a plain HTTP call: Ray's own client may pick up a token
    # from this process's environment once any earlier test has run ray.init()).
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{cluster.address}/api/jobs/", timeout=10)
    assert refused.value.code == 401, "no token: unauthorized"
    wrong = urllib.request.Request(f"{cluster.address}/api/jobs/", headers={"Authorization": "Bearer not-the-token"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(wrong, timeout=10)
    assert refused.value.code == 403, "a wrong token: forbidden"
    right = urllib.request.Request(f"{cluster.address}/api/jobs/", headers={"Authorization": f"Bearer {cluster.token}"})
    with urllib.request.urlopen(right, timeout=10) as ok:
        assert ok.status == 200
    with pytest.raises(PermissionError, match="127.0.0.1"):
        job_client(cluster.address, token="not-the-token")
    assert isinstance(job_client(cluster.address, token=cluster.token).list_jobs(), list)


def test_unreachable_address_is_one_line_connection_error():
    (port,) = _free_ports(1)
    with pytest.raises(ConnectionError, match=rf"127\.0\.0\.1:{port}") as e:
        job_client(f"http://127.0.0.1:{port}")
    assert "\n" not in str(e.value)


def test_submit_study_outside_working_dir_is_refused(tmp_path):
    study = tmp_path / "outside.yaml"
    study.write_text("name: outside\n")
    with pytest.raises(ValueError, match="outside.yaml") as e:
        submit_study(study, "http://127.0.0.1:1", working_dir=REPO)  # refused before any network call
    assert str(REPO) in str(e.value) and "\n" not in str(e.value)


def test_submit_runs_study_where_it_says(cluster, tmp_path, capsys):
    # `falw-ray submit` with an absolute --storage and --tracking-uri: it says where the results will be,
    # and the job (`falw-ray run --address auto` on the head) writes them there, not into its working dir.
    storage, db = tmp_path / "results", tmp_path / "mlflow" / "mlflow.db"
    db.parent.mkdir()
    uri = f"sqlite:///{db}"
    rc = main(["submit", str(TINY_STUDY), "--address", cluster.address, "--working-dir", str(REPO),
               "--storage", str(storage), "--tracking-uri", uri])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0, out
    job = out[0].removeprefix("submitted job ")
    assert out[1:3] == [f"results: {storage}/tiny on the cluster (storage {storage}, baselines {storage}/baselines)",
                        f"MLflow:  {uri} (experiment tiny)"], out
    status = wait_for_job(cluster.address, job, timeout_s=600)
    logs = job_client(cluster.address).get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert f"results: {storage / 'tiny'}" in logs.splitlines(), logs[-3000:]
    # Nothing landed in the job's copy of the working dir on the head.
    assert not [p for p in cluster.root.rglob("*") if p.name in ("falw_results", "mlflow.db", "mlartifacts")]
    table = pd.read_csv(storage / "tiny" / "table.csv")
    assert sorted(table["method"]) == ["ft", "ga", "original", "retrain"], table
    assert set(table["scenario"]) == {"digits-cnn-lt0.1-g1"}
    trials = pd.read_csv(storage / "tiny" / "trials.csv")
    assert sorted(trials["cell"]) == ["digits-cnn-lt0.1-g1/ft"] * 2 + ["digits-cnn-lt0.1-g1/ga+falw"] * 2
    assert set(trials["status"]) == {"finished"}
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], "tags.kind = 'trial'")
    assert sorted(r.data.tags["stage"] for r in runs) == ["final"] * 2 + ["search"] * 4
    assert {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.parametrize("given, field", [
    ({}, "tiny_study.yaml: storage 'falw_results' is a relative path"),
    ({"storage": "results"}, "--storage 'results' is a relative path"),
    ({"storage": "/abs/results"}, "tiny_study.yaml: tracking.uri is not set"),
    ({"storage": "/abs/results", "tracking_uri": "sqlite:///mlflow.db"},
     "--tracking-uri 'sqlite:///mlflow.db' is a relative path"),
    ({"storage": "/abs/results", "tracking_uri": "mlruns"}, "--tracking-uri 'mlruns' is a relative path"),
], ids=["study storage", "--storage", "no tracking", "--tracking-uri sqlite", "--tracking-uri path"])
def test_submit_refuses_relative_locations_in_one_line(cluster, capsys, given, field):
    # A relative location would land in the job's temporary working dir on the head: refused, no job made.
    before = {j.submission_id for j in job_client(cluster.address).list_jobs()}
    flags = [a for k, v in given.items() for a in (f"--{k.replace('_', '-')}", v)]
    rc = main(["submit", str(TINY_STUDY), "--address", cluster.address, "--working-dir", str(REPO), *flags])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("falw-ray: ") and field in err, err
    assert "--storage /mnt/falw/results" in err or "--tracking-uri http://127.0.0.1:5000" in err, err
    with pytest.raises(ValueError, match=re.escape(field)):  # the library refuses too, before any upload
        submit_study(TINY_STUDY, cluster.address, working_dir=REPO, **given)
    assert {j.submission_id for j in job_client(cluster.address).list_jobs()} == before


def test_cluster_locations_take_absolute_paths_and_servers():
    assert cluster_locations(TINY_STUDY, "/mnt/falw/results", "http://127.0.0.1:5000") == (
        "/mnt/falw/results", "/mnt/falw/results/tiny", "http://127.0.0.1:5000", "tiny")
    for uri in ("sqlite:////mnt/falw/mlflow.db", "file:///mnt/falw/mlruns", "/mnt/falw/mlruns",
                "postgresql://mlflow@db/mlflow", "databricks"):
        assert cluster_locations(TINY_STUDY, "~/results", uri).tracking_uri == uri  # ~ is the head's home
    for uri in ("sqlite:///mlflow.db", "file:mlruns", "mlruns"):
        with pytest.raises(ValueError, match="relative path"):
            cluster_locations(TINY_STUDY, "/r", uri)


def test_job_joins_the_cluster_and_leaves_runner_env_to_the_driver():
    # The job's driver joins the running cluster instead of being taken for a local Ray ...
    assert study_entrypoint("studies/x.yaml", "/r", "http://h:5000").split() == [
        "python", "-m", "falw_ray.cli", "run", "studies/x.yaml", "--address", "auto", "--storage", "/r",
        "--tracking-uri", "http://h:5000"]
    # ... and the job sets no env var the driver's ray.init(runtime_env=...) sets: Ray refuses to merge those.
    assert not set(ENV_VARS) & set(launch.QUIET_ENV)


def test_submitted_study_may_ask_for_gpus_the_cluster_has_not_yet(cluster, tmp_path):
    # An autoscaling cluster adds GPU nodes on demand: a job asking for gpu 0.25 on a cluster with none
    # (yet) is not refused; it starts and waits. This cluster cannot grow, so the job is stopped then.
    study = tmp_path / "gpu.yaml"
    study.write_text(TINY_STUDY.read_text().replace("name: tiny", "name: gpu").replace(
        "resources: {cpu: 1}", "resources: {cpu: 1, gpu: 0.25}"))
    assert "gpu: 0.25" in study.read_text()
    client = job_client(cluster.address)
    job = submit_study(study, cluster.address, working_dir=tmp_path, storage=str(tmp_path / "results"),
                       tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    deadline, logs = time.monotonic() + 180, ""
    try:
        while time.monotonic() < deadline:
            logs = client.get_job_logs(job)
            if f"falw-ray: results: {tmp_path / 'results' / 'gpu'}" in logs or client.get_job_status(job).is_terminal():
                break
            time.sleep(1)
        assert client.get_job_status(job) == JobStatus.RUNNING, logs[-3000:]
        assert f"falw-ray: results: {tmp_path / 'results' / 'gpu'}" in logs, logs[-3000:]
        assert "resources.gpu" not in logs
        client.stop_job(job)
        assert wait_for_job(cluster.address, job, timeout_s=60, poll_s=0.5) == JobStatus.STOPPED
    finally:
        client.stop_job(job)  # a no-op for a job that ended


def _connect(cluster, env: dict, address: str | None = None) -> subprocess.CompletedProcess:
    """`connect_ray(address)` (what `falw-ray run --address` does) in a fresh process with this env."""
    code = ("import sys, ray\n"
            "from falw_ray.study.cluster.connect import connect_ray\n"
            "try:\n"
            "    connect_ray(sys.argv[1], include_dashboard=False, log_to_driver=False, logging_level=40)\n"
            "except ConnectionError as e:\n"
            "    sys.exit(f'falw-ray: {e}')\n"
            "print('CPU', ray.cluster_resources().get('CPU'))\n")
    base = {k: v for k, v in os.environ.items() if k not in _CLIENT_ENV}
    return subprocess.run([sys.executable, "-c", code, address or cluster.gcs], env={**base, **env},
                          capture_output=True, text=True, timeout=120)


def test_run_address_connects_with_the_token_in_home(cluster):
    # The token in ~/.ray/auth_token, no RAY_AUTH_* set: as `ray start` found it, so does the client.
    done = _connect(cluster, {"HOME": str(cluster.home)})
    assert done.returncode == 0 and done.stdout.splitlines() == ["CPU 2.0"], done.stderr[-3000:]


@pytest.mark.parametrize("case", ["no token", "wrong token", "nothing there"])
def test_run_address_failure_is_one_line(cluster, tmp_path, case):
    env = {"HOME": str(tmp_path), **({"RAY_AUTH_TOKEN": "not-the-token"} if case == "wrong token" else {})}
    address = f"127.0.0.1:{_free_ports(1)[0]}" if case == "nothing there" else None
    started = time.monotonic()
    done = _connect(cluster, env, address)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr[-3000:]  # no retries' warnings, no traceback
    expected = {"no token": "requires Ray's token (token authentication) and none is set here",
                "wrong token": "refused this machine's Ray token (from RAY_AUTH_TOKEN)",
                "nothing there": "no Ray cluster answers at"}[case]
    assert expected in done.stderr and "not-the-token" not in done.stderr, done.stderr
    assert ("RAY_AUTH_TOKEN=<token>" in done.stderr) == (case != "nothing there")
    assert time.monotonic() - started < 30, "refused at once, not after Ray's own retries"


def test_falw_ray_run_address_without_token_is_one_line(cluster, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in _CLIENT_ENV}
    env["HOME"] = str(tmp_path)
    done = subprocess.run([str(VENV_BIN / "falw-ray"), "run", str(TINY_STUDY), "--address", cluster.gcs,
                           "--storage", str(tmp_path / "results"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
                          env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == "", done.stderr[-3000:]
    assert done.stderr.splitlines() == [
        f"falw-ray: the Ray cluster at {cluster.gcs} requires Ray's token (token authentication) and none is set "
        "here: give this machine the cluster's token: RAY_AUTH_TOKEN=<token>, RAY_AUTH_TOKEN_PATH=<file>, or the "
        "file ~/.ray/auth_token (`ray get-auth-token` on the head prints it)"]
