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
    """Stands for the module ``name``; the first attribute read imports it (``sys.modules`` then holds it).

    Each name read is then kept on the stand-in, so a training step's many ``torch.`` reads cost an
    ordinary attribute read each, not a call."""

    def __init__(self, name: str):
        self.__dict__["_name"] = name

    def __getattr__(self, attr: str):
        value = getattr(importlib.import_module(self._name), attr)
        self.__dict__[attr] = value
        return value

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


torch = LazyModule("torch")
nn = LazyModule("torch.nn")
F = LazyModule("torch.nn.functional")
