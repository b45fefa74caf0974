"""Every console line of a small study (`falw-ray run`, its live progress and status blocks, its
tables) and of `falw-ray report` within the terminal's width: COLUMNS 80 and 100, in a real CLI
process on a real local Ray and a SQLite MLflow store."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDY = """\
name: {name}
scenarios:
  - dataset: digits
    forget: {{kind: longtail, ratio: 0.1, gamma: 1.0}}
methods:
  - name: ga
    falw: both
    epochs: 2
    space: {{lr: {{low: 1.0e-3, high: 1.0e-2, log: true}}}}
  - name: neggrad_plus
    falw: on
    epochs: 2
    space: {{lr: {{low: 1.0e-3, high: 1.0e-2, log: true}}}}
search: {{trials: 2}}
early_stopping: {{enabled: false}}
resources: {{cpu: 1}}
selection: {{seeds: []}}
final: {{seeds: [1, 2]}}
"""


@pytest.fixture
def short_dir():
    """Storage under a short path: a path is printed whole (it is there to be copied), so a test of
    widths keeps its paths shorter than a line, as a user's usually are."""
    path = Path(tempfile.mkdtemp(prefix="fw", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def cli(columns: int, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": str(columns), "FALW_RAY_PROGRESS": "live", "FALW_RAY_PROGRESS_EVERY": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "falw_ray.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=900)


def too_wide(proc: subprocess.CompletedProcess, columns: int) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if len(line) > columns]


def test_a_study_and_its_report_fit_80_and_100_columns(short_dir):
    """The second study reuses the first one's baselines (same store): two runs, one training."""
    uri = f"sqlite:///{short_dir / 'm.db'}"
    for columns in (80, 100):
        name = f"w{columns}"
        study = short_dir / f"{name}.yaml"
        study.write_text(STUDY.format(name=name))
        run = cli(columns, "run", str(study), "--storage", str(short_dir / "s"), "--tracking-uri", uri, cwd=short_dir)
        assert run.returncode == 0, run.stderr[-3000:]
        assert not too_wide(run, columns), too_wide(run, columns)
        said = run.stderr.splitlines()
        trial_lines = [line for line in said if line.startswith(("falw-ray: search ", "falw-ray: final "))]
        assert len(trial_lines) == 6 + 6, said
        assert any(line.startswith("falw-ray: status: ") for line in said), "a status block was shown and fits"
        for label in ("ga", "ga+falw", "neggrad_plus+falw"):
            assert any(line.split()[3].endswith(label) for line in trial_lines), (label, trial_lines)
        out = run.stdout.splitlines()
        assert out[0] == "digits-cnn-lt0.1-g1", "the scenario heads its rows"
        rows = [line.split()[:2] for line in out if line.startswith("  ")]
        for row in (["retrain", "-"], ["original", "-"], ["ga", "off"], ["ga", "on"], ["neggrad_plus", "on"]):
            assert rows.count(row) == 2, (row, out)  # one row in each block
        assert any(line.split()[:3] == ["ga+falw", "-", "ga"] for line in out), out
        table = (short_dir / "s" / name / "table.csv").read_text().splitlines()
        assert table[0].startswith("scenario,method,falw,fa_mean") and "rte_mean" in table[0], "files keep every column"

        report = cli(columns, "report", name, "--tracking-uri", uri, "--out", str(short_dir / f"r{columns}"),
                     cwd=short_dir)
        assert report.returncode == 0, report.stderr[-3000:]
        assert not too_wide(report, columns), too_wide(report, columns)
        assert report.stdout.splitlines()[0] == "digits-cnn-lt0.1-g1"
