"""cluster.yaml is valid against the schema Ray ships, and broken variants of
it are rejected offline with one-line errors that name the file."""

from pathlib import Path

import pytest
import yaml

from falw_ray.study.cluster import validate_cluster_config

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
    config = validate_cluster_config(CLUSTER_YAML)
    assert config["cluster_name"] == "falw-ray"
    assert config["provider"]["type"] == "aws"
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"]["GPU"] == 0 and head["resources"]["CPU"] > 0
    workers = [
        t for name, t in config["available_node_types"].items()
        if name != config["head_node_type"]
    ]
    assert workers and all(t["resources"]["GPU"] >= 1 for t in workers)
    assert all(t["min_workers"] == 0 for t in workers)
    # prepare_config merged Ray's defaults, so this is the config `ray up` sees.
    assert "cluster_synced_files" in config
    assert "127.0.0.1" in " ".join(config["head_start_ray_commands"])


def test_typo_in_top_level_field_is_rejected(tmp_path):
    def typo(config):
        config["max_worker"] = config.pop("max_workers")

    message = _one_line_error(_variant(tmp_path, typo))
    assert "max_worker" in message


def test_fractional_node_gpu_is_rejected(tmp_path):
    def fractional(config):
        config["available_node_types"]["gpu_worker"]["resources"]["GPU"] = 0.5

    message = _one_line_error(_variant(tmp_path, fractional))
    assert "available_node_types.gpu_worker.resources.GPU" in message
    assert "0.5" in message


def test_malformed_yaml_is_rejected(tmp_path):
    path = tmp_path / "cluster.yaml"
    text = CLUSTER_YAML.read_text().replace("provider:\n", "provider: {type: [\n", 1)
    path.write_text(text)
    message = _one_line_error(path)
    assert "invalid YAML at line" in message


def test_non_mapping_is_rejected(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("- just\n- a list\n")
    assert "expected a mapping" in _one_line_error(path)
