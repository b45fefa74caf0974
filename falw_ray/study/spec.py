"""Study files (studies/*.yaml) as validated, typed objects. Loaded once, at the edge.

Every error names the file, the field and what was expected, in a line or three.
"""
from __future__ import annotations

from pathlib import Path
import types
import typing
from typing import Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from .. import plugins
from ..console import did_you_mean
from ..data.registry import data_digest, data_options, dataset_info, load_dataset
from ..recipe import Recipe
from ..scenario import DatasetName, ForgetSpec, ModelName, Scenario
from ..plugins import PluginError
from ..unlearn import METHODS, PRESETS, Param, get_method, load_plugin


class StudyError(ValueError):
    """A study file that cannot be run, with a message fit to print as is."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Strict):
    """A searched hyperparameter: uniform (or log-uniform) between low and high."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> "Range":
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class ForgetEntry(_Strict):
    """A forget spec whose gamma may be a list: one scenario per gamma (a sweep)."""

    kind: Literal["longtail", "random", "classwise"] = "longtail"
    ratio: float = Field(0.1, gt=0, lt=1)
    gamma: Union[float, list[float]] = 1.0
    classes: tuple[int, ...] = ()

    @field_validator("gamma", mode="before")
    @classmethod
    def _number_or_list(cls, v: object) -> object:
        """One message for a bad gamma, not one per member of the union."""
        def number(x: object) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool)
        if number(v) or (isinstance(v, list) and all(number(x) for x in v)):
            return v
        raise ValueError(f"expected a number or a list of numbers, got {v!r}")

    def expand(self) -> list[ForgetSpec]:
        gammas = self.gamma if isinstance(self.gamma, list) else [self.gamma]
        return [ForgetSpec(kind=self.kind, ratio=self.ratio, gamma=g, classes=self.classes) for g in gammas]

    @model_validator(mode="after")
    def _valid(self) -> "ForgetEntry":
        if isinstance(self.gamma, list) and not self.gamma:
            raise ValueError("gamma: give a number or a non-empty list")
        if isinstance(self.gamma, list) and len(set(self.gamma)) < len(self.gamma):
            raise ValueError(f"gamma: the list {self.gamma} repeats a value (each gamma is one scenario)")
        self.expand()
        return self


class ScenarioEntry(_Strict):
    dataset: DatasetName = "digits"
    data_options: dict[str, Union[int, float, bool, str]] = Field(
        default_factory=dict, description="the data set's generator options (mnist1d: num_samples, noise, ...)")
    model: ModelName = None
    forget: ForgetEntry = ForgetEntry()
    seed: int = Field(0, ge=0, description="seed of the search stage's baselines and splits")
    data_dir: str | None = None
    data_file: str | None = Field(None, description="dataset npz: the .npz file (MedMNIST layout)")
    download: bool = False
    recipe: Recipe | None = None

    @model_validator(mode="after")
    def _data_dir(self, info: ValidationInfo) -> "ScenarioEntry":
        data = dataset_info(self.dataset)
        if data.needs_data_dir and self.data_dir is None:
            raise ValueError(f"dataset {self.dataset!r} needs data_dir: the folder that holds its files")
        if data.needs_data_file and self.data_file is None:
            raise ValueError(f"dataset {self.dataset!r} needs data_file: the .npz file that holds its arrays")
        if self.data_file is not None and not (data.needs_data_file or plugins.is_ref(self.dataset)):
            raise ValueError(f"data_file: dataset {self.dataset!r} reads no data file (data_file is for dataset npz "
                             "or a loader of your own)")
        try:
            data_options(self.dataset, dict(self.data_options))
        except ValueError as e:
            raise ValueError(f"data_options.{e}") from None
        for field, ref in (("dataset", self.dataset), ("model", self.model)):
            if ref is not None and plugins.is_ref(ref):
                try:
                    found = plugins.load(ref, base=(info.context or {}).get("base"))
                except plugins.PluginError as e:
                    raise ValueError(f"{field}: {e}") from None
                if not callable(found):
                    raise ValueError(f"{field}: {ref} is a {type(found).__name__}, not a function")
        return self

    def missing_data_dir(self) -> str | None:
        """Why this scenario's data cannot be read here, or None. Checked where the study runs,
        not where it is validated: a cluster's data lives on the cluster."""
        if self.data_dir is not None and not self.download and not Path(self.data_dir).expanduser().is_dir():
            return f"data_dir {self.data_dir!r} does not exist (create it with the data, or set download: true)"
        return None

    def scenarios(self, seed: int | None = None) -> list[Scenario]:
        """The entry's scenarios. Data that is not built in is read here (once per process) and
        hashed: a bad file is a one-line error (files.DataFileError) naming it, before Ray starts."""
        data_dir = str(Path(self.data_dir).expanduser()) if self.data_dir else None
        data_file = str(Path(self.data_file).expanduser()) if self.data_file else None
        options = data_options(self.dataset, dict(self.data_options)).hashable()
        digest = data_digest(self.dataset, data_dir, data_file, options)
        if self.dataset in ("npz", "image_folder"):
            load_dataset(self.dataset, data_dir, self.download, options, data_file, digest)
        return [
            Scenario(dataset=self.dataset, data_options=dict(self.data_options), model=self.model, forget=f,
                     recipe=self.recipe,
                     seed=self.seed if seed is None else seed,
                     data_dir=data_dir, data_file=data_file, data_digest=digest, download=self.download)
            for f in self.forget.expand()
        ]


class MethodEntry(_Strict):
    """A method in the study: FaLW off, on or both, its epochs, and changes to its default search space."""

    name: str
    falw: Literal["off", "on", "both"] = "both"
    epochs: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    space: dict[str, Union[Range, float]] = {}
    options: dict[str, str] = Field(default_factory=dict, description="the method's non-searched choices")

    @field_validator("name")
    @classmethod
    def _known_name(cls, v: str, info: ValidationInfo) -> str:
        """A built-in method or preset, or a plugin (``module:ATTR``, found beside the study file
        first, or an installed entry point's name), which the study then calls by its own name."""
        if v in METHODS or v in PRESETS:
            return v
        try:
            return load_plugin(v, base=(info.context or {}).get("base")).method.name
        except PluginError as e:
            raise ValueError(str(e)) from None

    @field_validator("falw", mode="before")
    @classmethod
    def _yaml_booleans(cls, v: object) -> object:
        """YAML reads a bare on / off as true / false."""
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("space", mode="before")
    @classmethod
    def _values(cls, v: object) -> object:
        """A number fixes a hyperparameter; {low, high, log} searches it. One message per bad entry."""
        if not isinstance(v, dict):
            raise ValueError("expected a mapping of hyperparameter -> number or {low, high, log}")
        out = {}
        for key, value in v.items():
            if isinstance(value, dict):
                try:
                    out[key] = Range(**value)
                except ValidationError as err:
                    first = err.errors()[0]
                    where = ".".join(map(str, first["loc"]))
                    msg = first["msg"].removeprefix("Value error, ")
                    if first["type"] == "extra_forbidden":
                        msg = "unknown field; expected low, high and optionally log"
                    raise ValueError(f"{key}{'.' + where if where else ''}: {msg}") from None
                except TypeError:
                    raise ValueError(f"{key}: expected {{low, high, log}}") from None
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key] = float(value)
            else:
                raise ValueError(f"{key}: expected a number or {{low, high, log}}, got {value!r}")
        return out

    @model_validator(mode="after")
    def _known(self) -> "MethodEntry":
        method = get_method(self.name)
        if self.name in PRESETS and self.falw != "both" and (self.falw == "on") != PRESETS[self.name][1]:
            raise ValueError(f"falw: method {self.name!r} fixes FaLW {'on' if PRESETS[self.name][1] else 'off'}; "
                             f"leave falw out or name the base method ({PRESETS[self.name][0]!r})")
        if self.falw == "on" and not method.forget_term:
            raise ValueError(f"falw: method {self.name!r} has no forget term for FaLW to weight; "
                             "expected off (or both, which runs only the off cell)")
        allowed = set(method.all_params()) | ({"tau"} if method.forget_term else set())
        for key, value in self.space.items():
            if key not in allowed:
                raise ValueError(f"space: {self.name!r} has no hyperparameter {key!r}{did_you_mean(key, allowed)}; "
                                 f"expected one of {sorted(allowed)}")
            if key == "epochs" and isinstance(value, Range):
                raise ValueError("space: epochs is the unlearning budget, not searched; set epochs: N on the method")
        choices = getattr(method, "options", {})
        for key, value in self.options.items():
            if key not in choices:
                raise ValueError(f"options: {self.name!r} has no option {key!r}; expected one of {sorted(choices)}")
            if value not in choices[key].choices:
                raise ValueError(f"options.{key}: expected one of {list(choices[key].choices)}, got {value!r}")
        return self

    def falw_modes(self) -> list[bool]:
        method = get_method(self.name)
        if self.name in PRESETS:
            return [PRESETS[self.name][1]]
        if not method.forget_term:
            return [False]
        return {"off": [False], "on": [True], "both": [False, True]}[self.falw]

    def search_space(self, falw: bool) -> tuple[dict[str, Param], dict[str, float]]:
        """(searched params, fixed params): the method's defaults with this entry's changes."""
        method = get_method(self.name)
        space = dict(method.space(falw))
        fixed: dict[str, float] = {}
        for key, value in self.space.items():
            if key == "tau" and not falw:
                continue
            if isinstance(value, Range):
                base = method.all_params().get(key) or space.get(key)
                space[key] = Param(min(max(base.default, value.low), value.high), value.low, value.high,
                                   log=value.log, integer=base.integer)
            else:
                space.pop(key, None)
                fixed[key] = value
        return space, fixed


class SearchSettings(_Strict):
    trials: int = Field(8, ge=1, description="trials per cell")
    sampler_seed: int = 0
    max_concurrent: int | None = Field(None, ge=1)
    falw_refresh_every: int = Field(1, ge=0, description="FaLW statistics refresh, in steps (0: once per epoch)")
    evaluate: Literal["rungs", "every_epoch"] = Field(
        "rungs", description="epochs a trial is evaluated at: early stopping's rungs and the last (rungs), or all")
    compile: bool = Field(False, description="torch.compile each trial's model: pays on long GPU trials only")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="unlearning arithmetic: fp32 as the reference code, or bf16 autocast on GPUs")


class EarlyStopping(_Strict):
    enabled: bool = True
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1)


class Resources(_Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)

    @field_validator("gpu")
    @classmethod
    def _fraction_or_whole(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError("a trial takes a fraction of one GPU (<= 1) or a whole number of GPUs")
        return v


class Tracking(_Strict):
    uri: str | None = None
    experiment: str | None = None


class SelectionStage(_Strict):
    """Re-run each cell's ``top_k`` best search configurations on ``seeds`` and choose by their mean
    Avg. Gap: a search seed's best is often luck. No seeds: the search's best goes straight on."""

    top_k: int = Field(3, ge=1)
    seeds: list[int] = Field(default_factory=list)


FINAL_SEEDS = 3
"""Final seeds when a study names none: the next ones after every search and selection seed."""


class FinalStage(_Strict):
    seeds: list[int] | None = Field(None, min_length=1)
    in_sample: bool = Field(False, description="allow final seeds that the search or selection also used")


class StudySpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    scenarios: list[ScenarioEntry] = Field(min_length=1)
    methods: list[MethodEntry] = Field(min_length=1)
    search: SearchSettings = SearchSettings()
    early_stopping: EarlyStopping = EarlyStopping()
    resources: Resources = Resources()
    storage: str = "falw_results"
    tracking: Tracking = Tracking()
    selection: SelectionStage = SelectionStage()
    final: FinalStage = FinalStage()
    compare: list[tuple[str, str]] = Field(
        default_factory=list, description="pairs of cells (method labels such as rl, rl+falw) to difference per seed")

    @model_validator(mode="after")
    def _seeds_disjoint(self) -> "StudySpec":
        """Final (and selection) seeds are new data: reusing a seed the configuration was chosen on
        reports the search's luck as the method's quality."""
        search = {e.seed: i for i, e in enumerate(self.scenarios)}
        for field, seeds in (("selection.seeds", self.selection.seeds), ("final.seeds", self.final.seeds or [])):
            if len(set(seeds)) < len(seeds):
                raise ValueError(f"{field}: {seeds} repeats a seed")
            if any(s < 0 for s in seeds):
                raise ValueError(f"{field}: seeds must be >= 0, got {seeds}")
        if self.final.in_sample:
            return self
        for seed in self.final.seeds or []:
            if seed in search:
                raise ValueError(f"final.seeds: seed {seed} is the search seed of scenarios[{search[seed]}]; final "
                                 "seeds must be new (choose others, or set final.in_sample: true)")
            if seed in self.selection.seeds:
                raise ValueError(f"final.seeds: seed {seed} is also a selection seed; final seeds must be new "
                                 "(choose others, or set final.in_sample: true)")
        for seed in self.selection.seeds:
            if seed in search:
                raise ValueError(f"selection.seeds: seed {seed} is the search seed of scenarios[{search[seed]}]; "
                                 "selection seeds must be new")
        return self

    @model_validator(mode="after")
    def _compare_cells(self) -> "StudySpec":
        labels = {e.name + ("+falw" if on and e.name not in PRESETS else "") for e in self.methods for on in e.falw_modes()}
        for i, pair in enumerate(self.compare):
            for name in pair:
                if name not in labels:
                    raise ValueError(f"compare[{i}]: no cell {name!r}; expected one of {sorted(labels)}")
        return self

    def final_seeds(self) -> list[int]:
        """The final stage's seeds: as given, or the next ``FINAL_SEEDS`` after every seed used before."""
        if self.final.seeds is not None:
            return list(self.final.seeds)
        start = max([e.seed for e in self.scenarios] + list(self.selection.seeds)) + 1
        return list(range(start, start + FINAL_SEEDS))

    def scenario_list(self, seed: int | None = None) -> list[Scenario]:
        return [s for entry in self.scenarios for s in entry.scenarios(seed)]

    def preflight(self, source: str) -> None:
        """Checks that need the machine the study runs on; errors name the file and the field."""
        for i, entry in enumerate(self.scenarios):
            if (why := entry.missing_data_dir()) is not None:
                raise StudyError(f"{source}: scenarios[{i}].data_dir: {why}")


def _where(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith(("function-", "union[", "list[", "tagged-union[")):
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _fields_at(loc: tuple) -> list[str] | None:
    """The field names allowed where ``loc`` points (a model inside StudySpec), or None if unknown."""
    model: object = StudySpec
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        model = _model_in(model.model_fields[part].annotation)
    return sorted(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else None


def _model_in(annotation: object) -> object:
    """The pydantic model inside ``X``, ``X | None`` or ``list[X]``, else the annotation itself."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (Union, types.UnionType, list, tuple):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return annotation


def _message(e: dict) -> str:
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        known = _fields_at(e["loc"][:-1])
        return f"unknown field {e['loc'][-1]!r}" + (f"; expected one of {known}" if known else "")
    if e["type"] != "value_error" and isinstance(e.get("input"), (str, int, float, bool)):
        msg += f" (got {e['input']!r})"
    return msg


def format_validation_error(source: str, err: ValidationError, limit: int = 3) -> str:
    lines = []
    for e in err.errors()[:limit]:
        msg = _message(e)
        lines.append(f"{source}: {_where(e['loc'])}: {msg}")
    if len(err.errors()) > limit:
        lines.append(f"{source}: ... and {len(err.errors()) - limit} more problem(s)")
    return "\n".join(lines)


def parse_study(data: object, source: str = "<study>", base: str | Path | None = None) -> StudySpec:
    """Validate a study; ``base`` is the folder plugin modules (``module:ATTR``) are looked for first."""
    if not isinstance(data, dict):
        raise StudyError(f"{source}: expected a mapping of study fields (name, scenarios, methods, ...), got {type(data).__name__}")
    try:
        return StudySpec.model_validate(data, context={"base": base})
    except ValidationError as err:
        raise StudyError(format_validation_error(source, err)) from None


def load_study(path: str | Path) -> StudySpec:
    """Read and validate a study file; errors name the file and the field."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise StudyError(f"{path}: cannot read the study file ({e.strerror or e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise StudyError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if data is None:
        raise StudyError(f"{path}: the file is empty; a study needs name, scenarios and methods")
    return parse_study(data, str(path), base=path.parent)
