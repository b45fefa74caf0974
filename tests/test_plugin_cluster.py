"""Plugins on every node of a real two-node Ray cluster (`ray start --head` and a worker, 1 CPU each,
on free ports) whose nodes do not see the plugin: both run in a mount namespace where the study's
folder is an empty tmpfs, so only the driver has the plugin file. The study ships it; a module it
does not ship (a helper the plugin imports) fails its trials once each, in one line naming the module
and the node, and the driver ends non-zero with the tables of what finished."""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import ray

from falw_ray.study.record.journal import Journal
from test_cluster_faults import RAY, stop_processes
from test_plugin_methods import write_method

REPO = Path(__file__).resolve().parent.parent


def free_ports(n: int) -> list[int]:
    """n ports the kernel says are free now (held together while chosen, so they differ)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _hidden(folder: Path, command: str) -> list[str]:
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            f'mount -t tmpfs tmpfs "{folder}" && exec {command}']


@pytest.fixture(scope="module")
def hidden_cluster(tmp_path_factory):
    """(GCS address, the folder only the driver sees, each node's id)."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("needs mount namespaces (unshare -m, as root) to hide the plugin from the nodes")
    from ray._raylet import Config

    tmp = tmp_path_factory.mktemp("cluster")
    plugin_dir = tmp / "plugins"
    plugin_dir.mkdir()
    temp_dir = tempfile.mkdtemp(prefix="frp", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # nodes and driver alike (see test_cluster_faults.cluster)
    Config.initialize("")
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # falw_ray, and nothing of the plugin's
    gcs, client, *rest = free_ports(16)
    common = "--node-ip-address=127.0.0.1 --num-cpus=1 --block --disable-usage-stats"
    node_ports = lambda p: (f"--node-manager-port={p[0]} --object-manager-port={p[1]} "
                            f"--dashboard-agent-listen-port={p[2]} --dashboard-agent-grpc-port={p[3]} "
                            f"--runtime-env-agent-port={p[4]} --metrics-export-port={p[5]}")
    procs = [subprocess.Popen(_hidden(plugin_dir, f'"{RAY}" start --head --port={gcs} --ray-client-server-port={client} '
                                                  f"--include-dashboard=false --temp-dir={temp_dir} "
                                                  f"{node_ports(rest[:6])} {common}"),
                              env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    address = f"127.0.0.1:{gcs}"
    try:
        deadline = time.time() + 120
        while socket.socket().connect_ex(("127.0.0.1", gcs)) != 0:
            assert time.time() < deadline and procs[0].poll() is None, "the head node did not start"
            time.sleep(0.5)
        procs.append(subprocess.Popen(_hidden(plugin_dir, f'"{RAY}" start --address={address} {node_ports(rest[6:12])} '
                                                          f"{common}"),
                                      env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        ray.shutdown()
        ray.init(address=address, log_to_driver=False)
        while sum(n["Alive"] for n in ray.nodes()) < 2:
            assert time.time() < deadline, "the worker node did not join"
            time.sleep(0.5)
        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        (plugin_dir / "probe.txt").write_text("only the driver sees this")
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        seen = ray.get([ray.remote(lambda p: os.path.exists(p)).options(
            num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(
            str(plugin_dir / "probe.txt")) for n in nodes])
        assert seen == [False, False], "the nodes see the plugin folder: the test would prove nothing"
        ray.shutdown()  # the study starts its own connection, with the plugin modules in its runtime_env
        yield address, plugin_dir, nodes
    finally:
        ray.shutdown()
        stop_processes(procs)
        shutil.rmtree(temp_dir, ignore_errors=True)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved
        Config.initialize("")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """One storage for the module's studies: their digits baselines are trained once."""
    return tmp_path_factory.mktemp("storage")


STUDY = """\
name: {name}
scenarios:
  - {{dataset: digits, recipe: {{epochs: 3}}}}
methods:
{methods}
search: {{trials: 2}}
early_stopping: {{enabled: false}}
resources: {{cpu: 1}}
final: {{seeds: [1]}}
"""


def journal(storage: Path, name: str) -> list[dict]:
    """The study's recorded trials (its header line left out)."""
    return list(Journal(storage / "ray" / f"{name}.finished.jsonl").load().values())


def run_cli(study_file: Path, address: str, storage: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """The study as a user runs it against the cluster: its own driver process (an in-process driver
    would inherit the Ray state earlier tests of the suite left in this one)."""
    return subprocess.run([sys.executable, "-m", "falw_ray.cli", "run", str(study_file), "--address", address,
                           "--storage", str(storage), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--quiet"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_a_plugin_only_the_driver_has_runs_on_both_nodes(hidden_cluster, store, tmp_path):
    address, plugin_dir, nodes = hidden_cluster
    write_method(plugin_dir, "plug_node_a", "ga_clip_node")
    study_file = plugin_dir / "nodes.yaml"
    study_file.write_text(STUDY.format(name="nodes", methods="  - {name: 'plug_node_a:GA_CLIP', falw: both}"))
    proc = run_cli(study_file, address, store, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = pd.read_csv(store / "nodes" / "trials.csv")
    final = pd.read_csv(store / "nodes" / "final.csv")
    assert len(trials) == 4 and (trials["status"] == "finished").all(), trials[["cell", "status"]]
    assert len(final) == 2 and (final["status"] == "finished").all()
    assert "ga_clip_node" in set(pd.read_csv(store / "nodes" / "table.csv")["method"])
    ran_on = {r["result"]["node"] for r in journal(store, "nodes")}
    assert ran_on == set(nodes), "every trial ran, on both nodes"


HELPER = "CLIP = 2.0\n"
USES_HELPER = '''
from plug_node_b_helper import CLIP  # beside it on the driver, never shipped: the study ships the modules it names
'''


def test_a_node_that_cannot_import_the_plugin_fails_its_trials_once_in_one_line(hidden_cluster, store, tmp_path):
    address, plugin_dir, nodes = hidden_cluster
    write_method(plugin_dir, "plug_node_b", "ga_clip_b", extra=USES_HELPER)
    (plugin_dir / "plug_node_b_helper.py").write_text(HELPER)
    study_file = plugin_dir / "broken.yaml"
    study_file.write_text(STUDY.format(name="broken", methods=textwrap.indent(
        "- {name: 'plug_node_b:GA_CLIP', falw: off}\n- {name: ft, epochs: 2}", "  ")))
    storage = store
    proc = run_cli(study_file, address, storage, tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-3000:]
    failed = [line for line in proc.stderr.splitlines() if "trial(s) failed" in line]
    assert 1 <= len(failed) <= 2, proc.stderr  # one line per node the failing trials ran on
    counts = []
    for line in failed:
        m = re.match(r"falw-ray: (\d) trial\(s\) failed: node [0-9.]+ \(([0-9a-f]{12})\): ", line)
        assert m and any(n.startswith(m.group(2)) for n in nodes), line
        assert line.endswith("): module 'plug_node_b' cannot be imported: No module named 'plug_node_b_helper'")
        counts.append(int(m.group(1)))
    assert sum(counts) == 2, failed
    assert len(proc.stderr.splitlines()) < 20, proc.stderr  # no retry storm, no tracebacks

    records = journal(storage, "broken")
    broken = [r for r in records if r["config"].get("cell", "").endswith("/ga_clip_b")]
    assert [r["status"] for r in broken] == ["error", "error"] and all(r["result"]["failed"] for r in broken)
    assert len({r["trial_id"] for r in records}) == len(records) == 5  # 2 + 2 searched, 1 final: none retried
    final = pd.read_csv(storage / "broken" / "final.csv")
    assert list(final["method"]) == ["ft"] and (final["status"] == "finished").all()
    assert "digits-cnn-lt0.1-g1" in proc.stdout.splitlines() and re.search(r"^  ft +off ", proc.stdout, re.M), \
        proc.stdout  # the scenario heads its rows


def test_a_study_whose_every_trial_failed_still_writes_its_tables(hidden_cluster, store, tmp_path):
    """No trial reported a result: the driver does not crash on the missing metrics (it did, with
    KeyError: 'elapsed'), and the tables hold Retrain's and the original model's rows."""
    address, plugin_dir, nodes = hidden_cluster
    write_method(plugin_dir, "plug_node_c", "ga_clip_c", extra=USES_HELPER.replace("plug_node_b", "plug_node_c"))
    (plugin_dir / "plug_node_c_helper.py").write_text(HELPER)
    study_file = plugin_dir / "allfail.yaml"
    study_file.write_text(STUDY.format(name="allfail", methods="  - {name: 'plug_node_c:GA_CLIP', falw: both}"))
    proc = run_cli(study_file, address, store, tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    failed = [line for line in proc.stderr.splitlines() if "trial(s) failed" in line]  # one line per node
    assert sum(int(re.search(r"(\d+) trial\(s\) failed", line).group(1)) for line in failed) == 4, failed
    assert all(line.endswith("module 'plug_node_c' cannot be imported: No module named 'plug_node_c_helper'")
               for line in failed), failed
    results = store / "allfail"
    assert set(pd.read_csv(results / "table.csv")["method"]) == {"retrain", "original"}
    assert (results / "final.csv").read_text().strip().splitlines()[1:] == [], "no final run"
    assert (results / "trials.csv").exists() and (results / "table.md").exists()
