"""cluster.yaml is valid against the schema Ray ships, and broken variants of
it are rejected offline with one-line errors that name the file."""

from pathlib import Path

import pytest
import yaml

from falw_ray.study.cluster.config import validate_cluster_config

CLUSTER_YAML = Path(__file__).resolve().parent.parent / "cluster.yaml"


def _variant(tmp_path, mutate):
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    mutate(config)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _one_line_error(path) -> str:
    with pytest.raises(ValueError) as info:
        validate_cluster_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


def test_shipped_cluster_yaml_validates():
    raw = yaml.safe_load(CLUSTER_YAML.read_text())
    config = validate_cluster_config(CLUSTER_YAML)
    assert config["cluster_name"] == "falw-ray"
    assert config["provider"] == {"type": "aws", "region": "us-west-2", "cache_stopped_nodes": True}
    assert config["head_node_type"] == "head" and config["max_workers"] == 8
    # Validation keeps every value the file sets (it only adds Ray's defaults).
    assert config["available_node_types"] == raw["available_node_types"]
    for key in ("setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        assert config[key] == raw[key], key
    head = config["available_node_types"]["head"]
    assert head["resources"] == {"CPU": 8, "GPU": 0} and (head["min_workers"], head["max_workers"]) == (0, 0)
    workers = {name: t for name, t in config["available_node_types"].items() if name != "head"}
    assert list(workers) == ["gpu_worker"]
    gpu = workers["gpu_worker"]
    assert gpu["resources"] == {"CPU": 4, "GPU": 1} and (gpu["min_workers"], gpu["max_workers"]) == (0, 8)
    # prepare_config merged Ray's defaults, so this is the config `ray up` sees.
    assert "cluster_synced_files" in config
    start = [c for c in config["head_start_ray_commands"] if "ray start --head" in c]
    assert len(start) == 1 and "--dashboard-host=127.0.0.1" in start[0].split()
    mlflow = [c for c in config["head_start_ray_commands"] if "mlflow server" in c]
    assert len(mlflow) == 1 and "--host 127.0.0.1 --port 5000" in mlflow[0]


def test_typo_in_top_level_field_is_rejected(tmp_path):
    def typo(config):
        config["max_worker"] = config.pop("max_workers")

    path = _variant(tmp_path, typo)
    assert _one_line_error(path) == f"{path}: top level: Additional properties are not allowed ('max_worker' was unexpected)"


def test_fractional_node_gpu_is_rejected(tmp_path):
    def fractional(config):
        config["available_node_types"]["gpu_worker"]["resources"]["GPU"] = 0.5

    path = _variant(tmp_path, fractional)
    assert _one_line_error(path) == f"{path}: available_node_types.gpu_worker.resources.GPU: 0.5 is not of type 'integer'"


def test_malformed_yaml_is_rejected(tmp_path):
    path = tmp_path / "cluster.yaml"
    text = CLUSTER_YAML.read_text().replace("provider:\n", "provider: {type: [\n", 1)
    path.write_text(text)
    with pytest.raises(yaml.MarkedYAMLError) as parsed:
        yaml.safe_load(text)
    mark = parsed.value.problem_mark
    expected = f"{path}: invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {parsed.value.problem}"
    assert _one_line_error(path) == expected


def test_non_mapping_is_rejected(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("- just\n- a list\n")
    assert _one_line_error(path) == f"{path}: expected a mapping, got list"


def test_placeholders_are_named_by_field_and_warned_about_by_validate(tmp_path):
    from falw_ray.study.cluster.config import placeholders

    assert placeholders(CLUSTER_YAML) == ["available_node_types.head.node_config.ImageId",
                                          "available_node_types.gpu_worker.node_config.ImageId",
                                          "initialization_commands[2]"]

    def fill(config):
        for node in config["available_node_types"].values():
            node["node_config"]["ImageId"] = "ami-0123456789abcdef0"
        config["initialization_commands"] = [c.replace("fs-REPLACE_ME", "fs-0123abcd")
                                             for c in config["initialization_commands"]]

    filled = _variant(tmp_path, fill)
    assert placeholders(filled) == []
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "falw_ray.cli", "validate", str(CLUSTER_YAML)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0 and run.stdout == f"{CLUSTER_YAML}: valid Ray cluster config\n"
    warnings = run.stderr.splitlines()
    assert len(warnings) == 3 and all(w.startswith(f"{CLUSTER_YAML}: warning: ") for w in warnings)
    assert "available_node_types.head.node_config.ImageId still holds a REPLACE_ME placeholder" in warnings[0]
    quiet = subprocess.run([sys.executable, "-m", "falw_ray.cli", "validate", str(filled)], capture_output=True,
                           text=True, timeout=120)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_ill_typed_field_that_crashes_prepare_config_is_named(tmp_path):
    def as_string(config):
        config["provider"] = "aws"

    path = _variant(tmp_path, as_string)
    assert _one_line_error(path) == f"{path}: provider: 'aws' is not of type 'object'"


def test_value_ray_refuses_after_the_schema_is_said_in_one_line(tmp_path):
    def unknown(config):
        config["provider"]["type"] = "nowhere"

    path = _variant(tmp_path, unknown)
    assert _one_line_error(path) == f"{path}: Ray refuses this config: Unsupported node provider: nowhere"
