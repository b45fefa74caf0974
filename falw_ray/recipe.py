"""Training recipes: validated data that says how an original or retrained model is trained."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Recipe(BaseModel):
    """Optimiser, schedule and budget of a from-scratch training run (SGD, as the reference codebases)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "multistep", "constant"] = "cosine"
    milestones: tuple[int, ...] = ()
    lr_decay: float = Field(0.1, gt=0, le=1)
    augment: bool = True

    @model_validator(mode="after")
    def _milestones_inside(self) -> "Recipe":
        if any(not 0 < m < self.epochs for m in self.milestones):
            raise ValueError(f"milestones must lie strictly between 0 and epochs = {self.epochs}")
        return self


DEFAULT_RECIPES: dict[str, Recipe] = {
    "digits": Recipe(epochs=30, batch_size=64, lr=0.05),
    "mnist1d": Recipe(epochs=60, batch_size=64, lr=0.05, augment=False),  # long enough to memorise every signal
    "cifar10": Recipe(epochs=150, batch_size=256, lr=0.1, schedule="multistep", milestones=(90, 120)),
    "cifar100": Recipe(epochs=150, batch_size=256, lr=0.1, schedule="multistep", milestones=(90, 120)),
    "tinyimagenet": Recipe(epochs=150, batch_size=256, lr=0.1, schedule="multistep", milestones=(90, 120)),
}


def default_recipe(dataset: str) -> Recipe:
    return DEFAULT_RECIPES.get(dataset, Recipe())
