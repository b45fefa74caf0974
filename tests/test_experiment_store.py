"""The Python API and `falw-ray compare` take their baselines from the store studies use: trained once."""
from __future__ import annotations

import subprocess
import sys

import falw_ray.baselines as baselines_module
from falw_ray.experiment import Experiment
from falw_ray.scenario import Scenario


def test_experiment_trains_its_baselines_once_and_reuses_them_from_the_store(tmp_path, monkeypatch, capsys):
    trained = []
    real = baselines_module.train_role

    def counting(role, scenario, *args, **kwargs):
        trained.append(role)
        return real(role, scenario, *args, **kwargs)

    monkeypatch.setattr(baselines_module, "train_role", counting)
    first = Experiment(Scenario(dataset="digits"), device="cpu", store=tmp_path / "store")
    run1 = first.run("ga", hp={"lr": 1e-3}, epochs=1)
    assert trained == ["original", "retrained"] and first.cache == {"original": "trained", "retrained": "trained"}
    said = capsys.readouterr().err
    assert "training the original model: epoch 30/30" in said and "original trained, retrained trained" in said
    second = Experiment(Scenario(dataset="digits"), device="cpu", store=tmp_path / "store")
    run2 = second.run("ga", hp={"lr": 1e-3}, epochs=1)
    assert trained == ["original", "retrained"], "nothing trained the second time"
    assert second.cache == {"original": "hit", "retrained": "hit"}
    assert run2.metrics == run1.metrics and second.baselines.retrained_metrics == first.baselines.retrained_metrics


def test_compare_reuses_the_store_and_runs_the_paper_configuration(tmp_path):
    method = "falw"
    cmd = [sys.executable, "-m", "falw_ray.cli", "compare", "--dataset", "digits", "--methods", method, "--epochs", "1",
           "--store", str(tmp_path / "store"), "--threads", "1", "--device", "cpu"]
    runs = [subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr[-2000:]
    said = [" ".join(r.stderr.split()) for r in runs]  # progress lines wrap at the terminal's width
    assert "original trained, retrained trained" in said[0]
    assert "original hit, retrained hit" in said[1] and "training the" not in said[1]
    rows = [line.split()[:2] for line in runs[1].stdout.splitlines()[1:]]
    assert rows == [["retrain", "-"], ["original", "-"], ["falw", "on"]]
    values = [[line.split()[:7] for line in r.stdout.splitlines()[1:]] for r in runs]
    assert values[0] == values[1], "the same metrics and gaps from stored baselines (only the times differ)"
