"""Unlearning methods: a registry keyed by name. Adding a built-in method = one module + one line here;
a method of one's own stays outside the package (a ``module:ATTR`` or an installed entry point in the
group ``falw_ray.methods``, docs/plugins.md) and is registered here, under its own name, when named."""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from . import (
    boundary_expanding, boundary_shrink, ft, ga, l1_sparse, neggrad_plus, retrain, rl, salun, scrub,
)
from .. import plugins
from ..console import did_you_mean, first_line
from .base import TAU, Batch, DivergedError, FalwUnused, Method, Option, Param, UnlearnState, unlearn
from .falw import FalwWeigher, class_confidence_stats, falw_weights

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        ft.METHOD, ga.METHOD, neggrad_plus.METHOD, rl.METHOD, salun.METHOD, l1_sparse.METHOD,
        scrub.METHOD, boundary_shrink.METHOD, boundary_expanding.METHOD, retrain.METHOD,
    )
}

PRESETS: dict[str, tuple[str, bool]] = {"falw": ("salun", True)}
"""Names that stand for a method with FaLW fixed: ``falw`` is the paper's RL + SalUn mask + FaLW."""

PRESET_OPTIONS: dict[str, dict[str, str]] = {"falw": {"schedule": "mixed"}}
"""A preset's options where they differ from its base method's defaults: the FaLW authors' code mixes
forget and retain samples in every batch on every data set."""


ENTRY_POINTS = "falw_ray.methods"
"""The entry-point group an installed package declares its methods in (``name = "module:ATTR"``)."""

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
"""A method's name labels its cells, MLflow runs and compare pairs (``name+falw``)."""


@dataclass(frozen=True)
class Plugin:
    """A method from outside falw_ray: ``ref`` is the ``module:ATTR`` a Ray worker imports it by,
    ``origin`` where it came from (for ``falw-ray methods``)."""

    method: Method
    ref: str
    origin: str


PLUGINS: dict[str, Plugin] = {}
"""Plugin methods loaded in this process, by their Method's name."""


def plugin_names() -> list[str]:
    """The method names installed packages declare, read from their metadata (nothing imported)."""
    from importlib.metadata import entry_points

    return sorted({ep.name for ep in entry_points(group=ENTRY_POINTS)})


def _entry_point(name: str):
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group=ENTRY_POINTS) if ep.name == name]
    return found[0] if found else None


def known_names() -> list[str]:
    return sorted(METHODS) + sorted(PRESETS) + sorted(set(plugin_names()) | set(PLUGINS))


def load_plugin(name: str, base=None) -> Plugin:
    """A method from outside falw_ray, ``module:ATTR`` (found beside ``base`` first) or an installed
    entry point's name, registered under its own name. Errors are one line (PluginError)."""
    if plugins.is_ref(name):
        obj, ref = plugins.load(name, base), name
        origin = f"{plugins.origin(name)} ({name})"
    else:
        ep = _entry_point(name)
        if ep is None:
            raise ValueError(f"unknown method {name!r}{did_you_mean(name, known_names())}; expected one of "
                             f"{known_names()}, or module:ATTR naming a falw_ray.Method")
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "an installed package"
        try:
            obj = ep.load()
        except Exception as e:  # noqa: BLE001 - the plugin's own error, in one line
            raise plugins.PluginError(f"method {name!r} (entry point {ep.value} of {dist}) cannot be loaded: "
                                      f"{type(e).__name__}: {first_line(e, 300)}") from None
        ref, origin = ep.value, f"{dist} (entry point {ENTRY_POINTS}: {ep.value})"
        if isinstance(obj, Method) and obj.name != name:
            raise plugins.PluginError(f"entry point {name!r} ({ep.value}, {dist}) is a method named {obj.name!r}: "
                                      "the entry point's name and the Method's name must agree")
    if not isinstance(obj, Method):
        raise plugins.PluginError(f"{ref} is a {type(obj).__name__}, not a falw_ray.Method")
    return register(obj, ref, origin)


def register(method: Method, ref: str, origin: str) -> Plugin:
    """Register a plugin method under its name after checking what the engine relies on."""
    name = method.name
    if name in METHODS or name in PRESETS:
        raise plugins.PluginError(f"{ref} is named {name!r}, as a built-in {'preset' if name in PRESETS else 'method'}: "
                                  "give it a name of its own")
    if not NAME.match(name):
        raise plugins.PluginError(f"{ref}: method name {name!r} must be letters, digits, _ . - (it labels cells, "
                                  "and name+falw its FaLW cell)")
    missing = [k for k in ("lr", "epochs") if k not in method.params]
    if missing:
        raise plugins.PluginError(f"{ref}: method {name!r} declares no {' or '.join(missing)} Param; every method "
                                  "has a learning rate (lr) and an epoch budget (epochs)")
    if method.loss is None and method.run_epoch is None:
        raise plugins.PluginError(f"{ref}: method {name!r} has neither a loss nor a run_epoch")
    known = PLUGINS.get(name)
    if known is not None and known.ref != ref:
        raise plugins.PluginError(f"two plugin methods are named {name!r}: {known.ref} and {ref}")
    PLUGINS[name] = Plugin(method, ref, origin)
    return PLUGINS[name]


def get_method(name: str) -> Method:
    """A built-in method, a preset's base method, or a plugin method (by name, or ``module:ATTR``)."""
    if name in PRESETS:
        name = PRESETS[name][0]
    if name in METHODS:
        return METHODS[name]
    if name in PLUGINS:
        return PLUGINS[name].method
    return load_plugin(name).method


def method_name(name: str) -> str:
    """What a method is called in tables and cells: a preset's or built-in's name, a plugin's own name."""
    return name if name in PRESETS or name in METHODS else get_method(name).name


def preset_options(name: str, options: Mapping | None = None) -> dict[str, str]:
    """The options a method name stands for, overlaid with ``options``."""
    return {**PRESET_OPTIONS.get(name, {}), **dict(options or {})}


def resolve(name: str, falw: bool | None = None) -> tuple[Method, bool]:
    """A method and whether FaLW is on: presets fix it, other names default to off."""
    method = get_method(name)
    if name in PRESETS:
        if falw is not None and bool(falw) != PRESETS[name][1]:
            raise ValueError(f"method {name!r} fixes FaLW {'on' if PRESETS[name][1] else 'off'}; leave falw out "
                             f"or name the base method {PRESETS[name][0]!r}")
        return method, PRESETS[name][1]
    return method, bool(falw)


__all__ = [
    "ENTRY_POINTS", "METHODS", "PLUGINS", "PRESETS", "PRESET_OPTIONS", "TAU", "Batch", "DivergedError", "FalwUnused",
    "FalwWeigher", "Method", "Option", "Param", "Plugin", "UnlearnState", "class_confidence_stats", "falw_weights",
    "get_method", "known_names", "load_plugin", "method_name", "plugin_names", "preset_options", "register", "resolve",
    "unlearn",
]
