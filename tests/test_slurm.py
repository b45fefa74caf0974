"""`falw-ray slurm` on a real one-node Slurm (tests/slurm_cluster.py): a study run as a job, across
time limits in a chain of jobs, stopped by scancel; and what is refused before the queue."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from falw_ray.cli import main as cli
from falw_ray.study.cluster import slurm as slurm_module
from slurm_cluster import SlurmCluster, missing

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    why = missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"Slurm cannot start under CI: {why}")
        pytest.skip(why)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        cluster.stop()
        os.environ.pop("SLURM_CONF", None)


@pytest.fixture()
def shared():
    """Storage on a path the node-local check accepts (pytest's tmp_path is under /tmp): beside the
    tests, or under the home folder when the checkout itself lies under /tmp."""
    for base in (HERE / ".slurm-runs", Path.home() / ".cache" / "falw-ray-tests"):
        if not any(base.resolve().is_relative_to(p) for p in slurm_module.NODE_LOCAL):
            break
    else:
        pytest.fail("no folder outside /tmp to keep the Slurm tests' storage in")
    d = base / uuid.uuid4().hex[:8]
    d.mkdir(parents=True)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def study_file(folder: Path, name: str, trials: int = 2, **overrides) -> Path:
    spec = {"name": name, "scenarios": [{"dataset": "digits"}],
            "methods": [{"name": "ga", "falw": "off", "epochs": 2, "space": {"lr": {"low": 1e-4, "high": 3e-2,
                                                                                   "log": True}}}],
            "search": {"trials": trials, "sampler_seed": 0}, "early_stopping": {"enabled": False},
            "final": {"seeds": [1]}, "resources": {"cpu": 1, "gpu": 0},
            "storage": str(folder / "store"), "tracking": {"uri": f"sqlite:///{folder / 'store' / 'mlflow.db'}"}}
    spec.update(overrides)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def submit(slurm, study: Path, *args: str) -> str:
    out = slurm.run(sys.executable, "-m", "falw_ray.cli", "slurm", str(study), "--cpus-per-node", "2", *args,
                    timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split("submitted job ")[1].split()[0]


def logs(folder: Path) -> str:
    """The jobs file and the end of every job log: what an assertion shows when a chain goes wrong."""
    d = folder / "store" / "slurm"
    parts = [p.read_text() for p in sorted(d.glob("*.jobs"))]
    parts += [f"--- {p.name}\n" + "\n".join(p.read_text().splitlines()[-25:]) for p in sorted(d.glob("*.out"))]
    return "\n".join(parts)


def journal_trials(folder: Path, name: str) -> list[dict]:
    path = folder / "store" / "ray" / f"{name}.finished.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in lines if "trial_id" in e]


def wait_for_trials(folder: Path, name: str, count: int, timeout_s: float = 300) -> None:
    journal = folder / "store" / "ray" / f"{name}.finished.jsonl"
    deadline = time.monotonic() + timeout_s
    while not (journal.exists() and len(journal_trials(folder, name)) >= count):
        assert time.monotonic() < deadline, f"fewer than {count} trial(s) recorded in {timeout_s:g}s: {logs(folder)}"
        time.sleep(2)


def wait_for_chain(jobs_file: Path, folder: Path, timeout_s: float = 600) -> list[dict]:
    """The study's chain of jobs once its last job has ended without queueing another."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        chain = slurm_module.job_chain(jobs_file)
        if chain and "ended" in chain[-1]["events"] and "followup" not in chain[-1]["events"]:
            return chain
        time.sleep(3)
    pytest.fail(f"the chain of jobs did not end in {timeout_s:g}s: {logs(folder)}")


def test_a_study_goes_on_past_its_time_limit_in_a_follow_up_job(slurm, shared):
    """The job asks for SIGUSR1 on its batch shell before the limit (--signal=B:USR1@N); here Slurm's
    own scancel delivers that signal the same way once the first trial is recorded, so the test does
    not hang on how fast this machine is. The study stops, a follow-up job (falw-ray resume) finishes
    it: every trial recorded once, the table complete, the last job COMPLETED, nothing more queued."""
    study = study_file(shared, "chained", trials=4)
    first = submit(slurm, study, "--time", "10")
    assert "--signal=B:USR1@300" in (shared / "store" / "slurm" / "chained.sbatch").read_text()
    wait_for_trials(shared, "chained", 1)
    assert slurm.run("scancel", "--batch", "--signal=USR1", first).returncode == 0
    jobs_file = shared / "store" / "slurm" / "chained.jobs"
    chain = wait_for_chain(jobs_file, shared)
    assert [e["job"] for e in chain][0] == first and len(chain) == 2, logs(shared)
    assert [e["mode"] for e in chain] == ["run", "resume"]
    assert "warned" in chain[0]["events"] and chain[0]["rc"] == 0, logs(shared)
    assert chain[1]["rc"] == 0 and "warned" not in chain[1]["events"], logs(shared)
    assert slurm.wait_ended(first, 60) == "COMPLETED" and slurm.wait_ended(chain[1]["job"], 60) == "COMPLETED"
    trials = journal_trials(shared, "chained")
    assert len({t["trial_id"] for t in trials}) == len(trials), "no trial recorded twice"
    assert sorted(t["stage"] for t in trials) == ["final"] + ["search"] * 4
    table = (shared / "store" / "chained" / "table.csv").read_text()
    assert "ga" in table and "retrain" in table
    client = MlflowClient(f"sqlite:///{shared / 'store' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("chained").experiment_id])
    trial_runs = [r for r in runs if r.data.tags.get("kind") == "trial"]
    assert sorted(r.data.tags["trial_id"] for r in trial_runs) == sorted(t["trial_id"] for t in trials)
    assert {r.info.status for r in runs} == {"FINISHED"}, "every MLflow run closed, none left RUNNING"
    assert slurm.run("squeue", "-h").stdout.strip() == ""
    status = subprocess.run([sys.executable, "-m", "falw_ray.cli", "slurm", "--status", str(study)],
                            capture_output=True, text=True, env=slurm.env, timeout=60)
    assert f"job {first}: run, COMPLETED, stopped at its time limit, exit 0" in status.stdout, status.stdout
    assert f"job {chain[1]['job']}: resume, COMPLETED, exit 0" in status.stdout, status.stdout
    assert "journal: 5 trial(s) recorded" in status.stdout, status.stdout


def test_a_job_warned_before_any_progress_queues_no_follow_up(slurm, shared):
    """A time limit too short for anything (the warning comes as soon as the study starts, before a
    baseline is stored or a trial recorded): the job says to give a longer --time instead of queueing
    follow-ups that would each do the same, forever."""
    study = study_file(shared, "too_short")
    first = submit(slurm, study, "--time", "10")
    jobs_file = shared / "store" / "slurm" / "too_short.jobs"
    deadline = time.monotonic() + 180
    while not any("study" in e["events"] for e in slurm_module.job_chain(jobs_file)):
        assert time.monotonic() < deadline, logs(shared)
        time.sleep(0.5)
    assert slurm.run("scancel", "--batch", "--signal=USR1", first).returncode == 0
    chain = wait_for_chain(jobs_file, shared, timeout_s=180)
    assert [e["job"] for e in chain] == [first] and chain[0]["rc"] == 1, logs(shared)
    assert "give a longer --time" in logs(shared)


def test_scancel_stops_the_study_and_resume_completes_it(slurm, shared):
    study = study_file(shared, "cancelled", trials=4)
    job = submit(slurm, study, "--time", "10")
    wait_for_trials(shared, "cancelled", 1)
    assert slurm.run("scancel", job).returncode == 0
    assert slurm.wait_ended(job, 120) == "CANCELLED"
    time.sleep(5)
    chain = slurm_module.job_chain(shared / "store" / "slurm" / "cancelled.jobs")
    assert [e["job"] for e in chain] == [job] and "followup" not in chain[0]["events"], "a stop, not a resubmit"
    assert slurm.run("squeue", "-h").stdout.strip() == ""
    done = subprocess.run([sys.executable, "-m", "falw_ray.cli", "resume", str(study), "--quiet"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    trials = journal_trials(shared, "cancelled")
    assert sorted(t["stage"] for t in trials) == ["final"] + ["search"] * 4
    assert len({t["trial_id"] for t in trials}) == len(trials)


def test_two_node_script_starts_one_head_and_points_the_worker_at_it(slurm, shared, capsys):
    study = study_file(shared, "plan")
    assert cli(["slurm", str(study), "--dry-run", "--nodes", "2", "--gpus-per-node", "4", "--time", "48:00:00",
                "--partition", "gpu", "--account", "lab", "--qos", "long", "--mem", "64G",
                "--sbatch-arg=--constraint=a100", "--setup", "module load cuda"]) == 0
    script = capsys.readouterr().out
    for line in ("#SBATCH --nodes=2", "#SBATCH --gpus-per-node=4", "#SBATCH --time=48:00:00",
                 "#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --qos=long", "#SBATCH --mem=64G",
                 "#SBATCH --constraint=a100", "#SBATCH --signal=B:USR1@300", "module load cuda"):
        assert line in script.splitlines(), line
    assert not (shared / "store" / "slurm").exists(), "a dry run writes nothing"
    path = shared / "plan.sbatch"
    path.write_text(script)
    env = {**slurm.env, "FALW_RAY_SLURM_PLAN": "1", "SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "gpu[07-08]",
           "SLURM_JOB_NUM_NODES": "2"}
    plan = subprocess.run(["bash", str(path), "run"], env=env, capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0, plan.stderr
    lines = [l.split() for l in plan.stdout.splitlines() if l.startswith(("head ", "worker "))]
    assert [l[:2] for l in lines] == [["head", "gpu07"], ["worker", "gpu08"]], plan.stdout
    assert lines[0][2] == lines[1][2], "the worker joins the head's address"


def test_what_is_refused_before_the_queue(slurm, shared, capsys, monkeypatch):
    def refused(*args) -> str:
        assert cli(["slurm", *map(str, args)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        return err

    study = study_file(shared, "refused")
    assert "--storage 'results' is a relative path" in refused(study, "--storage", "results")
    assert "node-local" in refused(study, "--storage", "/tmp/falw")
    gpu = study_file(shared, "gpu", resources={"cpu": 1, "gpu": 0.25})
    assert "resources.gpu is 0.25 per trial but --gpus-per-node is 0" in refused(gpu)
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    assert "sbatch not found on PATH" in refused(study)
    assert not (shared / "store").exists(), "nothing written"
    assert slurm.run("squeue", "-h").stdout.strip() == "", "nothing submitted"
