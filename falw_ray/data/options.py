"""Generator options of a data set: validated data that changes the arrays, so part of a scenario's key."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


class DataOptions(BaseModel):
    """A data set's options; this base has none (files on disk fix digits and the image sets)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def hashable(self) -> tuple[tuple[str, object], ...]:
        """The options as sorted (name, value) pairs: an lru_cache key for ``load_dataset``."""
        return tuple(sorted(self.model_dump().items()))


def validate_options(dataset: str, model: type[DataOptions], raw: object) -> DataOptions:
    """``raw`` (a mapping or an options instance) as ``model``; every error is one line naming the option."""
    if isinstance(raw, DataOptions):
        if type(raw) is not model:
            raise ValueError(f"dataset {dataset!r} takes {model.__name__}, got {type(raw).__name__}")
        return raw
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ValueError(f"expected a mapping of option -> value, got {type(raw).__name__}")
    if not model.model_fields and raw:
        raise ValueError(f"dataset {dataset!r} takes no options, got {sorted(raw)}")
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        name = ".".join(map(str, first["loc"]))
        if first["type"] == "extra_forbidden":
            raise ValueError(f"{name}: unknown option of dataset {dataset!r}; expected one of "
                             f"{sorted(model.model_fields)}") from None
        msg = first["msg"].removeprefix("Value error, ")
        raise ValueError(f"{name}: {msg} (got {first.get('input')!r})") from None
