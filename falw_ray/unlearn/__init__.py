"""Unlearning methods: a registry keyed by name. Adding a method = one module + one line here."""
from __future__ import annotations

from collections.abc import Mapping

from . import (
    boundary_expanding, boundary_shrink, ft, ga, l1_sparse, neggrad_plus, retrain, rl, salun, scrub,
)
from .base import TAU, Batch, DivergedError, Method, Option, Param, UnlearnState, unlearn
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


def get_method(name: str) -> Method:
    if name in PRESETS:
        name = PRESETS[name][0]
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {sorted(METHODS) + sorted(PRESETS)}")
    return METHODS[name]


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
    "METHODS", "PRESETS", "PRESET_OPTIONS", "TAU", "Batch", "DivergedError", "FalwWeigher", "Method", "Option", "Param",
    "UnlearnState", "class_confidence_stats", "falw_weights", "get_method", "preset_options", "resolve", "unlearn",
]
