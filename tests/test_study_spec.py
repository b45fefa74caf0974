"""Study files: real YAML written to disk and read by load_study (and by the CLI).

Every error must name the file, the field and what was expected, in a few lines, without a traceback.
No Ray and no data: validation only.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from falw_ray.study.search.cells import build_cells
from falw_ray.study.spec import StudyError, load_study
from falw_ray.unlearn import METHODS, PRESETS

STUDIES = Path(__file__).resolve().parent.parent / "studies"

BASE = """\
name: t
scenarios:
  - dataset: digits
    forget: {kind: longtail, ratio: 0.1, gamma: 1.0}
methods:
  - name: ga
"""


def write(tmp_path: Path, text: str, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def with_method(entry: str) -> str:
    """BASE with its single method entry replaced by ``entry`` (indented YAML lines after '- ')."""
    return BASE.replace("  - name: ga\n", "  - " + textwrap.indent(textwrap.dedent(entry), "    ").lstrip())


def error_of(path: Path) -> str:
    with pytest.raises(StudyError) as info:
        load_study(path)
    msg = str(info.value)
    assert str(path) in msg, f"the message does not name the file: {msg}"
    assert len(msg.splitlines()) <= 4, f"too long: {msg}"
    assert "Traceback" not in msg
    return msg


def assert_error(path: Path, *fragments: str) -> str:
    msg = error_of(path)
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    return msg


def cli_validate(*paths: Path | str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "falw_ray.cli", "validate", *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


ONE_FIELD_ERRORS = [
    pytest.param(BASE + "search: {trials: many}\n",
                 ("search.trials", "valid integer", "'many'"), id="wrong_type"),
    pytest.param(BASE + "search: {trials: 0}\n",
                 ("search.trials", "greater than or equal to 1", "got 0"), id="zero_trials"),
    pytest.param(BASE + "resources: {cpu: -1}\n",
                 ("resources.cpu", "greater than 0", "got -1"), id="negative_cpu"),
    pytest.param(BASE + "resources: {gpu: 1.5}\n",
                 ("resources.gpu", "fraction of one GPU (<= 1)"), id="fractional_gpu_above_one"),
    pytest.param(BASE.replace("ratio: 0.1", "ratio: 1.5"),
                 ("scenarios[0].forget.ratio", "less than 1", "got 1.5"), id="forget_ratio_out_of_range"),
    pytest.param(BASE.replace("gamma: 1.0", "gamma: [0.5, 1, 1]"),
                 ("scenarios[0].forget", "gamma", "repeats"), id="repeated_gamma_in_a_sweep"),
    pytest.param(BASE.replace("dataset: digits", "dataset: mnist"),
                 ("scenarios[0].dataset", "unknown dataset 'mnist'", "'cifar10'"), id="unknown_dataset"),
    pytest.param(BASE.replace("dataset: digits", "dataset: digits\n    model: resnet50"),
                 ("scenarios[0].model", "unknown model 'resnet50'", "'resnet18'"), id="unknown_model"),
    pytest.param(BASE.replace("dataset: digits", "dataset: cifar10"),
                 ("scenarios[0]", "data_dir", "'cifar10'"), id="cifar10_without_data_dir"),
    pytest.param(with_method("name: gd\n"),
                 ("methods[0].name", "unknown method 'gd'", "'ga'"), id="unknown_method"),
    pytest.param(with_method("name: ga\nspace: {lr: {low: 0.1, high: 0.001}}\n"),
                 ("methods[0].space", "lr", "low (0.1) must be below high (0.001)"), id="reversed_search_bounds"),
    pytest.param(with_method("name: ga\nspace: {lr: {low: 0, high: 0.1, log: true}}\n"),
                 ("methods[0].space", "lr", "log range needs low > 0"), id="log_range_needs_positive_low"),
    pytest.param(BASE + "final: {seeds: [1, 0, 2]}\n",
                 ("final.seeds", "seed 0 is the search seed of scenarios[0]", "in_sample"), id="final_seed_in_sample"),
    pytest.param(BASE + "selection: {seeds: [5]}\nfinal: {seeds: [5, 6]}\n",
                 ("final.seeds", "seed 5 is also a selection seed"), id="final_seed_is_a_selection_seed"),
    pytest.param(BASE + "selection: {seeds: [0, 7]}\n",
                 ("selection.seeds", "seed 0 is the search seed"), id="selection_seed_is_the_search_seed"),
    pytest.param(BASE + "final: {seeds: [3, 3]}\n", ("final.seeds", "repeats a seed"), id="repeated_final_seed"),
    pytest.param(BASE.replace("dataset: digits", "dataset: mnist1d\n    data_options: {noise: 2}"),
                 ("scenarios[0]", "data_options.noise", "unknown option of dataset 'mnist1d'", "'iid_noise_scale'"),
                 id="unknown_data_option"),
    pytest.param(BASE.replace("dataset: digits", "dataset: digits\n    data_options: {seed: 2}"),
                 ("scenarios[0]", "dataset 'digits' takes no options"), id="options_for_a_dataset_without"),
    pytest.param(BASE + "search: {precision: fp16}\n", ("search.precision", "'fp32' or 'bf16'"), id="precision"),
    pytest.param(with_method("name: rl\noptions: {schedule: interleaved}\n"),
                 ("methods[0]", "options.schedule", "['sequential', 'mixed']", "'interleaved'"), id="bad_option_choice"),
    pytest.param(with_method("name: ga\noptions: {schedule: mixed}\n"),
                 ("methods[0]", "'ga' has no option 'schedule'"), id="option_the_method_lacks"),
    pytest.param(BASE + "compare: [[ga, rl]]\n", ("compare[0]", "no cell 'rl'", "'ga+falw'"), id="compare_unknown_cell"),
]


@pytest.mark.parametrize("text,fragments", ONE_FIELD_ERRORS)
def test_one_bad_field_is_named_with_what_was_expected(tmp_path, text, fragments):
    """Each case: the study file with one bad field, and what the error must say about it."""
    assert_error(write(tmp_path, text), *fragments)


# --- the file itself ---------------------------------------------------------------------------

def test_malformed_yaml_names_line_and_column(tmp_path):
    path = write(tmp_path, "name: t\nscenarios: [\n  - dataset: digits\n")
    assert_error(path, "invalid YAML", "line 3", "column")


def test_empty_file(tmp_path):
    assert_error(write(tmp_path, ""), "empty", "name, scenarios and methods")


def test_comment_only_file_is_empty(tmp_path):
    assert_error(write(tmp_path, "# nothing here\n"), "empty")


def test_top_level_list(tmp_path):
    assert_error(write(tmp_path, "- name: t\n- methods: []\n"), "expected a mapping", "got list")


def test_missing_file(tmp_path):
    with pytest.raises(StudyError, match="cannot read"):
        load_study(tmp_path / "nope.yaml")


# --- unknown keys and types ----------------------------------------------------------------------

def test_unknown_top_level_key_lists_the_known_ones(tmp_path):
    assert_error(write(tmp_path, BASE + "trails: 3\n"), "trails", "unknown field", "'search'")


def test_unknown_key_inside_a_method_entry(tmp_path):
    path = write(tmp_path, with_method("name: ga\nepoch: 3\n"))
    assert_error(path, "methods[0].epoch", "unknown field", "'epochs'")


def test_unknown_key_inside_forget_and_recipe(tmp_path):
    path = write(tmp_path, BASE.replace("gamma: 1.0}", "gamma: 1.0, gama: 2}"))
    assert_error(path, "scenarios[0].forget.gama", "'gamma'")
    path = write(tmp_path, BASE.replace("    forget:", "    recipe: {epocs: 10}\n    forget:"))
    assert_error(path, "scenarios[0].recipe.epocs", "'epochs'")


def test_whole_gpus_and_fractions_are_fine(tmp_path):
    assert load_study(write(tmp_path, BASE + "resources: {cpu: 4, gpu: 2}\n")).resources.gpu == 2
    assert load_study(write(tmp_path, BASE + "resources: {cpu: 1, gpu: 0.25}\n")).resources.gpu == 0.25


# --- scenarios -------------------------------------------------------------------------------------

def test_negative_gamma(tmp_path):
    path = write(tmp_path, BASE.replace("gamma: 1.0", "gamma: -1"))
    assert_error(path, "scenarios[0].forget.gamma", "greater than or equal to 0")
    path = write(tmp_path, BASE.replace("gamma: 1.0", "gamma: [1, -0.5]"))
    assert_error(path, "scenarios[0].forget.gamma", "greater than or equal to 0")


def test_gamma_of_the_wrong_type_is_one_message(tmp_path):
    path = write(tmp_path, BASE.replace("gamma: 1.0", "gamma: steep"))
    msg = assert_error(path, "scenarios[0].forget.gamma", "a number or a list of numbers", "'steep'")
    assert len(msg.splitlines()) == 1


def test_missing_data_dir_is_reported_by_preflight(tmp_path):
    missing = tmp_path / "no-such-data"
    path = write(tmp_path, BASE.replace("dataset: digits", f"dataset: cifar10\n    data_dir: {missing}"))
    spec = load_study(path)  # validation does not look at the disk: the data lives where the study runs
    with pytest.raises(StudyError) as info:
        spec.preflight(str(path))
    msg = str(info.value)
    assert str(path) in msg and "scenarios[0].data_dir" in msg and str(missing) in msg
    assert "download: true" in msg
    assert len(msg.splitlines()) <= 4

    missing.mkdir()
    spec.preflight(str(path))  # now it exists
    downloading = write(tmp_path, BASE.replace(
        "dataset: digits", f"dataset: cifar10\n    data_dir: {tmp_path / 'later'}\n    download: true"), "dl.yaml")
    load_study(downloading).preflight(str(downloading))  # download: true creates it


# --- methods -------------------------------------------------------------------------------------

def test_range_missing_a_bound_or_with_an_unknown_key(tmp_path):
    path = write(tmp_path, with_method("name: ga\nspace: {lr: {low: 0.001}}\n"))
    assert_error(path, "methods[0].space", "lr.high", "required")
    path = write(tmp_path, with_method("name: ga\nspace: {lr: {low: 0.001, high: 0.1, lg: true}}\n"))
    assert_error(path, "methods[0].space", "lr.lg", "expected low, high and optionally log")


def test_space_key_the_method_does_not_have(tmp_path):
    path = write(tmp_path, with_method("name: ga\nspace: {alpha: 0.5}\n"))
    assert_error(path, "methods[0]", "'ga' has no hyperparameter 'alpha'", "'lr'")


def test_tau_for_a_method_without_a_forget_term(tmp_path):
    path = write(tmp_path, with_method("name: ft\nspace: {tau: 0.1}\n"))
    assert_error(path, "methods[0]", "'ft' has no hyperparameter 'tau'", "'lr'")


def test_epochs_is_set_not_searched(tmp_path):
    path = write(tmp_path, with_method("name: ga\nspace: {epochs: {low: 1, high: 10}}\n"))
    assert_error(path, "methods[0]", "epochs", "not searched")


def test_falw_on_for_a_method_without_forget_term_is_an_error(tmp_path):
    for value in ("on", "'on'"):  # YAML reads bare on as True; quoted it stays a string
        path = write(tmp_path, with_method(f"name: ft\nfalw: {value}\n"))
        assert_error(path, "methods[0]", "falw", "'ft' has no forget term", "expected off")


def test_falw_both_for_ft_yields_only_the_off_cell(tmp_path):
    spec = load_study(write(tmp_path, with_method("name: ft\nfalw: both\n")))
    cells = build_cells(spec)
    assert [(c.method, c.falw) for c in cells] == [("ft", False)]
    assert "tau" not in cells[0].space


def test_yaml_boolean_falw(tmp_path):
    text = with_method("name: ga\nfalw: on\n")
    assert yaml.safe_load(text)["methods"][0]["falw"] is True  # the reason for the special case
    spec = load_study(write(tmp_path, text))
    assert spec.methods[0].falw == "on"
    cells = build_cells(spec)
    assert [(c.method, c.falw) for c in cells] == [("ga", True)]
    assert "tau" in cells[0].space
    spec = load_study(write(tmp_path, with_method("name: ga\nfalw: off\n")))
    assert [c.falw for c in build_cells(spec)] == [False]


def test_invalid_falw_value(tmp_path):
    path = write(tmp_path, with_method("name: ga\nfalw: maybe\n"))
    assert_error(path, "methods[0].falw", "'off', 'on' or 'both'", "'maybe'")


def test_preset_cannot_turn_falw_off(tmp_path):
    path = write(tmp_path, with_method("name: falw\nfalw: off\n"))
    assert_error(path, "methods[0]", "falw", "fixes FaLW on", "'salun'")


# --- many problems at once -----------------------------------------------------------------------

def test_error_output_is_short(tmp_path):
    text = BASE + "trails: 3\nfoo: 1\nbar: 2\nsearch: {trials: 0}\nresources: {cpu: -1}\n"
    msg = error_of(write(tmp_path, text))
    lines = msg.splitlines()
    assert len(lines) == 4
    assert lines[-1].endswith("... and 2 more problem(s)")


# --- the CLI -------------------------------------------------------------------------------------

def test_cli_validate_reports_errors_with_exit_code_2(tmp_path):
    bad = write(tmp_path, BASE + "trails: 3\n", "bad.yaml")
    broken = write(tmp_path, "name: [\n", "broken.yaml")
    proc = cli_validate(bad, broken)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) <= 4, proc.stderr
    assert any(str(bad) in line and "trails" in line for line in err)
    assert any(str(broken) in line and "invalid YAML" in line and "line" in line for line in err)


def test_cli_validate_accepts_the_repository_studies():
    # The paper studies read their data from the cluster's shared mount, which this machine lacks.
    proc = cli_validate("--skip-data-check", *sorted(STUDIES.glob("*.yaml")))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""
    assert proc.stdout.count("valid study") == len(list(STUDIES.glob("*.yaml")))


# --- positive cases ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_repository_study_validates(path):
    spec = load_study(path)
    cells = build_cells(spec)
    assert cells and len({c.id for c in cells}) == len(cells)


def test_the_paper_studies_exist():
    names = {p.stem for p in STUDIES.glob("*.yaml")}
    assert {"quickstart", "cifar10_lt", "cifar100_lt", "tinyimagenet_lt"} <= names


def expected_cells(raw: dict) -> int:
    """Count cells from a study's raw YAML: falw both doubles methods with a forget term."""
    n = 0
    for m in raw["methods"]:
        name, falw = m["name"], m.get("falw", "both")
        if name in PRESETS:
            n += 1
        elif not METHODS[name].forget_term:
            n += 1
        else:
            n += 2 if falw == "both" else 1
    scenarios = sum(len(s.get("forget", {}).get("gamma", [1])) if isinstance(s.get("forget", {}).get("gamma"), list)
                    else 1 for s in raw["scenarios"])
    return n * scenarios


def test_quickstart_cells():
    path = STUDIES / "quickstart.yaml"
    spec = load_study(path)
    cells = build_cells(spec)
    assert len(cells) == expected_cells(yaml.safe_load(path.read_text()))
    labels = [c.label for c in cells]
    assert "ft" in labels and "ft+falw" not in labels
    for name in ("ga", "rl", "salun", "scrub"):
        assert name in labels and f"{name}+falw" in labels
    assert all(("tau" in c.space) == c.falw for c in cells)


def test_paper_study_cell_counts():
    for name in ("cifar10_lt", "cifar100_lt", "tinyimagenet_lt"):
        path = STUDIES / f"{name}.yaml"
        assert len(build_cells(load_study(path))) == expected_cells(yaml.safe_load(path.read_text())), name


def test_gamma_list_expands_to_one_scenario_per_gamma(tmp_path):
    gammas = [0, 0.25, 0.3333, 0.5, 1, 1.5, 2]
    path = write(tmp_path, BASE.replace("gamma: 1.0", f"gamma: {gammas}"))
    spec = load_study(path)
    scenarios = spec.scenario_list()
    assert [s.forget.gamma for s in scenarios] == [float(g) for g in gammas]
    assert len({s.key() for s in scenarios}) == len(gammas)
    assert len({s.original_key() for s in scenarios}) == 1
    assert len(build_cells(spec)) == 2 * len(gammas)  # ga with and without FaLW, per gamma


def test_space_override_range_and_fixed_number(tmp_path):
    entry = "name: salun\nspace:\n  lr: {low: 0.002, high: 0.05, log: true}\n  mask_ratio: 0.5\n"
    spec = load_study(write(tmp_path, with_method(entry)))
    default = METHODS["salun"].space(False)
    assert "mask_ratio" in default  # searched unless fixed
    for falw in (False, True):
        space, fixed = spec.methods[0].search_space(falw)
        assert (space["lr"].low, space["lr"].high, space["lr"].log) == (0.002, 0.05, True)
        assert space["lr"].low <= space["lr"].default <= space["lr"].high
        assert "mask_ratio" not in space and fixed == {"mask_ratio": 0.5}
        assert ("tau" in space) == falw
    cell = next(c for c in build_cells(spec) if c.falw)
    assert cell.hp({"lr": 0.01, "tau": 0.1}) == {"lr": 0.01, "tau": 0.1, "mask_ratio": 0.5}


def test_tau_override_applies_only_with_falw(tmp_path):
    spec = load_study(write(tmp_path, with_method("name: rl\nspace: {tau: {low: 0.1, high: 0.2}}\n")))
    on, _ = spec.methods[0].search_space(True)
    off, fixed_off = spec.methods[0].search_space(False)
    assert (on["tau"].low, on["tau"].high) == (0.1, 0.2)
    assert "tau" not in off and "tau" not in fixed_off


def test_method_epochs_and_batch_size_reach_the_cells(tmp_path):
    spec = load_study(write(tmp_path, with_method("name: rl\nepochs: 4\nbatch_size: 512\n")))
    assert {(c.epochs, c.batch_size) for c in build_cells(spec)} == {(4, 512)}


def test_evaluation_and_compile_settings(tmp_path):
    spec = load_study(write(tmp_path, BASE + "search: {evaluate: every_epoch, compile: true}\n"))
    assert spec.search.evaluate == "every_epoch" and spec.search.compile is True
    default = load_study(write(tmp_path, BASE, "default.yaml"))
    assert default.search.evaluate == "rungs" and default.search.compile is False
    assert_error(write(tmp_path, BASE + "search: {evaluate: sometimes}\n", "bad.yaml"),
                 "search.evaluate", "'rungs' or 'every_epoch'")


def test_final_seeds_default_to_new_seeds_after_search_and_selection(tmp_path):
    assert load_study(write(tmp_path, BASE)).final_seeds() == [1, 2, 3]
    spec = load_study(write(tmp_path, BASE.replace("gamma: 1.0}", "gamma: 1.0}\n    seed: 4")
                            + "selection: {top_k: 2, seeds: [10, 11]}\n", "sel.yaml"))
    assert spec.final_seeds() == [12, 13, 14] and spec.selection.top_k == 2
    inside = load_study(write(tmp_path, BASE + "final: {seeds: [0, 1], in_sample: true}\n", "in.yaml"))
    assert inside.final_seeds() == [0, 1]


def test_compare_pairs_name_cells(tmp_path):
    spec = load_study(write(tmp_path, BASE + "compare: [[ga, ga+falw]]\n"))
    assert spec.compare == [("ga", "ga+falw")] and len(build_cells(spec)) == 2


def test_data_options_reach_the_scenarios_and_their_cells(tmp_path):
    text = BASE.replace("dataset: digits", "dataset: mnist1d\n    data_options: {corr_noise_scale: 0.25}")
    spec = load_study(write(tmp_path, text))
    scenario = spec.scenario_list()[0]
    assert scenario.data_options.corr_noise_scale == 0.25 and scenario.data_options.iid_noise_scale == 0.04
    assert build_cells(spec)[0].id == "mnist1d-corr_noise_scale0.25-conv1d-lt0.1-g1/ga"


def test_method_options_reach_the_cells(tmp_path):
    spec = load_study(write(tmp_path, with_method("name: salun\noptions: {schedule: sequential, mask_mode: restore}\n")))
    assert {tuple(sorted(c.options.items())) for c in build_cells(spec)} == {
        (("mask_mode", "restore"), ("schedule", "sequential"))}


def test_the_optimisers_momentum_and_weight_decay_can_be_set_or_searched(tmp_path):
    spec = load_study(write(tmp_path, with_method("name: ga\nspace: {momentum: 0.5, weight_decay: {low: 0, high: 0.001}}\n")))
    cell = next(c for c in build_cells(spec) if not c.falw)
    assert cell.fixed == {"momentum": 0.5} and (cell.space["weight_decay"].low, cell.space["weight_decay"].high) == (0, 0.001)
