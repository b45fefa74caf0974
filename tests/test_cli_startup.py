"""The light commands of the real CLI: `--help`, `--version`, `validate`, `methods` and `baselines list`
answer without importing torch, Ray, MLflow, Optuna or pandas (checked through ``sys.modules`` in a
fresh interpreter; how long they take is measured in benchmarks/cli_startup.py, not asserted here),
and what `--version`, a mistyped method name and a study's missing data_dir print."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

import pytest

import falw_ray

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "ray", "mlflow", "optuna", "pandas")

PROBE = """\
import json, sys
from falw_ray.cli import main
try:
    code = main(sys.argv[2:])
except SystemExit as e:
    code = e.code
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "loaded": [m for m in %r if m in sys.modules]}, f)
""" % (HEAVY,)


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "falw_ray.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def loaded_by(tmp_path: Path, *args: str) -> list[str]:
    """The heavy libraries in ``sys.modules`` once ``falw-ray ARGS`` has run (exit status 0) in its own interpreter."""
    out = tmp_path / "probe.json"
    proc = subprocess.run([sys.executable, "-c", PROBE, str(out), *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["code"] in (0, None), (result, proc.stderr)
    return result["loaded"]


def write(tmp_path: Path, text: str, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("args", [
    ["--help"], ["--version"], ["compare", "--help"], ["validate", "studies/quickstart.yaml", "studies/digits.yaml"],
    ["methods"], ["methods", "falw", "ga"], ["baselines", "list"],
], ids=" ".join)
def test_light_commands_import_no_heavy_library(tmp_path, args):
    if args[:2] == ["baselines", "list"]:
        (tmp_path / "store").mkdir()
        args = [*args, "--store", str(tmp_path / "store")]
    assert loaded_by(tmp_path, *args) == []


def test_the_probe_sees_a_heavy_import(tmp_path):
    """The check above can fail: building a model does import torch."""
    code = "from falw_ray.models import build_model; build_model('cnn', 10, (1, 8, 8))"
    proc = subprocess.run([sys.executable, "-c", f"import sys; {code}; print('torch' in sys.modules)"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.stdout.strip() == "True", proc.stderr


def test_version_names_falw_ray_and_the_libraries_without_importing_them():
    proc = cli("--version")
    assert proc.returncode == 0, proc.stderr
    first, libraries = proc.stdout.strip().splitlines()
    assert first.startswith(f"falw-ray {falw_ray.__version__} (")
    assert str(Path(falw_ray.__file__).parent) in first
    for name in ("torch", "ray", "mlflow", "optuna"):
        assert f"{name} {version(name)}" in libraries


# --- did you mean ----------------------------------------------------------------------------------

STUDY = """\
name: t
scenarios:
  - dataset: digits
methods:
  - name: {name}
"""


def test_a_mistyped_method_in_a_study_is_one_line_naming_the_nearest(tmp_path):
    path = write(tmp_path, STUDY.format(name="salum"))
    proc = cli("validate", str(path))
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert str(path) in line and "methods[0].name" in line
    assert "unknown method 'salum' (did you mean 'salun'?)" in line
    assert "'scrub'" in line  # every name is still listed


def test_a_name_close_to_nothing_gets_no_suggestion(tmp_path):
    proc = cli("validate", str(write(tmp_path, STUDY.format(name="xyzzy"))))
    assert proc.returncode == 2 and "did you mean" not in proc.stderr and "unknown method 'xyzzy'" in proc.stderr


def test_a_mistyped_hyperparameter_in_a_space_names_the_nearest(tmp_path):
    path = write(tmp_path, STUDY.format(name="ga\n    space: {lrr: 0.01}"))
    proc = cli("validate", str(path))
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "no hyperparameter 'lrr' (did you mean 'lr'?)" in line


@pytest.mark.parametrize(("args", "expected"), [
    (["--methods", "gaa"], "unknown method 'gaa' (did you mean 'ga'?)"),
    (["--methods", "ga", "rl", "--set", "gaa.lr=0.01"], "--set gaa.lr: no method 'gaa' in this comparison (did you "
                                                         "mean 'ga'?); expected one of ['ga', 'ga+falw', 'rl', 'rl+falw']"),
    (["--methods", "ga", "--set", "ga.lrr=0.01"], "--set ga.lrr: method 'ga' has no hyperparameter 'lrr' (did you "
                                                   "mean 'lr'?)"),
    (["--methods", "ga", "--set", "ga.tau=0.1"], "tau is FaLW's; set it on the FaLW run, ga+falw.tau"),
    (["--methods", "ga", "--set", "rl.lr=0.01"], "--set rl.lr: no method 'rl' in this comparison"),
], ids=["methods", "set-method", "set-param", "set-tau", "set-not-compared"])
def test_compare_refuses_a_mistyped_name_before_anything_runs(tmp_path, args, expected):
    proc = cli("compare", "--no-store", *args, cwd=tmp_path)
    assert proc.returncode != 0
    (line,) = proc.stderr.strip().splitlines()
    assert expected in line, line
    assert proc.stdout == ""


# --- validate and the data on this machine -------------------------------------------------------

def test_validate_refuses_a_data_dir_that_is_not_there(tmp_path):
    missing = tmp_path / "cifar"
    path = write(tmp_path, f"""\
        name: t
        scenarios:
          - dataset: cifar10
            data_dir: {missing}
        methods:
          - name: ga
        """)
    proc = cli("validate", str(path))
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"{path}: scenarios[0].data_dir: ") and str(missing) in line and "download: true" in line
    assert "--skip-data-check" in line

    skipped = cli("validate", "--skip-data-check", str(path))  # data that lives on a cluster
    assert skipped.returncode == 0 and "valid study 't'" in skipped.stdout, skipped.stderr
    missing.mkdir()
    assert cli("validate", str(path)).returncode == 0
    downloading = write(tmp_path, path.read_text().replace(f"data_dir: {missing}",
                                                           f"data_dir: {tmp_path / 'later'}\n    download: true"),
                        "dl.yaml")
    proc = cli("validate", str(downloading))
    assert proc.returncode == 0, proc.stderr
