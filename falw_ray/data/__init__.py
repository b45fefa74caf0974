"""Data sets, splits and forget sets, and batches kept on the device.

The names below are imported on first use: the registry (``falw_ray.data.registry``) is read by
``falw-ray validate`` and must not pull in torch, which ``device`` needs."""
from __future__ import annotations

import importlib

_EXPORTS = {
    "DatasetArrays": "arrays",
    "Augment": "device", "augment": "device", "index_batches": "device", "to_device": "device",
    "classwise_forget": "forget", "longtail_counts": "forget", "longtail_forget": "forget",
    "longtail_weights": "forget", "random_forget": "forget",
    "DataOptions": "options",
    "DATASETS": "registry", "data_options": "registry", "dataset_info": "registry", "load_dataset": "registry",
    "make_splits": "registry",
    "Splits": "splits",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'falw_ray.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
