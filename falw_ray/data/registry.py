"""Dataset registry: one line per data set, naming its loader, its split sizes and its generator options."""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import plugins
from ..plugins import is_ref
from .arrays import DatasetArrays
from .forget import classwise_forget, longtail_forget, random_forget
from .mnist1d import Mnist1dOptions
from .options import DataOptions, validate_options
from .splits import Splits, mia_members, test_subset, validation_split


@dataclass(frozen=True)
class DatasetInfo:
    loader: str
    val_per_class: int | None
    """Validation samples carved per class; None: a tenth of the smallest class, at most 50."""
    test_per_class: int | None
    default_model: str
    needs_data_dir: bool = True
    options: type[DataOptions] = DataOptions
    needs_data_file: bool = False


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("falw_ray.data.digits:load_digits_arrays", 15, None, "cnn", needs_data_dir=False),
    "cifar10": DatasetInfo("falw_ray.data.vision:load_cifar10", 500, None, "vgg16_bn"),
    "cifar100": DatasetInfo("falw_ray.data.vision:load_cifar100", 50, None, "resnet18"),
    "tinyimagenet": DatasetInfo("falw_ray.data.vision:load_tinyimagenet", 50, 25, "vgg16_bn"),
    "mnist1d": DatasetInfo("falw_ray.data.mnist1d:load_mnist1d", 40, None, "conv1d", needs_data_dir=False,
                           options=Mnist1dOptions),
    "npz": DatasetInfo("falw_ray.data.files:load_npz", None, None, "cnn", needs_data_dir=False, needs_data_file=True),
    "image_folder": DatasetInfo("falw_ray.data.files:load_image_folder", None, None, "cnn"),
}
"""Built-in data sets and the two file formats; ``module:load`` names a loader of one's own (plugin)."""


def dataset_info(name: str) -> DatasetInfo:
    if is_ref(name):
        return DatasetInfo(name, None, None, "cnn", needs_data_dir=False)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}, or module:FUNCTION naming "
                         "a loader of your own")
    return DATASETS[name]


def data_digest(name: str, data_dir: str | None = None, data_file: str | None = None,
                options: tuple[tuple[str, object], ...] = ()) -> str | None:
    """The content hash a scenario's store key carries for data that is not built in: the npz file's
    bytes, the image folder's files, or the arrays a loader of one's own returns. None for the
    built-in data sets (their code version covers them)."""
    from .files import arrays_digest, file_digest, folder_digest

    if name == "npz":
        return file_digest(data_file)
    if name == "image_folder":
        return folder_digest(data_dir)
    if is_ref(name):
        return arrays_digest(load_dataset(name, data_dir, False, options, data_file, None))
    return None


def data_options(name: str, raw: object = None) -> DataOptions:
    """The data set's generator options from a mapping (defaults filled in); one-line errors name the option."""
    return validate_options(name, dataset_info(name).options, raw)


def load_dataset(name: str, data_dir: str | None = None, download: bool = False,
                 options: tuple[tuple[str, object], ...] = (), data_file: str | None = None,
                 digest: str | None = None) -> DatasetArrays:
    """Load a data set once per process (the arrays are read-only and shared).
    ``options`` are its generator options as (name, value) pairs (``DataOptions.hashable()``);
    ``digest`` (its files' content hash) keys the cache, so a file changed since is read again."""
    return _load(name, data_dir, download, tuple(options), data_file, digest)


@functools.lru_cache(maxsize=4)
def _load(name: str, data_dir: str | None, download: bool, options: tuple, data_file: str | None,
          digest: str | None) -> DatasetArrays:
    """``load_dataset``'s cache, keyed by every argument however the call spelled them."""
    info = dataset_info(name)
    if info.needs_data_dir and data_dir is None:
        raise ValueError(f"dataset {name!r} needs data_dir: the folder that holds (or will hold) its files")
    if info.needs_data_file and data_file is None:
        raise ValueError(f"dataset {name!r} needs data_file: the .npz file that holds its arrays")
    if is_ref(name):
        from .files import from_loader

        given = {k: Path(v) for k, v in (("data_dir", data_dir), ("data_file", data_file)) if v is not None}
        return from_loader(plugins.load(name)(**given), name)
    if name in ("npz", "image_folder"):
        from .files import load_image_folder, load_npz

        return load_npz(data_file) if name == "npz" else load_image_folder(data_dir)
    opts = data_options(name, dict(options))
    module, func = info.loader.split(":")
    loader = getattr(importlib.import_module(module), func)
    return loader(Path(data_dir) if data_dir is not None else None, download=download, **opts.model_dump())


def make_splits(
    data: DatasetArrays,
    forget_kind: str,
    ratio: float,
    gamma: float,
    classes: tuple[int, ...],
    seed: int,
) -> Splits:
    """All index sets of one scenario, reproducible from the seed alone."""
    info = dataset_info(data.name)
    s_val, s_forget, s_test, s_mia = np.random.SeedSequence(seed).generate_state(4)
    if data.val_rows is not None:
        val = np.sort(data.val_rows).astype(np.int64)
        pool = np.setdiff1d(np.arange(len(data.train_y)), val).astype(np.int64)
    else:
        per_class = info.val_per_class
        if per_class is None:
            per_class = int(min(50, max(1, np.bincount(data.train_y, minlength=data.num_classes).min() // 10)))
        val, pool = validation_split(data.train_y, data.num_classes, per_class, int(s_val))
    pool_y = data.train_y[pool]
    if forget_kind == "longtail":
        rows = longtail_forget(pool_y, data.num_classes, ratio, gamma, int(s_forget))
    elif forget_kind == "random":
        rows = random_forget(pool_y, ratio, int(s_forget))
    elif forget_kind == "classwise":
        rows = classwise_forget(pool_y, classes)
    else:
        raise ValueError(f"unknown forget kind {forget_kind!r}; expected longtail, random or classwise")
    if len(rows) == 0:
        raise ValueError("the forget set is empty: raise the forget ratio or name classes that exist")
    forget = pool[rows]
    retain = np.setdiff1d(pool, forget).astype(np.int64)
    test = test_subset(data.test_y, data.num_classes, info.test_per_class, int(s_test))
    return Splits(val=val, pool=pool, forget=forget, retain=retain, test=test,
                  mia_members=mia_members(len(retain), len(test), int(s_mia)))
