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

import jsonschema
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
    except Exception as e:  # ill-typed input can crash prepare_config itself
        try:  # the schema, applied to the file as written, names the field
            validate_config(raw)
        except jsonschema.ValidationError as schema_err:
            raise ValueError(_schema_message(path, schema_err)) from None
        except Exception:
            pass
        msg = " ".join(str(e).split()) or type(e).__name__
        raise ValueError(f"{path}: {msg}") from None
    return config


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
