"""Code from outside falw_ray, named ``module:attr``: a method, a data loader or a model builder.

The module is anything the driver can import: a file beside the study file (``base``, which is then
put on ``sys.path``) or a module on the path. A study ships every plugin module to its Ray workers
(study/ship.py); this module only finds and imports them, and says in one line why it could not.
"""
from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

from .console import first_line

REF = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class PluginError(ValueError):
    """A plugin that cannot be found, imported or used; the message is one line naming it."""


def is_ref(name: str) -> bool:
    return ":" in name


def split_ref(ref: str) -> tuple[str, str]:
    """(module, attribute) of ``module:attr``; a malformed reference is a one-line error."""
    if not REF.match(ref):
        raise PluginError(f"{ref!r} is not a plugin reference: expected module:ATTRIBUTE, e.g. my_methods:GA_CLIP")
    module, attr = ref.split(":")
    return module, attr


def top_module(ref: str) -> str:
    """The top-level module a reference imports (what a worker needs shipped)."""
    return split_ref(ref)[0].split(".")[0]


def _beside(base: Path, top: str) -> bool:
    return (base / f"{top}.py").is_file() or (base / top / "__init__.py").is_file()


def import_module(name: str, base: str | Path | None = None):
    """Import ``name``; a module found beside ``base`` (the study file's folder) comes first."""
    top = name.split(".")[0]
    if base is not None and _beside(Path(base), top):
        folder = str(Path(base).resolve())
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is not None and (name == e.name or name.startswith(e.name + ".")):
            where = f"beside the study file ({Path(base).resolve()}) or " if base is not None else ""
            raise PluginError(f"module {name!r} not found: put {top}.py {where}on the Python path "
                              "(PYTHONPATH)") from None
        raise PluginError(f"module {name!r} cannot be imported: {first_line(e, 300)}") from None
    except Exception as e:  # noqa: BLE001 - the plugin's own error, shown in one line
        raise PluginError(f"module {name!r} failed while being imported: {type(e).__name__}: {first_line(e, 300)}") from None


def load(ref: str, base: str | Path | None = None):
    """The object ``module:attr`` names (``attr`` may be dotted)."""
    module, attr = split_ref(ref)
    obj = import_module(module, base)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PluginError(f"{ref}: module {module!r} ({getattr(sys.modules.get(module), '__file__', '?')}) "
                              f"has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def origin(ref: str) -> str:
    """Where an imported reference's module lives, for listings."""
    mod = sys.modules.get(split_ref(ref)[0])
    return getattr(mod, "__file__", None) or "?"

