"""A module imported on first use, so that declarations stay cheap to import.

Method declarations (names, hyperparameters, options), the data set and model registries and the
baseline store refer to torch only inside functions; binding ``torch`` to a ``LazyModule`` keeps
``falw-ray --help``, ``validate``, ``methods`` and ``baselines list`` from loading it (seconds) while
the code that runs a method reads as it always did. Nothing at module level may touch such a name
(a default argument, a decorator, a base class): that would import the library after all.
"""
from __future__ import annotations

import importlib


class LazyModule:
    """Stands for the module ``name``; the first attribute read imports it (``sys.modules`` then holds it)."""

    __slots__ = ("_name",)

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


torch = LazyModule("torch")
nn = LazyModule("torch.nn")
F = LazyModule("torch.nn.functional")
