"""Plugins on every node: the modules a study's plugins live in, shipped with Ray's runtime environment.

A Ray worker has falw_ray but not the user's files: not on another node, and not even on the
driver's machine, whose workers get the driver's working directory on their path but not the study
file's folder. So the study hands Ray each plugin's top-level module (a file or a package folder)
as ``runtime_env`` ``py_modules``: Ray uploads it once and puts it on every worker's path. A trial
registers the plugin methods by the ``module:ATTR`` they came from (``register``), which also works
for a method that an entry point named on the driver: the worker needs the module, not the package's
metadata. Where a worker still cannot import one, the trial fails once, in one line naming the
module and the node (trainable.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

from ... import plugins
from ...unlearn import PLUGINS, load_plugin


def plugin_methods(cells) -> dict[str, str]:
    """Method name -> ``module:ATTR`` of every plugin method the cells run."""
    return {c.method: PLUGINS[c.method].ref for c in cells if c.method in PLUGINS}


def plugin_refs(cells) -> list[str]:
    """Every ``module:ATTR`` the cells need: plugin methods, models and data loaders."""
    refs = list(plugin_methods(cells).values())
    for c in cells:
        refs += [name for name in (c.scenario.dataset, c.scenario.model) if name and plugins.is_ref(name)]
    return list(dict.fromkeys(refs))


def module_paths(refs: list[str]) -> list[str]:
    """The file or package folder of each reference's top-level module (imported on the driver
    already), for ``py_modules``; falw_ray itself is on every node and is never shipped."""
    paths = []
    for top in dict.fromkeys(plugins.top_module(r) for r in refs):
        if top == "falw_ray":
            continue
        module = sys.modules.get(top) or plugins.import_module(top)
        locations = list(getattr(module, "__path__", []))
        if len(locations) == 1:
            paths.append(str(Path(locations[0]).resolve()))
        elif getattr(module, "__file__", None) and not locations:
            paths.append(str(Path(module.__file__).resolve()))
        # A namespace package spread over folders cannot be shipped: it must be installed on every node.
    return list(dict.fromkeys(paths))


def runtime_env(cells, base: dict | None = None) -> dict | None:
    """``base`` with the cells' plugin modules added as ``py_modules``; ``base`` itself when none."""
    paths = module_paths(plugin_refs(cells))
    if not paths:
        return base
    return {**(base or {}), "py_modules": paths}


_SHIPPED: dict = {"job": None, "paths": []}
"""The Ray connection (its job id) a study made in this process, and the plugin modules it ships."""


def connected(env: dict | None) -> None:
    """Record that a study connected to Ray with ``env``."""
    _SHIPPED.update(job=_connection(), paths=list((env or {}).get("py_modules", [])))


def _connection() -> tuple[str, str]:
    """This process's Ray connection: its job and the driver's node (a new local Ray's first job has
    the same id as the last one's; its node does not)."""
    import ray

    context = ray.get_runtime_context()
    return context.get_job_id(), context.get_node_id()


def unshipped(env: dict | None) -> tuple[list[str], bool]:
    """With Ray already connected in this process: the plugin modules ``env`` needs that the
    connection does not ship, and whether a study made that connection (and may remake it)."""
    ours = _SHIPPED["job"] is not None and _connection() == _SHIPPED["job"]
    shipped = _SHIPPED["paths"] if ours else []
    return [p for p in (env or {}).get("py_modules", []) if p not in shipped], ours


def register(methods: dict[str, str]) -> None:
    """On a worker: the study's plugin methods, imported by their ``module:ATTR`` (PluginError when
    one cannot be)."""
    for name, ref in methods.items():
        if name not in PLUGINS:
            load_plugin(ref)


def this_node() -> str:
    """The node this Ray worker runs on, for an error line: its address and the start of its id
    (nodes of one machine share an address)."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    address = next((n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id), "?")
    return f"{address} ({node_id[:12]})"
