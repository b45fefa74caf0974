"""Methods from outside falw_ray: a ``module:ATTR`` beside the study file and a method an installed
package declares as an entry point (group falw_ray.methods) run as a study on a real local Ray, with
FaLW on and off, into real MLflow (SQLite), just as a built-in method does; their errors are one line;
a method that never applies FaLW's weights is refused with FaLW on."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient

from falw_ray.study.runner import Study
from falw_ray.study.spec import StudyError, load_study

REPO = Path(__file__).resolve().parent.parent

GA_CLIP = '''
import torch.nn.functional as F
from falw_ray import Method, Param, falw_weighted_mean


def loss(state, batch):
    logits = state.model(batch.x)
    ce = F.cross_entropy(logits, batch.y, reduction="none").clamp(max=state.hp["clip"])
    return -falw_weighted_mean(state, logits, batch, ce)


{attr} = Method(name="{name}", summary="gradient ascent with a clipped per-sample loss", layout="forget", loss=loss,
                params={{"lr": Param(1e-3, 1e-5, 1e-1, log=True), "epochs": Param(2, 1, 20, integer=True, searched=False),
                         "clip": Param(2.0, 0.1, 10.0, log=True, searched=False)}})
'''

PACKAGE = '''
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "falw-ep-demo"
version = "0.1"

[project.entry-points."falw_ray.methods"]
ga_ep = "falw_ep_demo:METHOD"

[tool.setuptools]
packages = ["falw_ep_demo"]
'''


def write_method(folder: Path, module: str, name: str, attr: str = "GA_CLIP", extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{module}.py"
    path.write_text(GA_CLIP.format(attr=attr, name=name) + textwrap.dedent(extra))
    return path


def install_entry_point_package(tmp: Path) -> Path:
    """A tiny package declaring the method ga_ep as an entry point, installed with pip into a folder
    of its own (not the environment): what `pip install` of a plugin leaves on the path."""
    src = tmp / "src"
    write_method(src / "falw_ep_demo", "__init__", "ga_ep", attr="METHOD")
    (src / "pyproject.toml").write_text(PACKAGE)
    target = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-index", "--no-deps",
                    "--target", str(target), str(src)], check=True, capture_output=True, timeout=300)
    return target


def study_text(methods: str, compare: str, name: str = "plugins") -> str:
    head = textwrap.dedent(f"""\
        name: {name}
        scenarios:
          - dataset: digits
            forget: {{kind: longtail, ratio: 0.1, gamma: 1.0}}
            recipe: {{epochs: 4}}
        methods:
        """)
    tail = textwrap.dedent(f"""\
        search: {{trials: 1}}
        early_stopping: {{enabled: false}}
        resources: {{cpu: 1}}
        final: {{seeds: [1]}}
        compare: {compare}
        """)
    return head + textwrap.indent(textwrap.dedent(methods), "  ") + tail


@pytest.fixture
def own_ray():
    """The study starts Ray itself (so it ships its plugin modules with it) and leaves none behind."""
    ray.shutdown()
    yield
    ray.shutdown()


def test_file_and_entry_point_methods_run_like_a_builtin_with_and_without_falw(tmp_path, monkeypatch, own_ray):
    target = install_entry_point_package(tmp_path)
    monkeypatch.syspath_prepend(str(target))  # the driver's path only: no node of the local Ray sees it
    study_dir = tmp_path / "study"
    write_method(study_dir, "plug_clip_a", "ga_clip_a")
    study_file = study_dir / "study.yaml"
    study_file.write_text(study_text(
        """\
        - name: plug_clip_a:GA_CLIP
          space: {lr: {low: 1.0e-3, high: 1.0e-2, log: true}}
        - name: ga_ep
          space: {lr: {low: 1.0e-3, high: 1.0e-2, log: true}}
        - name: ga
          epochs: 2
          space: {lr: {low: 1.0e-3, high: 1.0e-2, log: true}}
        """,
        "[[ga, ga_clip_a], [ga, ga_ep]]"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = Study.from_yaml(study_file).run(tracking_uri=uri, storage=tmp_path / "store", progress=False)

    table = result.table[result.table["method"].isin(["ga_clip_a", "ga_ep", "ga"])]
    assert sorted(zip(table["method"], table["falw"])) == [
        ("ga", "off"), ("ga", "on"), ("ga_clip_a", "off"), ("ga_clip_a", "on"), ("ga_ep", "off"), ("ga_ep", "on")]
    assert table["avg_gap_mean"].notna().all()
    assert (result.final["status"] == "finished").all() and len(result.final) == 6
    plugin_cells = result.best[result.best["method"] != "ga"]
    assert set(plugin_cells["falw"]) == {True, False} and plugin_cells["tau"].notna().sum() == 2, \
        "tau is searched for the plugins' FaLW cells as for a built-in's"
    assert list(zip(result.paired["a"], result.paired["b"])) == [
        ("ga_clip_a", "ga_clip_a+falw"), ("ga_ep", "ga_ep+falw"), ("ga", "ga+falw"), ("ga", "ga_clip_a"), ("ga", "ga_ep")]
    assert result.paired["mean"].notna().all() and (result.paired["n"] == 1).all()

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("plugins")
    runs = client.search_runs([exp.experiment_id], "tags.kind = 'trial'")
    by_method = {}
    for r in runs:
        by_method.setdefault(r.data.tags["method"], set()).add((r.data.tags["falw"], r.data.tags["stage"], r.info.status))
    for method in ("ga_clip_a", "ga_ep", "ga"):
        assert by_method[method] == {(f, s, "FINISHED") for f in ("on", "off") for s in ("search", "final")}, method
    clip_runs = [r for r in runs if r.data.tags["method"] == "ga_clip_a"]
    assert all("lr" in r.data.params and "avg_gap" in r.data.metrics for r in clip_runs)


def test_falw_methods_lists_plugins_beside_builtins_with_their_origin(tmp_path):
    target = install_entry_point_package(tmp_path)
    write_method(tmp_path / "here", "plug_clip_b", "ga_clip_b")
    # Wide enough for the long temporary paths on one line: the listing's width is tested in test_cli_listing.
    env = {"PYTHONPATH": f"{target}:{REPO}", "PATH": str(Path(sys.executable).parent), "COLUMNS": "300"}
    run = lambda *args: subprocess.run([sys.executable, "-m", "falw_ray.cli", "methods", *args], capture_output=True,
                                       text=True, timeout=120, cwd=tmp_path / "here", env=env)
    listed = run()
    assert listed.returncode == 0, listed.stderr
    blocks = {b.split(":")[0]: b for b in listed.stdout.split("\n\n")}
    assert list(blocks)[-2:] == ["ga_ep", "In a study, a method's space"]
    assert blocks["ga"].splitlines()[1] == "  from: built-in"
    assert blocks["ga_ep"].splitlines()[1] == \
        "  from: plugin falw-ep-demo 0.1 (entry point falw_ray.methods: falw_ep_demo:METHOD)"
    assert "clip" in blocks["ga_ep"] and "FaLW: off or on" in blocks["ga_ep"]
    one = run("plug_clip_b:GA_CLIP")
    assert one.returncode == 0, one.stderr
    assert one.stdout.splitlines()[:2] == [
        "ga_clip_b: gradient ascent with a clipped per-sample loss",
        f"  from: plugin {tmp_path / 'here' / 'plug_clip_b.py'} (plug_clip_b:GA_CLIP)"]


@pytest.mark.parametrize("name, extra, expected", [
    ("plug_missing_x:GA", "", "module 'plug_missing_x' not found: put plug_missing_x.py beside the study file"),
    ("plug_bad_c:NOTHING", "", "plug_bad_c:NOTHING: module 'plug_bad_c' ("),
    ("plug_bad_d:NUMBER", "NUMBER = 3\n", "plug_bad_d:NUMBER is a int, not a falw_ray.Method"),
    ("plug_bad_e:CLASH", "CLASH = GA_CLIP.__class__(**{**GA_CLIP.__dict__, 'name': 'ga'})\n",
     "plug_bad_e:CLASH is named 'ga', as a built-in method: give it a name of its own"),
    ("plug_bad_f:BROKEN", "raise RuntimeError('no GPU here')\n",
     "module 'plug_bad_f' failed while being imported: RuntimeError: no GPU here"),
    ("plug_bad_g:NOLR", "NOLR = GA_CLIP.__class__(**{**GA_CLIP.__dict__, 'name': 'nolr', 'params': {}})\n",
     "plug_bad_g:NOLR: method 'nolr' declares no lr or epochs Param"),
    ("no_such_method", "", "unknown method 'no_such_method'; expected one of ["),
])
def test_a_bad_plugin_method_is_one_line_naming_it(tmp_path, name, extra, expected):
    module = name.split(":")[0]
    if module.startswith("plug_bad"):
        write_method(tmp_path, module, module, extra=extra)
    study_file = tmp_path / "study.yaml"
    study_file.write_text(study_text(f"- name: {name}\n", "[]"))
    with pytest.raises(StudyError) as err:
        load_study(study_file)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{study_file}: methods[0].name: "), message
    assert expected in message, message


IGNORES_FALW = '''
def plain(state, batch):
    logits = state.model(batch.x)
    return -F.cross_entropy(logits, batch.y)  # never asks for FaLW's weights


{attr} = Method(name="{name}", summary="gradient ascent, no per-sample loss", layout="forget", loss=plain,
                params=GA_CLIP.params, forget_term={declared})
'''


def test_a_method_declaring_no_forget_term_is_refused_with_falw_on(tmp_path):
    write_method(tmp_path, "plug_plain_h", "ga_clip_h", extra=IGNORES_FALW.format(attr="PLAIN", name="plain_h",
                                                                                  declared=False))
    study_file = tmp_path / "study.yaml"
    study_file.write_text(study_text("- {name: 'plug_plain_h:PLAIN', falw: on}\n", "[]"))
    with pytest.raises(StudyError) as err:
        load_study(study_file)
    assert str(err.value) == (f"{study_file}: methods[0]: falw: method 'plain_h' has no forget term for FaLW to weight; "
                              "expected off (or both, which runs only the off cell)")
    study_file.write_text(study_text("- {name: 'plug_plain_h:PLAIN', falw: both}\n", "[]"))
    assert [c.label for c in Study.from_yaml(study_file).cells] == ["plain_h"]


def test_a_method_that_never_applies_falws_weights_is_stopped_with_falw_on(tmp_path, monkeypatch):
    """Declared as weighing its forget term (the default) but ignoring state.weigh: with FaLW on the
    run stops after its first epoch, in one line; with FaLW off it runs."""
    from falw_ray import Experiment, Recipe, Scenario
    from falw_ray.unlearn import FalwUnused

    write_method(tmp_path, "plug_plain_i", "ga_clip_i", extra=IGNORES_FALW.format(attr="PLAIN", name="plain_i",
                                                                                  declared=True))
    monkeypatch.syspath_prepend(str(tmp_path))
    exp = Experiment(Scenario(dataset="digits", recipe=Recipe(epochs=2)), store=None, progress=False)
    assert exp.run("plug_plain_i:PLAIN", falw=False).gaps["avg_gap"] >= 0
    with pytest.raises(FalwUnused) as err:
        exp.run("plain_i", falw=True)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("method 'plain_i' ran an epoch with FaLW on without applying FaLW's weights")


WITH_OPTION = '''
from falw_ray import Option

SCHEDULED = GA_CLIP.__class__(**{**GA_CLIP.__dict__, "name": "ga_clip_j",
                                 "options": {"order": Option(("forget", "shuffled"), {"npz": "shuffled", "*": "forget"},
                                                             help="batch order")}})
'''


def test_a_plugin_methods_options_and_space_are_checked_as_a_builtins(tmp_path):
    write_method(tmp_path, "plug_opt_j", "ga_clip_j0", extra=WITH_OPTION)
    study_file = tmp_path / "study.yaml"
    entry = "- {name: 'plug_opt_j:SCHEDULED', options: {order: shuffled}, space: {clip: {low: 1, high: 4}, lr: 0.01}}\n"
    study_file.write_text(study_text(entry, "[[ga_clip_j, ga_clip_j+falw]]"))
    cells = Study.from_yaml(study_file).cells
    assert [(c.label, c.options, sorted(c.space), c.fixed) for c in cells] == [
        ("ga_clip_j", {"order": "shuffled"}, ["clip"], {"lr": 0.01}),
        ("ga_clip_j+falw", {"order": "shuffled"}, ["clip", "tau"], {"lr": 0.01})]
    for bad, expected in (("options: {order: backwards}", "options.order: expected one of ['forget', 'shuffled'], "
                                                          "got 'backwards'"),
                          ("space: {momentun: 0.5}", "space: 'ga_clip_j' has no hyperparameter 'momentun'")):
        study_file.write_text(study_text(f"- {{name: 'plug_opt_j:SCHEDULED', {bad}}}\n", "[]"))
        with pytest.raises(StudyError) as err:
            load_study(study_file)
        assert "\n" not in str(err.value) and expected in str(err.value), str(err.value)
