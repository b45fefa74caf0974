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


def pasted(command: str) -> list[str]:
    """The words bash reads from ``command`` pasted into it: backslash continuations joined by bash itself."""
    proc = subprocess.run(["bash", "-c", f"printf '%s\\n' {command}"], capture_output=True, text=True, check=True)
    return proc.stdout.splitlines()


@pytest.mark.parametrize("columns", [30, 60, 80, 120])
def test_a_shell_command_fits_and_still_runs_when_pasted(columns):
    """Lines fit where the parts allow; a part is never cut, so at 30 columns each stands alone."""
    from falw_ray.console import shell

    parts = ["RAY_AUTH_MODE=token ray job logs --follow", "--address http://10.20.30.40:8265",
             "raysubmit_a8Hq3kTz9", "--headers '{\"a\": 1}'"]
    said = shell("follow: ", parts, columns)
    assert said.startswith("follow: RAY_AUTH_MODE=token ray job logs --follow")
    if columns >= len("follow: ") + len(parts[0]) + len(" \\"):
        assert all(len(line) <= columns for line in said.splitlines()), said
    else:
        assert [line.strip().removesuffix(" \\") for line in said.splitlines()] == \
            ["follow: " + parts[0], *parts[1:]], said
    assert (len(said.splitlines()) == 1) == (len("follow: " + " ".join(parts)) <= columns), said
    assert pasted(said.removeprefix("follow: ")) == pasted(" ".join(parts))


def test_a_submitted_jobs_lines_fit_the_terminal():
    from falw_ray.study.cluster.submit import Locations, follow_hint

    where = Locations("/mnt/falw/results", "/mnt/falw/results/quickstart", "http://10.20.30.40:5000", "quickstart")
    for columns in (60, 100):
        lines = [*where.lines(columns), *follow_hint("http://10.20.30.40:8265", "raysubmit_a8Hq3kTz9", columns)
                 .splitlines()]
        assert all(len(line) <= columns for line in lines), lines
        said = " ".join(" ".join(lines).split())
        assert "results: /mnt/falw/results/quickstart on the cluster (storage /mnt/falw/results, baselines " \
               "/mnt/falw/results/baselines)" in said
        assert "MLflow: http://10.20.30.40:5000 (experiment quickstart)" in said
    hint = follow_hint("http://10.20.30.40:8265", "raysubmit_a8Hq3kTz9", 60)
    commands = [c.split(": ", 1)[1] for c in hint.replace("\\\n", "").splitlines()]
    assert [pasted(c)[-5:] for c in commands] == [
        ["logs", "--follow", "--address", "http://10.20.30.40:8265", "raysubmit_a8Hq3kTz9"],
        ["job", "status", "--address", "http://10.20.30.40:8265", "raysubmit_a8Hq3kTz9"],
        ["job", "stop", "--address", "http://10.20.30.40:8265", "raysubmit_a8Hq3kTz9"]]


def test_compare_fits_a_narrow_terminal_in_blocks(short_dir):
    """At 50 columns compare's table splits into blocks that each start with the method and FaLW
    columns; every metric is in one of them and every row in each."""
    proc = cli(50, "compare", "--dataset", "digits", "--methods", "ga", "--epochs", "1", "--no-store",
               "--threads", "1", "--device", "cpu", cwd=short_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not too_wide(proc, 50), too_wide(proc, 50)
    blocks = [b.splitlines() for b in proc.stdout.strip().split("\n\n")]
    assert len(blocks) >= 2, proc.stdout
    assert all([line.split()[:2] for line in b] == [["method", "falw"], ["retrain", "-"], ["original", "-"],
                                                      ["ga", "off"], ["ga", "on"]] for b in blocks), proc.stdout
    headers = " ".join(b[0].split(None, 2)[2] for b in blocks)
    assert headers.split() == "FA RA TA MIA Avg. Gap Time (s) RTE".split(), headers
    retrain = [v for b in blocks for v in b[1].split()[2:]]
    assert retrain[:5] == [retrain[0], "100.00", retrain[2], retrain[3], "0.00"] and retrain[-1] == "1.00", retrain
