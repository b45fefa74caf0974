"""A scenario: what determines a pair of baselines (data set and its options, model, forget set, seed, recipe)."""
from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal, Optional

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, SerializeAsAny, ValidationInfo, field_validator,
                      model_validator)

from pathlib import Path

from .data.options import DataOptions
from .data.registry import DATASETS, data_digest, data_options, dataset_info
from .models import MODELS
from .plugins import PluginError, is_ref, split_ref
from .recipe import Recipe, default_recipe

BASELINE_CODE_VERSION = "2026.12-2"
"""Version of the code whose output a stored baseline is: part of every store key and recorded in
each entry's meta.json.

Bump it deliberately, in the same change, whenever training (falw_ray/train.py, baselines.train_role,
a model's layers or initialisation), data preparation (loading, normalisation, augmentation, splits,
forget sets) or evaluation (falw_ray/metrics.py: the metrics.json stored with a pair) of baselines
changes what a stored entry holds. Keys then change, so entries built by the older code are missed
(never silently reused) and rebuilt on first use; `falw-ray baselines prune --stale` removes them.
A change that leaves stored entries bit for bit the same needs no bump. Format: YEAR.MONTH-N.

History: 2026.12-1 (first versioned keys): baselines train in fp32 on GPUs too (no bf16 autocast) and
evaluation counts every model output (argmax and softmax over all of them, shadow classes included).
2026.12-2: a data set's arrays keep the strides a fresh array has (data/arrays.py), so a baseline
trained in the process is the one a Ray task trains; MNIST-1D's in-process baselines changed.
"""


def _known_dataset(v: str) -> str:
    if is_ref(v):
        return _ref(v)
    if v not in DATASETS:
        raise ValueError(f"unknown dataset {v!r}; expected one of {sorted(DATASETS)}, or module:FUNCTION naming a "
                         "loader of your own")
    return v


def _known_model(v: str | None) -> str | None:
    if v is not None and is_ref(v):
        return _ref(v)
    if v is not None and v not in MODELS:
        raise ValueError(f"unknown model {v!r}; expected one of {sorted(MODELS)}, or module:FUNCTION naming a "
                         "builder of your own")
    return v


def _ref(v: str) -> str:
    try:
        split_ref(v)
    except PluginError as e:
        raise ValueError(str(e)) from None
    return v


DatasetName = Annotated[str, AfterValidator(_known_dataset)]
ModelName = Annotated[Optional[str], AfterValidator(_known_model)]
"""Registered names, checked wherever a scenario is written (study files, Python)."""


class ForgetSpec(BaseModel):
    """Which part of the training pool is forgotten."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["longtail", "random", "classwise"] = "longtail"
    ratio: float = Field(0.1, gt=0, lt=1)
    gamma: float = Field(1.0, ge=0, le=10)
    classes: tuple[int, ...] = ()

    @model_validator(mode="after")
    def _classes_for_classwise(self) -> "ForgetSpec":
        if self.kind == "classwise" and not self.classes:
            raise ValueError("a classwise forget set needs classes: [...]")
        if self.kind != "classwise" and self.classes:
            raise ValueError(f"classes only apply to kind: classwise, not {self.kind}")
        return self

    @property
    def label(self) -> str:
        if self.kind == "longtail":
            return f"lt{self.ratio:g}-g{self.gamma:g}"
        if self.kind == "random":
            return f"rand{self.ratio:g}"
        return "cls" + "-".join(map(str, self.classes))


class Scenario(BaseModel):
    """Everything that fixes the original and retrained models; its key addresses them in the store."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: DatasetName = "digits"
    data_options: SerializeAsAny[DataOptions] = Field(None, validate_default=True)  # type: ignore[assignment]
    """The data set's generator options (mnist1d's noise, size, seed ...), as the registry's model for it."""
    model: ModelName = None
    forget: ForgetSpec = ForgetSpec()
    seed: int = Field(0, ge=0)
    recipe: Recipe | None = None
    data_digest: str | None = None
    """The content hash of data that is not built in (``registry.data_digest``), computed when the
    scenario is made: part of the key, so a changed file never reuses a stale baseline."""
    data_dir: str | None = Field(None, exclude=True)
    data_file: str | None = Field(None, exclude=True)
    download: bool = Field(False, exclude=True)

    @field_validator("data_options", mode="before")
    @classmethod
    def _options_of_dataset(cls, v: object, info: ValidationInfo) -> DataOptions:
        if "dataset" not in info.data:
            return DataOptions()  # the data set itself is invalid, and that error is the one reported
        return data_options(info.data["dataset"], v)

    @model_validator(mode="after")
    def _fill_defaults(self) -> "Scenario":
        info = dataset_info(self.dataset)
        if info.needs_data_file and self.data_file is None:
            raise ValueError(f"dataset {self.dataset!r} needs data_file: the .npz file that holds its arrays")
        if self.model is None:
            object.__setattr__(self, "model", info.default_model)
        if self.recipe is None:
            object.__setattr__(self, "recipe", default_recipe(self.dataset))
        if self.data_digest is None:
            object.__setattr__(self, "data_digest", data_digest(self.dataset, self.data_dir, self.data_file,
                                                                self.data_options.hashable()))
        return self

    @property
    def dataset_label(self) -> str:
        """The data set as names and labels show it: the file's or folder's name for npz and image
        folders, module.function for a loader of one's own."""
        if self.dataset == "npz":
            return f"npz-{Path(self.data_file).stem}"
        if self.dataset == "image_folder":
            return f"folder-{Path(self.data_dir).name}"
        return self.dataset.replace(":", ".")

    @property
    def options_label(self) -> str:
        """The options that differ from the data set's defaults, e.g. ``-corr_noise_scale0.25``; "" if none."""
        default = type(self.data_options)().model_dump()
        return "".join(f"-{k}{v:g}" for k, v in self.data_options.model_dump().items() if v != default[k])

    @property
    def name(self) -> str:
        return f"{self.dataset_label}{self.options_label}-{self.model_label}-{self.forget.label}-s{self.seed}"

    @property
    def model_label(self) -> str:
        return self.model.replace(":", ".")

    def data_args(self) -> tuple:
        """The arguments of ``load_dataset`` for this scenario's arrays (hashable: it is lru_cached).
        Files are keyed by their content hash too: one changed since is read again."""
        files = self.dataset in ("npz", "image_folder")
        return (self.dataset, self.data_dir, self.download, self.data_options.hashable(), self.data_file,
                self.data_digest if files else None)

    def key(self) -> str:
        """Content address of the retrained model: every field that changes it (not where data lives)
        and the version of the code that trains and evaluates it (BASELINE_CODE_VERSION)."""
        return _digest({**self._identity(), "code_version": BASELINE_CODE_VERSION})

    def original_key(self) -> str:
        """Content address of the original model, which the forget set does not change: scenarios that
        differ only in their forget set (a gamma sweep, say) share one original. Versioned as key()."""
        return _digest({**self._identity(exclude={"forget"}), "code_version": BASELINE_CODE_VERSION})

    def _identity(self, exclude: set[str] | None = None) -> dict:
        fields = self.model_dump(mode="json", exclude=exclude)
        if not fields["data_options"]:
            del fields["data_options"]  # data sets without options keep the keys they had before options existed
        if fields.get("data_digest") is None:
            fields.pop("data_digest", None)  # likewise the built-in data sets, which have no content hash
        return fields


def _digest(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
