"""Offline check of a Ray cluster-launcher config (cluster.yaml).

`ray up` has no dry run: a typo'd field or a fractional node GPU only shows up
after it has started talking to the cloud. This runs the same two steps that
`ray up` runs first, Ray's `prepare_config` (merge the provider's shipped
defaults) and `validate_config` (the shipped ray-schema.json), and nothing
after them: `ray up` then calls the provider's
`fillout_available_node_types_resources` and `bootstrap_config`, which need
cloud credentials and the network (boto3 for AWS), so they are left out.
Every problem becomes a one-line ValueError that names the file and, where the
schema says, the offending field.
"""

import copy
import json
from pathlib import Path

import jsonschema
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config


def _schema_message(path, err: jsonschema.ValidationError) -> str:
    field = ".".join(str(p) for p in err.absolute_path) or "top level"
    return f"{path}: {field}: {' '.join(err.message.split())}"


def validate_cluster_config(path) -> dict:
    """Validate the cluster.yaml at `path` offline; return the prepared config."""
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(e, "problem", None) or type(e).__name__
        raise ValueError(f"{path}: invalid YAML{where}: {what}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping, got {type(raw).__name__}")
    try:
        config = prepare_config(copy.deepcopy(raw))
        validate_config(config)
    except jsonschema.ValidationError as e:
        raise ValueError(_schema_message(path, e)) from None
    except PREPARE_ERRORS as e:
        # Ill-typed input (a string where a mapping belongs, a missing provider) crashes
        # prepare_config before the schema sees it; the schema, applied to the file as written,
        # names the field. What it passes is a value Ray's own checks refuse.
        if (schema_err := _raw_schema_error(raw)) is not None:
            raise ValueError(_schema_message(path, schema_err)) from None
        msg = " ".join(str(e).split()) or type(e).__name__
        raise ValueError(f"{path}: Ray refuses this config: {msg}") from None
    return config


PREPARE_ERRORS = (TypeError, AttributeError, KeyError, ValueError, NotImplementedError)
"""What prepare_config and validate_config raise on input the schema has not vetted (an unknown
provider type is NotImplementedError; ``head_node_type`` naming no node type is ValueError)."""


def _raw_schema_error(raw: dict) -> jsonschema.ValidationError | None:
    """The schema's complaint about the file as written, if any. Only the schema: validate_config's
    further checks expect the defaults prepare_config adds and would fail on any raw file."""
    with open(Path(ray.autoscaler.__file__).parent / "ray-schema.json") as f:
        schema = json.load(f)
    try:
        jsonschema.validate(raw, schema)
    except jsonschema.ValidationError as e:
        return e
    return None


PLACEHOLDER = "REPLACE_ME"


def placeholders(path) -> list[str]:
    """The fields of the cluster.yaml at ``path`` that still hold a ``REPLACE_ME`` placeholder,
    as dotted paths (``available_node_types.ray.head.default.node_config.ImageId``)."""
    with open(path) as f:
        raw = yaml.safe_load(f)
    found: list[str] = []

    def walk(value, where: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{where}.{k}" if where else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]")
        elif isinstance(value, str) and PLACEHOLDER in value:
            found.append(where)

    walk(raw, "")
    return found
